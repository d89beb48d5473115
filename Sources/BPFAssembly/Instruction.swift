/// One eBPF instruction in the kernel's wire format (RFC 9669).
///
/// An instruction is 8 bytes: an opcode, a destination and a source register (4 bits each), a
/// signed 16-bit offset and a signed 32-bit immediate. The one exception, `ld_imm64`
/// (opcode `0x18`), takes two 8-byte slots; its second slot only carries
/// ``nextImmediate``, the upper half of the constant. A value of this type is always one
/// instruction, whatever its width; ``slotCount`` says how many slots it takes.
///
/// Build instructions with the static factories, which are named after the kernel's own
/// macros and LLVM's mnemonics:
///
/// ```swift
/// let insns: [Instruction] = [
///     .mov(.r6, .r1),                  // r6 = r1
///     .ldx(.w, .r7, .r6, 60),          // r7 = *(u32 *)(r6 + 60)
///     .jump(.jeq, .r7, 8080, offset: 2),
///     .mov(.r0, 0),
///     .exit(),
///     .mov(.r0, 1),
///     .exit(),
/// ]
/// ```
public struct Instruction: Hashable, Sendable {
    /// The opcode byte: class, and operation/size/mode bits.
    public var opcode: UInt8
    /// The destination register field.
    public var dst: Register
    /// The source register field (for `ld_imm64` and `call`, a pseudo-source kind).
    public var src: Register
    /// The signed 16-bit offset field.
    public var offset: Int16
    /// The signed 32-bit immediate (the lower half of an `ld_imm64` constant).
    public var immediate: Int32
    /// The immediate of an `ld_imm64`'s second slot; always 0 for other instructions.
    public var nextImmediate: Int32

    /// Makes an instruction from its raw fields.
    public init(
        opcode: UInt8, dst: Register = .r0, src: Register = .r0, offset: Int16 = 0,
        immediate: Int32 = 0, nextImmediate: Int32 = 0
    ) {
        self.opcode = opcode
        self.dst = dst
        self.src = src
        self.offset = offset
        self.immediate = immediate
        self.nextImmediate = nextImmediate
    }

    /// The opcode of `ld_imm64` (`BPF_LD | BPF_DW | BPF_IMM`).
    public static let loadImm64Opcode: UInt8 = 0x18

    /// The instruction class (the low three opcode bits).
    public var instructionClass: InstructionClass { InstructionClass(rawValue: opcode) }
    /// Whether this is a 16-byte `ld_imm64`.
    public var isLoadImm64: Bool { opcode == Self.loadImm64Opcode }
    /// How many 8-byte slots the instruction takes: 2 for `ld_imm64`, 1 otherwise.
    public var slotCount: Int { isLoadImm64 ? 2 : 1 }
    /// The full 64-bit constant of an `ld_imm64` (`immediate` low, `nextImmediate` high).
    public var immediate64: UInt64 {
        UInt64(UInt32(bitPattern: immediate)) | UInt64(UInt32(bitPattern: nextImmediate)) << 32
    }
    /// Whether the source bit (`BPF_X`) is set: a register operand instead of the immediate.
    public var usesRegisterSource: Bool { opcode & 0x08 != 0 }
}

// MARK: - Arithmetic

extension Instruction {
    /// An arithmetic instruction with an immediate operand.
    public static func alu(
        _ operation: ALUOperation, _ dst: Register, _ immediate: Int32, is64: Bool = true
    ) -> Instruction {
        let cls = is64 ? InstructionClass.alu64 : .alu
        return Instruction(opcode: cls.rawValue | operation.rawValue, dst: dst, immediate: immediate)
    }

    /// An arithmetic instruction with a register operand.
    public static func alu(
        _ operation: ALUOperation, _ dst: Register, _ src: Register, is64: Bool = true
    ) -> Instruction {
        let cls = is64 ? InstructionClass.alu64 : .alu
        return Instruction(opcode: cls.rawValue | operation.rawValue | 0x08, dst: dst, src: src)
    }

    /// `dst = imm` (64-bit, sign-extended).
    public static func mov(_ dst: Register, _ imm: Int32) -> Instruction { alu(.mov, dst, imm) }
    /// `dst = src`.
    public static func mov(_ dst: Register, _ src: Register) -> Instruction { alu(.mov, dst, src) }
    /// `dst += imm`.
    public static func add(_ dst: Register, _ imm: Int32) -> Instruction { alu(.add, dst, imm) }
    /// `dst += src`.
    public static func add(_ dst: Register, _ src: Register) -> Instruction { alu(.add, dst, src) }
    /// `dst -= imm`.
    public static func sub(_ dst: Register, _ imm: Int32) -> Instruction { alu(.sub, dst, imm) }
    /// `dst -= src`.
    public static func sub(_ dst: Register, _ src: Register) -> Instruction { alu(.sub, dst, src) }
    /// `dst *= imm`.
    public static func mul(_ dst: Register, _ imm: Int32) -> Instruction { alu(.mul, dst, imm) }
    /// `dst *= src`.
    public static func mul(_ dst: Register, _ src: Register) -> Instruction { alu(.mul, dst, src) }
    /// `dst /= imm` (unsigned).
    public static func div(_ dst: Register, _ imm: Int32) -> Instruction { alu(.div, dst, imm) }
    /// `dst /= src` (unsigned).
    public static func div(_ dst: Register, _ src: Register) -> Instruction { alu(.div, dst, src) }
    /// `dst %= imm` (unsigned).
    public static func mod(_ dst: Register, _ imm: Int32) -> Instruction { alu(.mod, dst, imm) }
    /// `dst %= src` (unsigned).
    public static func mod(_ dst: Register, _ src: Register) -> Instruction { alu(.mod, dst, src) }
    /// `dst |= imm`.
    public static func or(_ dst: Register, _ imm: Int32) -> Instruction { alu(.or, dst, imm) }
    /// `dst |= src`.
    public static func or(_ dst: Register, _ src: Register) -> Instruction { alu(.or, dst, src) }
    /// `dst &= imm`.
    public static func and(_ dst: Register, _ imm: Int32) -> Instruction { alu(.and, dst, imm) }
    /// `dst &= src`.
    public static func and(_ dst: Register, _ src: Register) -> Instruction { alu(.and, dst, src) }
    /// `dst <<= imm`.
    public static func lsh(_ dst: Register, _ imm: Int32) -> Instruction { alu(.lsh, dst, imm) }
    /// `dst <<= src`.
    public static func lsh(_ dst: Register, _ src: Register) -> Instruction { alu(.lsh, dst, src) }
    /// `dst >>= imm` (logical).
    public static func rsh(_ dst: Register, _ imm: Int32) -> Instruction { alu(.rsh, dst, imm) }
    /// `dst >>= src` (logical).
    public static func rsh(_ dst: Register, _ src: Register) -> Instruction { alu(.rsh, dst, src) }
    /// `dst s>>= imm` (arithmetic).
    public static func arsh(_ dst: Register, _ imm: Int32) -> Instruction { alu(.arsh, dst, imm) }
    /// `dst s>>= src` (arithmetic).
    public static func arsh(_ dst: Register, _ src: Register) -> Instruction { alu(.arsh, dst, src) }
    /// `dst ^= imm`.
    public static func xor(_ dst: Register, _ imm: Int32) -> Instruction { alu(.xor, dst, imm) }
    /// `dst ^= src`.
    public static func xor(_ dst: Register, _ src: Register) -> Instruction { alu(.xor, dst, src) }
    /// `dst = -dst`.
    public static func neg(_ dst: Register) -> Instruction { alu(.neg, dst, 0) }
    /// `dst s/= imm` (signed division, cpu v4).
    public static func sdiv(_ dst: Register, _ imm: Int32) -> Instruction { with(alu(.div, dst, imm), offset: 1) }
    /// `dst s/= src` (signed division, cpu v4).
    public static func sdiv(_ dst: Register, _ src: Register) -> Instruction { with(alu(.div, dst, src), offset: 1) }
    /// `dst s%= imm` (signed modulo, cpu v4).
    public static func smod(_ dst: Register, _ imm: Int32) -> Instruction { with(alu(.mod, dst, imm), offset: 1) }
    /// `dst s%= src` (signed modulo, cpu v4).
    public static func smod(_ dst: Register, _ src: Register) -> Instruction { with(alu(.mod, dst, src), offset: 1) }
    /// `dst = (s8|s16|s32)src`: move with sign extension from `bits` (8, 16 or 32; cpu v4).
    public static func movsx(_ dst: Register, _ src: Register, bits: Int16) -> Instruction {
        with(alu(.mov, dst, src), offset: bits)
    }

    /// `dst = addr_space_cast(src, to, from)`: converts an arena pointer between address spaces.
    public static func addrSpaceCast(_ dst: Register, _ src: Register, to: UInt16, from: UInt16) -> Instruction {
        var instruction = with(alu(.mov, dst, src), offset: 1)
        instruction.immediate = Int32(bitPattern: UInt32(to) << 16 | UInt32(from))
        return instruction
    }

    /// `wdst = imm` (32-bit; the upper half is zeroed).
    public static func mov32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.mov, dst, imm, is64: false) }
    /// `wdst = wsrc`.
    public static func mov32(_ dst: Register, _ src: Register) -> Instruction { alu(.mov, dst, src, is64: false) }
    /// `wdst += imm`.
    public static func add32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.add, dst, imm, is64: false) }
    /// `wdst += wsrc`.
    public static func add32(_ dst: Register, _ src: Register) -> Instruction { alu(.add, dst, src, is64: false) }
    /// `wdst -= imm`.
    public static func sub32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.sub, dst, imm, is64: false) }
    /// `wdst -= wsrc`.
    public static func sub32(_ dst: Register, _ src: Register) -> Instruction { alu(.sub, dst, src, is64: false) }
    /// `wdst *= imm`.
    public static func mul32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.mul, dst, imm, is64: false) }
    /// `wdst *= wsrc`.
    public static func mul32(_ dst: Register, _ src: Register) -> Instruction { alu(.mul, dst, src, is64: false) }
    /// `wdst /= imm`.
    public static func div32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.div, dst, imm, is64: false) }
    /// `wdst /= wsrc`.
    public static func div32(_ dst: Register, _ src: Register) -> Instruction { alu(.div, dst, src, is64: false) }
    /// `wdst %= imm`.
    public static func mod32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.mod, dst, imm, is64: false) }
    /// `wdst %= wsrc`.
    public static func mod32(_ dst: Register, _ src: Register) -> Instruction { alu(.mod, dst, src, is64: false) }
    /// `wdst |= imm`.
    public static func or32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.or, dst, imm, is64: false) }
    /// `wdst |= wsrc`.
    public static func or32(_ dst: Register, _ src: Register) -> Instruction { alu(.or, dst, src, is64: false) }
    /// `wdst &= imm`.
    public static func and32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.and, dst, imm, is64: false) }
    /// `wdst &= wsrc`.
    public static func and32(_ dst: Register, _ src: Register) -> Instruction { alu(.and, dst, src, is64: false) }
    /// `wdst <<= imm`.
    public static func lsh32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.lsh, dst, imm, is64: false) }
    /// `wdst <<= wsrc`.
    public static func lsh32(_ dst: Register, _ src: Register) -> Instruction { alu(.lsh, dst, src, is64: false) }
    /// `wdst >>= imm`.
    public static func rsh32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.rsh, dst, imm, is64: false) }
    /// `wdst >>= wsrc`.
    public static func rsh32(_ dst: Register, _ src: Register) -> Instruction { alu(.rsh, dst, src, is64: false) }
    /// `wdst s>>= imm`.
    public static func arsh32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.arsh, dst, imm, is64: false) }
    /// `wdst s>>= wsrc`.
    public static func arsh32(_ dst: Register, _ src: Register) -> Instruction { alu(.arsh, dst, src, is64: false) }
    /// `wdst ^= imm`.
    public static func xor32(_ dst: Register, _ imm: Int32) -> Instruction { alu(.xor, dst, imm, is64: false) }
    /// `wdst ^= wsrc`.
    public static func xor32(_ dst: Register, _ src: Register) -> Instruction { alu(.xor, dst, src, is64: false) }
    /// `wdst = -wdst`.
    public static func neg32(_ dst: Register) -> Instruction { alu(.neg, dst, 0, is64: false) }
    /// `wdst s/= imm`.
    public static func sdiv32(_ dst: Register, _ imm: Int32) -> Instruction {
        with(alu(.div, dst, imm, is64: false), offset: 1)
    }
    /// `wdst s/= wsrc`.
    public static func sdiv32(_ dst: Register, _ src: Register) -> Instruction {
        with(alu(.div, dst, src, is64: false), offset: 1)
    }
    /// `wdst s%= imm`.
    public static func smod32(_ dst: Register, _ imm: Int32) -> Instruction {
        with(alu(.mod, dst, imm, is64: false), offset: 1)
    }
    /// `wdst s%= wsrc`.
    public static func smod32(_ dst: Register, _ src: Register) -> Instruction {
        with(alu(.mod, dst, src, is64: false), offset: 1)
    }
    /// `wdst = (s8|s16)wsrc`: 32-bit move with sign extension from `bits` (8 or 16).
    public static func movsx32(_ dst: Register, _ src: Register, bits: Int16) -> Instruction {
        with(alu(.mov, dst, src, is64: false), offset: bits)
    }

    /// `dst = be16|be32|be64 dst`: convert from host to big-endian order (`bits` 16, 32, 64).
    public static func be(_ dst: Register, _ bits: Int32) -> Instruction {
        Instruction(opcode: InstructionClass.alu.rawValue | ALUOperation.end.rawValue | 0x08, dst: dst, immediate: bits)
    }
    /// `dst = le16|le32|le64 dst`: convert from host to little-endian order.
    public static func le(_ dst: Register, _ bits: Int32) -> Instruction {
        Instruction(opcode: InstructionClass.alu.rawValue | ALUOperation.end.rawValue, dst: dst, immediate: bits)
    }
    /// `dst = bswap16|bswap32|bswap64 dst`: unconditional byte swap (cpu v4).
    public static func bswap(_ dst: Register, _ bits: Int32) -> Instruction {
        Instruction(opcode: InstructionClass.alu64.rawValue | ALUOperation.end.rawValue, dst: dst, immediate: bits)
    }

    private static func with(_ instruction: Instruction, offset: Int16) -> Instruction {
        var copy = instruction
        copy.offset = offset
        return copy
    }
}

// MARK: - Jumps, calls, exit

extension Instruction {
    /// `if dst <op> imm goto +offset` (64-bit comparison).
    public static func jump(_ operation: JumpOperation, _ dst: Register, _ imm: Int32, offset: Int16) -> Instruction {
        Instruction(
            opcode: InstructionClass.jmp.rawValue | operation.rawValue, dst: dst, offset: offset, immediate: imm)
    }
    /// `if dst <op> src goto +offset` (64-bit comparison).
    public static func jump(_ operation: JumpOperation, _ dst: Register, _ src: Register, offset: Int16) -> Instruction
    {
        Instruction(
            opcode: InstructionClass.jmp.rawValue | operation.rawValue | 0x08, dst: dst, src: src, offset: offset)
    }
    /// `if wdst <op> imm goto +offset` (32-bit comparison, cpu v3).
    public static func jump32(_ operation: JumpOperation, _ dst: Register, _ imm: Int32, offset: Int16) -> Instruction {
        Instruction(
            opcode: InstructionClass.jmp32.rawValue | operation.rawValue, dst: dst, offset: offset, immediate: imm)
    }
    /// `if wdst <op> wsrc goto +offset` (32-bit comparison, cpu v3).
    public static func jump32(_ operation: JumpOperation, _ dst: Register, _ src: Register, offset: Int16)
        -> Instruction
    {
        Instruction(
            opcode: InstructionClass.jmp32.rawValue | operation.rawValue | 0x08, dst: dst, src: src, offset: offset)
    }
    /// `goto +offset`: unconditional jump with a 16-bit offset.
    public static func ja(offset: Int16) -> Instruction {
        Instruction(opcode: InstructionClass.jmp.rawValue | JumpOperation.ja.rawValue, offset: offset)
    }
    /// `gotol +offset`: unconditional jump with a 32-bit offset (cpu v4).
    public static func gotol(offset: Int32) -> Instruction {
        Instruction(opcode: InstructionClass.jmp32.rawValue | JumpOperation.ja.rawValue, immediate: offset)
    }
    /// `call <helper>`: calls a kernel helper by its static id.
    public static func call(_ helper: HelperFunction) -> Instruction {
        Instruction(opcode: InstructionClass.jmp.rawValue | JumpOperation.call.rawValue, immediate: helper.rawValue)
    }
    /// A BPF-to-BPF call: the callee starts at pc + offset + 1.
    public static func callLocal(offset: Int32) -> Instruction {
        Instruction(
            opcode: InstructionClass.jmp.rawValue | JumpOperation.call.rawValue,
            src: Register(rawValue: CallKind.local.rawValue),
            immediate: offset)
    }
    /// A call to a kernel function (kfunc) by BTF id.
    public static func callKfunc(btfID: Int32) -> Instruction {
        Instruction(
            opcode: InstructionClass.jmp.rawValue | JumpOperation.call.rawValue,
            src: Register(rawValue: CallKind.kfunc.rawValue),
            immediate: btfID)
    }
    /// `callx dst`: an indirect call through a register, as LLVM emits it (the kernel's
    /// verifier does not accept it).
    public static func callx(_ dst: Register) -> Instruction {
        Instruction(opcode: InstructionClass.jmp.rawValue | JumpOperation.call.rawValue | 0x08, dst: dst)
    }
    /// `may_goto +offset`: the verifier may take this jump to bound a loop (kernel 6.9+).
    public static func mayGoto(offset: Int16) -> Instruction {
        Instruction(opcode: InstructionClass.jmp.rawValue | JumpOperation.jcond.rawValue, offset: offset)
    }
    /// `exit`: returns `r0`.
    public static func exit() -> Instruction {
        Instruction(opcode: InstructionClass.jmp.rawValue | JumpOperation.exit.rawValue)
    }

    /// The kind of a `call`, from its source field.
    public var callKind: CallKind { CallKind(rawValue: src.rawValue) }
}

// MARK: - Loads and stores

extension Instruction {
    /// `dst = *(size *)(src + offset)`.
    public static func ldx(_ size: AccessSize, _ dst: Register, _ src: Register, _ offset: Int16) -> Instruction {
        Instruction(
            opcode: InstructionClass.ldx.rawValue | AccessMode.mem.rawValue | size.rawValue, dst: dst, src: src,
            offset: offset)
    }
    /// `dst = *(s8|s16|s32 *)(src + offset)`: sign-extending load (cpu v4; not for `.dw`).
    public static func ldxsx(_ size: AccessSize, _ dst: Register, _ src: Register, _ offset: Int16) -> Instruction {
        Instruction(
            opcode: InstructionClass.ldx.rawValue | AccessMode.memsx.rawValue | size.rawValue, dst: dst, src: src,
            offset: offset)
    }
    /// `*(size *)(dst + offset) = src` (argument order of the kernel's `BPF_STX_MEM`).
    public static func stx(_ size: AccessSize, _ dst: Register, _ src: Register, _ offset: Int16) -> Instruction {
        Instruction(
            opcode: InstructionClass.stx.rawValue | AccessMode.mem.rawValue | size.rawValue, dst: dst, src: src,
            offset: offset)
    }
    /// `*(size *)(dst + offset) = imm` (argument order of the kernel's `BPF_ST_MEM`).
    public static func st(_ size: AccessSize, _ dst: Register, _ offset: Int16, _ imm: Int32) -> Instruction {
        Instruction(
            opcode: InstructionClass.st.rawValue | AccessMode.mem.rawValue | size.rawValue, dst: dst, offset: offset,
            immediate: imm)
    }
    /// An atomic read-modify-write of `*(size *)(dst + offset)` with `src` (`.w` or `.dw`).
    public static func atomic(
        _ size: AccessSize, _ operation: AtomicOperation, _ dst: Register, _ src: Register, _ offset: Int16
    ) -> Instruction {
        Instruction(
            opcode: InstructionClass.stx.rawValue | AccessMode.atomic.rawValue | size.rawValue, dst: dst, src: src,
            offset: offset, immediate: operation.rawValue)
    }
    /// `dst = load_acquire((size *)(src + offset))`.
    public static func loadAcquire(_ size: AccessSize, _ dst: Register, _ src: Register, _ offset: Int16) -> Instruction
    {
        Instruction(
            opcode: InstructionClass.stx.rawValue | AccessMode.atomic.rawValue | size.rawValue, dst: dst, src: src,
            offset: offset, immediate: AtomicOperation.loadAcquire.rawValue)
    }
    /// `store_release((size *)(dst + offset), src)`.
    public static func storeRelease(_ size: AccessSize, _ dst: Register, _ src: Register, _ offset: Int16)
        -> Instruction
    {
        atomic(size, .storeRelease, dst, src, offset)
    }
    /// `dst = imm64 ll`: loads a 64-bit constant (two slots).
    public static func ldImm64(_ dst: Register, _ value: UInt64) -> Instruction {
        Instruction(
            opcode: loadImm64Opcode, dst: dst, immediate: Int32(truncatingIfNeeded: value),
            nextImmediate: Int32(truncatingIfNeeded: value >> 32))
    }
    /// `dst = imm64 ll` from a signed constant.
    public static func ldImm64(_ dst: Register, _ value: Int64) -> Instruction {
        ldImm64(dst, UInt64(bitPattern: value))
    }
    /// A pseudo `ld_imm64` (map fd, map value, BTF id, function, map index), as the loader fills it.
    public static func ldImm64(
        _ dst: Register, source: LoadImm64Source, _ immediate: Int32, next: Int32 = 0
    ) -> Instruction {
        Instruction(
            opcode: loadImm64Opcode, dst: dst, src: Register(rawValue: source.rawValue), immediate: immediate,
            nextImmediate: next)
    }
    /// Legacy packet load `r0 = *(size *)skb[imm]` (`BPF_ABS`).
    public static func ldAbs(_ size: AccessSize, _ imm: Int32) -> Instruction {
        Instruction(opcode: InstructionClass.ld.rawValue | AccessMode.abs.rawValue | size.rawValue, immediate: imm)
    }
    /// Legacy packet load `r0 = *(size *)skb[src + imm]` (`BPF_IND`).
    public static func ldInd(_ size: AccessSize, _ src: Register, _ imm: Int32) -> Instruction {
        Instruction(
            opcode: InstructionClass.ld.rawValue | AccessMode.ind.rawValue | size.rawValue, src: src, immediate: imm)
    }

    /// The pseudo source of an `ld_imm64`.
    public var loadImm64Source: LoadImm64Source { LoadImm64Source(rawValue: src.rawValue) }
    /// The access size bits of a load or store.
    public var accessSize: AccessSize { AccessSize(rawValue: opcode & 0x18)! }
    /// The mode bits of a load or store, or `nil` for a mode the instruction set does not define.
    public var accessMode: AccessMode? { AccessMode(rawValue: opcode & 0xe0) }
}
