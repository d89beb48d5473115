/// One of the eleven eBPF registers, `r0` to `r10`.
///
/// `r0` holds return values, `r1`–`r5` carry call arguments (and are clobbered by calls),
/// `r6`–`r9` survive calls, and `r10` is the read-only frame pointer.
/// The raw value is the 4-bit register number of the wire format; values above 10 are
/// representable so that decoding can report them, but ``isValid`` is then `false`.
public struct Register: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue & 0x0f }

    /// `r0`: return values, of helpers and of the program.
    public static let r0 = Register(rawValue: 0)
    /// `r1`: the first call argument; holds the context pointer on entry.
    public static let r1 = Register(rawValue: 1)
    /// `r2`: the second call argument.
    public static let r2 = Register(rawValue: 2)
    /// `r3`: the third call argument.
    public static let r3 = Register(rawValue: 3)
    /// `r4`: the fourth call argument.
    public static let r4 = Register(rawValue: 4)
    /// `r5`: the fifth call argument.
    public static let r5 = Register(rawValue: 5)
    /// `r6`: callee-saved.
    public static let r6 = Register(rawValue: 6)
    /// `r7`: callee-saved.
    public static let r7 = Register(rawValue: 7)
    /// `r8`: callee-saved.
    public static let r8 = Register(rawValue: 8)
    /// `r9`: callee-saved.
    public static let r9 = Register(rawValue: 9)
    /// `r10`: the read-only frame pointer.
    public static let r10 = Register(rawValue: 10)
    /// The frame pointer, `r10`.
    public static let fp = r10

    /// All valid registers, `r0`–`r10`.
    public static let all: [Register] = (0...10).map { Register(rawValue: $0) }

    /// Whether this is one of `r0`–`r10`.
    public var isValid: Bool { rawValue <= 10 }

    /// The 64-bit name, `r0`…`r10`.
    public var description: String { "r\(rawValue)" }
    /// The 32-bit subregister name, `w0`…`w10`, as LLVM prints 32-bit operations.
    public var name32: String { "w\(rawValue)" }

    /// Orders registers by number.
    public static func < (lhs: Register, rhs: Register) -> Bool { lhs.rawValue < rhs.rawValue }
}
