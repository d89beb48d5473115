import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

extension Socket {
    /// A new descriptor of this socket (`dup`, close-on-exec) for other code to own and
    /// close: SwiftNIO's `ServerBootstrap.withBoundSocket(_:)` or
    /// `DatagramBootstrap.withBoundSocket(_:)`, a child process. The socket stays open
    /// while either is.
    public func duplicatedDescriptor() throws(BPFError) -> Int32 {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw BPFError(operation: "duplicate socket descriptor", code: errno) }
        return copy
    }

    /// A socket that shares a swift-system `FileDescriptor`'s open socket without taking it;
    /// see ``init(duplicating:)-(Int32)``.
    public convenience init(duplicating descriptor: FileDescriptor) throws(BPFError) {
        try self.init(duplicating: descriptor.rawValue)
    }

    /// A copy of `descriptor` (an `Int32` from SwiftNIO, systemd or C) checked to be a socket
    /// the kernel takes into a SOCKMAP, SOCKHASH or REUSEPORT_SOCKARRAY for SK_LOOKUP: a
    /// listening TCP socket or an unconnected UDP socket. The error names the descriptor.
    public static func steerable(duplicating descriptor: Int32) throws(BPFError) -> Socket {
        let socket = try Socket(duplicating: descriptor)
        let facts = try socket.facts()
        if socket.transport == .tcp, !facts.listening {
            throw BPFError(
                operation: "use descriptor \(descriptor)", code: EINVAL, kind: .invalidArgument,
                hint: "descriptor \(descriptor) is a TCP socket that is not listening; call listen() first")
        }
        if socket.transport == .udp, facts.connected {
            throw BPFError(
                operation: "use descriptor \(descriptor)", code: EINVAL, kind: .invalidArgument,
                hint: "descriptor \(descriptor) is a connected UDP socket; steer to an unconnected one")
        }
        return socket
    }
}

extension SocketMap {
    /// Puts the socket `descriptor` refers to at `index`, leaving the descriptor the caller's;
    /// checked as ``Socket/steerable(duplicating:)`` does.
    public func set(_ index: UInt32, descriptor: Int32, mode: Map.UpdateMode = .any) throws(BPFError) {
        try set(index, Socket.steerable(duplicating: descriptor), mode: mode)
    }
}

extension SocketHash {
    /// Puts the socket `descriptor` refers to at `key`, leaving the descriptor the caller's;
    /// checked as ``Socket/steerable(duplicating:)`` does.
    public func set(_ key: Key, descriptor: Int32, mode: Map.UpdateMode = .any) throws(BPFError) {
        try set(key, Socket.steerable(duplicating: descriptor), mode: mode)
    }
}

extension ReuseportSocketArray {
    /// Puts the socket `descriptor` refers to at `index`, leaving the descriptor the caller's.
    public func set(_ index: UInt32, descriptor: Int32, mode: Map.UpdateMode = .any) throws(BPFError) {
        try set(index, Socket(duplicating: descriptor), mode: mode)
    }
}
