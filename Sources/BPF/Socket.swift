import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP or UDP socket with one owner, closed when released. Small helpers for servers,
/// clients and tests; no Foundation networking.
public final class Socket: Sendable, CustomStringConvertible {
    /// Transport protocol of a socket.
    public enum Transport: String, Sendable, Hashable, CaseIterable, Codable {
        /// TCP (`SOCK_STREAM`) or UDP (`SOCK_DGRAM`); the raw values are the names used in text.
        case tcp, udp
        /// `IPPROTO_TCP` / `IPPROTO_UDP`, as `struct bpf_sk_lookup` reports `protocol`.
        public var ipProtocol: UInt32 { self == .tcp ? UInt32(IPPROTO_TCP) : UInt32(IPPROTO_UDP) }
        var socketType: Int32 { Int32(self == .tcp ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue) }
    }

    /// The descriptor.
    public let descriptor: OwnedFileDescriptor
    /// TCP or UDP.
    public let transport: Transport
    /// `AF_INET` or `AF_INET6`.
    public let family: Int32

    /// Adopts an existing socket descriptor (one taken from another process, say).
    public init(adopting descriptor: OwnedFileDescriptor, transport: Transport, family: Int32) {
        self.descriptor = descriptor
        self.transport = transport
        self.family = family
    }

    var fd: Int32 { descriptor.rawValue }

    /// Creates and binds a socket; a TCP socket also listens.
    ///
    /// - Parameters:
    ///   - transport: TCP or UDP.
    ///   - address: the local address; `.any4` or `.any6` for every address.
    ///   - port: the local port; 0 picks a free one.
    ///   - reusePort: join an `SO_REUSEPORT` group.
    ///   - v6Only: for IPv6, refuse IPv4 traffic (`IPV6_V6ONLY`); `false`, the default as in the
    ///     system (`net.ipv6.bindv6only=0`), makes a dual-stack socket.
    ///   - backlog: the TCP accept queue's length.
    public static func bound(
        _ transport: Transport, _ address: IPAddress, port: UInt16, reusePort: Bool = false, v6Only: Bool = false,
        backlog: Int32 = 128
    ) throws(BPFError) -> Socket {
        let what = "bind \(transport) socket to \(Endpoint(address, port))"
        let raw = try kernelCall(what) {
            cbpf_socket(address.family, transport.socketType, reusePort ? 1 : 0, v6Only ? 1 : 0, 1)
        }
        let socket = Socket(
            adopting: OwnedFileDescriptor(adopting: Int32(raw)), transport: transport, family: address.family)
        try kernelCall(what) {
            address.bytes.withUnsafeBufferPointer { cbpf_bind(socket.fd, address.family, $0.baseAddress, port) }
        }
        if transport == .tcp {
            try kernelCall("listen on \(Endpoint(address, port))") { cbpf_listen(socket.fd, backlog) }
        }
        return socket
    }

    /// Connects a new socket to `address:port` (for UDP: sets the default peer).
    public static func connected(
        _ transport: Transport, to address: IPAddress, port: UInt16, timeoutMilliseconds: UInt32 = 2000
    ) throws(BPFError) -> Socket {
        let what = "connect \(transport) to \(Endpoint(address, port))"
        let raw = try kernelCall(what) { cbpf_socket(address.family, transport.socketType, 0, 0, 0) }
        let socket = Socket(
            adopting: OwnedFileDescriptor(adopting: Int32(raw)), transport: transport, family: address.family)
        try socket.setTimeout(milliseconds: timeoutMilliseconds)
        // Not retried: after EINTR the kernel goes on connecting, and a second connect()
        // would only say EALREADY.
        try kernelCall(what, retry: .never) {
            address.bytes.withUnsafeBufferPointer { cbpf_connect(socket.fd, address.family, $0.baseAddress, port) }
        }
        return socket
    }

    /// Makes `close` reset a TCP connection (`SO_LINGER` 0) instead of leaving it in TIME_WAIT;
    /// for clients that open many short connections, such as benchmarks.
    package func resetOnClose() throws(BPFError) {
        try kernelCall("set SO_LINGER") { cbpf_set_linger_zero(fd) }
    }

    /// Sets send and receive timeouts: `accept`, `receive` and `send` then fail with
    /// `EAGAIN` once `milliseconds` pass without progress, after exactly one wait (0: wait forever).
    public func setTimeout(milliseconds: UInt32) throws(BPFError) {
        try kernelCall("set socket timeouts") { cbpf_set_timeouts(fd, milliseconds) }
    }

    /// The kernel's cookie for this socket (`SO_COOKIE`): the number SOCKMAP and SOCKHASH
    /// lookups return and an SK_LOOKUP test run reports for the selected socket.
    public func cookie() throws(BPFError) -> UInt64 {
        var cookie: UInt64 = 0
        try kernelCall("read SO_COOKIE") { cbpf_socket_cookie(fd, &cookie) }
        return cookie
    }

    /// The bound local address and port.
    public func localEndpoint() throws(BPFError) -> Endpoint {
        try endpoint("getsockname", cbpf_local_address)
    }

    /// The connected peer's address and port.
    public func peerEndpoint() throws(BPFError) -> Endpoint {
        try endpoint("getpeername", cbpf_peer_address)
    }

    private func endpoint(
        _ what: String,
        _ call: (Int32, UnsafeMutablePointer<Int32>, UnsafeMutablePointer<UInt8>, UnsafeMutablePointer<UInt16>) -> Int
    ) throws(BPFError) -> Endpoint {
        var family: Int32 = 0
        var bytes = [UInt8](repeating: 0, count: 16)
        var port: UInt16 = 0
        try kernelCall(what) { call(fd, &family, &bytes, &port) }
        return Endpoint(IPAddress(bytes: family == AF_INET ? Array(bytes.prefix(4)) : bytes)!, port)
    }

    /// Accepts one connection (TCP).
    public func accept() throws(BPFError) -> Socket {
        let raw = try kernelCall("accept") { cbpf_accept(fd) }
        return Socket(adopting: OwnedFileDescriptor(adopting: Int32(raw)), transport: .tcp, family: family)
    }

    /// Sends bytes on a connected socket; returns how many were sent.
    @discardableResult
    public func send(_ bytes: [UInt8]) throws(BPFError) -> Int {
        try kernelCall("send") { bytes.withUnsafeBytes { cbpf_send(fd, $0.baseAddress, $0.count) } }
    }

    /// Receives up to `maximum` bytes; an empty result means the peer closed.
    public func receive(maximum: Int = 65536) throws(BPFError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: maximum)
        let count = try kernelCall("receive") {
            buffer.withUnsafeMutableBytes { cbpf_receive(fd, $0.baseAddress, $0.count) }
        }
        return Array(buffer.prefix(count))
    }

    /// Sends a datagram to `endpoint` (UDP).
    @discardableResult
    public func send(_ bytes: [UInt8], to endpoint: Endpoint) throws(BPFError) -> Int {
        try kernelCall("send to \(endpoint)") {
            bytes.withUnsafeBytes { raw in
                endpoint.address.bytes.withUnsafeBufferPointer { address in
                    cbpf_send_to(
                        fd, raw.baseAddress, raw.count, endpoint.address.family, address.baseAddress, endpoint.port)
                }
            }
        }
    }

    /// Receives one datagram and its sender (UDP).
    public func receiveFrom(maximum: Int = 65536) throws(BPFError) -> (bytes: [UInt8], from: Endpoint) {
        var buffer = [UInt8](repeating: 0, count: maximum)
        var family: Int32 = 0
        var address = [UInt8](repeating: 0, count: 16)
        var port: UInt16 = 0
        let count = try kernelCall("receive") {
            buffer.withUnsafeMutableBytes { cbpf_receive_from(fd, $0.baseAddress, $0.count, &family, &address, &port) }
        }
        let peer = IPAddress(bytes: family == AF_INET ? Array(address.prefix(4)) : address)!
        return (Array(buffer.prefix(count)), Endpoint(peer, port))
    }

    /// One datagram with where it came from and where it was sent.
    public struct Datagram: Sendable, Equatable {
        /// The payload.
        public var bytes: [UInt8]
        /// The sender.
        public var from: Endpoint
        /// The address the datagram was sent to, with ``SocketOption/packetInfo`` (IPv4) or
        /// ``SocketOption/receivePacketInfo6`` (IPv6) on; else `nil`. On a socket that
        /// SK_LOOKUP steered traffic to, this is the address the client chose, not the one the
        /// socket is bound to.
        public var destination: IPAddress?
        /// The interface it arrived on (with packet info), else `nil`.
        public var interfaceIndex: Int32?
        /// The address and port it was sent to, with
        /// ``SocketOption/receiveOriginalDestination`` (or its IPv6 form) on; else `nil`.
        public var originalDestination: Endpoint?
    }

    /// Receives one datagram with its control messages: its sender, and the address (and,
    /// with the original-destination option, the port) it was sent to (UDP, `recvmsg`).
    ///
    /// ```swift
    /// let server = try Socket.unbound(.udp, family: AF_INET)
    /// try server.set(.packetInfo, true)
    /// try server.bind(to: Endpoint(.any4, 53))
    /// let query = try server.receiveMessage()
    /// // Answer from the address the client sent to, whatever the socket is bound to.
    /// try server.send(Array("pong".utf8), to: query.from, from: query.destination!)
    /// ```
    public func receiveMessage(maximum: Int = 65536) throws(BPFError) -> Datagram {
        var buffer = [UInt8](repeating: 0, count: maximum)
        var family: Int32 = 0
        var address = [UInt8](repeating: 0, count: 16)
        var port: UInt16 = 0
        var destinationFamily: Int32 = 0
        var destination = [UInt8](repeating: 0, count: 16)
        var interface: Int32 = 0
        var originalFamily: Int32 = 0
        var original = [UInt8](repeating: 0, count: 16)
        var originalPort: UInt16 = 0
        let count = try kernelCall("receive") {
            buffer.withUnsafeMutableBytes {
                cbpf_receive_message(
                    fd, $0.baseAddress, $0.count, &family, &address, &port, &destinationFamily, &destination,
                    &interface, &originalFamily, &original, &originalPort)
            }
        }
        func ip(_ family: Int32, _ bytes: [UInt8]) -> IPAddress? {
            family == AF_INET
                ? IPAddress(bytes: Array(bytes.prefix(4))) : family == AF_INET6 ? IPAddress(bytes: bytes) : nil
        }
        return Datagram(
            bytes: Array(buffer.prefix(count)), from: Endpoint(ip(family, address) ?? .any4, port),
            destination: ip(destinationFamily, destination),
            interfaceIndex: destinationFamily == 0 ? nil : interface,
            originalDestination: ip(originalFamily, original).map { Endpoint($0, originalPort) })
    }

    /// Sends a datagram to `endpoint` from the local address `source` (an `IP_PKTINFO` or
    /// `IPV6_PKTINFO` control message), whatever address the socket is bound to; the source
    /// port is the socket's. This is how a UDP service that SK_LOOKUP steers a prefix to
    /// answers from the address each client sent to.
    @discardableResult
    public func send(
        _ bytes: [UInt8], to endpoint: Endpoint, from source: IPAddress, interfaceIndex: Int32 = 0
    ) throws(BPFError) -> Int {
        try kernelCall("send to \(endpoint) from \(source)") {
            bytes.withUnsafeBytes { raw in
                endpoint.address.bytes.withUnsafeBufferPointer { address in
                    source.bytes.withUnsafeBufferPointer { sourceBytes in
                        cbpf_send_from(
                            fd, raw.baseAddress, raw.count, endpoint.address.family, address.baseAddress,
                            endpoint.port, source.family, sourceBytes.baseAddress, interfaceIndex)
                    }
                }
            }
        }
    }

    /// Reads an integer socket option.
    public func option(level: Int32, name: Int32) throws(BPFError) -> Int32 {
        var value: Int32 = 0
        try kernelCall("getsockopt") { cbpf_getsockopt_int(fd, level, name, &value) }
        return value
    }

    /// `TRANSPORT socket fd N`, e.g. `tcp socket fd 7`.
    public var description: String { "\(transport) socket fd \(fd)" }
}

/// An address and port.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    /// The IP address.
    public var address: IPAddress
    /// The port, in host byte order.
    public var port: UInt16
    /// An endpoint from an address and a port (host byte order).
    public init(_ address: IPAddress, _ port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Parses `127.0.0.1:80` or `[::1]:80`.
    public init?(_ text: String) {
        var host = Substring(text)
        guard let colon = host.lastIndex(of: ":") else { return nil }
        let portText = host[host.index(after: colon)...]
        host = host[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard let address = IPAddress(String(host)), let port = UInt16(portText) else { return nil }
        self.init(address, port)
    }

    /// `127.0.0.1:80` or `[::1]:80`.
    public var description: String { address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
}

/// What the kernel says about a socket descriptor, whoever created it.
public struct SocketFacts: Sendable, Hashable {
    /// TCP or UDP; `nil` for any other kind of socket.
    public var transport: Socket.Transport?
    /// `AF_INET`, `AF_INET6`, or another family.
    public var family: Int32
    /// TCP: `SO_ACCEPTCONN`.
    public var listening: Bool
    /// Whether it has a peer (`getpeername` succeeds).
    public var connected: Bool
    /// IPv6: `IPV6_V6ONLY`.
    public var v6Only: Bool
    /// `SO_REUSEPORT`.
    public var reusePort: Bool
    /// The local address and port (`getsockname`); `nil` if that fails or the family is not IPv4/IPv6.
    public var local: Endpoint?
    /// `SO_NETNS_COOKIE` (Linux 5.14+), identifying the socket's network namespace.
    public var namespaceCookie: UInt64?
}

extension Socket {
    /// Asks the kernel what this descriptor is (`SO_DOMAIN`, `SO_TYPE`, `SO_PROTOCOL`, …).
    /// - Throws: if it is not a socket.
    public static func facts(of descriptor: OwnedFileDescriptor) throws(BPFError) -> SocketFacts {
        let fd = descriptor.rawValue
        func option(_ level: Int32, _ name: Int32) throws(BPFError) -> Int32 {
            var value: Int32 = 0
            try kernelCall("getsockopt", hints: [ENOTSOCK: "the descriptor is not a socket"]) {
                cbpf_getsockopt_int(fd, level, name, &value)
            }
            return value
        }
        let family = try option(SOL_SOCKET, SO_DOMAIN)
        let type = try option(SOL_SOCKET, SO_TYPE)
        let proto = try option(SOL_SOCKET, SO_PROTOCOL)
        var transport: Socket.Transport?
        if type == Int32(SOCK_STREAM.rawValue) && proto == Int32(IPPROTO_TCP) { transport = .tcp }
        if type == Int32(SOCK_DGRAM.rawValue) && proto == Int32(IPPROTO_UDP) { transport = .udp }
        var peerFamily: Int32 = 0
        var peer = [UInt8](repeating: 0, count: 16)
        var peerPort: UInt16 = 0
        let connected = cbpf_peer_address(fd, &peerFamily, &peer, &peerPort) == 0
        var localFamily: Int32 = 0
        var local = [UInt8](repeating: 0, count: 16)
        var localPort: UInt16 = 0
        var endpoint: Endpoint?
        if cbpf_local_address(fd, &localFamily, &local, &localPort) == 0,
            let address = IPAddress(bytes: localFamily == AF_INET ? Array(local.prefix(4)) : local),
            localFamily == AF_INET || localFamily == AF_INET6
        {
            endpoint = Endpoint(address, localPort)
        }
        var cookie: UInt64 = 0
        let namespaceCookie = withUnsafeMutableBytes(of: &cookie) { raw -> UInt64? in
            var length = socklen_t(8)
            let soNetnsCookie: Int32 = 71  // SO_NETNS_COOKIE
            return getsockopt(fd, SOL_SOCKET, soNetnsCookie, raw.baseAddress, &length) == 0 ? 0 : nil
        }.map { _ in cookie }
        return SocketFacts(
            transport: transport, family: family,
            listening: transport == .tcp ? (try option(SOL_SOCKET, SO_ACCEPTCONN)) != 0 : false,
            connected: connected,
            v6Only: family == AF_INET6 ? (try option(Int32(IPPROTO_IPV6), IPV6_V6ONLY)) != 0 : false,
            reusePort: (try option(SOL_SOCKET, SO_REUSEPORT)) != 0, local: endpoint, namespaceCookie: namespaceCookie)
    }

    /// This socket's facts.
    public func facts() throws(BPFError) -> SocketFacts { try Socket.facts(of: descriptor) }

    /// A socket that shares `descriptor`'s open socket without taking it: a descriptor from
    /// SwiftNIO (`channel`'s socket), swift-system, systemd or C code stays the caller's, open
    /// or closed as the caller decides. The copy (`F_DUPFD_CLOEXEC`) is checked with
    /// `getsockopt`: it must be a TCP or UDP socket over IPv4 or IPv6.
    public convenience init(duplicating descriptor: Int32) throws(BPFError) {
        let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 3)
        guard copy >= 0 else {
            throw BPFError(
                operation: "use descriptor \(descriptor)", code: errno, hint: "descriptor \(descriptor) is not open")
        }
        let owned = OwnedFileDescriptor(adopting: copy)
        let facts: SocketFacts
        do {
            facts = try Socket.facts(of: owned)
        } catch {
            throw BPFError(
                operation: "use descriptor \(descriptor)", code: error.code,
                hint: "descriptor \(descriptor) is not a socket")
        }
        guard let transport = facts.transport, facts.family == AF_INET || facts.family == AF_INET6 else {
            throw BPFError(
                operation: "use descriptor \(descriptor)", code: EINVAL, kind: .invalidArgument,
                hint: "descriptor \(descriptor) is a socket, but not TCP or UDP over IPv4 or IPv6")
        }
        self.init(adopting: owned, transport: transport, family: facts.family)
    }
}

/// Every TCP and UDP socket of the calling thread's network namespace, as (cookie, inode),
/// from the kernel's socket diagnostics (`NETLINK_SOCK_DIAG`).
public func socketInodesByCookie() throws(BPFError) -> [UInt64: UInt64] {
    var result: [UInt64: UInt64] = [:]
    for family in [AF_INET, AF_INET6] {
        for proto in [Int32(IPPROTO_TCP), Int32(IPPROTO_UDP)] {
            var cookies = [UInt64](repeating: 0, count: 8192)
            var inodes = [UInt64](repeating: 0, count: 8192)
            let count = try kernelCall("list sockets (sock_diag)") {
                cbpf_sock_diag(Int32(family), proto, &cookies, &inodes, UInt32(cookies.count))
            }
            for i in 0..<count { result[cookies[i]] = inodes[i] }
        }
    }
    return result
}

/// Copies of the descriptors another process holds (`pidfd_open` + `pidfd_getfd`, Linux 5.6+;
/// needs `CAP_SYS_PTRACE` over the process, as root has). Every open descriptor is listed from
/// `/proc/PID/fd`, so gaps between descriptor numbers do not stop the search.
public func descriptors(ofProcess pid: Int32) throws(BPFError) -> [(number: Int32, descriptor: OwnedFileDescriptor)] {
    let pidfd = try kernelCall(
        "pidfd_open(\(pid))", hints: [ESRCH: "no process \(pid)", ENOSYS: "pidfd_open needs Linux 5.3"]
    ) { cbpf_pidfd_open(pid) }
    let owner = OwnedFileDescriptor(adopting: Int32(pidfd))
    guard let directory = opendir("/proc/\(pid)/fd") else {
        throw BPFError(operation: "list the descriptors of process \(pid)", code: errno)
    }
    var numbers: [Int32] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let number = Int32(name) { numbers.append(number) }
    }
    closedir(directory)
    var result: [(Int32, OwnedFileDescriptor)] = []
    for number in numbers.sorted() {
        let copy = cbpf_pidfd_getfd(owner.rawValue, number)
        if copy == -Int(EPERM) {
            throw BPFError(
                operation: "pidfd_getfd of process \(pid)", code: EPERM,
                hint: "taking descriptors from another process needs CAP_SYS_PTRACE over it (run as root)")
        }
        if copy >= 0 { result.append((number, OwnedFileDescriptor(adopting: Int32(copy)))) }
    }
    return result
}
