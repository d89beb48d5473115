/// A map an object defines, in `.maps` (with BTF, as libbpf's `__uint`/`__type` macros write
/// it) or in the legacy `maps` section (`struct bpf_map_def`).
public struct MapDefinition: Sendable, Hashable {
    /// The variable's name (pins use it in full; the kernel keeps 15 characters).
    public var name: String
    /// `BPF_MAP_TYPE_*`.
    public var type: UInt32
    /// Key size in bytes.
    public var keySize: UInt32
    /// Value size in bytes.
    public var valueSize: UInt32
    /// Maximum entries.
    public var maxEntries: UInt32
    /// `map_flags`.
    public var flags: UInt32
    /// `LIBBPF_PIN_BY_NAME` (1) or none (0).
    public var pinning: UInt32
    /// The BTF type of the key (`__type(key, …)`), if given.
    public var keyTypeID: UInt32?
    /// The BTF type of the value (`__type(value, …)`), if given.
    public var valueTypeID: UInt32?
    /// For a map of maps: the definition of its inner maps (`__array(values, struct …)`).
    public var inner: InnerMap?
    /// For a map of maps: the maps its slots hold at load time, by slot.
    public var initialMaps: [UInt32: String]
    /// `.maps` or `maps`.
    public var section: String

    /// The definition of the inner maps of a map of maps.
    public struct InnerMap: Sendable, Hashable {
        /// `BPF_MAP_TYPE_*`.
        public var type: UInt32
        /// Key size in bytes.
        public var keySize: UInt32
        /// Value size in bytes.
        public var valueSize: UInt32
        /// Maximum entries.
        public var maxEntries: UInt32
        /// `map_flags`.
        public var flags: UInt32
    }

    /// `LIBBPF_PIN_BY_NAME`.
    public static let pinByName: UInt32 = 1

    /// Map types that are maps of maps.
    public static let mapOfMapsTypes: Set<UInt32> = [12, 13]
    /// Map types whose keys and values the kernel takes no BTF for (libbpf leaves it out).
    static let noBTFTypes: Set<UInt32> = [3, 4, 7, 8, 12, 13, 14, 15, 16, 17, 18, 22, 23, 25, 27, 31]

    /// The highest `BPF_MAP_TYPE_*` the kernel defines (`BPF_MAP_TYPE_ARENA`, Linux 6.9).
    public static let highestKnownType: UInt32 = 33

    static func checkType(_ type: UInt32, of name: String) throws(ObjectError) {
        guard (1...highestKnownType).contains(type) else {
            throw ObjectError(
                .unsupported, "map \(name) has type \(type), which is no BPF_MAP_TYPE_* (1…\(highestKnownType))")
        }
    }

    /// Whether the key and value BTF types go to the kernel with this map.
    public var passesBTF: Bool { !Self.noBTFTypes.contains(type) && (keyTypeID != nil || valueTypeID != nil) }
}

struct MapParser {
    let elf: ELFFile
    let btf: BTF?

    func maps() throws(ObjectError) -> [MapDefinition] {
        var result: [MapDefinition] = []
        if let section = elf.section(named: ".maps") { result += try btfMaps(section) }
        if let section = elf.section(named: "maps") { result += try legacyMaps(section) }
        var seen: Set<String> = []
        for map in result where !seen.insert(map.name).inserted {
            throw ObjectError(.malformed, "two maps are called \(map.name)")
        }
        for map in result {
            for (slot, target) in map.initialMaps where !result.contains(where: { $0.name == target }) {
                throw ObjectError(.missingSymbol, "slot \(slot) of map \(map.name) names \(target), which is not a map")
            }
        }
        return result
    }

    private func btfMaps(_ section: ELFFile.Section) throws(ObjectError) -> [MapDefinition] {
        guard let btf else {
            throw ObjectError(.malformed, "the object has a .maps section but no .BTF: compile with -g")
        }
        guard let datasecID = btf.id(named: ".maps", kind: .dataSection), let datasec = btf.type(datasecID) else {
            throw ObjectError(.malformed, ".BTF has no DATASEC for .maps")
        }
        let symbols = elf.symbols.filter { $0.sectionIndex == section.index && !$0.isSection && !$0.name.isEmpty }
        let relocations = elf.relocations[section.index] ?? []
        var result: [MapDefinition] = []
        for entry in datasec.members {
            guard let variable = btf.type(entry.type), variable.kind == .variable else {
                throw ObjectError(.malformed, "an entry of the .maps DATASEC is not a variable")
            }
            guard let symbol = symbols.first(where: { $0.name == variable.name }) else {
                throw ObjectError(.missingSymbol, "map \(variable.name) has BTF but no symbol in .maps")
            }
            guard symbol.value <= UInt64(section.size), symbol.size <= UInt64(section.size) - symbol.value else {
                throw ObjectError(.malformed, "map \(variable.name) lies outside .maps")
            }
            guard let (_, structure) = btf.resolved(variable.sizeOrType), structure.kind == .structure else {
                throw ObjectError(.malformed, "map \(variable.name) is not defined by a struct")
            }
            var definition = try parse(structure, name: variable.name, allowInner: true)
            // Slots of a map of maps filled at load time: `.values = { [1] = &inner }`.
            if let values = structure.members.first(where: { $0.name == "values" }) {
                let base = symbol.value + UInt64(values.offset / 8)
                for relocation in relocations
                where relocation.offset >= base && relocation.offset < symbol.value + symbol.size {
                    let slot = UInt32(truncatingIfNeeded: (relocation.offset - base) / 8)
                    definition.initialMaps[slot] = elf.symbols[relocation.symbol].name
                }
            }
            result.append(definition)
        }
        return result
    }

    private func parse(_ structure: BTF.TypeRecord, name: String, allowInner: Bool) throws(ObjectError) -> MapDefinition
    {
        guard let btf else { throw ObjectError(.malformed, "no BTF") }
        var definition = MapDefinition(
            name: name, type: 0, keySize: 0, valueSize: 0, maxEntries: 0, flags: 0, pinning: 0, keyTypeID: nil,
            valueTypeID: nil, inner: nil, initialMaps: [:], section: ".maps")
        // `__uint(field, N)` is `int (*field)[N]`: a pointer to an array of N elements.
        func number(_ member: BTF.Member) throws(ObjectError) -> UInt32 {
            guard let pointer = btf.resolved(member.type)?.type, pointer.kind == .pointer,
                let array = btf.resolved(pointer.sizeOrType)?.type, array.kind == .array, let info = array.array
            else {
                throw ObjectError(.malformed, "map \(name): field \(member.name) is not __uint(\(member.name), N)")
            }
            return info.count
        }
        // `__type(field, T)` is `T *field`.
        func pointee(_ member: BTF.Member) throws(ObjectError) -> (id: UInt32, size: UInt32) {
            guard let pointer = btf.resolved(member.type)?.type, pointer.kind == .pointer,
                let size = btf.size(of: pointer.sizeOrType), size <= Int(UInt32.max)
            else {
                throw ObjectError(
                    .malformed, "map \(name): field \(member.name) is not __type(\(member.name), T) of a sized T")
            }
            return (pointer.sizeOrType, UInt32(size))
        }
        for member in structure.members {
            switch member.name {
            case "type": definition.type = try number(member)
            case "max_entries": definition.maxEntries = try number(member)
            case "map_flags": definition.flags = try number(member)
            case "pinning": definition.pinning = try number(member)
            case "key_size": definition.keySize = try number(member)
            case "value_size": definition.valueSize = try number(member)
            case "numa_node", "map_extra": _ = try number(member)
            case "key":
                let (id, size) = try pointee(member)
                definition.keyTypeID = id
                definition.keySize = size
            case "value":
                let (id, size) = try pointee(member)
                definition.valueTypeID = id
                definition.valueSize = size
            case "values":
                // `__array(values, struct inner)`: an array of pointers to the inner map's struct.
                guard allowInner else {
                    throw ObjectError(.unsupported, "map \(name): maps of maps of maps are not supported")
                }
                guard let array = btf.resolved(member.type)?.type, array.kind == .array, let info = array.array,
                    let pointer = btf.resolved(info.element)?.type, pointer.kind == .pointer,
                    let inner = btf.resolved(pointer.sizeOrType)?.type, inner.kind == .structure
                else {
                    throw ObjectError(.malformed, "map \(name): values is not __array(values, struct …)")
                }
                let innerDefinition = try parse(inner, name: "\(name).inner", allowInner: false)
                definition.inner = MapDefinition.InnerMap(
                    type: innerDefinition.type, keySize: innerDefinition.keySize, valueSize: innerDefinition.valueSize,
                    maxEntries: innerDefinition.maxEntries, flags: innerDefinition.flags)
            default:
                throw ObjectError(.unsupported, "map \(name): field \(member.name) is not one libbpf defines")
            }
        }
        guard definition.type != 0 else { throw ObjectError(.malformed, "map \(name) has no type") }
        try MapDefinition.checkType(definition.type, of: name)
        if MapDefinition.mapOfMapsTypes.contains(definition.type) {
            guard definition.inner != nil else {
                throw ObjectError(.malformed, "map of maps \(name) has no __array(values, struct …) for its inner maps")
            }
            // The kernel stores inner maps by descriptor: 4-byte values.
            if definition.valueSize == 0 { definition.valueSize = 4 }
        }
        return definition
    }

    private func legacyMaps(_ section: ELFFile.Section) throws(ObjectError) -> [MapDefinition] {
        let symbols = elf.symbols.filter { $0.sectionIndex == section.index && !$0.isSection && !$0.name.isEmpty }
            .sorted { $0.value < $1.value }
        guard !symbols.isEmpty else { return [] }
        let size = section.size / symbols.count
        guard size >= 20 else {
            throw ObjectError(
                .malformed, "the maps section gives \(size) bytes per map, less than struct bpf_map_def (20)")
        }
        let contents = ByteReader(try elf.contents(section), bigEndian: elf.bigEndian)
        return try symbols.map { (symbol) throws(ObjectError) -> MapDefinition in
            guard symbol.value <= UInt64(section.size), Int(symbol.value) + 20 <= section.size else {
                throw ObjectError(.truncated, "map \(symbol.name)'s definition lies past the maps section")
            }
            let at = Int(symbol.value)
            let type = try contents.u32(at, "map type")
            try MapDefinition.checkType(type, of: symbol.name)
            return MapDefinition(
                name: symbol.name, type: type,
                keySize: try contents.u32(at + 4, "key size"),
                valueSize: try contents.u32(at + 8, "value size"), maxEntries: try contents.u32(at + 12, "max entries"),
                flags: try contents.u32(at + 16, "map flags"), pinning: 0, keyTypeID: nil, valueTypeID: nil, inner: nil,
                initialMaps: [:], section: "maps")
        }
    }
}
