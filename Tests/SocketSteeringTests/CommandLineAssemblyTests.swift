import Foundation
import Testing

/// The instruction layer's done criterion, end to end through the sksteer executable: for
/// every program section of the clang-built fixtures, `sksteer disasm --llvm` prints what
/// llvm-objdump printed, and `sksteer asm` turns `sksteer disasm` output back into the same
/// bytes.
struct CommandLineAssemblyTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("BPFAssemblyTests/Fixtures")

    func run(_ arguments: [String]) throws -> (status: Int32, output: Data) {
        guard let executable = sksteerExecutable() else { throw CocoaError(.fileNoSuchFile) }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, data)
    }

    @Test func disasmMatchesLLVMObjdumpAndAsmRoundTrips() throws {
        let manifest = try String(contentsOf: Self.fixtures.appendingPathComponent("manifest.txt"), encoding: .utf8)
        let pairs = manifest.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            .filter { $0.count == 2 && !$0[0].hasPrefix("raw-") }
        #expect(pairs.count >= 40)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("sksteer-asm-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        for pair in pairs {
            let bin = Self.fixtures.appendingPathComponent(pair[0]).path
            let expected = try String(contentsOf: Self.fixtures.appendingPathComponent(pair[1]), encoding: .utf8)
            let llvm = try run(["disasm", "--llvm", bin])
            #expect(llvm.status == 0)
            #expect(String(decoding: llvm.output, as: UTF8.self) == expected, "\(pair[0])")

            let text = try run(["disasm", bin])
            let source = scratch.appendingPathComponent("\(pair[0]).s")
            let rebuilt = scratch.appendingPathComponent("\(pair[0]).bin")
            try text.output.write(to: source)
            #expect(try run(["asm", source.path, "-o", rebuilt.path]).status == 0)
            #expect(try Data(contentsOf: rebuilt) == Data(contentsOf: URL(fileURLWithPath: bin)), "\(pair[0])")
        }
    }
}
