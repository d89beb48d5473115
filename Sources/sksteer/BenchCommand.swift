import ArgumentParser
import Foundation
import Logging
import SteeringBenchmarks

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure sksteer against tubular's real data plane: test runs, real traffic and the control plane.",
        discussion: """
            Runs in throwaway namespaces (as root), prints progress, and writes BENCHMARKS.md and benchmarks.json.
            Compiles tubular's inet-kern.c with the toolchain's clang and loads it with bpftool; needs ip and
            nsenter for the real traffic. --smoke runs small sizes to prove it works.
            """)

    @Flag(help: "Small sizes and short rounds: checks that everything runs; the numbers mean little.")
    var smoke = false

    @Option(help: "Where to write BENCHMARKS.md and benchmarks.json.")
    var outputDirectory = "."

    @Option(
        help:
            "tubular's reference directory (inet-kern.c, include/, prefixes.json); default ../shared/reference/tubular beside the package."
    )
    var reference: String?

    @Option(help: "Override the number of random bindings.")
    var randomCount: Int?

    @Option(help: "Override the test-run repeat count of hot measurements.")
    var repeatCount: UInt32?

    @Flag(help: "Skip the real traffic.")
    var noTraffic = false

    @Flag(help: "Only the data plane: no real traffic, no control-plane changes.")
    var dataPlaneOnly = false

    @Flag(name: .shortAndLong, help: "Log the dispatchers' steps with their timings on standard error.")
    var verbose = false

    /// `../shared/reference/tubular` beside the package: from the working directory, or from
    /// the package that built this executable (`.build/<config>/sksteer`).
    static func defaultReference() -> URL? {
        var roots = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath)]
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent()
        for _ in 0..<5 {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
                roots.append(directory)
            }
            directory = directory.deletingLastPathComponent()
        }
        return roots.map { $0.appendingPathComponent("../shared/reference/tubular").standardized }.first {
            FileManager.default.fileExists(atPath: $0.appendingPathComponent("inet-kern.c").path)
        }
    }

    func run() throws {
        try reporting {
            let source: URL
            if let reference {
                source = URL(fileURLWithPath: reference)
                guard FileManager.default.fileExists(atPath: source.appendingPathComponent("inet-kern.c").path) else {
                    throw ToolError("\(reference): no inet-kern.c there")
                }
            } else {
                guard let found = Self.defaultReference() else {
                    throw ToolError("../shared/reference/tubular not found beside the package; pass --reference DIR")
                }
                source = found
            }
            var options = smoke ? Bench.Options.smoke(reference: source) : Bench.Options(reference: source)
            if let randomCount {
                guard randomCount > 0 else { throw ToolError("--random-count takes a positive number") }
                options.randomCount = randomCount
            }
            if let repeatCount { options.repeatCount = repeatCount }
            if noTraffic || dataPlaneOnly { options.traffic = false }
            if dataPlaneOnly { options.controlPlane = false }
            if verbose {
                var logger = Logger(label: "sksteer", factory: { StreamLogHandler.standardError(label: $0) })
                logger.logLevel = .debug
                options.logger = logger
            }
            // Before the run, not after it: a directory that cannot be made fails at once.
            do {
                try FileManager.default.createDirectory(
                    atPath: outputDirectory, withIntermediateDirectories: true)
            } catch {
                throw ToolError("\(outputDirectory): cannot make the output directory: \(error.localizedDescription)")
            }
            let results: Bench.Results
            do {
                results = try Bench.run(options) { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
            } catch let error as ToolError {
                throw error
            } catch {
                throw ToolError("bench: \(error)")
            }
            var command = "swift run -c release sksteer bench" + (smoke ? " --smoke" : "")
            if let randomCount { command += " --random-count \(randomCount)" }
            if let repeatCount { command += " --repeat-count \(repeatCount)" }
            if noTraffic { command += " --no-traffic" }
            if dataPlaneOnly { command += " --data-plane-only" }
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
