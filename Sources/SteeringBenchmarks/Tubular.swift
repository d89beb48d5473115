import BPF
import Foundation
import SKLookup

/// Cloudflare tubular's real data plane (`inet-kern.c` from the reference directory), compiled
/// with the toolchain's clang at bench time and loaded with bpftool against maps created here.
///
/// Every map is created here with tubular's sizes, pinned in a private bpffs, and handed to
/// bpftool (`map name X pinned PATH`). libbpf still pins maps marked `LIBBPF_PIN_BY_NAME`
/// under `/sys/fs/bpf`, so bpftool runs in a mount namespace of its own (`unshare -m`) with a
/// private bpffs mounted there, which goes away with it: nothing lands in the host's bpffs.
final class TubularDispatcher {
    /// tubular's `MAX_BINDINGS` and `MAX_SOCKETS`.
    static let maxBindings = 1_000_000
    static let maxSockets = 1024
    /// The key's data bytes: protocol (1), port (2), address (16).
    static let keyDataSize = 19

    let mount: BPFFileSystem.TemporaryMount
    let program: Program
    let bindings: Map
    let sockets: SocketMap
    let destinations: Map
    let metrics: Map

    /// Compiles `inet-kern.c` once; returns the object path.
    static func compile(reference: URL, into directory: URL) throws -> URL {
        let object = directory.appendingPathComponent("inet-kern.o")
        try runTool(
            Tools.clang,
            [
                "-O2", "-g", "-target", "bpf", "-I\(reference.appendingPathComponent("include").path)", "-c",
                reference.appendingPathComponent("inet-kern.c").path, "-o", object.path,
            ])
        return object
    }

    init(object: URL) throws {
        mount = try BPFFileSystem.TemporaryMount()
        bindings = try Map.create(
            type: .lpmTrie, keySize: 4 + Self.keyDataSize, valueSize: 8, maxEntries: Self.maxBindings,
            flags: Map.noPreallocate, name: "bindings")
        let socketMap = try Map.create(
            type: .sockMap, keySize: 4, valueSize: 8, maxEntries: Self.maxSockets, name: "sockets")
        sockets = try SocketMap(socketMap)
        // The sizes tubular's Go loader patches in: {label [255]byte, domain u8, proto u8} → {id, refcount}.
        destinations = try Map.create(
            type: .hash, keySize: 257, valueSize: 8, maxEntries: Self.maxSockets, name: "destinations")
        metrics = try Map.create(
            type: .perCPUArray, keySize: 4, valueSize: 24, maxEntries: Self.maxSockets, name: "destination_metrics")
        var arguments = ["prog", "load", object.path, "\(mount.path)/program", "type", "sk_lookup"]
        for (name, map) in [
            ("bindings", bindings), ("sockets", socketMap), ("destinations", destinations),
            ("destination_metrics", metrics),
        ] {
            try map.pin(at: "\(mount.path)/\(name)")
            arguments += ["map", "name", name, "pinned", "\(mount.path)/\(name)"]
        }
        // In a private mount namespace, with a private bpffs over /sys/fs/bpf for libbpf's pins.
        let names = ["bindings", "sockets", "destinations", "destination_metrics"]
        let hostPins = { names.filter { FileManager.default.fileExists(atPath: "/sys/fs/bpf/\($0)") } }
        let before = Set(hostPins())
        let script = "mount -t bpf bpf /sys/fs/bpf && exec \"$0\" \"$@\""
        try runTool(
            Tools.unshare, ["--mount", "--propagation", "private", "sh", "-c", script, Tools.bpftool] + arguments)
        let leaked = hostPins().filter { !before.contains($0) }
        guard leaked.isEmpty else {
            throw ToolFailure(description: "loading tubular pinned \(leaked) under the host's /sys/fs/bpf; remove them")
        }
        program = try Program.openPinned(at: "\(mount.path)/program")
    }

    /// tubular's key: `{u32 prefixlen; u8 protocol; u16 port (host order); u32 ip[4]}` packed, the
    /// address as IPv6 (IPv4 mapped), prefixlen = 24 + the mapped prefix length.
    static func key(_ rule: Rule) -> [UInt8] {
        let length = UInt32(24 + rule.mappedLength)
        return rawBytes(of: length) + [UInt8(rule.transport.ipProtocol)] + rawBytes(of: rule.port)
            + rule.mappedAddressBytes
    }

    /// The value: destination id and the same prefix length as the key's.
    static func value(_ rule: Rule, destination: UInt32) -> [UInt8] {
        rawBytes(of: destination) + rawBytes(of: UInt32(24 + rule.mappedLength))
    }

    /// Adds bindings the way tubular's control plane does: one `BPF_MAP_UPDATE_ELEM` each.
    func insert(_ rules: [Rule], destination: (Rule) -> UInt32) throws {
        for rule in rules { try bindings.update(Self.key(rule), Self.value(rule, destination: destination(rule))) }
    }

    /// The bytes of kernel memory its maps are charged for.
    func chargedMemory() throws -> Int {
        try [bindings, sockets.map, destinations, metrics].reduce(0) { try $0 + $1.chargedMemory() }
    }

    /// Reads every binding back, as tubular's `status` does (walk the trie's keys, look each up).
    func readBindings() throws -> Int {
        var count = 0
        for key in try bindings.keys() where try bindings.lookup(key) != nil { count += 1 }
        return count
    }
}

enum Tools {
    /// The toolchain's clang (next to swift), which has the BPF target.
    static var clang: String {
        for candidate in ["/opt/swift/usr/bin/clang"] + pathCandidates("clang")
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return "clang"
    }

    static var bpftool: String { find("bpftool", in: ["/usr/sbin/bpftool", "/usr/local/sbin/bpftool"]) }
    static var unshare: String { find("unshare", in: ["/usr/bin/unshare"]) }
    static var ip: String { find("ip", in: ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"]) }
    static var nsenter: String { find("nsenter", in: ["/usr/bin/nsenter"]) }

    static func find(_ name: String, in candidates: [String]) -> String {
        for candidate in candidates + pathCandidates(name) where FileManager.default.isExecutableFile(atPath: candidate)
        {
            return candidate
        }
        return name
    }

    static func pathCandidates(_ name: String) -> [String] {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/\(name)" }
    }
}

struct ToolFailure: Error, CustomStringConvertible {
    var description: String
}

/// Runs a tool; throws with its error output if it fails.
@discardableResult
func runTool(_ tool: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    do {
        try process.run()
    } catch {
        throw ToolFailure(description: "cannot run \(tool): \(error.localizedDescription)")
    }
    let out = output.fileHandleForReading.readDataToEndOfFile()
    let err = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        let tail = String(decoding: err, as: UTF8.self).split(separator: "\n").suffix(5).joined(separator: "\n")
        throw ToolFailure(description: "\(tool) \(arguments.prefix(3).joined(separator: " ")) failed: \(tail)")
    }
    return String(decoding: out, as: UTF8.self)
}
