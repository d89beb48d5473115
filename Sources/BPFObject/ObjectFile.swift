import BPFAssembly

/// A BPF object file as clang writes it (`clang -O2 -g -target bpf -c prog.c`), read in pure
/// Swift: its programs (each linked with the subprograms it calls), map definitions, global
/// data, license, and the BTF the kernel gets with them.
///
/// Nothing here calls the kernel; the `BPF` module's `LoadedObject` creates the maps and
/// loads the programs.
///
/// ```swift
/// let object = try ObjectFile(bytes: Array(data), name: "steer")
/// for program in object.programs { print(program.name, program.section) }
/// ```
public struct ObjectFile: Sendable {
    /// The object's name: the file name without `.o` (global data maps are named after it).
    public var name: String
    /// Whether the object is big-endian (`-target bpfeb`).
    public var isBigEndian: Bool
    /// The `license` section's string ("" if there is none).
    public var license: String
    /// The `version` section's number (0 if there is none).
    public var kernelVersion: UInt32
    /// Every program, in section order then offset order.
    public var programs: [ObjectProgram]
    /// Every map of `.maps` and the legacy `maps` section.
    public var maps: [MapDefinition]
    /// `.data*`, `.rodata*` and `.bss*`, which become array maps of one value.
    public var dataSections: [DataSection]
    /// The `.BTF` section with the loader's fix-ups applied, ready for `BPF_BTF_LOAD`; nil
    /// when the object has no BTF.
    public var btf: [UInt8]?

    /// Whether the object's byte order is this machine's, which loading requires.
    public var isHostByteOrder: Bool { isBigEndian == (ByteOrder.host == .big) }

    /// The program whose function is called `name`.
    public func program(named name: String) -> ObjectProgram? { programs.first { $0.name == name } }
    /// The map called `name`.
    public func map(named name: String) -> MapDefinition? { maps.first { $0.name == name } }

    /// Reads an object from its bytes.
    ///
    /// - Parameters:
    ///   - bytes: the whole ELF file.
    ///   - name: the object's name (usually the file name without `.o`).
    /// - Throws: ``ObjectError`` for anything malformed or unsupported; never traps.
    public init(bytes: [UInt8], name: String) throws(ObjectError) {
        let elf = try ELFFile(bytes)
        self.name = name
        isBigEndian = elf.bigEndian
        license = ""
        if let section = elf.section(named: "license") {
            license = String(decoding: try elf.contents(section).prefix { $0 != 0 }, as: UTF8.self)
        }
        kernelVersion = 0
        if let section = elf.section(named: "version") {
            guard section.size == 4 else {
                throw ObjectError(.malformed, "the version section has \(section.size) bytes, not 4")
            }
            kernelVersion = try elf.reader.u32(section.offset, "version")
        }
        var btf: BTF? = nil
        var ext: BTFExt? = nil
        if let section = elf.section(named: ".BTF") {
            let parsed = try BTF(try elf.contents(section))
            guard parsed.bigEndian == elf.bigEndian else {
                throw ObjectError(.malformed, ".BTF's byte order is not the ELF file's")
            }
            btf = parsed
            if let extSection = elf.section(named: ".BTF.ext") {
                ext = try BTFExt(try elf.contents(extSection), btf: parsed)
            }
        }
        if let undefined = elf.symbols.first(where: {
            $0.sectionIndex == 0 && !$0.name.isEmpty && $0.index > 0 && $0.type != 4
        }) {
            throw ObjectError(
                .unsupported,
                "extern symbol '\(undefined.name)' (kconfig, ksym or kfunc): this loader does not resolve externs")
        }
        dataSections = try Self.dataSections(elf, btf)
        // The kernel wants data section sizes and variable offsets, which clang leaves 0.
        if var fixed = btf {
            for (id, type) in fixed.types.enumerated() where type.kind == .dataSection {
                guard let section = elf.section(named: type.name) else { continue }
                try fixed.fixDataSection(UInt32(id), size: section.size) { variable in
                    elf.symbols.first { $0.sectionIndex == section.index && $0.name == variable && !$0.isSection }?
                        .value
                }
            }
            btf = fixed
            self.btf = fixed.bytes
        }
        maps = try MapParser(elf: elf, btf: btf).maps()
        programs = try ProgramLinker(elf: elf, btf: btf, ext: ext, maps: maps, data: dataSections).programs()
    }

    private static func dataSections(_ elf: ELFFile, _ btf: BTF?) throws(ObjectError) -> [DataSection] {
        var result: [DataSection] = []
        for section in elf.sections where DataSection.isDataSection(section.name) {
            guard section.type == ELFFile.progbits || section.type == ELFFile.nobits, section.size > 0 else { continue }
            let symbols = elf.symbols.filter { $0.sectionIndex == section.index && $0.type == 1 && !$0.name.isEmpty }
                .sorted { $0.value < $1.value }
            for symbol in symbols
            where symbol.value > UInt64(section.size) || symbol.size > UInt64(section.size) - symbol.value {
                throw ObjectError(.malformed, "variable \(symbol.name) lies outside \(section.name)")
            }
            let variables = symbols.map {
                DataSection.Variable(name: $0.name, offset: Int($0.value), size: Int($0.size))
            }
            result.append(
                DataSection(
                    name: section.name, size: section.size,
                    initialContents: section.type == ELFFile.nobits ? nil : try elf.contents(section),
                    isReadOnly: section.name.hasPrefix(".rodata"),
                    btfTypeID: btf?.id(named: section.name, kind: .dataSection),
                    variables: variables))
        }
        return result
    }
}

/// One program of an object: an entry function in a program section, linked with every
/// subprogram it calls, its maps and global data still named (the loader puts in descriptors).
public struct ObjectProgram: Sendable {
    /// The function's name (pins and `--attach` use it in full).
    public var name: String
    /// The section it came from (`sk_lookup`, `sk_lookup/steer`, `xdp`).
    public var section: String
    /// The program type and expected attach type the section name says.
    public var type: SectionType
    /// The instructions: the entry function first, then its subprograms.
    public var instructions: [Instruction]
    /// The `ld_imm64` instructions that name a map or global data, by instruction index.
    public var references: [(instructionIndex: Int, reference: Reference)]
    /// BTF function records (`bpf_func_info`), in 8-byte slots of ``instructions``.
    public var functionInfo: [FunctionInfo]
    /// BTF line records (`bpf_line_info`), in 8-byte slots of ``instructions``.
    public var lineInfo: [LineInfo]
    /// The functions linked in, with the slot each starts at.
    public var functions: [(name: String, slot: Int)]
    /// Why this program cannot be loaded as it is (CO-RE relocations), if it cannot.
    public var unsupported: String?

    /// What an `ld_imm64` refers to.
    public enum Reference: Sendable, Hashable {
        /// A map's descriptor (`BPF_PSEUDO_MAP_FD`).
        case map(String)
        /// An address in a global data section (`BPF_PSEUDO_MAP_VALUE`): its map, the offset.
        case data(section: String, offset: UInt32)
    }

    /// `struct bpf_func_info`.
    public struct FunctionInfo: Sendable, Hashable {
        /// The first slot of the function.
        public var slot: UInt32
        /// Its `BTF_KIND_FUNC` type.
        public var typeID: UInt32
    }

    /// `struct bpf_line_info`.
    public struct LineInfo: Sendable, Hashable {
        /// The slot the line starts at.
        public var slot: UInt32
        /// The BTF string of the source file's name.
        public var fileNameOffset: UInt32
        /// The BTF string of the source line's text.
        public var lineOffset: UInt32
        /// Line number << 10 | column.
        public var lineColumn: UInt32
        /// The source file's name, as clang recorded it.
        public var fileName: String
        /// The source line's text.
        public var text: String

        /// The line number.
        public var line: Int { Int(lineColumn >> 10) }
        /// `file.c:LINE: text`, with the file's base name, as the verifier prints lines.
        public var location: String {
            "\(fileName.split(separator: "/").last.map(String.init) ?? fileName):\(line): \(text)"
        }
    }

    /// The source line of a slot (from the line records), as `file.c:LINE: text`.
    public func sourceLine(atSlot slot: Int) -> String? {
        lineInfo.last { Int($0.slot) <= slot }?.location
    }

    /// How many 8-byte slots the program takes (what the kernel counts).
    public var slotCount: Int { instructions.reduce(0) { $0 + $1.slotCount } }
}

/// A global data section (`.data`, `.rodata`, `.bss`, or one of their named variants).
public struct DataSection: Sendable, Hashable {
    /// The section name.
    public var name: String
    /// Its size in bytes (the map's value size).
    public var size: Int
    /// What it holds at load time; nil for `.bss` (zeros).
    public var initialContents: [UInt8]?
    /// `.rodata*`: frozen after it is filled, so programs may treat it as constant.
    public var isReadOnly: Bool
    /// The section's `BTF_KIND_DATASEC`, if the object has one.
    public var btfTypeID: UInt32?
    /// The variables in it, by offset.
    public var variables: [Variable]

    /// One global variable.
    public struct Variable: Sendable, Hashable {
        /// Its name.
        public var name: String
        /// Its offset in the section.
        public var offset: Int
        /// Its size in bytes.
        public var size: Int
    }

    static func isDataSection(_ name: String) -> Bool {
        for base in [".data", ".rodata", ".bss"] where name == base || name.hasPrefix(base + ".") { return true }
        return false
    }

    /// The pin and map name suffix: `.rodata` of object `steer` is `steer.rodata`.
    public func mapName(object: String) -> String { object + name }
}
