import BPF
import BPFAssembly

/// The building blocks of SK_LOOKUP programs: context access, helpers, patterns and returns,
/// named after the guide's `sk-lookup-*` functions. Each returns statements for the
/// `ProgramBuilder` of BPFAssembly (`assemble { … }`) or the array API.
///
/// ```swift
/// let pass = Label("pass")
/// let program = try SKLookupProgram(defaultAction: .pass) {
///     SKLookup.getLocalPort(.r6, into: .r7)
///     SKLookup.checkPort(.r7, .single(8080), goto: pass)
///     SKLookup.drop()
///     pass  // falls through to the default action: every instruction is reachable
/// }
/// ```
public enum SKLookup {
    // MARK: Context access

    /// Saves the context pointer (`r1`) in `context`, as the guide's prologue does.
    public static func prologue(_ context: Register = .r6) -> [Statement] {
        [.instruction(.mov(context, .r1))]
    }

    /// Loads any field at its natural width.
    public static func load(_ field: ContextField, from context: Register, into dst: Register) -> [Statement] {
        [.instruction(.ldx(field.size, dst, context, field.offset))]
    }

    /// `dst = ctx->local_port` (host byte order).
    public static func getLocalPort(_ context: Register, into dst: Register) -> [Statement] {
        load(.localPort, from: context, into: dst)
    }

    /// `dst = ctx->remote_port`: 16 bits in network byte order, as the kernel stores it.
    public static func getRemotePort(_ context: Register, into dst: Register) -> [Statement] {
        load(.remotePort, from: context, into: dst)
    }

    /// `dst = ntohs(ctx->remote_port)`: the remote port in host byte order.
    public static func getRemotePortHostOrder(_ context: Register, into dst: Register) -> [Statement] {
        load(.remotePort, from: context, into: dst) + [.instruction(.be(dst, 16))]
    }

    /// `dst = ctx->protocol` (`IPPROTO_TCP` 6 or `IPPROTO_UDP` 17).
    public static func getProtocol(_ context: Register, into dst: Register) -> [Statement] {
        load(.protocol, from: context, into: dst)
    }

    /// `dst = ctx->family` (`AF_INET` 2 or `AF_INET6` 10).
    public static func getFamily(_ context: Register, into dst: Register) -> [Statement] {
        load(.family, from: context, into: dst)
    }

    /// `dst = ctx->local_ip4` (network byte order; 0 for IPv6 traffic).
    public static func getLocalIPv4(_ context: Register, into dst: Register) -> [Statement] {
        load(.localIPv4, from: context, into: dst)
    }

    /// `dst = ctx->remote_ip4` (network byte order; 0 for IPv6 traffic).
    public static func getRemoteIPv4(_ context: Register, into dst: Register) -> [Statement] {
        load(.remoteIPv4, from: context, into: dst)
    }

    /// `dst = ctx->local_ip6[word]`, one 32-bit word (0…3) of the local IPv6 address.
    public static func getLocalIPv6(_ context: Register, word: Int, into dst: Register) -> [Statement] {
        [.instruction(.ldx(.w, dst, context, ContextField.localIPv6.offset + Int16(4 * word)))]
    }

    /// `dst = ctx->remote_ip6[word]`, one 32-bit word (0…3) of the remote IPv6 address.
    public static func getRemoteIPv6(_ context: Register, word: Int, into dst: Register) -> [Statement] {
        [.instruction(.ldx(.w, dst, context, ContextField.remoteIPv6.offset + Int16(4 * word)))]
    }

    /// Loads all 128 bits of the local IPv6 address into four registers.
    public static func getLocalIPv6(_ context: Register, into words: [Register]) -> [Statement] {
        words.prefix(4).enumerated().flatMap { getLocalIPv6(context, word: $0.offset, into: $0.element) }
    }

    /// Loads all 128 bits of the remote IPv6 address into four registers.
    public static func getRemoteIPv6(_ context: Register, into words: [Register]) -> [Statement] {
        words.prefix(4).enumerated().flatMap { getRemoteIPv6(context, word: $0.offset, into: $0.element) }
    }

    /// `dst = ctx->ingress_ifindex` (Linux 5.17+).
    public static func getIngressInterface(_ context: Register, into dst: Register) -> [Statement] {
        load(.ingressInterface, from: context, into: dst)
    }

    /// `dst = ctx->sk`: the socket an earlier program selected, or NULL.
    public static func getSelectedSocket(_ context: Register, into dst: Register) -> [Statement] {
        load(.socket, from: context, into: dst)
    }

    // MARK: Helpers

    /// `r0 = bpf_sk_assign(ctx, socket, flags)`: selects `socket` (or clears the selection
    /// when `socket` holds NULL). Returns 0 or a negative errno; see ``AssignError``.
    public static func skAssign(context: Register, socket: Register, flags: AssignFlags = []) -> [Statement] {
        var statements: [Statement] = []
        if context != .r1 { statements.append(.instruction(.mov(.r1, context))) }
        if socket != .r2 { statements.append(.instruction(.mov(.r2, socket))) }
        statements.append(.instruction(.mov(.r3, Int32(flags.rawValue))))
        statements.append(.instruction(.call(.skAssign)))
        return statements
    }

    /// `bpf_sk_release(socket)`: drops the reference a socket lookup returned.
    public static func skRelease(_ socket: Register) -> [Statement] {
        (socket == .r1 ? [] : [.instruction(.mov(.r1, socket))]) + [.instruction(.call(.skRelease))]
    }

    /// Looks up `key` (a 32-bit value) in a SOCKMAP or SOCKHASH: `r0` is the socket with a
    /// reference to release, or NULL (then execution continues at `missing`).
    ///
    /// The key is written to the stack at `stackOffset` (default r10 − 4).
    public static func lookupSocket(
        in map: Map, key: Int32, missing: Label, stackOffset: Int16 = -4
    ) -> [Statement] {
        [
            .instruction(.st(.w, .r10, stackOffset, key)),
            .loadMap(.r1, map),
            .instruction(.mov(.r2, .r10)),
            .instruction(.add(.r2, Int32(stackOffset))),
            .instruction(.call(.mapLookupElem)),
            .jump(.jeq, .r0, 0, to: missing),
        ]
    }

    /// As ``lookupSocket(in:key:missing:stackOffset:)`` with the 32-bit key in a register.
    public static func lookupSocket(
        in map: Map, keyIn key: Register, missing: Label, stackOffset: Int16 = -4
    ) -> [Statement] {
        [
            .instruction(.stx(.w, .r10, key, stackOffset)),
            .loadMap(.r1, map),
            .instruction(.mov(.r2, .r10)),
            .instruction(.add(.r2, Int32(stackOffset))),
            .instruction(.call(.mapLookupElem)),
            .jump(.jeq, .r0, 0, to: missing),
        ]
    }

    // MARK: Patterns

    /// The ports a pattern matches.
    public enum PortMatch: Sendable, Hashable {
        /// One port.
        case single(UInt16)
        /// Any of these ports (one comparison each).
        case set([UInt16])
        /// An inclusive range of ports (two comparisons).
        case range(ClosedRange<UInt16>)
    }

    /// Branches to `label` when the port in `register` (host order, e.g. from
    /// ``getLocalPort(_:into:)``) matches; falls through otherwise.
    public static func checkPort(_ register: Register, _ ports: PortMatch, goto label: Label) -> [Statement] {
        switch ports {
        case .single(let port):
            return [.jump(.jeq, register, Int32(port), to: label)]
        case .set(let ports):
            return ports.map { .jump(.jeq, register, Int32($0), to: label) }
        case .range(let range):
            if range.lowerBound == range.upperBound {
                return checkPort(register, .single(range.lowerBound), goto: label)
            }
            return [
                .instruction(.jump(.jlt, register, Int32(range.lowerBound), offset: 1)),
                .jump(.jle, register, Int32(range.upperBound), to: label),
            ]
        }
    }

    /// Loads `ctx->protocol` into `scratch` and branches to `label` if it is `transport`.
    public static func checkProtocol(
        _ context: Register, _ transport: Socket.Transport, scratch: Register, goto label: Label
    ) -> [Statement] {
        getProtocol(context, into: scratch) + [.jump(.jeq, scratch, Int32(transport.ipProtocol), to: label)]
    }

    /// The guide's form: loads the protocol and skips `skip` instructions when it matches.
    public static func checkProtocol(
        _ context: Register, _ transport: Socket.Transport, scratch: Register, skip: Int16
    ) -> [Statement] {
        getProtocol(context, into: scratch) + [
            .instruction(.jump(.jeq, scratch, Int32(transport.ipProtocol), offset: skip))
        ]
    }

    /// Loads `ctx->family` into `scratch` and branches to `label` if it is `family`.
    public static func checkFamily(
        _ context: Register, _ family: AddressFamily, scratch: Register, goto label: Label
    ) -> [Statement] {
        getFamily(context, into: scratch) + [.jump(.jeq, scratch, family.rawValue, to: label)]
    }

    /// Which address of the connection a check reads.
    public enum Side: Sendable {
        /// The address the connection is to (the server side).
        case local
        /// The address the connection comes from.
        case remote
    }

    /// Branches to `label` when the local or remote address lies in `prefix` (IPv4 or IPv6;
    /// the family is checked too, so an IPv4 prefix never matches IPv6 traffic). Uses
    /// `scratch`; falls through otherwise.
    public static func checkAddress(
        _ context: Register, _ side: Side, in prefix: IPPrefix, scratch: Register, goto label: Label
    ) -> [Statement] {
        let family: AddressFamily = prefix.address.isIPv4 ? .ipv4 : .ipv6
        let base =
            prefix.address.isIPv4
            ? (side == .local ? ContextField.localIPv4 : .remoteIPv4).offset
            : (side == .local ? ContextField.localIPv6 : .remoteIPv6).offset
        // The words to compare: (offset, mask, expected), as a 32-bit load sees network-order bytes.
        var words: [(Int16, Int32, Int32)] = []
        for word in 0..<(prefix.address.bytes.count / 4) {
            let bits = max(0, min(32, prefix.length - word * 32))
            if bits == 0 { break }
            var maskBytes = [UInt8](repeating: 0, count: 4)
            for i in 0..<4 {
                let keep = max(0, min(8, bits - i * 8))
                maskBytes[i] = keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - keep))
            }
            let addressBytes = Array(prefix.address.bytes[(word * 4)..<(word * 4 + 4)])
            let mask = Int32(bitPattern: value(UInt32.self, from: maskBytes))
            let expected = Int32(bitPattern: value(UInt32.self, from: addressBytes))
            words.append((base + Int16(4 * word), mask, expected))
        }
        // Each word takes 3 instructions (load, mask, compare-and-skip); the last jumps to label.
        var statements: [Statement] = getFamily(context, into: scratch)
        let remaining = words.count * 3 + 1  // instructions after the family check
        statements.append(.instruction(.jump(.jne, scratch, family.rawValue, offset: Int16(remaining))))
        for (index, (offset, mask, expected)) in words.enumerated() {
            statements.append(.instruction(.ldx(.w, scratch, context, offset)))
            statements.append(.instruction(.and32(scratch, mask)))
            let after = (words.count - index - 1) * 3 + 1
            statements.append(.instruction(.jump32(.jne, scratch, expected, offset: Int16(after))))
        }
        statements.append(.ja(to: label))
        return statements
    }

    /// Assigns a socket from a SOCKMAP or SOCKHASH and passes, done right: look the socket
    /// up, assign it, release the reference on every path, and keep the assign result.
    ///
    /// - On success the program returns `SK_PASS`.
    /// - If the slot is empty, execution continues at `missing`.
    /// - If `bpf_sk_assign` fails, its (negative) result is in `errorRegister` and execution
    ///   continues at `failed` (which may be the same label as `missing`).
    ///
    /// Clobbers `r1`–`r5`, `r0`, `errorRegister` and `socketRegister` (callee-saved, default `r9`).
    public static func assignAndPass(
        context: Register, from map: Map, key: Int32, flags: AssignFlags = [], missing: Label, failed: Label,
        errorRegister: Register = .r8, socketRegister: Register = .r9
    ) -> [Statement] {
        lookupSocket(in: map, key: key, missing: missing)
            + assignLookedUp(
                context: context, flags: flags, failed: failed, errorRegister: errorRegister,
                socketRegister: socketRegister)
    }

    /// The second half of ``assignAndPass(context:from:key:flags:missing:failed:errorRegister:socketRegister:)``,
    /// for a socket already in `r0` from a lookup.
    public static func assignLookedUp(
        context: Register, flags: AssignFlags = [], failed: Label, errorRegister: Register = .r8,
        socketRegister: Register = .r9
    ) -> [Statement] {
        [.instruction(.mov(socketRegister, .r0))]
            + skAssign(context: context, socket: socketRegister, flags: flags)
            + [.instruction(.mov(errorRegister, .r0))]
            + skRelease(socketRegister)
            + [.jump(.jne, errorRegister, 0, to: failed)]
            + pass()
    }

    // MARK: Returns

    /// `return SK_PASS`.
    public static func pass() -> [Statement] { [.instruction(.mov(.r0, 1)), .instruction(.exit())] }
    /// `return SK_DROP`.
    public static func drop() -> [Statement] { [.instruction(.mov(.r0, 0)), .instruction(.exit())] }
    /// `return verdict`.
    public static func `return`(_ verdict: Verdict) -> [Statement] { verdict == .pass ? pass() : drop() }
}

/// The flags of `bpf_sk_assign`.
public struct AssignFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `BPF_SK_LOOKUP_F_REPLACE`: replace a socket an earlier program selected (otherwise EEXIST).
    public static let replace = AssignFlags(rawValue: 1)
    /// `BPF_SK_LOOKUP_F_NO_REUSEPORT`: use exactly this socket, skipping the SO_REUSEPORT
    /// group selection.
    public static let noReuseport = AssignFlags(rawValue: 2)
}
