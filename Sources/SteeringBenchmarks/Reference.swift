import BPF
import Foundation
import SKLookup

/// The C reference dispatcher (`Benchmarks/reference/tubular_like.c`), compiled with the
/// toolchain's clang at bench time and loaded with bpftool into a private bpffs.
final class ReferenceDispatcher {
    let mount: BPFFileSystem.TemporaryMount
    let dispatcher: Program
    let passOnly: Program
    let bindings: Map
    let sockets: SocketMap

    /// Compiles the reference once; returns the object path.
    static func compile(source: URL, into directory: URL) throws -> URL {
        let object = directory.appendingPathComponent("tubular_like.o")
        try runTool(
            Tools.clang,
            ["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", source.path, "-o", object.path])
        return object
    }

    init(object: URL) throws {
        mount = try BPFFileSystem.TemporaryMount()
        try runTool(
            Tools.bpftool,
            ["prog", "loadall", object.path, "\(mount.path)/ref", "type", "sk_lookup", "pinmaps", "\(mount.path)/maps"])
        dispatcher = try Program.openPinned(at: "\(mount.path)/ref/dispatcher")
        passOnly = try Program.openPinned(at: "\(mount.path)/ref/pass_only")
        bindings = try Map.openPinned(at: "\(mount.path)/maps/bindings")
        sockets = try SocketMap(Map.openPinned(at: "\(mount.path)/maps/sockets"))
    }

    /// tubular's key: prefix length, protocol, port (host order), IPv4-mapped address; packed.
    static func key(transport: Socket.Transport, port: UInt16, address: IPAddress, prefixLength: Int) -> [UInt8] {
        rawBytes(of: UInt32(8 + 16 + prefixLength)) + [UInt8(transport.ipProtocol)] + rawBytes(of: port)
            + address.mappedToIPv6.bytes
    }

    /// Adds host bindings (each a full address; port 0 for all ports) for destination `id`.
    func add(_ entries: [(Socket.Transport, IPAddress, UInt16)], destination id: UInt32) throws {
        let batch = entries.map { transport, address, port in
            let key = Self.key(transport: transport, port: port, address: address, prefixLength: 128)
            return (key: key, value: rawBytes(of: id) + rawBytes(of: UInt32(8 + 16 + 128)))
        }
        try bindings.updateBatch(batch)
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

    static var bpftool: String {
        for candidate in ["/usr/sbin/bpftool", "/usr/local/sbin/bpftool"] + pathCandidates("bpftool")
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return "bpftool"
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
