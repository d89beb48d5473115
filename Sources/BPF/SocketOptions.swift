import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// An integer socket option: a `setsockopt` level and name, with the name the man pages use.
///
/// ```swift
/// let socket = try Socket.unbound(.udp, family: AF_INET6)
/// try socket.set(.reusePort, true)
/// try socket.set(.receivePacketInfo6, true)
/// try socket.bind(to: Endpoint(.loopback6, 5353))
/// ```
public struct SocketOption: Sendable, Hashable, CustomStringConvertible {
    /// The protocol level (`SOL_SOCKET`, `IPPROTO_IP`, `IPPROTO_IPV6`, …).
    public var level: Int32
    /// The option's number at that level.
    public var name: Int32
    /// The option's C name, for messages (`SO_REUSEPORT`).
    public var label: String

    /// An option by level and number; `label` names it in errors.
    public init(level: Int32, name: Int32, label: String) {
        self.level = level
        self.name = name
        self.label = label
    }

    /// `SO_REUSEPORT`: share the address and port with other sockets that set it (set before binding).
    public static let reusePort = SocketOption(level: SOL_SOCKET, name: SO_REUSEPORT, label: "SO_REUSEPORT")
    /// `SO_REUSEADDR`.
    public static let reuseAddress = SocketOption(level: SOL_SOCKET, name: SO_REUSEADDR, label: "SO_REUSEADDR")
    /// `IPV6_V6ONLY`: an IPv6 socket that refuses IPv4 traffic (set before binding).
    public static let v6Only = SocketOption(level: Int32(IPPROTO_IPV6), name: 26, label: "IPV6_V6ONLY")
    /// `IP_FREEBIND`: bind an address this host does not have (yet); set before binding.
    public static let freeBind = SocketOption(level: Int32(IPPROTO_IP), name: 15, label: "IP_FREEBIND")
    /// `IP_PKTINFO`: IPv4 datagrams carry their destination address and interface (`IP_PKTINFO` control message).
    public static let packetInfo = SocketOption(level: Int32(IPPROTO_IP), name: 8, label: "IP_PKTINFO")
    /// `IPV6_RECVPKTINFO`: IPv6 datagrams carry their destination address and interface.
    public static let receivePacketInfo6 = SocketOption(
        level: Int32(IPPROTO_IPV6), name: 49, label: "IPV6_RECVPKTINFO")
    /// `IP_RECVORIGDSTADDR`: IPv4 datagrams carry the address and port they were sent to,
    /// which differ from the socket's own when an SK_LOOKUP program steered them here.
    public static let receiveOriginalDestination = SocketOption(
        level: Int32(IPPROTO_IP), name: 20, label: "IP_RECVORIGDSTADDR")
    /// `IPV6_RECVORIGDSTADDR`: as ``receiveOriginalDestination``, for IPv6.
    public static let receiveOriginalDestination6 = SocketOption(
        level: Int32(IPPROTO_IPV6), name: 74, label: "IPV6_RECVORIGDSTADDR")

    /// The C name, e.g. `SO_REUSEPORT`.
    public var description: String { label }
}

extension Socket {
    /// Creates a TCP or UDP socket that is not bound yet, so that options which must come
    /// first (``SocketOption/reusePort``, ``SocketOption/freeBind``, a reuseport program) can
    /// be set; then ``bind(to:)`` and, for TCP, ``listen(backlog:)``.
    ///
    /// - Parameters:
    ///   - transport: TCP or UDP.
    ///   - family: `AF_INET` or `AF_INET6`. An IPv6 socket is dual-stack, as the system's
    ///     default is; set ``SocketOption/v6Only`` to refuse IPv4.
    public static func unbound(_ transport: Transport, family: Int32) throws(BPFError) -> Socket {
        guard family == AF_INET || family == AF_INET6 else {
            throw BPFError(
                operation: "create \(transport) socket", code: EAFNOSUPPORT, kind: .invalidArgument,
                hint: "the family must be AF_INET or AF_INET6")
        }
        let raw = try kernelCall("create \(transport) socket") { cbpf_socket(family, transport.socketType, 0, 0, 0) }
        return Socket(adopting: OwnedFileDescriptor(adopting: Int32(raw)), transport: transport, family: family)
    }

    /// Binds the socket to `endpoint`; an IPv4 address on an IPv6 socket is bound as `::ffff:a.b.c.d`.
    public func bind(to endpoint: Endpoint) throws(BPFError) {
        var address = endpoint.address
        if family == AF_INET6, address.isIPv4 {
            address = IPAddress(bytes: [UInt8](repeating: 0, count: 10) + [0xff, 0xff] + address.bytes)!
        }
        guard address.family == family else {
            throw BPFError(
                operation: "bind \(self) to \(endpoint)", code: EAFNOSUPPORT, kind: .invalidArgument,
                hint: "an IPv4 socket cannot bind an IPv6 address")
        }
        let bytes = address.bytes
        try kernelCall("bind \(self) to \(endpoint)") {
            bytes.withUnsafeBufferPointer { cbpf_bind(fd, family, $0.baseAddress, endpoint.port) }
        }
    }

    /// Connects the socket to `endpoint` (for UDP: sets the default peer), waiting as long as
    /// the socket's send timeout allows. Not retried on `EINTR`: the kernel goes on connecting.
    public func connect(to endpoint: Endpoint) throws(BPFError) {
        let bytes = endpoint.address.bytes
        try kernelCall("connect \(self) to \(endpoint)", retry: .never) {
            bytes.withUnsafeBufferPointer { cbpf_connect(fd, endpoint.address.family, $0.baseAddress, endpoint.port) }
        }
    }

    /// Starts listening (TCP).
    public func listen(backlog: Int32 = 128) throws(BPFError) {
        try kernelCall("listen on \(self)") { cbpf_listen(fd, backlog) }
    }

    /// Sets an integer socket option (`setsockopt`).
    public func set(_ option: SocketOption, _ value: Int32) throws(BPFError) {
        try kernelCall("setsockopt \(option) on \(self)") { cbpf_setsockopt_int(fd, option.level, option.name, value) }
    }

    /// Turns a boolean socket option on or off.
    public func set(_ option: SocketOption, _ enabled: Bool) throws(BPFError) {
        try set(option, enabled ? 1 : 0)
    }

    /// Reads an integer socket option (`getsockopt`).
    public func value(of option: SocketOption) throws(BPFError) -> Int32 {
        try self.option(level: option.level, name: option.name)
    }

    /// Attaches an `SK_REUSEPORT` (or socket filter) program to this socket's `SO_REUSEPORT`
    /// group (`SO_ATTACH_REUSEPORT_EBPF`): from then on the program picks which socket of the
    /// group receives each new connection or datagram, also after an SK_LOOKUP program
    /// assigned a socket of the group without the `noReuseport` flag.
    ///
    /// The socket must have ``SocketOption/reusePort`` set. Attach before or after binding;
    /// the group keeps the program until another is attached or ``detachReuseportProgram()``.
    public func attachReuseportProgram(_ program: Program) throws(BPFError) {
        guard program.type == .skReuseport || program.type == .socketFilter else {
            throw BPFError(
                operation: "attach \(program) to the SO_REUSEPORT group of \(self)", code: EINVAL,
                kind: .invalidArgument, hint: "SO_ATTACH_REUSEPORT_EBPF takes an sk_reuseport or socket_filter program")
        }
        let soAttachReuseportEBPF: Int32 = 52
        try kernelCall(
            "attach \(program) to the SO_REUSEPORT group of \(self)",
            hints: [EINVAL: "set SO_REUSEPORT on the socket first"]
        ) {
            cbpf_setsockopt_int(fd, SOL_SOCKET, soAttachReuseportEBPF, program.descriptor.rawValue)
        }
    }

    /// Detaches the group's reuseport program (`SO_DETACH_REUSEPORT_BPF`, Linux 5.3+): the
    /// kernel goes back to picking by hash. Throws `ENOENT` when none is attached.
    public func detachReuseportProgram() throws(BPFError) {
        let soDetachReuseportBPF: Int32 = 68
        try kernelCall("detach the reuseport program of \(self)") {
            cbpf_setsockopt_int(fd, SOL_SOCKET, soDetachReuseportBPF, 0)
        }
    }
}
