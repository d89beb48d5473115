/// The parts of an ELF64 file that a BPF object uses: section headers, the symbol table and
/// relocations, in either byte order. Offsets and sizes are checked before every read.
struct ELFFile {
    struct Section {
        var index: Int
        var name: String
        var type: UInt32
        var flags: UInt64
        var offset: Int
        var size: Int
        var link: UInt32
        var info: UInt32
        var entrySize: Int

        var isExecutable: Bool { type == ELFFile.progbits && flags & 0x4 != 0 }
    }

    struct Symbol {
        var index: Int
        var name: String
        var info: UInt8
        var sectionIndex: Int
        var value: UInt64
        var size: UInt64

        var type: UInt8 { info & 0xf }
        var binding: UInt8 { info >> 4 }
        var isFunction: Bool { type == 2 }
        var isSection: Bool { type == 3 }
        var isGlobal: Bool { binding == 1 || binding == 2 }
    }

    struct Relocation {
        var offset: UInt64
        var type: UInt32
        var symbol: Int
    }

    static let progbits: UInt32 = 1
    static let symtab: UInt32 = 2
    static let rela: UInt32 = 4
    static let nobits: UInt32 = 8
    static let rel: UInt32 = 9
    static let machineBPF: UInt16 = 247

    let reader: ByteReader
    var bigEndian: Bool { reader.bigEndian }
    private(set) var sections: [Section] = []
    private(set) var symbols: [Symbol] = []
    /// Relocations by the index of the section they apply to.
    private(set) var relocations: [Int: [Relocation]] = [:]

    init(_ bytes: [UInt8]) throws(ObjectError) {
        guard bytes.count >= 16, bytes[0] == 0x7f, bytes[1] == 0x45, bytes[2] == 0x4c, bytes[3] == 0x46 else {
            throw ObjectError(.notBPFObject, "the file does not start with the ELF magic (\\x7fELF)")
        }
        guard bytes[4] == 2 else {
            throw ObjectError(.notBPFObject, "ELF class \(bytes[4]) is not ELF64, which BPF objects are")
        }
        guard bytes[5] == 1 || bytes[5] == 2 else {
            throw ObjectError(.malformed, "ELF data encoding \(bytes[5]) is neither little (1) nor big-endian (2)")
        }
        reader = ByteReader(bytes, bigEndian: bytes[5] == 2)
        let machine = try reader.u16(18, "e_machine")
        guard machine == Self.machineBPF else {
            throw ObjectError(
                .notBPFObject, "e_machine is \(machine), not EM_BPF (247): compile with clang -target bpf")
        }
        let type = try reader.u16(16, "e_type")
        guard type == 1 else {
            throw ObjectError(.unsupported, "e_type is \(type); only relocatable objects (ET_REL, clang -c) are loaded")
        }
        let sectionTable = try reader.size(40, "e_shoff")
        let entrySize = Int(try reader.u16(58, "e_shentsize"))
        var count = Int(try reader.u16(60, "e_shnum"))
        var namesIndex = Int(try reader.u16(62, "e_shstrndx"))
        guard entrySize >= 64 || (count == 0 && sectionTable == 0) else {
            throw ObjectError(.malformed, "e_shentsize is \(entrySize); ELF64 section headers take 64 bytes")
        }
        if sectionTable == 0 { throw ObjectError(.malformed, "the file has no section header table") }
        // Over 0xff00 sections: the real count and string table index are in section 0.
        if count == 0 { count = try reader.size(sectionTable + 32, "section 0's sh_size (the section count)") }
        if namesIndex == 0xffff { namesIndex = Int(try reader.u32(sectionTable + 40, "section 0's sh_link")) }
        try reader.check(sectionTable, count * entrySize, "the section header table (\(count) headers)")
        var raw: [(nameOffset: Int, section: Section)] = []
        for index in 0..<count {
            let at = sectionTable + index * entrySize
            let section = Section(
                index: index, name: "", type: try reader.u32(at + 4, "sh_type"),
                flags: try reader.u64(at + 8, "sh_flags"),
                offset: try reader.size(at + 24, "sh_offset"), size: try reader.size(at + 32, "sh_size"),
                link: try reader.u32(at + 40, "sh_link"), info: try reader.u32(at + 44, "sh_info"),
                entrySize: try reader.size(at + 56, "sh_entsize"))
            if section.type != Self.nobits && section.type != 0 {
                try reader.check(section.offset, section.size, "section \(index)'s contents")
            }
            raw.append((Int(try reader.u32(at, "sh_name")), section))
        }
        guard namesIndex < count else {
            throw ObjectError(.malformed, "e_shstrndx \(namesIndex) is not one of the \(count) sections")
        }
        let names = raw[namesIndex].section
        for (nameOffset, section) in raw {
            var named = section
            guard nameOffset < names.size else {
                throw ObjectError(.malformed, "section \(section.index)'s name offset \(nameOffset) is past the names")
            }
            named.name = try reader.cString(names.offset + nameOffset, "section \(section.index)'s name")
            sections.append(named)
        }
        try readSymbols()
        try readRelocations()
    }

    func contents(_ section: Section) throws(ObjectError) -> [UInt8] {
        if section.type == Self.nobits { return [UInt8](repeating: 0, count: section.size) }
        return try reader.slice(section.offset, section.size, "section \(section.name)")
    }

    func section(named name: String) -> Section? { sections.first { $0.name == name } }

    private mutating func readSymbols() throws(ObjectError) {
        let tables = sections.filter { $0.type == Self.symtab }
        guard let table = tables.first else { return }
        guard tables.count == 1 else { throw ObjectError(.malformed, "the object has \(tables.count) symbol tables") }
        guard Int(table.link) < sections.count else {
            throw ObjectError(.malformed, "the symbol table's string table (section \(table.link)) does not exist")
        }
        let strings = sections[Int(table.link)]
        let entrySize = table.entrySize == 0 ? 24 : table.entrySize
        guard entrySize >= 24 else { throw ObjectError(.malformed, "symbol entries of \(entrySize) bytes (ELF64: 24)") }
        for index in 0..<table.size / entrySize {
            let at = table.offset + index * entrySize
            let nameOffset = Int(try reader.u32(at, "symbol \(index)'s name"))
            guard nameOffset < max(strings.size, 1) else {
                throw ObjectError(.malformed, "symbol \(index)'s name offset \(nameOffset) is past its string table")
            }
            let name =
                strings.size == 0 ? "" : try reader.cString(strings.offset + nameOffset, "symbol \(index)'s name")
            symbols.append(
                Symbol(
                    index: index, name: name, info: try reader.u8(at + 4, "symbol \(index)'s st_info"),
                    sectionIndex: Int(try reader.u16(at + 6, "symbol \(index)'s st_shndx")),
                    value: try reader.u64(at + 8, "symbol \(index)'s st_value"),
                    size: try reader.u64(at + 16, "symbol \(index)'s st_size")))
        }
    }

    private mutating func readRelocations() throws(ObjectError) {
        for section in sections where section.type == Self.rel || section.type == Self.rela {
            let target = Int(section.info)
            guard target < sections.count else {
                throw ObjectError(.malformed, "relocation section \(section.name) applies to missing section \(target)")
            }
            let entrySize = section.entrySize == 0 ? (section.type == Self.rel ? 16 : 24) : section.entrySize
            guard entrySize >= 16 else {
                throw ObjectError(.malformed, "relocation entries of \(entrySize) bytes in \(section.name)")
            }
            var list: [Relocation] = []
            for index in 0..<section.size / entrySize {
                let at = section.offset + index * entrySize
                let info = try reader.u64(at + 8, "relocation \(index) of \(section.name)")
                let symbol = Int(info >> 32)
                guard symbol < symbols.count else {
                    throw ObjectError(
                        .missingSymbol,
                        "relocation \(index) of \(section.name) names symbol \(symbol), which does not exist")
                }
                list.append(
                    Relocation(
                        offset: try reader.u64(at, "relocation \(index) of \(section.name)"),
                        type: UInt32(truncatingIfNeeded: info), symbol: symbol))
            }
            relocations[target, default: []] += list
        }
    }
}
