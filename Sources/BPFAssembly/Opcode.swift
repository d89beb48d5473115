/// The instruction class, the low three bits of the opcode.
public struct InstructionClass: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue & 0x07 }

    /// Legacy and wide loads (`ld_imm64`, `ld_abs`, `ld_ind`).
    public static let ld = InstructionClass(rawValue: 0x00)
    /// Loads from memory into a register.
    public static let ldx = InstructionClass(rawValue: 0x01)
    /// Stores of an immediate.
    public static let st = InstructionClass(rawValue: 0x02)
    /// Stores of a register, and atomics.
    public static let stx = InstructionClass(rawValue: 0x03)
    /// 32-bit arithmetic.
    public static let alu = InstructionClass(rawValue: 0x04)
    /// 64-bit jumps, calls and exit.
    public static let jmp = InstructionClass(rawValue: 0x05)
    /// 32-bit jumps (and `gotol`).
    public static let jmp32 = InstructionClass(rawValue: 0x06)
    /// 64-bit arithmetic.
    public static let alu64 = InstructionClass(rawValue: 0x07)
}

/// The width of a memory access (bits 3–4 of a load/store opcode).
public enum AccessSize: UInt8, Sendable, CaseIterable {
    /// 4 bytes (`u32`).
    case w = 0x00
    /// 2 bytes (`u16`).
    case h = 0x08
    /// 1 byte (`u8`).
    case b = 0x10
    /// 8 bytes (`u64`).
    case dw = 0x18

    /// The width in bytes.
    public var byteCount: Int {
        switch self {
        case .b: 1
        case .h: 2
        case .w: 4
        case .dw: 8
        }
    }

    /// The size for a width in bytes (1, 2, 4 or 8).
    public init?(byteCount: Int) {
        switch byteCount {
        case 1: self = .b
        case 2: self = .h
        case 4: self = .w
        case 8: self = .dw
        default: return nil
        }
    }
}

/// The addressing mode of a load/store (bits 5–7 of the opcode).
public enum AccessMode: UInt8, Sendable {
    /// `BPF_IMM`: an immediate; used by the 16-byte `ld_imm64`.
    case imm = 0x00
    /// `BPF_ABS`: legacy packet access at a constant offset (`ld_abs`).
    case abs = 0x20
    /// `BPF_IND`: legacy packet access at a register plus an offset (`ld_ind`).
    case ind = 0x40
    /// `BPF_MEM`: a plain load or store at a register plus an offset.
    case mem = 0x60
    /// `BPF_MEMSX`: a sign-extending load.
    case memsx = 0x80
    /// `BPF_ATOMIC`: an atomic operation (`STX` only); see ``AtomicOperation``.
    case atomic = 0xc0
}

/// An arithmetic operation (bits 4–7 of an ALU or ALU64 opcode).
public enum ALUOperation: UInt8, Sendable, CaseIterable {
    /// `BPF_ADD`: `dst += src`.
    case add = 0x00
    /// `BPF_SUB`: `dst -= src`.
    case sub = 0x10
    /// `BPF_MUL`: `dst *= src`.
    case mul = 0x20
    /// `BPF_DIV`: `dst /= src`, unsigned (signed with offset 1).
    case div = 0x30
    /// `BPF_OR`: `dst |= src`.
    case or = 0x40
    /// `BPF_AND`: `dst &= src`.
    case and = 0x50
    /// `BPF_LSH`: `dst <<= src`.
    case lsh = 0x60
    /// `BPF_RSH`: `dst >>= src`, logical.
    case rsh = 0x70
    /// `BPF_NEG`: `dst = -dst`.
    case neg = 0x80
    /// `BPF_MOD`: `dst %= src`, unsigned (signed with offset 1).
    case mod = 0x90
    /// `BPF_XOR`: `dst ^= src`.
    case xor = 0xa0
    /// `BPF_MOV`: `dst = src` (sign-extending with offset 8, 16 or 32).
    case mov = 0xb0
    /// `BPF_ARSH`: `dst s>>= src`, arithmetic.
    case arsh = 0xc0
    /// Byte swap; see ``Instruction/be(_:_:)``, ``Instruction/le(_:_:)``, ``Instruction/bswap(_:_:)``.
    case end = 0xd0
}

/// A jump condition or jump-class operation (bits 4–7 of a JMP or JMP32 opcode).
public enum JumpOperation: UInt8, Sendable, CaseIterable {
    /// `BPF_JA`: `goto +off` (JMP32: `gotol +imm`).
    case ja = 0x00
    /// `BPF_JEQ`: jump if `dst == src`.
    case jeq = 0x10
    /// `BPF_JGT`: jump if `dst > src`, unsigned.
    case jgt = 0x20
    /// `BPF_JGE`: jump if `dst >= src`, unsigned.
    case jge = 0x30
    /// `BPF_JSET`: jump if `dst & src != 0`.
    case jset = 0x40
    /// `BPF_JNE`: jump if `dst != src`.
    case jne = 0x50
    /// `BPF_JSGT`: jump if `dst > src`, signed.
    case jsgt = 0x60
    /// `BPF_JSGE`: jump if `dst >= src`, signed.
    case jsge = 0x70
    /// `BPF_CALL`: call a helper, a BPF function or a kfunc; see ``CallKind``.
    case call = 0x80
    /// `BPF_EXIT`: return `r0`.
    case exit = 0x90
    /// `BPF_JLT`: jump if `dst < src`, unsigned.
    case jlt = 0xa0
    /// `BPF_JLE`: jump if `dst <= src`, unsigned.
    case jle = 0xb0
    /// `BPF_JSLT`: jump if `dst < src`, signed.
    case jslt = 0xc0
    /// `BPF_JSLE`: jump if `dst <= src`, signed.
    case jsle = 0xd0
    /// `BPF_JCOND`: with source 0, `may_goto +off` (a bounded-loop escape the verifier may take).
    case jcond = 0xe0

    /// The conditional jumps, those that compare two operands.
    public static let conditions: [JumpOperation] = [
        .jeq, .jgt, .jge, .jset, .jne, .jsgt, .jsge, .jlt, .jle, .jslt, .jsle,
    ]

    /// Whether this compares two operands.
    public var isCondition: Bool { Self.conditions.contains(self) }

    /// The condition that holds exactly when this one does not (`jset` has none).
    public var inverted: JumpOperation? {
        switch self {
        case .jeq: .jne
        case .jne: .jeq
        case .jgt: .jle
        case .jle: .jgt
        case .jge: .jlt
        case .jlt: .jge
        case .jsgt: .jsle
        case .jsle: .jsgt
        case .jsge: .jslt
        case .jslt: .jsge
        default: nil
        }
    }
}

/// The operation of an atomic store (the immediate of a `STX | ATOMIC` instruction).
public struct AtomicOperation: RawRepresentable, Hashable, Sendable, CaseIterable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The flag that makes an operation return the old value in the source register.
    public static let fetchFlag: Int32 = 0x01

    /// `BPF_ADD`: `*(size *)(dst + off) += src`.
    public static let add = AtomicOperation(rawValue: 0x00)
    /// `BPF_OR`: `*(size *)(dst + off) |= src`.
    public static let or = AtomicOperation(rawValue: 0x40)
    /// `BPF_AND`: `*(size *)(dst + off) &= src`.
    public static let and = AtomicOperation(rawValue: 0x50)
    /// `BPF_XOR`: `*(size *)(dst + off) ^= src`.
    public static let xor = AtomicOperation(rawValue: 0xa0)
    /// `BPF_ADD | BPF_FETCH`: an atomic add; the source register gets the old value.
    public static let fetchAdd = AtomicOperation(rawValue: 0x01)
    /// `BPF_OR | BPF_FETCH`: an atomic or; the source register gets the old value.
    public static let fetchOr = AtomicOperation(rawValue: 0x41)
    /// `BPF_AND | BPF_FETCH`: an atomic and; the source register gets the old value.
    public static let fetchAnd = AtomicOperation(rawValue: 0x51)
    /// `BPF_XOR | BPF_FETCH`: an atomic xor; the source register gets the old value.
    public static let fetchXor = AtomicOperation(rawValue: 0xa1)
    /// Exchange: the source register gets the old value, memory the source.
    public static let xchg = AtomicOperation(rawValue: 0xe1)
    /// Compare and exchange: if memory equals `r0`, store the source; `r0` gets the old value.
    public static let cmpxchg = AtomicOperation(rawValue: 0xf1)

    /// `dst = load_acquire((size *)(src + off))`: a load with acquire ordering; any size.
    /// Note the roles: `dst` receives the value and `src` is the base address.
    public static let loadAcquire = AtomicOperation(rawValue: 0x100)
    /// `store_release((size *)(dst + off), src)`: a store with release ordering; any size.
    public static let storeRelease = AtomicOperation(rawValue: 0x110)

    /// Every defined operation.
    public static let allCases: [AtomicOperation] = [
        .add, .or, .and, .xor, .fetchAdd, .fetchOr, .fetchAnd, .fetchXor, .xchg, .cmpxchg,
        .loadAcquire, .storeRelease,
    ]

    /// Whether the old value is written back to the source register (or `r0` for cmpxchg).
    public var fetches: Bool { rawValue & Self.fetchFlag != 0 }
}

/// The meaning of the source register field of a 16-byte `ld_imm64`.
public struct LoadImm64Source: RawRepresentable, Hashable, Sendable, CaseIterable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// A plain 64-bit constant.
    public static let constant = LoadImm64Source(rawValue: 0)
    /// `BPF_PSEUDO_MAP_FD`: the immediate is a map fd; the register gets the map.
    public static let mapFD = LoadImm64Source(rawValue: 1)
    /// `BPF_PSEUDO_MAP_VALUE`: map fd in the first immediate, value offset in the second.
    public static let mapValue = LoadImm64Source(rawValue: 2)
    /// `BPF_PSEUDO_BTF_ID`: a kernel variable by BTF id.
    public static let btfID = LoadImm64Source(rawValue: 3)
    /// `BPF_PSEUDO_FUNC`: the address of a BPF function, pc-relative.
    public static let function = LoadImm64Source(rawValue: 4)
    /// `BPF_PSEUDO_MAP_IDX`: a map by index into the load's fd array.
    public static let mapIndex = LoadImm64Source(rawValue: 5)
    /// `BPF_PSEUDO_MAP_IDX_VALUE`: a map value by index into the load's fd array.
    public static let mapIndexValue = LoadImm64Source(rawValue: 6)

    /// Every defined source, `constant` through `mapIndexValue` (0…6).
    public static let allCases: [LoadImm64Source] = (0...6).map { LoadImm64Source(rawValue: $0) }
}

/// The meaning of the source register field of a `call`.
public struct CallKind: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// A kernel helper by its static id.
    public static let helper = CallKind(rawValue: 0)
    /// `BPF_PSEUDO_CALL`: a BPF-to-BPF call; the immediate is target − pc − 1.
    public static let local = CallKind(rawValue: 1)
    /// `BPF_PSEUDO_KFUNC_CALL`: a kernel function by BTF id.
    public static let kfunc = CallKind(rawValue: 2)
}
