import ArgumentParser
import BPF
import BPFObject
import Foundation

/// `--map-size NAME=KEY:VALUE`.
struct MapSizeArgument: ExpressibleByArgument {
    var name: String
    var key: Int
    var value: Int

    init?(argument: String) {
        let parts = argument.split(separator: "=", maxSplits: 1)
        guard parts.count == 2, !parts[0].isEmpty else { return nil }
        let sizes = parts[1].split(separator: ":", omittingEmptySubsequences: false)
        guard sizes.count == 2, let key = Int(sizes[0]), let value = Int(sizes[1]), key >= 0, value >= 0,
            key <= Int(UInt32.max), value <= Int(UInt32.max)
        else { return nil }
        name = String(parts[0])
        self.key = key
        self.value = value
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

struct ProgLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Load every program and map of a BPF object compiled from C (clang -O2 -g -target bpf).",
        discussion: """
            Pins each program at DIR/<function name>, each map at DIR/<map name> and global data at \
            DIR/<object>_rodata (_data, _bss: a bpf filesystem refuses names with a dot, so dots become \
            underscores, as libbpf pins them). Maps marked LIBBPF_PIN_BY_NAME that are already pinned in DIR \
            are reused. With --netns, the programs named by --attach (SK_LOOKUP only) are attached in that \
            order through links pinned at DIR/link-<name>. A load that fails leaves nothing pinned and \
            nothing attached.

            Example:
              sksteer prog load steer.o --pin /sys/fs/bpf/steer --netns /run/netns/web --attach steer
            """)

    @Argument(help: "The object file.", completion: .file(extensions: ["o"]))
    var object: String

    @Option(help: "The directory to pin in, on a bpf filesystem (created if missing).")
    var pin: String

    @Option(help: "The network namespace to attach in (a path such as /run/netns/NAME).")
    var netns: String?

    @Option(help: "A program to attach, by function name (repeatable; needs --netns).")
    var attach: [String] = []

    @Option(
        name: .customLong("map-size"),
        help: ArgumentHelp("Create map NAME with these key and value sizes (repeatable).", valueName: "NAME=KEY:VALUE"))
    var mapSizes: [MapSizeArgument] = []

    func validate() throws {
        if !attach.isEmpty && netns == nil {
            throw ValidationError("--attach needs --netns: sksteer never attaches to its own namespace by default")
        }
    }

    func run() throws {
        try reporting {
            let parsed = try ObjectFile.read(object)
            for name in attach {
                guard let program = parsed.program(named: name) else {
                    throw ToolError(
                        "\(object) has no program \(name) (it has: \(parsed.programs.map(\.name).joined(separator: ", ")))"
                    )
                }
                guard program.type.programType == ProgramType.skLookup.rawValue else {
                    throw ToolError(
                        "program \(name) is \(program.type.name), not sk_lookup: only SK_LOOKUP programs attach")
                }
            }
            let namespace = try netns.map { try NetworkNamespace.open(path: $0) }
            let directory = pin.count > 1 && pin.hasSuffix("/") ? String(pin.dropLast()) : pin
            let parent = (directory as NSString).deletingLastPathComponent
            var isDirectory: ObjCBool = false
            let existed = FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory)
            if existed && !isDirectory.boolValue { throw ToolError("\(directory) exists and is not a directory") }
            guard BPFFileSystem.isMounted(at: existed ? directory : parent.isEmpty ? "." : parent) else {
                throw ToolError(
                    "\(existed ? directory : parent) is not on a bpf filesystem; pin under one (mount -t bpf -o mode=0700 bpf DIR)"
                )
            }
            var sizes: [String: (key: Int, value: Int)] = [:]
            for size in mapSizes { sizes[size.name] = (size.key, size.value) }
            let loaded = try LoadedObject.load(
                parsed, options: LoadedObject.Options(mapSizes: sizes, pinDirectory: existed ? directory : nil))
            if parsed.btf != nil && loaded.btf == nil {
                warn(
                    "the kernel refused \(parsed.name)'s BTF: loaded without line info (verifier errors name no C line)"
                )
            }
            var links: [(String, Link)] = []
            if let namespace {
                for name in attach { links.append((name, try Link.attach(loaded.programs[name]!, to: namespace))) }
            }
            if !existed {
                guard mkdir(directory, 0o700) == 0 else {
                    throw ToolError("cannot create \(directory): \(String(cString: strerror(errno)))")
                }
            }
            var pinned: [String] = []
            do {
                for (path, pin) in loaded.pinPaths(in: directory) {
                    try pin(path)
                    pinned.append(path)
                }
                for (name, link) in links {
                    let path = "\(directory)/link-\(LoadedObject.pinName(name))"
                    try link.pin(at: path)
                    pinned.append(path)
                }
            } catch {
                // Nothing stays: the pins made so far go; the links detach when this process ends.
                for path in pinned.reversed() { unlink(path) }
                if !existed { rmdir(directory) }
                throw error
            }
            print(
                "loaded \(loaded.programs.count) program\(loaded.programs.count == 1 ? "" : "s") and"
                    + " \(loaded.maps.count) map\(loaded.maps.count == 1 ? "" : "s") of \(parsed.name), pinned in \(directory)"
                    + (links.isEmpty ? "" : "; attached \(links.map(\.0).joined(separator: ", ")) in \(netns!)"))
        }
    }
}

struct ProgShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show the programs, maps and global data of a BPF object, without loading it.")

    @Argument(help: "The object file.", completion: .file(extensions: ["o"]))
    var object: String

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    struct Report: Encodable {
        struct ProgramRow: Encodable {
            var name: String
            var section: String
            var type: String
            var attachType: String?
            var instructions: Int
            var functions: [String]
        }
        struct MapRow: Encodable {
            var name: String
            var type: String
            var keySize: UInt32
            var valueSize: UInt32
            var maxEntries: UInt32
            var flags: UInt32
            var pinning: String
            var inner: String?
            var initialMaps: [String: String]?
        }
        struct DataRow: Encodable {
            var name: String
            var map: String
            var pin: String
            var size: Int
            var readOnly: Bool
            var variables: [String]
        }
        var object: String
        var license: String
        var programs: [ProgramRow]
        var maps: [MapRow]
        var data: [DataRow]
    }

    func run() throws {
        try reporting {
            let parsed = try ObjectFile.read(object)
            func mapType(_ raw: UInt32) -> String { MapType(rawValue: raw).description }
            let report = Report(
                object: parsed.name, license: parsed.license,
                programs: parsed.programs.map {
                    .init(
                        name: $0.name, section: $0.section,
                        type: ProgramType(rawValue: $0.type.programType).description,
                        attachType: $0.type.expectedAttachType.map { AttachType(rawValue: $0).description },
                        instructions: $0.slotCount, functions: $0.functions.map(\.name))
                },
                maps: parsed.maps.map { map in
                    .init(
                        name: map.name, type: mapType(map.type), keySize: map.keySize, valueSize: map.valueSize,
                        maxEntries: map.maxEntries, flags: map.flags,
                        pinning: map.pinning == MapDefinition.pinByName ? "by-name" : "none",
                        inner: map.inner.map {
                            "\(mapType($0.type)) key \($0.keySize) value \($0.valueSize) max \($0.maxEntries)"
                        },
                        initialMaps: map.initialMaps.isEmpty
                            ? nil : Dictionary(uniqueKeysWithValues: map.initialMaps.map { ("\($0.key)", $0.value) }))
                },
                data: parsed.dataSections.map {
                    .init(
                        name: $0.name, map: $0.mapName(object: parsed.name),
                        pin: LoadedObject.pinName($0.mapName(object: parsed.name)), size: $0.size,
                        readOnly: $0.isReadOnly,
                        variables: $0.variables.map(\.name))
                })
            if format == .json { return try printJSON(report) }
            print("object \(report.object), license \(report.license.isEmpty ? "(none)" : report.license)")
            print("\nprograms:")
            printTable(
                ["NAME", "SECTION", "TYPE", "ATTACH", "INSNS", "FUNCTIONS"],
                report.programs.map {
                    [
                        $0.name, $0.section, $0.type, $0.attachType ?? "-", "\($0.instructions)",
                        $0.functions.joined(separator: ","),
                    ]
                })
            print("\nmaps:")
            printTable(
                ["NAME", "TYPE", "KEY", "VALUE", "MAX", "FLAGS", "PINNING", "INNER"],
                report.maps.map {
                    [
                        $0.name, $0.type, "\($0.keySize)", "\($0.valueSize)", "\($0.maxEntries)",
                        "0x" + String($0.flags, radix: 16),
                        $0.pinning, $0.inner ?? "-",
                    ]
                })
            print("\nglobal data:")
            printTable(
                ["SECTION", "MAP", "PIN", "SIZE", "READ-ONLY", "VARIABLES"],
                report.data.map {
                    [
                        $0.name, $0.map, $0.pin, "\($0.size)", $0.readOnly ? "yes" : "no",
                        $0.variables.joined(separator: ","),
                    ]
                })
        }
    }
}
