/// Prints instructions in LLVM's BPF assembly syntax, as the toolchain's `llvm-objdump` does
/// (`r1 = *(u32 *)(r1 + 0x3c)`, `if w1 == 0x1f90 goto +0x1`, `r1 = 0x0 ll`, `call 0x7c`).
///
/// Numbers are printed in hex with a sign, as `llvm-objdump` prints them; the ``TextAssembler``
/// reads this output back to the same bytes. Where `llvm-objdump` prints two different
/// encodings the same way, the text gets a `#` comment (which LLVM's assembler also ignores)
/// that the ``TextAssembler`` reads: `call 0x2 # bpf2bpf` for a BPF-to-BPF call and
/// `call 0x2a # kfunc` for a kernel-function call. Two encodings that `llvm-objdump` prints
/// without a field get that field written out: `skb[r1 + 0x4]` (an `ld_ind` offset) and a
/// fourth operand of `ld_pseudo` (the second immediate).
public struct Disassembler: Sendable {
    /// Print helper calls by name (`call bpf_sk_assign`) instead of id (`call 0x7c`).
    public var helperNames: Bool
    /// Label names by slot. Jumps and calls to a named slot print the name
    /// (`goto pass`, `call parse`) instead of an offset; see ``listing(_:)``.
    public var labels: [Int: Label]
    /// Print exactly what `llvm-objdump` prints, without the `# bpf2bpf` / `# kfunc`
    /// annotations (text that then no longer tells a local call from a helper call).
    public var llvmCompatible: Bool

    /// A disassembler with the given options; the defaults print numeric targets and helper ids, with annotations.
    public init(helperNames: Bool = false, labels: [Int: Label] = [:], llvmCompatible: Bool = false) {
        self.helperNames = helperNames
        self.labels = labels
        self.llvmCompatible = llvmCompatible
    }

    /// A disassembler that names every jump target of `instructions` `LBB<slot>`, and prints
    /// helper names; for listings meant to be read and edited. Targets outside the sequence
    /// (calls into another section, resolved by relocation) stay numeric.
    public static func symbolic(for instructions: [Instruction]) -> Disassembler {
        var labels: [Int: Label] = [:]
        let end = instructions.slotCount
        var slot = 0
        for instruction in instructions {
            if let target = instruction.branchTarget(atSlot: slot), (0...end).contains(target) {
                labels[target] = Label("LBB\(target)")
            }
            slot += instruction.slotCount
        }
        return Disassembler(helperNames: true, labels: labels)
    }

    /// One line per instruction, no label lines; `slot` is the instruction's position,
    /// needed only to name label targets.
    public func text(_ instruction: Instruction, atSlot slot: Int = 0) -> String {
        let d = instruction.dst
        let s = instruction.src
        let off = instruction.offset
        let imm = instruction.immediate
        switch instruction.instructionClass {
        case .alu, .alu64:
            return aluText(instruction)
        case .jmp, .jmp32:
            return jumpText(instruction, slot: slot)
        case .ldx:
            let sign = instruction.accessMode == .memsx ? "s" : "u"
            let reg = (instruction.accessMode == .mem && instruction.accessSize != .dw) ? d.name32 : d.description
            return "\(reg) = *(\(sign)\(bits(instruction)) *)\(address(s, off))"
        case .st:
            return "*(u\(bits(instruction)) *)\(address(d, off)) = \(number(imm))"
        case .stx:
            if instruction.accessMode == .atomic { return atomicText(instruction) }
            let reg = instruction.accessSize == .dw ? s.description : s.name32
            return "*(u\(bits(instruction)) *)\(address(d, off)) = \(reg)"
        default:
            if instruction.isLoadImm64 {
                if instruction.loadImm64Source == .constant {
                    return "\(d) = \(number(Int64(bitPattern: instruction.immediate64))) ll"
                }
                if instruction.loadImm64Source == .function, let label = labels[slot + Int(imm) + 1] {
                    return "\(d) = \(label) ll # func"
                }
                var text = "ld_pseudo\t\(d), \(number(Int64(s.rawValue))), \(number(imm))"
                if instruction.nextImmediate != 0 { text += ", \(number(instruction.nextImmediate))" }
                return text
            }
            let size = "*(u\(bits(instruction)) *)"
            if instruction.accessMode == .ind {
                return imm == 0 ? "r0 = \(size)skb[\(s)]" : "r0 = \(size)skb[\(s) \(memoryOffset(imm))]"
            }
            return "r0 = \(size)skb[\(number(imm))]"
        }
    }

    /// The whole sequence, one instruction per line (an `ld_imm64` is one line).
    public func lines(_ instructions: [Instruction]) -> [String] {
        var result: [String] = []
        result.reserveCapacity(instructions.count)
        var slot = 0
        for instruction in instructions {
            result.append(text(instruction, atSlot: slot))
            slot += instruction.slotCount
        }
        return result
    }

    /// The sequence with `name:` lines before each labelled instruction, indented by a tab, as
    /// the ``TextAssembler`` reads it back.
    public func listing(_ instructions: [Instruction]) -> String {
        var out = ""
        var slot = 0
        for instruction in instructions {
            if let label = labels[slot] { out += "\(label):\n" }
            out += "\t\(text(instruction, atSlot: slot))\n"
            slot += instruction.slotCount
        }
        if let label = labels[slot] { out += "\(label):\n" }
        return out
    }

    // MARK: Pieces

    private func aluText(_ instruction: Instruction) -> String {
        let is64 = instruction.instructionClass == .alu64
        let d = is64 ? instruction.dst.description : instruction.dst.name32
        let s = is64 ? instruction.src.description : instruction.src.name32
        let operand = instruction.usesRegisterSource ? s : number(instruction.immediate)
        guard let operation = ALUOperation(rawValue: instruction.opcode & 0xf0) else { return "<unknown>" }
        let signed = instruction.offset == 1
        switch operation {
        case .neg: return "\(d) = -\(d)"
        case .end:
            let r = instruction.dst.description
            let kind = is64 ? "bswap" : (instruction.usesRegisterSource ? "be" : "le")
            return "\(r) = \(kind)\(instruction.immediate) \(r)"
        case .mov:
            if instruction.usesRegisterSource && instruction.offset != 0 {
                if is64 && instruction.offset == 1 {
                    let imm = UInt32(bitPattern: instruction.immediate)
                    return "\(d) = addr_space_cast(\(s), \(number(Int64(imm >> 16))), \(number(Int64(imm & 0xffff))))"
                }
                return "\(d) = (s\(instruction.offset))\(s)"
            }
            return "\(d) = \(operand)"
        case .add: return "\(d) += \(operand)"
        case .sub: return "\(d) -= \(operand)"
        case .mul: return "\(d) *= \(operand)"
        case .div: return "\(d) \(signed ? "s" : "")/= \(operand)"
        case .mod: return "\(d) \(signed ? "s" : "")%= \(operand)"
        case .or: return "\(d) |= \(operand)"
        case .and: return "\(d) &= \(operand)"
        case .lsh: return "\(d) <<= \(operand)"
        case .rsh: return "\(d) >>= \(operand)"
        case .arsh: return "\(d) s>>= \(operand)"
        case .xor: return "\(d) ^= \(operand)"
        }
    }

    private func jumpText(_ instruction: Instruction, slot: Int) -> String {
        let is32 = instruction.instructionClass == .jmp32
        let code = instruction.opcode & 0xf0
        guard let operation = JumpOperation(rawValue: code) else { return "<unknown>" }
        switch operation {
        case .ja:
            return "\(is32 ? "gotol" : "goto") \(target(instruction, slot: slot))"
        case .exit:
            return "exit"
        case .jcond:
            return "may_goto \(target(instruction, slot: slot))"
        case .call:
            if instruction.usesRegisterSource { return "callx \(instruction.dst)" }
            switch instruction.callKind {
            case .local:
                if let label = labels[slot + Int(instruction.immediate) + 1] { return "call \(label)" }
                return "call \(number(instruction.immediate))" + (llvmCompatible ? "" : " # bpf2bpf")
            case .kfunc:
                return "call \(number(instruction.immediate))" + (llvmCompatible ? "" : " # kfunc")
            default:
                let helper = HelperFunction(rawValue: instruction.immediate)
                if helperNames, helper.name != nil { return "call \(helper)" }
                return "call \(number(instruction.immediate))"
            }
        default:
            let d = is32 ? instruction.dst.name32 : instruction.dst.description
            let s = is32 ? instruction.src.name32 : instruction.src.description
            let operand = instruction.usesRegisterSource ? s : number(instruction.immediate)
            return
                "if \(d) \(Self.conditionSymbols[operation] ?? "?") \(operand) goto \(target(instruction, slot: slot))"
        }
    }

    static let conditionSymbols: [JumpOperation: String] = [
        .jeq: "==", .jne: "!=", .jgt: ">", .jge: ">=", .jlt: "<", .jle: "<=", .jset: "&",
        .jsgt: "s>", .jsge: "s>=", .jslt: "s<", .jsle: "s<=",
    ]

    private func atomicText(_ instruction: Instruction) -> String {
        let size = instruction.accessSize
        let is64 = size == .dw
        let s = is64 ? instruction.src.description : instruction.src.name32
        let d = instruction.dst.description
        let ptr = "(u\(bits(instruction)) *)\(address(instruction.dst, instruction.offset))"
        let operation = AtomicOperation(rawValue: instruction.immediate)
        let names: [AtomicOperation: (symbol: String, name: String)] = [
            .add: ("+=", "add"), .or: ("|=", "or"), .and: ("&=", "and"), .xor: ("^=", "xor"),
        ]
        switch operation {
        case .loadAcquire:
            let r = is64 ? "r\(instruction.dst.rawValue)" : "w\(instruction.dst.rawValue)"
            return "\(r) = load_acquire((u\(bits(instruction)) *)\(address(instruction.src, instruction.offset)))"
        case .storeRelease:
            return "store_release(\(ptr), \(s))"
        case .xchg:
            return "\(s) = \(is64 ? "xchg_64" : "xchg32_32")(\(d) \(memoryOffset(instruction.offset)), \(s))"
        case .cmpxchg:
            let r0 = is64 ? "r0" : "w0"
            return
                "\(r0) = \(is64 ? "cmpxchg_64" : "cmpxchg32_32")(\(d) \(memoryOffset(instruction.offset)), \(r0), \(s))"
        default:
            let base = AtomicOperation(rawValue: operation.rawValue & ~AtomicOperation.fetchFlag)
            guard let name = names[base] else { return "<unknown>" }
            if operation.fetches { return "\(s) = atomic_fetch_\(name.name)(\(ptr), \(s))" }
            return "lock *\(ptr) \(name.symbol) \(s)"
        }
    }

    private func target(_ instruction: Instruction, slot: Int) -> String {
        let distance =
            instruction.instructionClass == .jmp32 && instruction.opcode & 0xf0 == 0
            ? Int(instruction.immediate) : Int(instruction.offset)
        if let label = labels[slot + distance + 1] { return label.name }
        return jumpOffset(distance)
    }

    private func bits(_ instruction: Instruction) -> Int { instruction.accessSize.byteCount * 8 }

    private func address(_ base: Register, _ offset: Int16) -> String { "(\(base) \(memoryOffset(offset)))" }

    /// `+ 0x3c` / `- 0x1`, as in memory operands.
    private func memoryOffset(_ value: some BinaryInteger) -> String {
        value < 0 ? "- 0x\(hex(value.magnitude))" : "+ 0x\(hex(value))"
    }

    /// `+0x1` / `-0x1`, as jump offsets.
    private func jumpOffset(_ value: Int) -> String {
        value < 0 ? "-0x\(hex(value.magnitude))" : "+0x\(hex(value))"
    }

    private func number(_ value: some BinaryInteger) -> String {
        value < 0 ? "-0x\(hex(value.magnitude))" : "0x\(hex(value))"
    }
}

extension Instruction {
    /// The slot a jump, `gotol`, `may_goto` or local call at `slot` goes to, or `nil`.
    public func branchTarget(atSlot slot: Int) -> Int? {
        switch instructionClass {
        case .jmp, .jmp32:
            let code = opcode & 0xf0
            if code == JumpOperation.exit.rawValue { return nil }
            if code == JumpOperation.call.rawValue {
                return callKind == .local && !usesRegisterSource ? slot + Int(immediate) + 1 : nil
            }
            if instructionClass == .jmp32 && code == JumpOperation.ja.rawValue { return slot + Int(immediate) + 1 }
            return slot + Int(offset) + 1
        default:
            if isLoadImm64 && loadImm64Source == .function { return slot + Int(immediate) + 1 }
            return nil
        }
    }
}
