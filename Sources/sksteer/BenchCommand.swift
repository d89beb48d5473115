import ArgumentParser
import Foundation
import SteeringBenchmarks

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the data plane against a clang-built reference, connection rates and the control plane.",
        discussion: """
            Runs in throwaway namespaces (as root), prints progress, and writes BENCHMARKS.md and benchmarks.json.
            Needs the toolchain's clang (BPF target) and bpftool. --smoke runs tiny sizes to prove it works.
            """)

    @Flag(help: "Tiny sizes and short rounds: checks that everything runs; the numbers mean little.")
    var smoke = false

    @Option(help: "Where to write BENCHMARKS.md and benchmarks.json.")
    var outputDirectory = "."

    @Option(help: "The reference C program.")
    var reference = "Benchmarks/reference/tubular_like.c"

    @Option(help: "Override the data-plane sizes (comma-separated filler counts).")
    var sizes: String?

    @Option(help: "Override the test-run repeat count.")
    var repeatCount: UInt32?

    @Flag(help: "Only the data plane.")
    var dataPlaneOnly = false

    func run() throws {
        try reporting {
            let source = URL(fileURLWithPath: reference)
            guard FileManager.default.fileExists(atPath: source.path) else {
                throw ToolError("\(reference): not found; run from the repository or pass --reference PATH")
            }
            var options = smoke ? Bench.Options.smoke(referenceSource: source) : Bench.Options(referenceSource: source)
            if let sizes {
                options.sizes = sizes.split(separator: ",").compactMap { Int($0) }
                guard !options.sizes.isEmpty else { throw ToolError("--sizes takes numbers, e.g. 1,1000") }
            }
            if let repeatCount { options.repeatCount = repeatCount }
            options.dataPlaneOnly = dataPlaneOnly
            let results: Bench.Results
            do {
                results = try Bench.run(options) { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
            } catch let error as ToolError {
                throw error
            } catch {
                throw ToolError("bench: \(error)")
            }
            let command = "swift run -c release sksteer bench" + (smoke ? " --smoke" : "")
            let markdown = Bench.markdown(results, command: command)
            let directory = URL(fileURLWithPath: outputDirectory)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            do {
                try markdown.write(
                    to: directory.appendingPathComponent("BENCHMARKS.md"), atomically: true, encoding: .utf8)
                try encoder.encode(results).write(to: directory.appendingPathComponent("benchmarks.json"))
            } catch {
                throw ToolError("\(outputDirectory): cannot write the results: \(error.localizedDescription)")
            }
            print(markdown)
        }
    }
}
