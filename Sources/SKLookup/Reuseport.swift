import BPF
import BPFAssembly

/// SK_REUSEPORT programs: they run when a connection or datagram reaches an `SO_REUSEPORT`
/// group, whether the kernel found the group by its own lookup or an SK_LOOKUP program
/// assigned one of its sockets without ``AssignFlags/noReuseport``, and pick the group's
/// socket that receives it.
///
/// ```swift
/// let group = try ReuseportSocketArray.create(count: 2)
/// try group.set(0, serverA)
/// try group.set(1, serverB)
/// let toB = try ReuseportProgram.select(from: group.map, key: 1).load(name: "to_b")
/// try serverA.attachReuseportProgram(toB)   // every socket of the group now goes to B
/// ```
public struct ReuseportProgram: Sendable {
    /// The assembled program.
    public var assembly: Assembly

    /// A program from statements; the context (`struct sk_reuseport_md *`) is in `r1` at entry.
    public init(assembly: Assembly) { self.assembly = assembly }

    /// Picks the socket at `key` of `map` (a REUSEPORT_SOCKARRAY, SOCKMAP or SOCKHASH with
    /// 32-bit keys) with `bpf_sk_select_reuseport`, and passes; when the helper fails (no
    /// socket there, or one of another group) it returns `otherwise`: `.drop` refuses the
    /// connection or datagram, `.pass` lets the kernel pick by hash.
    public static func select(from map: Map, key: UInt32, otherwise: Verdict = .drop) throws -> ReuseportProgram {
        let failed = Label("failed")
        let statements: [Statement] =
            [
                .instruction(.st(.w, .r10, -4, Int32(bitPattern: key))),
                .loadMap(.r2, map),
                .instruction(.mov(.r3, .r10)),
                .instruction(.add(.r3, -4)),
                .instruction(.mov(.r4, 0)),
                .instruction(.call(.skSelectReuseport)),
                .jump(.jne, .r0, 0, to: failed),
            ] + SKLookup.pass() + [.label(failed)] + SKLookup.return(otherwise)
        return ReuseportProgram(assembly: try assemble(statements))
    }

    /// A program that returns `verdict` without picking: `.pass` leaves the choice to the
    /// kernel's hash, `.drop` refuses every connection or datagram that reaches the group.
    public static func always(_ verdict: Verdict) throws -> ReuseportProgram {
        ReuseportProgram(assembly: try assemble(SKLookup.return(verdict)))
    }

    /// Loads the program (`BPF_PROG_TYPE_SK_REUSEPORT`, attach type `BPF_SK_REUSEPORT_SELECT`).
    public func load(name: String = "sk_reuseport", license: String = "GPL") throws(BPFError) -> Program {
        try Program.load(
            assembly, type: .skReuseport, name: name, license: license, expectedAttachType: .skReuseportSelect)
    }
}
