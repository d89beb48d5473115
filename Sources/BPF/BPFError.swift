import CBPF
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A failed kernel operation: what was being done, the errno, and what to do about it.
///
/// A verifier rejection also carries the verifier's log, its decisive line and the failing
/// instruction (with the label it falls under, when the program was built with labels).
public struct BPFError: Error, Sendable, CustomStringConvertible {
    /// A coarse classification of the failure, for callers that branch on it.
    public enum Kind: Sendable, Hashable {
        /// EPERM/EACCES outside the verifier: missing privileges.
        case permissionDenied
        /// The verifier refused the program; see ``verifierLog``.
        case verifierRejected
        /// The kernel does not know the request (too old, or built without the feature).
        case notSupported
        /// EINVAL: the kernel rejected the attributes.
        case invalidArgument
        /// ENOENT: no such element, pin or object.
        case notFound
        /// EEXIST: the element or pin is already there.
        case alreadyExists
        /// E2BIG/ENOSPC/ENOMEM: out of room.
        case noSpace
        /// EBADF: a descriptor of the wrong kind.
        case badDescriptor
        /// EBUSY.
        case busy
        /// Any other errno.
        case other
    }

    /// What was being done, e.g. `BPF_PROG_LOAD of sk_lookup program "dispatcher"`.
    public var operation: String
    /// The errno the kernel answered with.
    public var code: Int32
    /// The coarse classification of ``code``, derived from the errno unless given.
    public var kind: Kind
    /// What to do about it, when there is something to say.
    public var hint: String?
    /// The verifier's whole log, for a verifier rejection.
    public var verifierLog: String?
    /// The verifier's decisive line (the reason it gave), for a verifier rejection.
    public var decisiveLine: String?
    /// The instruction the verifier stopped at, in 8-byte slots as the kernel counts.
    public var failingInstruction: Int?
    /// Where ``failingInstruction`` is in the source: `label` or `label+N`.
    public var failingLabel: String?
    /// For a program compiled with line info (`clang -g`): the C source line the verifier
    /// stopped at, as `file.c:LINE: text`.
    public var sourceLine: String?

    /// An error for `operation` with errno `code`; `kind` and `hint` default to ones derived from the errno.
    public init(operation: String, code: Int32, kind: Kind? = nil, hint: String? = nil) {
        self.operation = operation
        self.code = code
        self.kind = kind ?? Self.classify(code)
        self.hint = hint ?? Self.defaultHint(code)
    }

    /// ``code`` as swift-system's `Errno`, to compare with `.permissionDenied`, `.wouldBlock`
    /// and the rest as swift-system and SwiftNIO code does.
    public var errno: Errno { Errno(rawValue: code) }

    /// The symbolic errno name, e.g. `EPERM`.
    public var codeName: String { errnoName(code) }

    /// `OPERATION failed: STRERROR (ENAME)`, or for a verifier rejection
    /// `OPERATION: the verifier rejected the program at instruction N (LABEL) [FILE:LINE: SOURCE]: LINE`; then `; HINT` if any.
    public var description: String {
        var text = "\(operation) failed: \(errnoDescription(code)) (\(codeName))"
        if kind == .verifierRejected {
            text = "\(operation): the verifier rejected the program"
            if let instruction = failingInstruction {
                text += " at instruction \(instruction)"
                if let label = failingLabel { text += " (\(label))" }
            }
            if let sourceLine { text += " [\(sourceLine)]" }
            if let line = decisiveLine { text += ": \(line)" }
        }
        if let hint { text += "; \(hint)" }
        return text
    }

    static func classify(_ code: Int32) -> Kind {
        switch code {
        case EPERM, EACCES: .permissionDenied
        case EINVAL: .invalidArgument
        case ENOENT: .notFound
        case EEXIST: .alreadyExists
        case E2BIG, ENOSPC, ENOMEM: .noSpace
        case EBADF: .badDescriptor
        case EBUSY: .busy
        case EOPNOTSUPP, ENOSYS, kernelNotSupported: .notSupported
        default: .other
        }
    }

    static func defaultHint(_ code: Int32) -> String? {
        switch code {
        case EPERM, EACCES:
            "run as root, or with CAP_BPF and CAP_NET_ADMIN (CAP_SYS_ADMIN before Linux 5.8); on kernels before 5.11"
                + " also raise RLIMIT_MEMLOCK (ulimit -l unlimited)"
        case ENOSYS:
            "this kernel has no bpf(2) system call (CONFIG_BPF_SYSCALL is off)"
        case E2BIG:
            "the map is full or the request is larger than the kernel accepts"
        case ENOMEM:
            "the kernel could not allocate memory; on kernels before 5.11 raise RLIMIT_MEMLOCK (ulimit -l unlimited)"
        default: nil
        }
    }
}

/// `ENOTSUPP` (524) is kernel-internal but does reach user space from some BPF paths.
let kernelNotSupported: Int32 = 524

/// The symbolic name of an errno value, e.g. `EPERM`.
public func errnoName(_ code: Int32) -> String {
    if code == kernelNotSupported { return "ENOTSUPP" }
    var buffer = [CChar](repeating: 0, count: 32)
    guard cbpf_errno_name(code, &buffer, buffer.count) == 0 else { return "errno \(code)" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The C library's description of an errno value.
public func errnoDescription(_ code: Int32) -> String {
    if code == kernelNotSupported { return "Operation not supported" }
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

/// Which failures of a system call are tried again.
enum RetryPolicy {
    /// `EINTR` (a signal arrived before anything happened): every call where that is safe.
    case interrupted
    /// `EINTR`, and `EAGAIN` up to 5 more times: `BPF_PROG_LOAD`, where the kernel answers
    /// `EAGAIN` for "try again" (as cilium/ebpf and libbpf retry it). Elsewhere `EAGAIN` means
    /// "would block" or "timed out" and is reported at once.
    case programLoad
    /// Nothing: `connect`, which Linux continues in the background after `EINTR` (a retry
    /// would get `EALREADY`).
    case never
}

/// The one path into the kernel: runs a shim call that returns a result or `-errno`, retries
/// as `retry` says, and turns a failure into a ``BPFError``.
@discardableResult
func kernelCall(
    _ operation: @autoclosure () -> String, hints: @autoclosure () -> [Int32: String] = [:],
    retry: RetryPolicy = .interrupted, _ call: () -> Int
) throws(BPFError) -> Int {
    var againAttempts = 0
    while true {
        let result = call()
        if result >= 0 { return result }
        let code = Int32(truncatingIfNeeded: -result)
        if code == EINTR && retry != .never { continue }
        if code == EAGAIN && retry == .programLoad && againAttempts < 5 {
            againAttempts += 1
            continue
        }
        throw BPFError(operation: operation(), code: code, hint: hints()[code])
    }
}
