import BPFAssembly
import BPFObject
import CBPF
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// What a program from a compiled object is loaded with besides its instructions.
struct ProgramDebugInfo {
    var btf: OwnedFileDescriptor?
    /// `struct bpf_func_info` records, host byte order.
    var functionInfo: [UInt8]
    /// `struct bpf_line_info` records, host byte order.
    var lineInfo: [UInt8]
    var kernelVersion: UInt32
}

/// The programs and maps of a BPF object file (`ObjectFile` (module `BPFObject`)), created and loaded in the
/// kernel as libbpf would: BTF (`BPF_BTF_LOAD`) first, then every map (maps of maps with
/// their inner maps, global data filled and `.rodata` frozen), then every program with its
/// map descriptors, function and line records, license and version.
///
/// ```swift
/// let object = try ObjectFile(bytes: bytes, name: "steer")
/// let loaded = try LoadedObject.load(object)
/// let link = try Link.attach(loaded.programs["steer"]!, to: namespace)
/// ```
///
/// The programs are ordinary ``Program``s and the maps ordinary ``Map``s: attach, test-run
/// and pin them as any other.
public final class LoadedObject: Sendable {
    /// The object it was loaded from.
    public let object: ObjectFile
    /// Every program, by function name.
    public let programs: [String: Program]
    /// Every map, by name: the object's maps and its global data (`OBJECT.rodata`, …).
    public let maps: [String: Map]
    /// The maps that were pinned already (``Options/pinDirectory``) and reused, by name.
    public let reusedPins: Set<String>
    /// The object's BTF in the kernel, if it loaded.
    public let btf: OwnedFileDescriptor?

    /// How to load.
    public struct Options: Sendable {
        /// Key and value sizes to create maps with instead of the object's (tubular's loader
        /// sets the sizes of its `destinations` map, which are 0 in the C source).
        public var mapSizes: [String: (key: Int, value: Int)]
        /// Maps to use instead of creating the object's map of that name.
        public var replacing: [String: Map]
        /// Where maps marked `LIBBPF_PIN_BY_NAME` live: one pinned at `DIR/NAME` is reused,
        /// otherwise the map is created (``LoadedObject/pin(in:)`` pins it). Without a
        /// directory, such maps are created unpinned; no implicit `/sys/fs/bpf`.
        public var pinDirectory: String?
        /// Debug messages of each step.
        public var logger: Logger?

        /// Options; the defaults create everything as the object defines it.
        public init(
            mapSizes: [String: (key: Int, value: Int)] = [:], replacing: [String: Map] = [:],
            pinDirectory: String? = nil,
            logger: Logger? = nil
        ) {
            self.mapSizes = mapSizes
            self.replacing = replacing
            self.pinDirectory = pinDirectory
            self.logger = logger
        }
    }

    private init(
        object: ObjectFile, programs: [String: Program], maps: [String: Map], reusedPins: Set<String>,
        btf: OwnedFileDescriptor?
    ) {
        self.object = object
        self.programs = programs
        self.maps = maps
        self.reusedPins = reusedPins
        self.btf = btf
    }

    /// `BPF_F_MMAPABLE` and `BPF_F_RDONLY_PROG`, as libbpf creates global data maps.
    static let mmapable = UInt32(BPF_F_MMAPABLE)
    static let readOnlyForPrograms = UInt32(BPF_F_RDONLY_PROG)

    /// Reads and parses an object file, then loads it.
    public static func load(contentsOf path: String, options: Options = Options()) throws -> LoadedObject {
        try load(try ObjectFile.read(path), options: options)
    }

    /// Creates the maps and loads the programs of `object`. Nothing is pinned; on any error
    /// everything created so far is released (so nothing stays in the kernel).
    ///
    /// - Throws: ``BPFError`` from the kernel (a verifier rejection names the program and,
    ///   with line info, the C source line), `ObjectError` for what the object asks and
    ///   this loader does not do.
    public static func load(_ object: ObjectFile, options: Options = Options()) throws -> LoadedObject {
        let logger = options.logger
        guard object.isHostByteOrder else {
            throw ObjectError(
                .unsupported,
                "\(object.name) is \(object.isBigEndian ? "big" : "little")-endian and this machine is not")
        }
        for program in object.programs {
            if let reason = program.unsupported {
                throw ObjectError(.unsupported, "program \(program.name): \(reason)")
            }
        }
        for name in options.mapSizes.keys where object.map(named: name) == nil {
            throw ObjectError(.missingSymbol, "--map-size names map \(name), which \(object.name) does not define")
        }
        var btf: OwnedFileDescriptor? = nil
        if let bytes = object.btf {
            do {
                btf = try loadBTF(bytes)
            } catch {
                // As libbpf: BTF is optional; the programs load without line info.
                logger?.warning(
                    "the kernel refused the object's BTF; loading without it", metadata: ["error": "\(error)"])
            }
        }
        var maps: [String: Map] = [:]
        var reused: Set<String> = []
        let ordered =
            object.maps.filter { !MapDefinition.mapOfMapsTypes.contains($0.type) }
            + object.maps.filter { MapDefinition.mapOfMapsTypes.contains($0.type) }
        for definition in ordered {
            var keySize = Int(definition.keySize)
            var valueSize = Int(definition.valueSize)
            if let sizes = options.mapSizes[definition.name] { (keySize, valueSize) = sizes }
            if let given = options.replacing[definition.name] {
                maps[definition.name] = given
                continue
            }
            if definition.pinning == MapDefinition.pinByName, let directory = options.pinDirectory {
                let path = "\(directory)/\(pinName(definition.name))"
                if access(path, F_OK) == 0 {
                    let pinned = try Map.openPinned(at: path)
                    let wanted = (definition.type, keySize, valueSize, Int(definition.maxEntries))
                    let found = (pinned.type.rawValue, pinned.keySize, pinned.valueSize, pinned.maxEntries)
                    guard wanted == found else {
                        throw ObjectError(
                            .malformed,
                            "map \(definition.name) pinned at \(path) is type \(found.0), key \(found.1), value \(found.2),"
                                + " \(found.3) entries; \(object.name) defines type \(wanted.0), key \(wanted.1),"
                                + " value \(wanted.2), \(wanted.3) entries; remove the pin or load into another directory"
                        )
                    }
                    logger?.debug("reusing pinned map", metadata: ["path": "\(path)"])
                    maps[definition.name] = pinned
                    reused.insert(definition.name)
                    continue
                }
            }
            var innerTemplate: Map? = nil
            if let inner = definition.inner {
                innerTemplate = try Map.create(
                    type: MapType(rawValue: inner.type), keySize: Int(inner.keySize), valueSize: Int(inner.valueSize),
                    maxEntries: Int(inner.maxEntries), flags: inner.flags, name: "\(definition.name).inner")
            }
            let map = try Map.create(
                type: MapType(rawValue: definition.type), keySize: keySize, valueSize: valueSize,
                maxEntries: Int(definition.maxEntries), flags: definition.flags, name: definition.name,
                innerMap: innerTemplate,
                btf: definition.passesBTF
                    ? btf.map { ($0, definition.keyTypeID ?? 0, definition.valueTypeID ?? 0) } : nil)
            for (slot, target) in definition.initialMaps.sorted(by: { $0.key < $1.key }) {
                guard let inner = maps[target] else {
                    throw ObjectError(
                        .missingSymbol, "slot \(slot) of \(definition.name) names map \(target), not created")
                }
                try map.update(rawBytes(of: slot), rawBytes(of: UInt32(bitPattern: inner.descriptor.rawValue)))
            }
            maps[definition.name] = map
        }
        for section in object.dataSections {
            let name = section.mapName(object: object.name)
            let flags = mmapable | (section.isReadOnly ? readOnlyForPrograms : 0)
            let map = try Map.create(
                type: .array, keySize: 4, valueSize: section.size, maxEntries: 1, flags: flags, name: name,
                btf: section.btfTypeID.flatMap { id in btf.map { ($0, 0, id) } })
            if let contents = section.initialContents {
                try map.update(rawBytes(of: UInt32(0)), contents)
            }
            if section.isReadOnly {
                try kernelCall("BPF_MAP_FREEZE of \(name)") { cbpf_map_freeze(map.descriptor.rawValue) }
            }
            maps[name] = map
        }
        var programs: [String: Program] = [:]
        for program in object.programs {
            var instructions = program.instructions
            var used: [Map] = []
            for (index, reference) in program.references {
                switch reference {
                case .map(let name):
                    guard let map = maps[name] else { throw ObjectError(.missingSymbol, "map \(name) was not created") }
                    used.append(map)
                    instructions[index].immediate = map.descriptor.rawValue
                case .data(let section, let offset):
                    guard let map = maps[object.name + section] else {
                        throw ObjectError(.missingSymbol, "global data \(section) was not created")
                    }
                    used.append(map)
                    instructions[index].immediate = map.descriptor.rawValue
                    instructions[index].nextImmediate = Int32(bitPattern: offset)
                }
            }
            // struct bpf_func_info and struct bpf_line_info: u32 fields, host order.
            let functions = program.functionInfo.flatMap { [$0.slot, $0.typeID] }.flatMap(rawBytes(of:))
            let lines = program.lineInfo.flatMap { [$0.slot, $0.fileNameOffset, $0.lineOffset, $0.lineColumn] }
                .flatMap(rawBytes(of:))
            let debugInfo = ProgramDebugInfo(
                btf: btf, functionInfo: btf == nil ? [] : functions, lineInfo: btf == nil ? [] : lines,
                kernelVersion: object.kernelVersion)
            let type = ProgramType(rawValue: program.type.programType)
            do {
                programs[program.name] = try Program.loadEncoded(
                    instructions.encoded(), type: type, kernelName: Program.sanitizedName(program.name),
                    license: object.license,
                    attachType: program.type.expectedAttachType.map(AttachType.init(rawValue:)),
                    debugInfo: debugInfo, keepAlive: used, assembly: nil, logger: logger)
            } catch {
                var named = error
                named.operation = "loading program \(program.name) (section \(program.section)) of \(object.name)"
                // The object's own line records name the failing instruction's C line on every
                // kernel (the verifier prints `file:line` itself only since Linux 6.4).
                if let slot = error.failingInstruction, let line = program.sourceLine(atSlot: slot) {
                    named.sourceLine = line
                }
                throw named
            }
        }
        return LoadedObject(object: object, programs: programs, maps: maps, reusedPins: reused, btf: btf)
    }

    /// `BPF_BTF_LOAD`, with the kernel's log in the error when it refuses.
    static func loadBTF(_ bytes: [UInt8]) throws(BPFError) -> OwnedFileDescriptor {
        var log = [CChar](repeating: 0, count: 64 * 1024)
        let result = bytes.withUnsafeBytes { raw in
            log.withUnsafeMutableBufferPointer { buffer in
                cbpf_btf_load(raw.baseAddress, UInt32(raw.count), buffer.baseAddress, UInt32(buffer.count), 1)
            }
        }
        guard result >= 0 else {
            var error = BPFError(operation: "BPF_BTF_LOAD", code: Int32(-result))
            let text = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let last = text.split(separator: "\n").last { error.hint = "the kernel says: \(last)" }
            throw error
        }
        return OwnedFileDescriptor(adopting: Int32(result))
    }

    /// The path each object is pinned at under `directory`: programs by function name, maps by
    /// name, global data as `OBJECT_rodata` and so on. A bpf filesystem refuses names with a
    /// `.` (`EPERM`), so dots become `_`, as libbpf pins them.
    public func pinPaths(in directory: String) -> [(path: String, pin: @Sendable (String) throws(BPFError) -> Void)] {
        var result: [(String, @Sendable (String) throws(BPFError) -> Void)] = []
        for name in programs.keys.sorted() {
            let program = programs[name]!
            result.append(
                ("\(directory)/\(Self.pinName(name))", { (path) throws(BPFError) in try program.pin(at: path) }))
        }
        for name in maps.keys.sorted() where !reusedPins.contains(name) {
            let map = maps[name]!
            result.append(("\(directory)/\(Self.pinName(name))", { (path) throws(BPFError) in try map.pin(at: path) }))
        }
        return result
    }

    /// A name as a bpffs file name: `.` (which bpffs refuses) becomes `_`.
    public static func pinName(_ name: String) -> String {
        String(name.map { $0 == "." ? "_" : $0 })
    }

    /// Pins every program and map in `directory` (a bpffs directory), as ``pinPaths(in:)``
    /// names them. If one pin fails, the pins made before it are removed and the error thrown.
    public func pin(in directory: String) throws(BPFError) {
        var done: [String] = []
        do {
            for (path, pin) in pinPaths(in: directory) {
                try pin(path)
                done.append(path)
            }
        } catch {
            for path in done { unlink(path) }
            throw error
        }
    }

    /// Where a global variable lives: its data map, offset and size.
    public func global(_ name: String) throws -> (map: Map, offset: Int, size: Int) {
        for section in object.dataSections {
            guard let variable = section.variables.first(where: { $0.name == name }) else { continue }
            guard let map = maps[section.mapName(object: object.name)] else { break }
            return (map, variable.offset, variable.size)
        }
        throw ObjectError(.missingSymbol, "\(object.name) has no global variable \(name)")
    }

    /// The bytes of a global variable, as the programs see them now.
    public func readGlobal(_ name: String) throws -> [UInt8] {
        let (map, offset, size) = try global(name)
        guard let value = try map.lookup(rawBytes(of: UInt32(0))) else { return [] }
        return Array(value[offset..<offset + size])
    }

    /// Sets a global variable of `.data` or `.bss` (`.rodata` is frozen: the kernel refuses).
    public func writeGlobal(_ name: String, _ bytes: [UInt8]) throws {
        let (map, offset, size) = try global(name)
        guard bytes.count == size else {
            throw ObjectError(.malformed, "global \(name) has \(size) bytes; \(bytes.count) were given")
        }
        var value = try map.lookup(rawBytes(of: UInt32(0))) ?? [UInt8](repeating: 0, count: map.valueSize)
        value.replaceSubrange(offset..<offset + size, with: bytes)
        try map.update(rawBytes(of: UInt32(0)), value)
    }
}

extension ObjectFile {
    /// Reads an object file from disk; its name is the file name without `.o`.
    public static func read(_ path: String) throws -> ObjectFile {
        guard let file = fopen(path, "rb") else {
            throw BPFError(operation: "open \(path)", code: errno, hint: nil)
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count > 0 { bytes += buffer[0..<count] }
            if count < buffer.count {
                if ferror(file) != 0 { throw BPFError(operation: "read \(path)", code: errno) }
                break
            }
        }
        var name = String(path.split(separator: "/").last ?? Substring(path))
        if name.hasSuffix(".o") { name.removeLast(2) }
        return try ObjectFile(bytes: bytes, name: name)
    }
}
