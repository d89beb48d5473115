/// The BPF Type Format of an object (`.BTF`): its types and strings, read as far as map
/// definitions and global data need, and the raw bytes the kernel gets, with the fix-ups
/// clang leaves to the loader (data section sizes and variable offsets) applied.
struct BTF {
    enum Kind: UInt8 {
        case void = 0
        case int, pointer, array, structure, union, enumeration, forward, typedef, volatile, const, restrict
        case function, functionPrototype, variable, dataSection, float, declarationTag, typeTag, enumeration64
    }

    struct Member {
        var name: String
        var type: UInt32
        /// Bits for struct members; bytes for data section entries; 0 for parameters.
        var offset: UInt32
        /// Data section entries only: the variable's size.
        var size: UInt32 = 0
    }

    struct TypeRecord {
        var kind: Kind
        var name: String
        var vlen: Int
        var sizeOrType: UInt32
        /// Where the record starts in the whole `.BTF` section.
        var byteOffset: Int
        var members: [Member] = []
        var array: (element: UInt32, index: UInt32, count: UInt32)? = nil
        var linkage: UInt32 = 0
    }

    static let magic: UInt16 = 0xeb9f

    private(set) var bytes: [UInt8]
    let bigEndian: Bool
    /// Index 0 is `void`.
    private(set) var types: [TypeRecord] = [TypeRecord(kind: .void, name: "", vlen: 0, sizeOrType: 0, byteOffset: 0)]
    private let stringsOffset: Int
    private let stringsLength: Int

    init(_ bytes: [UInt8]) throws(ObjectError) {
        guard bytes.count >= 24 else {
            throw ObjectError(.truncated, ".BTF has \(bytes.count) bytes, less than its header")
        }
        let little = bytes[0] == 0x9f && bytes[1] == 0xeb
        let big = bytes[0] == 0xeb && bytes[1] == 0x9f
        guard little || big else { throw ObjectError(.malformed, ".BTF does not start with the BTF magic 0xeb9f") }
        self.bytes = bytes
        bigEndian = big
        let reader = ByteReader(bytes, bigEndian: big)
        guard try reader.u8(2, "BTF version") == 1 else {
            throw ObjectError(.unsupported, "BTF version \(bytes[2]); only version 1 exists")
        }
        let headerLength = Int(try reader.u32(4, "BTF header length"))
        guard headerLength >= 24 else { throw ObjectError(.malformed, "BTF header length \(headerLength) is under 24") }
        let typeOffset = headerLength + Int(try reader.u32(8, "BTF type offset"))
        let typeLength = Int(try reader.u32(12, "BTF type length"))
        stringsOffset = headerLength + Int(try reader.u32(16, "BTF string offset"))
        stringsLength = Int(try reader.u32(20, "BTF string length"))
        try reader.check(typeOffset, typeLength, "BTF types")
        try reader.check(stringsOffset, stringsLength, "BTF strings")
        var at = typeOffset
        let end = typeOffset + typeLength
        while at < end {
            let id = types.count
            let info = try reader.u32(at + 4, "BTF type \(id)")
            guard let kind = Kind(rawValue: UInt8((info >> 24) & 0x1f)), kind != .void else {
                throw ObjectError(
                    .unsupported, "BTF type \(id) has kind \((info >> 24) & 0x1f), which this loader does not know")
            }
            var record = TypeRecord(
                kind: kind, name: try string(reader, try reader.u32(at, "BTF type \(id)"), "BTF type \(id)'s name"),
                vlen: Int(info & 0xffff), sizeOrType: try reader.u32(at + 8, "BTF type \(id)"), byteOffset: at)
            at += 12
            switch kind {
            case .int, .variable, .declarationTag:
                if kind == .variable { record.linkage = try reader.u32(at, "BTF variable \(id)") }
                at += 4
            case .array:
                record.array = (
                    try reader.u32(at, "BTF array \(id)"), try reader.u32(at + 4, "BTF array \(id)"),
                    try reader.u32(at + 8, "BTF array \(id)")
                )
                at += 12
            case .structure, .union:
                for i in 0..<record.vlen {
                    let m = at + i * 12
                    record.members.append(
                        Member(
                            name: try string(reader, try reader.u32(m, "BTF member"), "BTF member name"),
                            type: try reader.u32(m + 4, "BTF member"), offset: try reader.u32(m + 8, "BTF member")))
                }
                at += record.vlen * 12
            case .enumeration: at += record.vlen * 8
            case .enumeration64: at += record.vlen * 12
            case .functionPrototype:
                for i in 0..<record.vlen {
                    let m = at + i * 8
                    record.members.append(
                        Member(
                            name: try string(reader, try reader.u32(m, "BTF parameter"), "BTF parameter name"),
                            type: try reader.u32(m + 4, "BTF parameter"), offset: 0))
                }
                at += record.vlen * 8
            case .dataSection:
                for i in 0..<record.vlen {
                    let m = at + i * 12
                    record.members.append(
                        Member(
                            name: "", type: try reader.u32(m, "BTF data section entry"),
                            offset: try reader.u32(m + 4, "BTF data section entry"),
                            size: try reader.u32(m + 8, "BTF data section entry")))
                }
                at += record.vlen * 12
            case .void, .pointer, .forward, .typedef, .volatile, .const, .restrict, .function, .float, .typeTag: break
            }
            guard at <= end else { throw ObjectError(.truncated, "BTF type \(id) reaches past the type section") }
            types.append(record)
        }
        for (id, type) in types.enumerated() where id > 0 {
            let referenced: [UInt32]
            switch type.kind {
            case .pointer, .typedef, .volatile, .const, .restrict, .function, .variable, .typeTag, .declarationTag:
                referenced = [type.sizeOrType]
            case .array: referenced = [type.array!.element, type.array!.index]
            default: referenced = type.members.map(\.type)
            }
            for target in referenced where Int(target) >= types.count {
                throw ObjectError(.malformed, "BTF type \(id) refers to type \(target), which does not exist")
            }
        }
    }

    private func string(_ reader: ByteReader, _ offset: UInt32, _ what: String) throws(ObjectError) -> String {
        guard Int(offset) < stringsLength else {
            throw ObjectError(
                .malformed, "\(what): string offset \(offset) is past the \(stringsLength)-byte string table")
        }
        return try reader.cString(stringsOffset + Int(offset), what)
    }

    /// A string of the string table (file names and source lines of line info).
    func string(at offset: UInt32) -> String? {
        try? string(ByteReader(bytes, bigEndian: bigEndian), offset, "string")
    }

    func type(_ id: UInt32) -> TypeRecord? { Int(id) < types.count ? types[Int(id)] : nil }

    /// Follows typedefs, qualifiers and tags to the type they name.
    func resolved(_ id: UInt32) -> (id: UInt32, type: TypeRecord)? {
        var id = id
        for _ in 0..<64 {
            guard let type = type(id) else { return nil }
            switch type.kind {
            case .typedef, .volatile, .const, .restrict, .typeTag: id = type.sizeOrType
            default: return (id, type)
            }
        }
        return nil
    }

    /// The size in bytes of a type, or nil for types without one (void, functions, loops).
    func size(of id: UInt32, depth: Int = 0) -> Int? {
        guard depth < 64, let type = type(id) else { return nil }
        switch type.kind {
        case .int, .structure, .union, .enumeration, .enumeration64, .float, .dataSection: return Int(type.sizeOrType)
        case .pointer: return 8
        case .array:
            guard let array = type.array, let element = size(of: array.element, depth: depth + 1) else { return nil }
            let total = element.multipliedReportingOverflow(by: Int(array.count))
            return total.overflow ? nil : total.partialValue
        case .typedef, .volatile, .const, .restrict, .typeTag, .variable:
            return size(of: type.sizeOrType, depth: depth + 1)
        case .void, .forward, .function, .functionPrototype, .declarationTag: return nil
        }
    }

    /// The id of a named type of a kind (the first one).
    func id(named name: String, kind: Kind) -> UInt32? {
        types.indices.first { types[$0].kind == kind && types[$0].name == name }.map(UInt32.init)
    }

    /// Sets what clang leaves for the loader: a data section's size (the ELF section's) and
    /// each variable's offset in it (its symbol's value), sorted by offset as the kernel
    /// requires. `offsetOf` answers nil for a variable with no symbol.
    mutating func fixDataSection(
        _ id: UInt32, size: Int, offsetOf: (String) -> UInt64?
    ) throws(ObjectError) {
        guard var section = type(id), section.kind == .dataSection else { return }
        var writer = ByteWriter(bigEndian: bigEndian)
        writer.u32(UInt32(size))
        bytes.replaceSubrange(section.byteOffset + 8..<section.byteOffset + 12, with: writer.bytes)
        for index in section.members.indices {
            let variable = section.members[index].type
            guard let name = type(variable)?.name, let offset = offsetOf(name) else {
                throw ObjectError(
                    .missingSymbol,
                    "BTF data section \(section.name) lists variable \(type(variable)?.name ?? "?"), which has no symbol"
                )
            }
            section.members[index].offset = UInt32(truncatingIfNeeded: offset)
        }
        section.members.sort { $0.offset < $1.offset }
        var entries = ByteWriter(bigEndian: bigEndian)
        for member in section.members {
            entries.u32(member.type)
            entries.u32(member.offset)
            entries.u32(member.size)
        }
        let start = section.byteOffset + 12
        bytes.replaceSubrange(start..<start + entries.bytes.count, with: entries.bytes)
        section.sizeOrType = UInt32(size)
        types[Int(id)] = section
    }
}

/// `.BTF.ext`: function and line records by section, offsets in bytes of that section.
struct BTFExt {
    struct FunctionRecord {
        var instructionByteOffset: UInt32
        var typeID: UInt32
    }

    struct LineRecord {
        var instructionByteOffset: UInt32
        var fileNameOffset: UInt32
        var lineOffset: UInt32
        var lineColumn: UInt32
    }

    private(set) var functions: [String: [FunctionRecord]] = [:]
    private(set) var lines: [String: [LineRecord]] = [:]
    /// Sections with CO-RE relocation records, which this loader does not apply.
    private(set) var coreRelocationSections: [String] = []

    init(_ bytes: [UInt8], btf: BTF) throws(ObjectError) {
        let reader = ByteReader(bytes, bigEndian: btf.bigEndian)
        guard try reader.u16(0, ".BTF.ext magic") == BTF.magic else {
            throw ObjectError(.malformed, ".BTF.ext does not start with the BTF magic in the object's byte order")
        }
        let headerLength = Int(try reader.u32(4, ".BTF.ext header length"))
        guard headerLength >= 24 else {
            throw ObjectError(.malformed, ".BTF.ext header length \(headerLength) is under 24")
        }
        func records(_ field: Int, _ what: String, _ body: (String, Int, Int) throws(ObjectError) -> Void)
            throws(ObjectError)
        {
            let offset = headerLength + Int(try reader.u32(field, what))
            let length = Int(try reader.u32(field + 4, what))
            guard length > 0 else { return }
            try reader.check(offset, length, what)
            let recordSize = Int(try reader.u32(offset, "\(what) record size"))
            guard recordSize >= 8, recordSize < 1024 else {
                throw ObjectError(.malformed, "\(what) records of \(recordSize) bytes")
            }
            var at = offset + 4
            while at < offset + length {
                let nameOffset = try reader.u32(at, what)
                guard let section = btf.string(at: nameOffset) else {
                    throw ObjectError(.malformed, "\(what) names section string \(nameOffset), not in .BTF")
                }
                let count = Int(try reader.u32(at + 4, what))
                at += 8
                guard count <= (offset + length - at) / recordSize else {
                    throw ObjectError(.truncated, "\(what) of \(section): \(count) records do not fit")
                }
                for i in 0..<count { try body(section, at + i * recordSize, recordSize) }
                at += count * recordSize
            }
        }
        try records(8, "BTF.ext function info") { (section, at, _) throws(ObjectError) in
            functions[section, default: []].append(
                FunctionRecord(
                    instructionByteOffset: try reader.u32(at, "function info"),
                    typeID: try reader.u32(at + 4, "function info")))
        }
        try records(16, "BTF.ext line info") { (section, at, size) throws(ObjectError) in
            guard size >= 16 else { throw ObjectError(.malformed, "line info records of \(size) bytes (16 expected)") }
            lines[section, default: []].append(
                LineRecord(
                    instructionByteOffset: try reader.u32(at, "line info"),
                    fileNameOffset: try reader.u32(at + 4, "line info"),
                    lineOffset: try reader.u32(at + 8, "line info"), lineColumn: try reader.u32(at + 12, "line info")))
        }
        if headerLength >= 32 {
            try records(24, "BTF.ext CO-RE relocations") { (section, _, _) throws(ObjectError) in
                if !coreRelocationSections.contains(section) { coreRelocationSections.append(section) }
            }
        }
    }
}
