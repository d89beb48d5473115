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
        /// The text of ``KillSweepTests/file`` (the default swaps A and B).
        var fileText = "B tcp 127.0.0.1 80\nA tcp 127.0.0.0/24 *\n"
        var description: String { syscalls == "bpf" ? name : "\(name) \(syscalls):\(fault)" }
    }

    static let a = binding("A", "tcp", "127.0.0.1", "80")
    static let b = binding("B", "tcp", "127.0.0.0/24", "*")
    static let swapped = [binding("B", "tcp", "127.0.0.1", "80"), binding("A", "tcp", "127.0.0.0/24", "*")]
    static let file = "/tmp/sksteer-killsweep-apply.txt"
    /// More bindings than an incremental change takes, into an empty dispatcher: the path
    /// that writes the group records to the idle copy while the tables compile.
    static let large =
        [binding("A", "tcp", "127.0.0.1", "80"), binding("B", "tcp", "127.0.0.0/24", "*")]
        + (0..<(Dispatcher.smallChange)).map { binding("A", "tcp", "127.1.\($0 / 250).\($0 % 250 + 1)", "80") }

    /// With ``a``, as many host bindings as a new host table holds.
    static let fullHosts = (1..<CopyMaps.initialHostEntries).map {
        binding("A", "tcp", "127.1.\($0 / 250).\($0 % 250 + 1)", "80")
    }

    static let bpfScenarios: [Scenario] = [
        Scenario(name: "bind", before: [a], after: [a, b], arguments: ["bind", "B", "tcp", "127.0.0.0/24", "*"]),
        Scenario(name: "unbind", before: [a, b], after: [a], arguments: ["unbind", "B", "tcp", "127.0.0.0/24", "*"]),
        Scenario(name: "apply", before: [a, b], after: swapped, arguments: ["apply", file]),
        Scenario(
            name: "apply-large", before: [], after: large, arguments: ["apply", file],
            fileText: large.map { "\($0.label) tcp \($0.prefix) \($0.ports)\n" }.joined()),
        // The host table is full (a's entry and 1023 more) and the listing has 8 bindings a
        // bucket (1024 in 128), so the bind grows the one and regroups the other, in each copy.
        Scenario(
            name: "bind-grow", before: [a] + fullHosts,
            after: [a] + fullHosts + [binding("A", "tcp", "127.2.0.1", "80")],
            arguments: ["bind", "A", "tcp", "127.2.0.1", "80"]),
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
            try scenario.fileText.write(toFile: Self.file, atomically: true, encoding: .utf8)
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
                #expect(try Self.linksLeft(f) == 0, "\(scenario) K=\(k): a link is left attached")
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
    /// `register` adds A2 as systemd passes it: descriptor 3, LISTEN_FDS=1 and LISTEN_PID set
    /// by a shell that then execs sksteer (so under strace the pid is sksteer's own).
    @Test(arguments: ["register-pid", "register", "unregister"])
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
                    switch command {
                    case "register-pid": ["register-pid", "\(getpid())", "A", "tcp", "127.0.0.1", "\(port)"]
                    case "register": ["register", "A"]
                    default: ["unregister", "A", "tcp", "ipv4"]
                    }
                return (f, names, arguments)
            }
            // register gets A2's socket as descriptor 3; the others run as usual.
            func passed(_ f: Fixture) -> Int32? {
                command == "register" ? f.servers.first { $0.name == "A2" }!.socket.descriptor.withRawValue { $0 } : nil
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
            let calls = try Self.calls(first, arguments, passing: passed(first))
            #expect(calls > 0, "\(command): \(calls) bpf() calls")
            var landed = 0
            for k in 1...calls {
                let (f, names, arguments) = try fixture()
                if try Self.run(
                    f, arguments, fault: Scenario(name: command, arguments: arguments), at: k, passing: passed(f))
                {
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
                if let socket = passed(f) {
                    let again = try Self.launch(f, strace: nil, command: arguments, passing: socket)
                    #expect(again == (signal: 0, status: 0), "\(command) K=\(k) again: \(again)")
                } else {
                    let again = try f.runSksteer(arguments)
                    #expect(again.status == 0, "\(command) K=\(k) again: \(again.errors)")
                }
                let final = try listed(f, names)
                #expect(
                    final == (command == "unregister" ? [:] : ["A": 8, "A2": 8]),
                    "\(command) K=\(k) after running again: \(final)")
                // (c) unload removes everything.
                #expect(try f.runSksteer(["unload"]).status == 0)
                #expect(try Self.linksLeft(f) == 0, "\(command) K=\(k): a link is left attached")
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
    static func calls(_ f: Fixture, _ arguments: [String], syscall: String = "bpf", passing socket: Int32? = nil)
        throws -> Int
    {
        let trace = "/tmp/sksteer-killsweep-\(getpid()).trace"
        defer { unlink(trace) }
        if let socket {
            let result = try launch(
                f, strace: ["-o", trace, "-e", "trace=\(syscall)"], command: arguments, passing: socket)
            #expect(result == (signal: 0, status: 0))
        } else {
            let (_, status) = try run(f, ["-o", trace, "-e", "trace=\(syscall)"], command: arguments)
            #expect(status == 0)
        }
        let lines = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
        // strace -f numbers a tracee's calls per thread (`when=K` is each thread's K-th call;
        // its -o lines start with the thread id): a large write runs on two threads, and the
        // sweep goes to the last call of the thread that makes the most.
        var perThread: [Substring: Int] = [:]
        for line in lines where line.contains(" \(syscall)(") && !line.contains("resumed>") {
            perThread[line.prefix { $0 != " " }, default: 0] += 1
        }
        return perThread.values.max() ?? 0
    }

    /// Runs the command with the scenario's fault injected at its K-th call; whether it landed
    /// (the command was killed, or strace reports the injected error).
    static func run(
        _ f: Fixture, _ arguments: [String], fault scenario: Scenario, at k: Int, passing socket: Int32? = nil
    ) throws -> Bool {
        let trace = "/tmp/sksteer-killsweep-\(getpid())-fault.trace"
        defer { unlink(trace) }
        let strace = [
            "-o", trace, "-e", "trace=\(scenario.syscalls)",
            "-e", "inject=\(scenario.syscalls):\(scenario.fault):when=\(k)",
        ]
        let (reason, status): (Process.TerminationReason, Int32)
        if let socket {
            let result = try launch(f, strace: strace, command: arguments, passing: socket)
            (reason, status) = result.signal != 0 ? (.uncaughtSignal, result.signal) : (.exit, result.status)
        } else {
            (reason, status) = try run(f, strace, command: arguments)
        }
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

    /// Runs `sksteer COMMAND --bpffs …` in the fixture's namespace (under strace if given) as
    /// systemd would start it with one socket: `socket` as descriptor 3, LISTEN_FDS=1, and
    /// LISTEN_PID set by a shell that execs sksteer. Returns the signal that ended it (0 for
    /// none) and its exit status.
    static func launch(_ f: Fixture, strace: [String]?, command: [String], passing socket: Int32) throws -> (
        signal: Int32, status: Int32
    ) {
        guard let executable = sksteerExecutable(), let straceExecutable else {
            throw SteeringError.notLoaded("sksteer or strace is missing")
        }
        let shell = ["/bin/sh", "-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"", executable.path]
        let arguments =
            (strace.map { [straceExecutable, "-f"] + $0 } ?? []) + shell + command + ["--bpffs", f.bpffs.path]
        // Above 3 first, so that the dup2 to 3 always clears close-on-exec.
        let high = fcntl(socket, F_DUPFD_CLOEXEC, 100)
        guard high >= 0 else { throw BPFError(operation: "dup the socket", code: errno) }
        defer { close(high) }
        let pid = try f.namespace.run { () throws -> pid_t in
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, high, 3)
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
            var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
            defer { for pointer in argv { free(pointer) } }
            var pid: pid_t = 0
            let code = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
            guard code == 0 else { throw BPFError(operation: "spawn \(arguments[0])", code: code) }
            return pid
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status & 0x7f != 0 ? (status & 0x7f, 0) : (0, (status >> 8) & 0xff)
    }

    /// SK_LOOKUP links attached to the fixture's namespace.
    static func attachedLinks(_ f: Fixture) throws -> Int {
        let inode = try f.namespace.inode()
        return try LinkInfo.all().filter { $0.namespaceInode == inode }.count
    }

    /// ``attachedLinks(_:)`` once the kernel has released what an exited process left (up to 2 s).
    static func linksLeft(_ f: Fixture) throws -> Int { try settled({ try attachedLinks(f) }, until: { $0 == 0 }) }
}
