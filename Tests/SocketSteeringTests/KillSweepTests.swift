import BPF
import Foundation
import KernelTestSupport
import Testing

@testable import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// strace, for its fault injection (Debian: `apt-get install strace`; `.ci/run` installs it).
let straceExecutable = ["/usr/bin/strace", "/bin/strace"].first { FileManager.default.isExecutableFile(atPath: $0) }

/// kill -9 at every `bpf()` call of each state-changing command: the command runs under
/// `strace -f -e inject=bpf:signal=KILL:when=K` for every K up to its last `bpf()` call, and
/// then (a) the listing is the old rules or the new ones, never anything else, and real
/// connections land as the listing says; (b) the same command run again succeeds and leaves
/// the state it intended; (c) `unload` removes everything: no pins, no link left attached.
@Suite(needsRoot, .enabled(if: straceExecutable != nil, "needs strace: apt-get install strace"))
struct KillSweepTests {
    struct Scenario: Sendable, CustomStringConvertible {
        var name: String
        /// Bindings before the command (nil: not loaded).
        var before: [Binding]?
        /// Bindings the command leaves (nil: not loaded).
        var after: [Binding]?
        var arguments: [String]
        var description: String { name }
    }

    static let a = binding("A", "tcp", "127.0.0.1", "80")
    static let b = binding("B", "tcp", "127.0.0.0/24", "*")
    static let swapped = [binding("B", "tcp", "127.0.0.1", "80"), binding("A", "tcp", "127.0.0.0/24", "*")]
    static let file = "/tmp/sksteer-killsweep-apply.txt"

    static let scenarios: [Scenario] = [
        Scenario(name: "bind", before: [a], after: [a, b], arguments: ["bind", "B", "tcp", "127.0.0.0/24", "*"]),
        Scenario(name: "unbind", before: [a, b], after: [a], arguments: ["unbind", "B", "tcp", "127.0.0.0/24", "*"]),
        Scenario(name: "apply", before: [a, b], after: swapped, arguments: ["apply", file]),
        Scenario(name: "load", before: nil, after: [], arguments: ["load"]),
        Scenario(name: "unload", before: [a, b], after: nil, arguments: ["unload"]),
        Scenario(name: "upgrade", before: [a, b], after: [a, b], arguments: ["upgrade"]),
    ]

    static let probes: [(String, UInt16)] = [("127.0.0.1", 80), ("127.0.0.1", 81), ("127.0.0.9", 80)]

    @Test(arguments: scenarios)
    func everyKillPointLeavesATruthfulState(_ scenario: Scenario) throws {
        try exclusively {
            try "B tcp 127.0.0.1 80\nA tcp 127.0.0.0/24 *\n".write(toFile: Self.file, atomically: true, encoding: .utf8)
            defer { unlink(Self.file) }
            let calls = try Self.bpfCalls(scenario)
            #expect(calls > 0, "\(scenario): \(calls) bpf() calls")
            var landed = 0
            for k in 1...calls {
                let f = try Self.fixture(scenario)
                let (reason, status) = try Self.run(f, scenario.arguments, killAt: k)
                if reason == .uncaughtSignal && status == SIGKILL { landed += 1 }
                // (a) The listing is one whole rule set, and connections land as it says.
                let listed: [Binding]? = try? f.dispatcher(readOnly: true).bindings()
                let allowed = [scenario.before, scenario.after].map { $0.map(Set.init) }
                #expect(
                    allowed.contains(listed.map(Set.init)),
                    "\(scenario) K=\(k): listed \(listed.map { "\($0)" } ?? "nothing")")
                for (address, port) in Self.probes {
                    let expected = (listed ?? []).winner(for: .tcp, IPAddress(address)!, port)?.label ?? "refused"
                    #expect(try f.land(.tcp, address, port) == expected, "\(scenario) K=\(k): \(address):\(port)")
                }
                // (b) Run again: it succeeds and leaves what it meant to.
                let again = try f.runSksteer(scenario.arguments)
                #expect(again.status == 0, "\(scenario) K=\(k) again: \(again.errors)")
                let final: [Binding]? = try? f.dispatcher(readOnly: true).bindings()
                #expect(final.map(Set.init) == scenario.after.map(Set.init), "\(scenario) K=\(k) after running again")
                #expect(try Self.attachedLinks(f) <= 1, "\(scenario) K=\(k): more than one program attached")
                // (c) unload removes everything.
                if scenario.after != nil { #expect(try f.runSksteer(["unload"]).status == 0) }
                #expect(try Self.attachedLinks(f) == 0, "\(scenario) K=\(k): a link is left attached")
                // (progs.debug and maps.debug belong to the bpffs itself.)
                let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: f.bpffs.path)) ?? []).filter {
                    !$0.hasSuffix(".debug")
                }
                #expect(leftovers.isEmpty, "\(scenario) K=\(k): left in bpffs: \(leftovers)")
            }
            #expect(landed == calls, "\(scenario): the kill landed at \(landed) of \(calls) points")
        }
    }

    /// A fixture in the scenario's starting state, with servers for both labels.
    static func fixture(_ scenario: Scenario) throws -> Fixture {
        let f = try Fixture()
        for name in ["A", "B"] { try f.serve(name, .tcp, .loopback4, 0, label: name) }
        if let before = scenario.before {
            try f.dispatcher().apply(before)
        } else {
            try Dispatcher.unload(namespace: f.namespace, bpffs: f.bpffs.path)
        }
        return f
    }

    /// How many `bpf()` calls the command makes from a fresh starting state.
    static func bpfCalls(_ scenario: Scenario) throws -> Int {
        let f = try fixture(scenario)
        let trace = "/tmp/sksteer-killsweep-\(getpid()).trace"
        defer { unlink(trace) }
        let (_, status) = try run(f, ["-o", trace, "-e", "trace=bpf"], command: scenario.arguments)
        #expect(status == 0)
        let lines = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
        return lines.filter { $0.contains("bpf(") && !$0.contains("resumed>") }.count
    }

    static func run(_ f: Fixture, _ arguments: [String], killAt k: Int) throws -> (Process.TerminationReason, Int32) {
        try run(
            f, ["-o", "/dev/null", "-e", "trace=bpf", "-e", "inject=bpf:signal=KILL:when=\(k)"], command: arguments)
    }

    static func run(_ f: Fixture, _ strace: [String], command: [String]) throws -> (Process.TerminationReason, Int32) {
        guard let executable = sksteerExecutable(), let straceExecutable else {
            throw SteeringError.notLoaded("sksteer or strace is missing")
        }
        let (process, output) = try spawn(
            in: f.namespace, URL(fileURLWithPath: straceExecutable),
            ["-f"] + strace + [executable.path] + command + ["--bpffs", f.bpffs.path])
        _ = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationReason, process.terminationStatus)
    }

    /// SK_LOOKUP links attached to the fixture's namespace.
    static func attachedLinks(_ f: Fixture) throws -> Int {
        let inode = try f.namespace.inode()
        return try LinkInfo.all().filter { $0.namespaceInode.map(UInt64.init) == inode }.count
    }
}
