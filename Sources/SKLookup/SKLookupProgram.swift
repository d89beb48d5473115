import BPF
import BPFAssembly
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// An SK_LOOKUP program: a prologue that keeps the context, a body, and a default action,
/// as the guide's `build-sk-lookup-program` makes it.
///
/// ```swift
/// let https = try SKLookupProgram(contextRegister: .r6, defaultAction: .drop) {
///     SKLookup.getLocalPort(.r6, into: .r7)
///     Instruction.jump(.jne, .r7, 443, offset: 2)
///     Instruction.mov(.r0, 1)
///     Instruction.exit()
/// }
/// let program = try https.load(name: "https_only")
/// let link = try program.attach(to: namespace)   // keep `link`: releasing it detaches
/// ```
public struct SKLookupProgram: Sendable {
    /// The register that holds the context after the prologue.
    public var contextRegister: Register
    /// What the program returns when the body falls through.
    public var defaultAction: Verdict
    /// The assembled program.
    public var assembly: Assembly

    /// Builds prologue + body + default action.
    public init(
        contextRegister: Register = .r6, defaultAction: Verdict = .pass,
        @ProgramBuilder body: () throws -> [Statement]
    ) throws {
        try self.init(contextRegister: contextRegister, defaultAction: defaultAction, statements: body())
    }

    /// Builds prologue + statements + default action (array API).
    public init(contextRegister: Register = .r6, defaultAction: Verdict = .pass, statements: [Statement]) throws {
        self.contextRegister = contextRegister
        self.defaultAction = defaultAction
        self.assembly = try assemble(
            SKLookup.prologue(contextRegister) + statements + SKLookup.return(defaultAction))
        try Self.validate(assembly)
    }

    /// The helpers the kernel does not offer to SK_LOOKUP programs, with the reason.
    public static let unavailableHelpers: [HelperFunction: String] = [
        .skLookupTcp:
            "bpf_sk_lookup_tcp (84) is not offered to SK_LOOKUP programs: the hook runs inside the kernel's own socket"
            + " lookup; take the socket from a SOCKMAP or SOCKHASH (SKLookup.lookupSocket) instead",
        .skLookupUdp:
            "bpf_sk_lookup_udp (85) is not offered to SK_LOOKUP programs: the hook runs inside the kernel's own socket"
            + " lookup; take the socket from a SOCKMAP or SOCKHASH (SKLookup.lookupSocket) instead",
        .skcLookupTcp:
            "bpf_skc_lookup_tcp (99) is not offered to SK_LOOKUP programs; take the socket from a SOCKMAP or SOCKHASH",
    ]

    /// Checks, before the kernel does, that the program calls no helper the kernel refuses to
    /// SK_LOOKUP programs (the guide lists `sk_lookup_tcp`/`sk_lookup_udp`; the verifier
    /// rejects them).
    public static func validate(_ assembly: Assembly) throws(SKLookupError) {
        for (index, instruction) in assembly.instructions.enumerated()
        where instruction.opcode == 0x85 && instruction.callKind == .helper {
            if let reason = unavailableHelpers[HelperFunction(rawValue: instruction.immediate)] {
                throw SKLookupError.unavailableHelper(instructionIndex: index, reason: reason)
            }
        }
    }

    /// Loads the program (`BPF_PROG_TYPE_SK_LOOKUP`, expected attach type `BPF_SK_LOOKUP`).
    public func load(name: String = "sk_lookup", license: String = "GPL", logger: Logger? = nil) throws(BPFError)
        -> Program
    {
        try Program.load(assembly, type: .skLookup, name: name, license: license, logger: logger)
    }
}

/// Loads an assembled SK_LOOKUP program after checking its helpers.
public func loadSKLookup(_ assembly: Assembly, name: String = "sk_lookup", license: String = "GPL") throws -> Program {
    try SKLookupProgram.validate(assembly)
    return try Program.load(assembly, type: .skLookup, name: name, license: license)
}

extension Program {
    /// Attaches this SK_LOOKUP program to a network namespace through a BPF link.
    /// **Keep the link**: releasing it detaches the program; pin it to outlive the process.
    public func attach(to namespace: NetworkNamespace) throws(BPFError) -> Link {
        try Link.attach(self, to: namespace)
    }

    /// Attaches to the namespace at a path, such as `/proc/1234/ns/net` or `/run/netns/NAME`.
    public func attach(namespacePath path: String) throws(BPFError) -> Link {
        try Link.attach(self, to: NetworkNamespace.open(path: path))
    }

    /// Attaches to the calling thread's own namespace. On a real machine this steers its
    /// live traffic: prefer a namespace made for the purpose.
    public func attachToCurrentNamespace() throws(BPFError) -> Link {
        try Link.attach(self, to: NetworkNamespace.current())
    }
}

/// Problems specific to SK_LOOKUP programs, with the guide's troubleshooting advice.
public enum SKLookupError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The program calls a helper the kernel does not offer to SK_LOOKUP programs.
    case unavailableHelper(instructionIndex: Int, reason: String)
    /// The described connection cannot be put in a test-run context.
    case invalidConnection(String)

    /// `instruction N: REASON`, or `cannot describe the connection: REASON`.
    public var description: String {
        switch self {
        case .unavailableHelper(let index, let reason): "instruction \(index): \(reason)"
        case .invalidConnection(let reason): "cannot describe the connection: \(reason)"
        }
    }
}

/// The errors `bpf_sk_assign` returns, each with what it means for the socket.
public enum AssignError: Int32, Error, Sendable, CaseIterable, CustomStringConvertible {
    /// Unknown flags.
    case invalidFlags = 22  // EINVAL
    /// A TCP socket that is not listening, or a UDP socket that is connected.
    case socketNotSupported = 94  // ESOCKTNOSUPPORT
    /// The socket's protocol differs from the connection's (a UDP socket for TCP traffic).
    case protocolMismatch = 91  // EPROTOTYPE
    /// The family differs: an IPv4 socket for IPv6 traffic, or a v6-only socket for IPv4.
    case familyMismatch = 97  // EAFNOSUPPORT
    /// A socket is already selected and `BPF_SK_LOOKUP_F_REPLACE` was not given.
    case alreadySelected = 17  // EEXIST
    /// In a test run: the socket is in an SO_REUSEPORT group; pass `.noReuseport`.
    case reuseportInTestRun = 95  // EOPNOTSUPP

    /// Interprets the helper's return value (`0` is success, `nil` here).
    public init?(returnValue: Int64) {
        guard returnValue < 0, let error = AssignError(rawValue: Int32(-returnValue)) else { return nil }
        self = error
    }

    /// `bpf_sk_assign: ` followed by what went wrong and the errno name, e.g. `… (EEXIST)`.
    public var description: String {
        switch self {
        case .invalidFlags: "bpf_sk_assign: unknown flags (EINVAL)"
        case .socketNotSupported:
            "bpf_sk_assign: the socket must be a listening TCP socket or an unconnected UDP socket (ESOCKTNOSUPPORT)"
        case .protocolMismatch: "bpf_sk_assign: the socket's protocol differs from the connection's (EPROTOTYPE)"
        case .familyMismatch:
            "bpf_sk_assign: the socket's family does not fit the connection: IPv4 socket for IPv6 traffic, or a"
                + " v6-only socket for IPv4 (EAFNOSUPPORT)"
        case .alreadySelected:
            "bpf_sk_assign: an earlier program already selected a socket; pass .replace to override (EEXIST)"
        case .reuseportInTestRun:
            "bpf_sk_assign: a test run cannot pick from an SO_REUSEPORT group; pass .noReuseport (EOPNOTSUPP)"
        }
    }
}

/// The guide's troubleshooting, as advice for a failed load or attach.
public func troubleshoot(_ error: BPFError) -> String {
    switch error.code {
    case EACCES where error.kind != .verifierRejected, EPERM:
        "Permission denied: run as root, or with CAP_NET_ADMIN and CAP_BPF (the guide's first issue). The guide"
            + " also files \"Operation not permitted\" under kernels older than 5.9; an old kernel actually answers"
            + " EINVAL, see below."
    case EINVAL where error.kind != .verifierRejected:
        "The kernel refused SK_LOOKUP: it needs Linux 5.9 or later (uname -r), with the program's expected attach"
            + " type BPF_SK_LOOKUP, which this library sets."
    default:
        error.description
    }
}
