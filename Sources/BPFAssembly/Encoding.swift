/// The byte order instructions are encoded in; eBPF uses the host's.
public enum ByteOrder: Sendable {
    /// Little- or big-endian; big-endian also puts the `dst` register in the high nibble of byte 1.
    case little, big
    /// The order of the machine this code runs on.
    public static var host: ByteOrder { 1.littleEndian == 1 ? .little : .big }
}

/// Why bytes do not decode to instructions. Every case names the instruction index (counted in
/// instructions, an `ld_imm64` being one) and its byte offset.
public struct DecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public enum Reason: Hashable, Sendable {
        /// The byte count is not a multiple of 8; `remainder` bytes are left over.
        case truncated(remainder: Int)
        /// An `ld_imm64` whose second slot is missing.
        case truncatedLoadImm64
        /// An opcode the instruction set does not define.
        case unknownOpcode(UInt8)
        /// A register field above 10.
        case invalidRegister(field: String, value: UInt8)
        /// A field that must be zero (or one of a few values) for this opcode is not.
        case reservedField(field: String, value: Int64)
    }

    /// The index of the instruction, counting an `ld_imm64` as one.
    public var index: Int
    /// The byte offset where that instruction starts.
    public var byteOffset: Int
    /// The opcode at that offset (0 when the bytes ran out before it).
    public var opcode: UInt8
    /// What is wrong with the instruction.
    public var reason: Reason

    /// `instruction N (byte offset B): …` followed by the reason, e.g. `unknown opcode 0x8f`.
    public var description: String {
        let at = "instruction \(index) (byte offset \(byteOffset))"
        switch reason {
        case .truncated(let remainder):
            return "\(at): \(remainder) trailing byte(s); instructions are 8 bytes each"
        case .truncatedLoadImm64:
            return "\(at): ld_imm64 (opcode 0x18) is 16 bytes but the input ends after its first 8"
        case .unknownOpcode(let op):
            return "\(at): unknown opcode 0x\(hex(op, width: 2))"
        case .invalidRegister(let field, let value):
            return "\(at): opcode 0x\(hex(opcode, width: 2)): \(field) register r\(value) does not exist (r0–r10)"
        case .reservedField(let field, let value):
            return "\(at): opcode 0x\(hex(opcode, width: 2)): \(field) \(value) is not allowed for this instruction"
        }
    }
}

func hex<T: BinaryInteger>(_ value: T, width: Int = 0) -> String {
    let digits = String(value, radix: 16)
    return digits.count < width ? String(repeating: "0", count: width - digits.count) + digits : digits
}

extension Instruction {
    /// Appends the wire encoding (8 or 16 bytes) to `bytes`.
    public func encode(into bytes: inout [UInt8], byteOrder: ByteOrder = .host) {
        bytes.append(opcode)
        switch byteOrder {
        case .little: bytes.append(dst.rawValue | src.rawValue << 4)
        case .big: bytes.append(dst.rawValue << 4 | src.rawValue)
        }
        append(UInt16(bitPattern: offset), to: &bytes, byteOrder)
        append(UInt32(bitPattern: immediate), to: &bytes, byteOrder)
        if isLoadImm64 {
            bytes.append(contentsOf: [0, 0, 0, 0])
            append(UInt32(bitPattern: nextImmediate), to: &bytes, byteOrder)
        }
    }

    /// The wire encoding: 8 bytes, or 16 for `ld_imm64`.
    public func encoded(byteOrder: ByteOrder = .host) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        encode(into: &bytes, byteOrder: byteOrder)
        return bytes
    }

    /// Decodes a sequence of instructions, checking every field.
    ///
    /// - Throws: ``DecodingError`` naming the first bad instruction; never traps on any input.
    public static func decode(_ bytes: some Collection<UInt8>, byteOrder: ByteOrder = .host) throws(DecodingError)
        -> [Instruction]
    {
        let raw = Array(bytes)
        var result: [Instruction] = []
        result.reserveCapacity(raw.count / 8)
        var position = 0
        while position < raw.count {
            let index = result.count
            guard raw.count - position >= 8 else {
                throw DecodingError(
                    index: index, byteOffset: position, opcode: raw[position],
                    reason: .truncated(remainder: raw.count - position))
            }
            var instruction = slot(raw, at: position, byteOrder)
            if instruction.isLoadImm64 {
                guard raw.count - position >= 16 else {
                    throw DecodingError(
                        index: index, byteOffset: position, opcode: instruction.opcode, reason: .truncatedLoadImm64)
                }
                let second = slot(raw, at: position + 8, byteOrder)
                for (field, value) in [
                    ("second slot opcode", Int64(second.opcode)), ("second slot dst", Int64(second.dst.rawValue)),
                    ("second slot src", Int64(second.src.rawValue)), ("second slot offset", Int64(second.offset)),
                ] where value != 0 {
                    throw DecodingError(
                        index: index, byteOffset: position, opcode: instruction.opcode,
                        reason: .reservedField(field: field, value: value))
                }
                instruction.nextImmediate = second.immediate
            }
            if let reason = instruction.defect {
                throw DecodingError(index: index, byteOffset: position, opcode: instruction.opcode, reason: reason)
            }
            result.append(instruction)
            position += 8 * instruction.slotCount
        }
        return result
    }

    private static func slot(_ raw: [UInt8], at position: Int, _ byteOrder: ByteOrder) -> Instruction {
        let regs = raw[position + 1]
        let dst: UInt8
        let src: UInt8
        switch byteOrder {
        case .little: (dst, src) = (regs & 0x0f, regs >> 4)
        case .big: (dst, src) = (regs >> 4, regs & 0x0f)
        }
        let offset = UInt16(read(raw, position + 2, 2, byteOrder))
        let imm = UInt32(read(raw, position + 4, 4, byteOrder))
        return Instruction(
            opcode: raw[position], dst: Register(rawValue: dst), src: Register(rawValue: src),
            offset: Int16(bitPattern: offset), immediate: Int32(bitPattern: imm))
    }

    private static func read(_ raw: [UInt8], _ start: Int, _ count: Int, _ order: ByteOrder) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<count {
            let byte = UInt64(raw[start + i])
            switch order {
            case .little: value |= byte << (8 * UInt64(i))
            case .big: value = value << 8 | byte
            }
        }
        return value
    }

    private func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8], _ order: ByteOrder) {
        let size = MemoryLayout<T>.size
        for i in 0..<size {
            let shift = order == .little ? i : size - 1 - i
            bytes.append(UInt8(truncatingIfNeeded: value >> (8 * shift)))
        }
    }
}

extension Array where Element == Instruction {
    /// The wire encoding of the whole sequence.
    public func encoded(byteOrder: ByteOrder = .host) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count * 8)
        for instruction in self { instruction.encode(into: &bytes, byteOrder: byteOrder) }
        return bytes
    }

    /// The number of 8-byte slots (an `ld_imm64` takes two).
    public var slotCount: Int { reduce(0) { $0 + $1.slotCount } }
}

// MARK: - Validation

extension Instruction {
    /// Whether every field is valid for this opcode, as the instruction set defines it.
    public var isValid: Bool { defect == nil }

    /// What is wrong with this instruction's fields, or `nil` if it is a valid instruction.
    public var defect: DecodingError.Reason? {
        if !dst.isValid { return .invalidRegister(field: "dst", value: dst.rawValue) }
        let pseudoSource = isLoadImm64 || (instructionClass == .jmp && opcode & 0xf0 == JumpOperation.call.rawValue)
        if !pseudoSource && !src.isValid { return .invalidRegister(field: "src", value: src.rawValue) }
        switch instructionClass {
        case .alu, .alu64: return aluDefect
        case .jmp, .jmp32: return jumpDefect
        case .ldx: return loadDefect
        case .st, .stx: return storeDefect
        default: return legacyLoadDefect
        }
    }

    private func require(_ field: String, _ value: some BinaryInteger, in allowed: Set<Int64> = [0])
        -> DecodingError.Reason?
    {
        allowed.contains(Int64(value)) ? nil : .reservedField(field: field, value: Int64(value))
    }

    private var aluDefect: DecodingError.Reason? {
        guard let operation = ALUOperation(rawValue: opcode & 0xf0) else { return .unknownOpcode(opcode) }
        let is64 = instructionClass == .alu64
        let x = usesRegisterSource
        switch operation {
        case .neg:
            if x { return .unknownOpcode(opcode) }
            return require("src", src.rawValue) ?? require("offset", offset) ?? require("immediate", immediate)
        case .end:
            if is64 && x { return .unknownOpcode(opcode) }
            return require("src", src.rawValue) ?? require("offset", offset)
                ?? require("immediate", immediate, in: [16, 32, 64])
        case .div, .mod:
            return operandDefect(x) ?? require("offset", offset, in: [0, 1])
        case .mov:
            // 8/16/32: movsx; 1 on ALU64: addr_space_cast (arena pointers, immediate = address spaces).
            if is64 && x && offset == 1 { return nil }
            let sx: Set<Int64> = is64 ? [0, 8, 16, 32] : [0, 8, 16]
            return operandDefect(x) ?? require("offset", offset, in: x ? sx : [0])
        default:
            return operandDefect(x) ?? require("offset", offset)
        }
    }

    private func operandDefect(_ registerSource: Bool) -> DecodingError.Reason? {
        registerSource ? require("immediate", immediate) : require("src", src.rawValue)
    }

    private var jumpDefect: DecodingError.Reason? {
        guard let operation = JumpOperation(rawValue: opcode & 0xf0) else { return .unknownOpcode(opcode) }
        let is32 = instructionClass == .jmp32
        let x = usesRegisterSource
        switch operation {
        case .ja:
            if x { return .unknownOpcode(opcode) }
            return require("dst", dst.rawValue) ?? require("src", src.rawValue)
                ?? (is32 ? require("offset", offset) : require("immediate", immediate))
        case .jcond:
            if is32 || x { return .unknownOpcode(opcode) }
            return require("dst", dst.rawValue) ?? require("src (condition)", src.rawValue)
                ?? require("immediate", immediate)
        case .call where x:
            // callx: an indirect call through dst, as LLVM emits it.
            if is32 { return .unknownOpcode(opcode) }
            return require("src", src.rawValue) ?? require("offset", offset) ?? require("immediate", immediate)
        case .call:
            if is32 { return .unknownOpcode(opcode) }
            return require("dst", dst.rawValue) ?? require("offset", offset)
                ?? require("src (call kind)", src.rawValue, in: [0, 1, 2])
        case .exit:
            if is32 || x { return .unknownOpcode(opcode) }
            return require("dst", dst.rawValue) ?? require("src", src.rawValue)
                ?? require("offset", offset) ?? require("immediate", immediate)
        default:
            return operandDefect(x)
        }
    }

    private var loadDefect: DecodingError.Reason? {
        switch accessMode {
        case .mem: return require("immediate", immediate)
        case .memsx:
            if accessSize == .dw { return .unknownOpcode(opcode) }
            return require("immediate", immediate)
        default: return .unknownOpcode(opcode)
        }
    }

    private var storeDefect: DecodingError.Reason? {
        switch (instructionClass, accessMode) {
        case (.st, .mem): return require("src", src.rawValue)
        case (.stx, .mem): return require("immediate", immediate)
        case (.stx, .atomic):
            let operation = AtomicOperation(rawValue: immediate)
            if operation == .loadAcquire || operation == .storeRelease { return nil }
            if accessSize != .w && accessSize != .dw { return .unknownOpcode(opcode) }
            let allowed = Set(AtomicOperation.allCases.map { Int64($0.rawValue) })
            return require("immediate (atomic operation)", immediate, in: allowed)
        default: return .unknownOpcode(opcode)
        }
    }

    private var legacyLoadDefect: DecodingError.Reason? {
        if isLoadImm64 {
            return require("offset", offset) ?? require("src (pseudo source)", src.rawValue, in: Set(0...6))
        }
        switch accessMode {
        case .abs where accessSize != .dw:
            return require("dst", dst.rawValue) ?? require("src", src.rawValue) ?? require("offset", offset)
        case .ind where accessSize != .dw:
            return require("dst", dst.rawValue) ?? require("offset", offset)
        default:
            return .unknownOpcode(opcode)
        }
    }
}

extension Instruction {
    /// Decodes whole slots without checking fields: for instructions the kernel has rewritten
    /// (translated programs), where reserved fields may carry kernel data. A trailing partial
    /// slot is ignored and an `ld_imm64` without its second slot keeps a zero upper half.
    public static func decodeUnchecked(_ bytes: [UInt8], byteOrder: ByteOrder = .host) -> [Instruction] {
        var result: [Instruction] = []
        var position = 0
        while position + 8 <= bytes.count {
            var instruction = slot(bytes, at: position, byteOrder)
            if instruction.isLoadImm64 && position + 16 <= bytes.count {
                instruction.nextImmediate = slot(bytes, at: position + 8, byteOrder).immediate
            }
            result.append(instruction)
            position += 8 * instruction.slotCount
        }
        return result
    }
}
