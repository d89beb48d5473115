import Foundation
import Testing

/// The C programs of `Tests/CPrograms`, compiled at test time with the toolchain's clang, as
/// libbpf users build theirs: `clang -O2 -g -target bpf -c`.
public enum CPrograms {
    /// `Tests/CPrograms` in the source tree.
    public static let directory: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("CPrograms")

    /// The clang beside swift (it has the BPF target), or one on PATH.
    public static let clang: String? = {
        var candidates = ["/opt/swift/usr/bin/clang"]
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            candidates.append("\(directory)/clang")
        }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Why the programs cannot be built here, with what to install; nil when they can.
    public static let missing: String? = {
        if clang == nil { return "no clang: the Swift toolchain's clang (with the BPF target) must be on PATH" }
        if !FileManager.default.fileExists(atPath: "/usr/include/bpf/bpf_helpers.h") {
            return "no <bpf/bpf_helpers.h>: apt-get install libbpf-dev"
        }
        return nil
    }()

    /// Skips a test, saying what to install, where the C programs cannot be built.
    public static let available = ConditionTrait.enabled(if: missing == nil, "\(missing ?? "")")

    /// The multiarch include directory (`<asm/types.h>` for `<linux/bpf.h>`).
    static var multiarchInclude: String {
        #if arch(arm64)
            "/usr/include/aarch64-linux-gnu"
        #else
            "/usr/include/x86_64-linux-gnu"
        #endif
    }

    /// Compiles `Tests/CPrograms/NAME.c` (or `source`, when given) into `output` (a fresh
    /// temporary file by default) and returns its path.
    public static func compile(
        _ name: String, source: String? = nil, flags: [String] = [], target: String = "bpf", output: String? = nil
    ) throws -> String {
        guard let clang else { throw CompileError(message: missing ?? "no clang") }
        let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("cprog-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: true)
        var input = directory.appendingPathComponent("\(name).c").path
        if let source {
            input = temporary.appendingPathComponent("\(name).c").path
            try source.write(toFile: input, atomically: true, encoding: .utf8)
        }
        let object = output ?? temporary.appendingPathComponent("\(name).o").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: clang)
        process.arguments =
            ["-O2", "-g", "-target", target, "-I\(multiarchInclude)"] + flags + ["-c", input, "-o", object]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CompileError(message: "clang failed on \(name).c: \(text)") }
        return object
    }

    /// The bytes of a compiled program.
    public static func bytes(
        _ name: String, source: String? = nil, flags: [String] = [], target: String = "bpf"
    ) throws -> [UInt8] {
        let path = try compile(name, source: source, flags: flags, target: target)
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// clang's complaint.
    public struct CompileError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }
}
