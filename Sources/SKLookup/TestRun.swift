import BPF
import BPFAssembly

/// A connection as an SK_LOOKUP program sees it: for asking a loaded program "which socket
/// would you pick?" through the kernel's test run, without sending a packet.
public struct Connection: Sendable, Hashable, CustomStringConvertible {
    /// TCP or UDP (the context's `protocol`).
    public var transport: Socket.Transport
    /// Where the connection goes (the server side: `local_ip`, `local_port`).
    public var local: Endpoint
    /// Where it comes from (`remote_ip`, `remote_port`).
    public var remote: Endpoint

    /// - Parameters:
    ///   - transport: TCP or UDP.
    ///   - local: where the connection goes.
    ///   - remote: where it comes from; defaults to the loopback address of the same family,
    ///     port 40000.
    public init(_ transport: Socket.Transport, to local: Endpoint, from remote: Endpoint? = nil) {
        self.transport = transport
        self.local = local
        self.remote = remote ?? Endpoint(local.address.isIPv4 ? .loopback4 : .loopback6, 40000)
    }

    /// The 72-byte `struct bpf_sk_lookup` for `BPF_PROG_TEST_RUN` (selected socket and
    /// ingress interface zero, as the kernel requires).
    public func context() throws(SKLookupError) -> [UInt8] {
        guard local.address.isIPv4 == remote.address.isIPv4 else {
            throw .invalidConnection("local \(local) and remote \(remote) must be of one family")
        }
        var context = [UInt8](repeating: 0, count: ContextField.contextSize)
        func put(_ bytes: [UInt8], at field: ContextField) {
            context.replaceSubrange(Int(field.offset)..<Int(field.offset) + bytes.count, with: bytes)
        }
        let family: AddressFamily = local.address.isIPv4 ? .ipv4 : .ipv6
        put(rawBytes(of: UInt32(family.rawValue)), at: .family)
        put(rawBytes(of: transport.ipProtocol), at: .protocol)
        put(remote.address.bytes, at: family == .ipv4 ? .remoteIPv4 : .remoteIPv6)
        put(local.address.bytes, at: family == .ipv4 ? .localIPv4 : .localIPv6)
        put([UInt8(remote.port >> 8), UInt8(remote.port & 0xff)], at: .remotePort)
        put(rawBytes(of: UInt32(local.port)), at: .localPort)
        return context
    }

    /// `PROTOCOL REMOTE → LOCAL`, e.g. `tcp 127.0.0.1:40000 → 127.0.0.1:80`.
    public var description: String { "\(transport) \(remote) → \(local)" }
}

/// What an SK_LOOKUP program decided in a test run.
public struct LookupResult: Sendable, Hashable {
    /// The program's return value as a verdict (`nil` for a value other than 0 or 1).
    public var verdict: Verdict?
    /// The raw return value.
    public var returnValue: UInt32
    /// The cookie of the selected socket (compare `Socket.cookie()`), or `nil` if none.
    public var selectedCookie: UInt64?
    /// Kernel-measured time per run.
    public var nanosecondsPerRun: UInt32
}

extension Program {
    /// Runs this SK_LOOKUP program on a described connection (`BPF_PROG_TEST_RUN`, Linux
    /// 5.10.135+) and returns its verdict and the socket it selected.
    ///
    /// A test run does not check namespaces, and an SO_REUSEPORT group socket can only be
    /// selected with `AssignFlags.noReuseport` here (EOPNOTSUPP otherwise).
    public func testRun(_ connection: Connection, repeat count: UInt32 = 1) throws -> LookupResult {
        let result = try testRun(context: connection.context(), repeat: count)
        let cookie = result.context.count >= 8 ? value(UInt64.self, from: result.context.prefix(8)) : 0
        return LookupResult(
            verdict: Verdict(rawValue: Int32(bitPattern: result.returnValue)), returnValue: result.returnValue,
            selectedCookie: cookie == 0 ? nil : cookie, nanosecondsPerRun: result.nanosecondsPerRun)
    }
}
