import BPFAssembly

/// Turns the code sections of an object into loadable programs: every entry function gets
/// the subprograms it calls (BPF-to-BPF calls, static or global, in `.text` or its own
/// section) appended, with call offsets, map and data references, and BTF function and line
/// records moved to match.
struct ProgramLinker {
    let elf: ELFFile
    let btf: BTF?
    let ext: BTFExt?
    let maps: [MapDefinition]
    let data: [DataSection]

    /// One 8-byte slot, decoded in the object's byte order.
    struct Slot {
        var opcode: UInt8
        var dst: UInt8
        var src: UInt8
        var offset: Int16
        var immediate: Int32
    }

    struct Function {
        var name: String
        var section: Int
        var start: Int
        var count: Int
        var isEntry: Bool
    }

    static let callOpcode: UInt8 = 0x85
    static let pseudoCall: UInt8 = 1
    static let pseudoFunction: UInt8 = 4
    static let pseudoMapFD: UInt8 = 1
    static let pseudoMapValue: UInt8 = 2
    // Relocation types of the BPF ELF ABI.
    static let relocationNone: UInt32 = 0
    static let relocation64: UInt32 = 1  // R_BPF_64_64: ld_imm64 of a map or data address
    static let relocation32: UInt32 = 10  // R_BPF_64_32: a call

    func programs() throws(ObjectError) -> [ObjectProgram] {
        var code: [Int: [Slot]] = [:]
        var functions: [Function] = []
        for section in elf.sections where section.isExecutable && section.size > 0 {
            guard section.size % 8 == 0 else {
                throw ObjectError(
                    .malformed, "code section \(section.name) has \(section.size) bytes, not a multiple of 8")
            }
            code[section.index] = try decode(section)
            let slots = section.size / 8
            let symbols = elf.symbols.filter { $0.sectionIndex == section.index && $0.isFunction }
                .sorted { $0.value < $1.value }
            guard !symbols.isEmpty else {
                throw ObjectError(.malformed, "code section \(section.name) has no function symbol to name its program")
            }
            let isText = section.name == ".text"
            if !isText, SectionType(section: section.name) == nil {
                throw ObjectError(
                    .unknownSection,
                    "section \(section.name) names no program type this loader knows; known: "
                        + SectionType.knownSections.joined(separator: ", "))
            }
            for (i, symbol) in symbols.enumerated() {
                guard symbol.value % 8 == 0, symbol.value / 8 < UInt64(slots) else {
                    throw ObjectError(.malformed, "function \(symbol.name) starts outside \(section.name)")
                }
                let start = Int(symbol.value / 8)
                let next = i + 1 < symbols.count ? Int(symbols[i + 1].value / 8) : slots
                var count = symbol.size > 0 ? Int(min(symbol.size / 8, UInt64(slots))) : next - start
                count = min(count, slots - start)
                guard count > 0 else { throw ObjectError(.malformed, "function \(symbol.name) has no instructions") }
                if !isText && !symbol.isGlobal {
                    throw ObjectError(
                        .unsupported,
                        "static function \(symbol.name) in program section \(section.name): libbpf loads only global"
                            + " functions there as programs; make it global or move it to .text")
                }
                functions.append(
                    Function(name: symbol.name, section: section.index, start: start, count: count, isEntry: !isText))
            }
        }
        var relocations: [Int: [Int: ELFFile.Relocation]] = [:]
        for (section, list) in elf.relocations where code[section] != nil {
            for relocation in list {
                guard relocation.offset % 8 == 0, relocation.offset / 8 < UInt64(code[section]!.count) else {
                    throw ObjectError(
                        .malformed,
                        "a relocation of \(elf.sections[section].name) points outside it (\(relocation.offset))")
                }
                relocations[section, default: [:]][Int(relocation.offset / 8)] = relocation
            }
        }
        return try functions.filter(\.isEntry).map { (entry) throws(ObjectError) in
            try link(entry, functions: functions, code: code, relocations: relocations)
        }
    }

    private func decode(_ section: ELFFile.Section) throws(ObjectError) -> [Slot] {
        let reader = ByteReader(try elf.contents(section), bigEndian: elf.bigEndian)
        return try (0..<section.size / 8).map { (i) throws(ObjectError) in
            let registers = try reader.u8(i * 8 + 1, "instruction")
            return Slot(
                opcode: try reader.u8(i * 8, "instruction"),
                dst: elf.bigEndian ? registers >> 4 : registers & 0xf,
                src: elf.bigEndian ? registers & 0xf : registers >> 4,
                offset: Int16(bitPattern: try reader.u16(i * 8 + 2, "instruction")),
                immediate: Int32(bitPattern: try reader.u32(i * 8 + 4, "instruction")))
        }
    }

    private func link(
        _ entry: Function, functions: [Function], code: [Int: [Slot]], relocations: [Int: [Int: ELFFile.Relocation]]
    ) throws(ObjectError) -> ObjectProgram {
        let sectionName = elf.sections[entry.section].name
        var output: [Slot] = []
        // Where each linked function starts in the output, by (section, start).
        var placed: [(function: Function, at: Int)] = []
        var pending: [Function] = [entry]
        var references: [(slot: Int, reference: ObjectProgram.Reference)] = []
        func place(_ function: Function) -> Int {
            func same(_ other: Function) -> Bool { other.section == function.section && other.start == function.start }
            if let existing = placed.first(where: { same($0.function) }) { return existing.at }
            // Not placed yet: after the current function and those already waiting.
            var at = output.count
            for waiting in pending {
                if same(waiting) { return at }
                at += waiting.count
            }
            pending.append(function)
            return at
        }
        while !pending.isEmpty {
            let function = pending.removeFirst()
            let base = output.count
            placed.append((function, base))
            let slots = code[function.section]!
            output += slots[function.start..<function.start + function.count]
            var i = 0
            while i < function.count {
                let original = function.start + i
                let slot = slots[original]
                let relocation = relocations[function.section]?[original]
                let at = base + i
                let what = "\(function.name)+\(i) in \(elf.sections[function.section].name)"
                if slot.opcode == Instruction.loadImm64Opcode {
                    guard i + 1 < function.count else {
                        throw ObjectError(.malformed, "ld_imm64 at \(what) has no second half")
                    }
                    if slot.src == Self.pseudoFunction {
                        throw ObjectError(
                            .unsupported, "\(what) takes a function's address (a callback for bpf_loop or a timer)")
                    }
                    if let relocation {
                        references.append((at, try reference(relocation, slot, what)))
                    }
                    i += 2
                    continue
                }
                if slot.opcode == Self.callOpcode && slot.src == Self.pseudoCall {
                    // The callee: by the relocation's symbol (global functions and other
                    // sections), else relative to this instruction within the section.
                    var targetSection = function.section
                    var target = original + Int(slot.immediate) + 1
                    if let relocation {
                        guard relocation.type == Self.relocation32 else {
                            throw ObjectError(.unsupported, "relocation type \(relocation.type) on the call at \(what)")
                        }
                        let symbol = elf.symbols[relocation.symbol]
                        targetSection = symbol.sectionIndex
                        target = Int(symbol.value / 8) + Int(slot.immediate) + 1
                    }
                    guard
                        let callee = functions.first(where: {
                            $0.section == targetSection && $0.start == target
                        })
                    else {
                        throw ObjectError(.missingSymbol, "the call at \(what) goes to no function (slot \(target))")
                    }
                    let calleeAt = place(callee)
                    output[at].immediate = Int32(calleeAt - at - 1)
                } else if let relocation, relocation.type != Self.relocationNone {
                    throw ObjectError(
                        .unsupported,
                        "relocation type \(relocation.type) on a \(String(slot.opcode, radix: 16)) instruction at \(what)"
                    )
                }
                i += 1
            }
        }
        for (slot, reference) in references {
            switch reference {
            case .map: output[slot].src = Self.pseudoMapFD
            case .data(_, let offset):
                output[slot].src = Self.pseudoMapValue
                output[slot + 1].immediate = Int32(bitPattern: offset)
            }
            output[slot].immediate = 0
        }
        // Instructions, with references by instruction index rather than slot.
        var instructions: [Instruction] = []
        var indexOfSlot: [Int: Int] = [:]
        var s = 0
        while s < output.count {
            let slot = output[s]
            indexOfSlot[s] = instructions.count
            var instruction = Instruction(
                opcode: slot.opcode, dst: Register(rawValue: slot.dst), src: Register(rawValue: slot.src),
                offset: slot.offset,
                immediate: slot.immediate)
            if slot.opcode == Instruction.loadImm64Opcode, s + 1 < output.count {
                instruction.nextImmediate = output[s + 1].immediate
                s += 2
            } else {
                s += 1
            }
            instructions.append(instruction)
        }
        var functionInfo: [ObjectProgram.FunctionInfo] = []
        var lineInfo: [ObjectProgram.LineInfo] = []
        for (function, at) in placed {
            let section = elf.sections[function.section].name
            let range = UInt32(function.start * 8)..<UInt32((function.start + function.count) * 8)
            for record in ext?.functions[section] ?? [] where range.contains(record.instructionByteOffset) {
                functionInfo.append(
                    .init(
                        slot: UInt32(at) + (record.instructionByteOffset - range.lowerBound) / 8, typeID: record.typeID)
                )
            }
            for record in ext?.lines[section] ?? [] where range.contains(record.instructionByteOffset) {
                lineInfo.append(
                    .init(
                        slot: UInt32(at) + (record.instructionByteOffset - range.lowerBound) / 8,
                        fileNameOffset: record.fileNameOffset, lineOffset: record.lineOffset,
                        lineColumn: record.lineColumn, fileName: btf?.string(at: record.fileNameOffset) ?? "?",
                        text: (btf?.string(at: record.lineOffset) ?? "").trimmingLeadingSpaces))
            }
        }
        let linkedSections = Set(placed.map { elf.sections[$0.function.section].name })
        let core = ext?.coreRelocationSections.filter { linkedSections.contains($0) } ?? []
        return ObjectProgram(
            name: entry.name, section: sectionName, type: SectionType(section: sectionName)!,
            instructions: instructions,
            references: try references.map { (reference) throws(ObjectError) in
                guard let index = indexOfSlot[reference.slot] else {
                    throw ObjectError(
                        .malformed, "a reference at slot \(reference.slot) of \(entry.name) is inside an ld_imm64")
                }
                return (index, reference.reference)
            }, functionInfo: functionInfo,
            lineInfo: lineInfo, functions: placed.map { ($0.function.name, $0.at) },
            unsupported: core.isEmpty
                ? nil
                : "CO-RE relocations (BTF.ext core_relo records in \(core.joined(separator: ", "))) are not supported:"
                    + " build without __builtin_preserve_access_index / BPF_CORE_READ")
    }

    /// What the `ld_imm64` at a relocation refers to.
    private func reference(_ relocation: ELFFile.Relocation, _ slot: Slot, _ what: String) throws(ObjectError)
        -> ObjectProgram.Reference
    {
        guard relocation.type == Self.relocation64 else {
            throw ObjectError(.unsupported, "relocation type \(relocation.type) on the ld_imm64 at \(what)")
        }
        let symbol = elf.symbols[relocation.symbol]
        guard symbol.sectionIndex > 0, symbol.sectionIndex < elf.sections.count else {
            throw ObjectError(.missingSymbol, "the ld_imm64 at \(what) names \(symbol.name), which is defined nowhere")
        }
        let section = elf.sections[symbol.sectionIndex]
        if section.name == ".maps" || section.name == "maps" {
            guard maps.contains(where: { $0.name == symbol.name }) else {
                throw ObjectError(
                    .missingSymbol, "the ld_imm64 at \(what) names map \(symbol.name), which is not defined")
            }
            return .map(symbol.name)
        }
        if data.contains(where: { $0.name == section.name }) {
            // A section symbol carries the offset in the instruction; a variable's is its value.
            guard symbol.value <= UInt64(section.size) else {
                throw ObjectError(.malformed, "the ld_imm64 at \(what) names \(symbol.name), outside \(section.name)")
            }
            let offset = (symbol.isSection ? 0 : Int64(symbol.value)) + Int64(slot.immediate)
            guard offset >= 0, offset < Int64(section.size) else {
                throw ObjectError(
                    .malformed, "the ld_imm64 at \(what) points outside \(section.name) (offset \(offset))")
            }
            return .data(section: section.name, offset: UInt32(offset))
        }
        throw ObjectError(
            .unsupported,
            "the ld_imm64 at \(what) refers to \(symbol.name) in section \(section.name), not a map or global data")
    }
}

extension String {
    var trimmingLeadingSpaces: String { String(drop { $0 == " " || $0 == "\t" }) }
}
