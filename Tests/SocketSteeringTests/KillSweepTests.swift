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
        /// The system calls the fault is injected into (strace's syscall set).
        var syscalls = "bpf"
        /// strace's injected fault: a signal or an error.
        var fault = "signal=KILL"
        var description: String { syscalls == "bpf" ? name : "\(name) \(syscalls):\(fault)" }
    }

    static let a = binding("A", "tcp", "127.0.0.1", "80")
    static let b = binding("B", "tcp", "127.0.0.0/24", "*")
    static let swapped = [binding("B", "tcp", "127.0.0.1", "80"), binding("A", "tcp", "127.0.0.0/24", "*")]
    static let file = "/tmp/sksteer-killsweep-apply.txt"

    static let bpfScenarios: [Scenario] = [
        Scenario(name: "bind", before: [a], after: [a, b], arguments: ["bind", "B", "tcp", "127.0.0.0/24", "*"]),
        Scenario(name: "unbind", before: [a, b], after: [a], arguments: ["unbind", "B", "tcp", "127.0.0.0/24", "*"]),
        Scenario(name: "apply", before: [a, b], after: swapped, arguments: ["apply", file]),
        Scenario(name: "load", before: nil, after: [], arguments: ["load"]),
        Scenario(name: "unload", before: [a, b], after: nil, arguments: ["unload"]),
        Scenario(name: "upgrade", before: [a, b], after: [a, b], arguments: ["upgrade"]),
    ]

    /// The file-system calls each command makes on bpffs (seen with `strace -e
    /// trace=%file`), killed or failed with EIO at each of their calls.
    static let fileScenarios: [Scenario] = [
        ("load", "mkdir"), ("load", "rename"), ("load", "unlink"), ("bind", "rename"), ("bind", "unlink"),
        ("apply", "rename"), ("upgrade", "rename"), ("upgrade", "unlink"), ("unload", "unlinkat"),
        ("unload", "rmdir"),
    ].flatMap { name, syscall in
        ["signal=KILL", "error=EIO"].map { fault in
            var scenario = bpfScenarios.first { $0.name == name }!
            scenario.syscalls = syscall
            scenario.fault = fault
            return scenario
        }
    }

    static let probes: [(String, UInt16)] = [("127.0.0.1", 80), ("127.0.0.1", 81), ("127.0.0.9", 80)]

    @Test(arguments: bpfScenarios)
    func everyKillPointLeavesATruthfulState(_ scenario: Scenario) throws {
        try Self.sweep(scenario)
    }

    /// The same for the calls on bpffs: the state directory's rename, the pins' unlinks.
    @Test(arguments: fileScenarios)
    func everyFileFaultLeavesATruthfulState(_ scenario: Scenario) throws {
        try Self.sweep(scenario)
    }

    static func sweep(_ scenario: Scenario) throws {
        try exclusively {
            try "B tcp 127.0.0.1 80\nA tcp 127.0.0.0/24 *\n".write(toFile: Self.file, atomically: true, encoding: .utf8)
            defer { unlink(Self.file) }
            let calls = try Self.calls(scenario)
            #expect(calls > 0, "\(scenario): \(calls) \(scenario.syscalls)() calls")
            var landed = 0
            for k in 1...calls {
                let f = try Self.fixture(scenario)
                if try Self.run(f, scenario.arguments, fault: scenario, at: k) { landed += 1 }
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
            #expect(landed == calls, "\(scenario): the fault landed at \(landed) of \(calls) points")
        }
    }

    /// The socket commands, swept the same way: `register-pid` adds a second socket (A2) to
    /// label A, `unregister` removes A's sockets. At every kill point the sockets `status`
    /// lists for A are where A's connections land (refused when it lists none), A's first
    /// socket is never lost by `register-pid`, running the command again leaves what it
    /// intended (A2 with its full share of slots; no socket), and `unload` removes everything.
    /// (`register` takes the same path after LISTEN_FDS; it cannot run under strace, whose
    /// child pid is not known beforehand for LISTEN_PID.)
    @Test(arguments: ["register-pid", "unregister"])
    func everyKillPointLeavesTruthfulSockets(_ command: String) throws {
        try exclusively {
            let before = [Self.a, Self.b]
            func fixture() throws -> (Fixture, [UInt64: String], [String]) {
                let f = try Self.fixture(Scenario(name: command, before: before, after: before, arguments: []))
                let extra = try f.serve("A2", .tcp, .loopback4, 0)
                let port = try extra.socket.localEndpoint().port
                var names: [UInt64: String] = [:]
                for server in f.servers { names[try server.socket.cookie()] = server.name }
                let arguments =
                    command == "register-pid"
                    ? ["register-pid", "\(getpid())", "A", "tcp", "127.0.0.1", "\(port)"]
                    : ["unregister", "A", "tcp", "ipv4"]
                return (f, names, arguments)
            }
            func listed(_ f: Fixture, _ names: [UInt64: String]) throws -> [String: Int] {
                let dispatcher = try f.dispatcher(readOnly: true)
                guard let label = try dispatcher.labelID("A", create: false) else { return [:] }
                var held: [String: Int] = [:]
                for slot in try dispatcher.slots(
                    destination: Layout.destination(label: label, transport: .tcp, ipv6: false))
                {
                    if let slot { held[names[slot] ?? "unknown", default: 0] += 1 }
                }
                return held
            }
            let (first, _, arguments) = try fixture()
            let calls = try Self.calls(first, arguments)
            #expect(calls > 0, "\(command): \(calls) bpf() calls")
            var landed = 0
            for k in 1...calls {
                let (f, names, arguments) = try fixture()
                if try Self.run(f, arguments, fault: Scenario(name: command, arguments: arguments), at: k) {
                    landed += 1
                }
                // (a) Connections land on the sockets the listing names.
                let held = try listed(f, names)
                #expect(held.keys.allSatisfy { ["A", "A2"].contains($0) }, "\(command) K=\(k): \(held)")
                if command == "register-pid" { #expect(held["A"] != nil, "\(command) K=\(k): A was lost: \(held)") }
                for _ in 0..<4 {
                    let landing = try f.land(.tcp, "127.0.0.1", 80)
                    #expect(
                        held.isEmpty ? landing == "refused" : held[landing] != nil,
                        "\(command) K=\(k): landed on \(landing), listed \(held)")
                }
                // (b) Run again: it succeeds and leaves what it meant to.
                let again = try f.runSksteer(arguments)
                #expect(again.status == 0, "\(command) K=\(k) again: \(again.errors)")
                let final = try listed(f, names)
                #expect(
                    final == (command == "register-pid" ? ["A": 8, "A2": 8] : [:]),
                    "\(command) K=\(k) after running again: \(final)")
                // (c) unload removes everything.
                #expect(try f.runSksteer(["unload"]).status == 0)
                #expect(try Self.attachedLinks(f) == 0, "\(command) K=\(k): a link is left attached")
                let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: f.bpffs.path)) ?? []).filter {
                    !$0.hasSuffix(".debug")
                }
                #expect(leftovers.isEmpty, "\(command) K=\(k): left in bpffs: \(leftovers)")
            }
            #expect(landed == calls, "\(command): the kill landed at \(landed) of \(calls) points")
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

    /// How many calls of the scenario's system call its command makes from a fresh starting state.
    static func calls(_ scenario: Scenario) throws -> Int {
        try calls(fixture(scenario), scenario.arguments, syscall: scenario.syscalls)
    }

    /// How many `syscall` calls `arguments` makes in the fixture's state.
    static func calls(_ f: Fixture, _ arguments: [String], syscall: String = "bpf") throws -> Int {
        let trace = "/tmp/sksteer-killsweep-\(getpid()).trace"
        defer { unlink(trace) }
        let (_, status) = try run(f, ["-o", trace, "-e", "trace=\(syscall)"], command: arguments)
        #expect(status == 0)
        let lines = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
        return lines.filter { $0.contains(" \(syscall)(") && !$0.contains("resumed>") }.count
    }

    /// Runs the command with the scenario's fault injected at its K-th call; whether it landed
    /// (the command was killed, or strace reports the injected error).
    static func run(_ f: Fixture, _ arguments: [String], fault scenario: Scenario, at k: Int) throws -> Bool {
        let trace = "/tmp/sksteer-killsweep-\(getpid())-fault.trace"
        defer { unlink(trace) }
        let (reason, status) = try run(
            f,
            [
                "-o", trace, "-e", "trace=\(scenario.syscalls)",
                "-e", "inject=\(scenario.syscalls):\(scenario.fault):when=\(k)",
            ],
            command: arguments)
        if scenario.fault == "signal=KILL" { return reason == .uncaughtSignal && status == SIGKILL }
        return (try? String(contentsOfFile: trace, encoding: .utf8))?.contains("(INJECTED)") ?? false
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
