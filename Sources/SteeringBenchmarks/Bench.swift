import BPF
import BPFAssembly
import Foundation
import SKLookup
import SocketSteering
import Synchronization

/// `sksteer bench`: every measurement side by side in one run, in throwaway namespaces.
public enum Bench {
    /// What to measure and how hard; the defaults are the full run.
    public struct Options: Sendable {
        /// Filler bindings for the data-plane sizes.
        public var sizes: [Int] = [1, 1_000, 100_000, 1_000_000]
        /// Test-run repeat count per round.
        public var repeatCount: UInt32 = 1_000_000
        /// Rounds per measurement (the median is reported).
        public var rounds = 5
        /// Connections (and datagrams) per round.
        public var connections = 3_000
        /// Rounds of the connection measurements (the order of the targets rotates each round).
        public var connectionRounds = 11
        /// Binding counts for `apply` from a file.
        public var applySizes: [Int] = [1_000, 100_000, 1_000_000]
        /// Bindings present when timing one `bind` and `status`.
        public var statusSize = 100_000
        /// Measure only the data plane.
        public var dataPlaneOnly = false
        /// Where the reference C source is.
        public var referenceSource: URL
        /// The default (full) options, with the reference C source at `referenceSource`.
        public init(referenceSource: URL) { self.referenceSource = referenceSource }

        /// Tiny sizes: proves the command works; the numbers mean little.
        public static func smoke(referenceSource: URL) -> Options {
            var options = Options(referenceSource: referenceSource)
            options.sizes = [1, 100]
            options.repeatCount = 10_000
            options.rounds = 2
            options.connections = 200
            options.connectionRounds = 2
            options.applySizes = [100, 1_000]
            options.statusSize = 1_000
            return options
        }
    }

    /// One data-plane measurement: nanoseconds per lookup for one size and scenario.
    public struct DataPlaneRow: Codable, Sendable {
        /// The number of filler bindings (the scenarios add four more).
        public var bindings: Int
        /// What the lookup hits, e.g. `single port`, `port range` or `no binding`.
        public var scenario: String
        /// sksteer's median time per lookup, in nanoseconds (`BPF_PROG_TEST_RUN`).
        public var oursNanoseconds: Double
        /// The C reference's median time per lookup, in nanoseconds.
        public var referenceNanoseconds: Double
        /// The median time of a program that only returns SK_PASS: the test run's own cost, in nanoseconds.
        public var floorNanoseconds: Double
        /// Ours ÷ reference (the goal is ≤ 1.00).
        public var ratio: Double
        /// Whether both programs picked the expected socket (or none) in the test run.
        public var agree: Bool
    }

    /// One connection-rate measurement, the median over rounds.
    public struct RateRow: Codable, Sendable {
        /// What was measured and through what, e.g. `TCP connect+accept+close/s, plain listener`.
        public var name: String
        /// The median rate over rounds, per second.
        public var perSecond: Double
        /// The slowest and fastest rounds, to show the noise.
        public var lowest: Double
        /// The fastest round's rate, per second.
        public var highest: Double
        /// ÷ the plain listener's rate (the goal for TCP is ≥ 0.97).
        public var ratioToPlain: Double
    }

    /// One control-plane timing.
    public struct TimingRow: Codable, Sendable {
        /// What was timed, e.g. `apply 100000 bindings from a file`.
        public var name: String
        /// The wall-clock time, in seconds.
        public var seconds: Double
        /// The target, such as `< 2 s`, if there is one.
        public var goal: String?
        /// Whether the goal was met; `nil` without a goal.
        public var met: Bool?
    }

    /// Everything one run measured, as written to JSON and rendered by ``markdown(_:command:)``.
    public struct Results: Codable, Sendable {
        /// The machine: kernel, cores, cpu, memory, clang version and date.
        public var machine: [String: String]
        /// The options the run used, as text.
        public var options: [String: String]
        /// Nanoseconds per lookup, by size and scenario.
        public var dataPlane: [DataPlaneRow]
        /// TCP connection and UDP datagram rates, plain and through sksteer.
        public var connections: [RateRow]
        /// Timings of `apply`, `bind`, `status` and the load path.
        public var controlPlane: [TimingRow]
        /// Instruction counts after verification, of sksteer's program and the reference.
        public var instructions: [String: Int]
    }

    static let scenarios: [(name: String, transport: Socket.Transport, target: Endpoint)] = [
        ("single port", .tcp, Endpoint(.v4(127, 0, 0, 1), 80)),
        ("port range", .tcp, Endpoint(.v4(127, 0, 0, 2), 5050)),
        ("all ports", .tcp, Endpoint(.v4(127, 0, 0, 3), 443)),
        ("no binding", .tcp, Endpoint(.v4(127, 1, 2, 3), 80)),
        ("no socket", .tcp, Endpoint(.v4(127, 0, 0, 4), 80)),
    ]

    static func filler(_ count: Int) -> [Binding] {
        (0..<count).map { i in
            let address = IPAddress.v4(10, UInt8((i >> 16) & 255), UInt8((i >> 8) & 255), UInt8(i & 255))
            return Binding(label: "filler", transport: .tcp, prefix: IPPrefix(address, length: 32)!, ports: .single(80))
        }
    }

    static let caseBindings: [Binding] = [
        try! Binding(label: "single", protocol: "tcp", prefix: "127.0.0.1", ports: "80"),
        try! Binding(label: "range", protocol: "tcp", prefix: "127.0.0.2", ports: "5000-5099"),
        try! Binding(label: "all", protocol: "tcp", prefix: "127.0.0.3", ports: "*"),
        try! Binding(label: "nosock", protocol: "tcp", prefix: "127.0.0.4", ports: "80"),
    ]

    /// One size's setup: our dispatcher and the reference, filled alike.
    final class Setup {
        let namespace: NetworkNamespace
        let bpffs: BPFFileSystem.TemporaryMount
        let reference: ReferenceDispatcher
        let ours: Program
        let sockets: [Socket]
        let dispatcher: Dispatcher

        init(filler count: Int, object: URL, say: (String) -> Void) throws {
            let namespace = try NetworkNamespace.makeThrowaway()
            self.namespace = namespace
            bpffs = try BPFFileSystem.TemporaryMount()
            _ = try Dispatcher.load(namespace: namespace, bpffs: bpffs.path, maxBindings: max(1024, count + 64))
            dispatcher = try Dispatcher.open(namespace: namespace, bpffs: bpffs.path)
            sockets = try (0..<3).map { i in
                try namespace.run { try Socket.bound(.tcp, .loopback4, port: UInt16(7001 + i)) }
            }
            for (socket, label) in zip(sockets, ["single", "range", "all"]) {
                try dispatcher.register(socket, label: label)
            }
            say("    applying \(count + 4) bindings to sksteer")
            try dispatcher.apply(Bench.filler(count) + Bench.caseBindings)
            ours = try dispatcher.measurementProgram()
            say("    filling the reference's trie")
            reference = try ReferenceDispatcher(object: object)
            for (index, socket) in sockets.enumerated() { try reference.sockets.set(UInt32(index), socket) }
            try reference.add([(.tcp, .v4(127, 0, 0, 1), 80)], destination: 0)
            try reference.add((5000..<5100).map { (.tcp, .v4(127, 0, 0, 2), UInt16($0)) }, destination: 1)
            try reference.add([(.tcp, .v4(127, 0, 0, 3), 0)], destination: 2)
            try reference.add([(.tcp, .v4(127, 0, 0, 4), 80)], destination: 3)
            try reference.add(Bench.filler(count).map { ($0.transport, $0.prefix.address, 80) }, destination: 4)
        }
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// Runs everything; `say` gets progress lines.
    public static func run(_ options: Options, say: (String) -> Void) throws -> Results {
        let work = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("sksteer-bench-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        say("compiling the C reference with \(Tools.clang)")
        let object = try ReferenceDispatcher.compile(source: options.referenceSource, into: work)

        var dataPlane: [DataPlaneRow] = []
        var kept: [Int: Setup] = [:]
        var instructions: [String: Int] = [:]
        for size in options.sizes {
            say("[data plane] \(size) filler bindings")
            let setup = try Setup(filler: size, object: object, say: say)
            instructions["sksteer (xlated)"] = try setup.ours.info().instructionCount
            instructions["reference (xlated)"] = try setup.reference.dispatcher.info().instructionCount
            let cookies = try setup.sockets.map { try $0.cookie() }
            for (index, scenario) in scenarios.enumerated() {
                let connection = Connection(scenario.transport, to: scenario.target)
                var times: [String: [Double]] = [:]
                var agree = true
                let expected: UInt64? = index < 3 ? cookies[index] : nil
                for _ in 0..<options.rounds {
                    for (name, program) in [
                        ("ours", setup.ours), ("reference", setup.reference.dispatcher),
                        ("floor", setup.reference.passOnly),
                    ] {
                        let result = try program.testRun(connection, repeat: options.repeatCount)
                        times[name, default: []].append(Double(result.nanosecondsPerRun))
                        if name != "floor" && result.selectedCookie != expected { agree = false }
                    }
                }
                let row = DataPlaneRow(
                    bindings: size, scenario: scenario.name, oursNanoseconds: median(times["ours"]!),
                    referenceNanoseconds: median(times["reference"]!), floorNanoseconds: median(times["floor"]!),
                    ratio: median(times["ours"]!) / max(1, median(times["reference"]!)), agree: agree)
                dataPlane.append(row)
                say(
                    "    \(scenario.name): sksteer \(fmt(row.oursNanoseconds)) ns, reference \(fmt(row.referenceNanoseconds)) ns,"
                        + " floor \(fmt(row.floorNanoseconds)) ns, ratio \(fmt(row.ratio, 2))\(agree ? "" : " (DISAGREE)")"
                )
            }
            if size == options.sizes.first || size == options.sizes.last { kept[size] = setup }
        }

        if options.dataPlaneOnly {
            return Results(
                machine: machine(), options: ["sizes": options.sizes.map(String.init).joined(separator: ",")],
                dataPlane: dataPlane, connections: [], controlPlane: [], instructions: instructions)
        }
        say("[connections] plain listener vs through the dispatcher")
        let connections = try connectionRates(
            options, small: kept[options.sizes.first!]!, large: kept[options.sizes.last!]!, say: say)
        kept.removeAll()

        say("[control plane]")
        var control: [TimingRow] = []
        for size in options.applySizes {
            let namespace = try NetworkNamespace.makeThrowaway()
            let bpffs = try BPFFileSystem.TemporaryMount()
            _ = try Dispatcher.load(namespace: namespace, bpffs: bpffs.path, maxBindings: max(1024, size + 64))
            let file = work.appendingPathComponent("bindings-\(size).txt")
            try filler(size).map { "\($0.label) tcp \($0.prefix) \($0.ports)" }.joined(separator: "\n").write(
                to: file, atomically: true, encoding: .utf8)
            let elapsed = try seconds {
                let text = try String(contentsOf: file, encoding: .utf8)
                try Dispatcher.open(namespace: namespace, bpffs: bpffs.path).apply(BindingFile.parse(text))
            }
            let goal = size == 100_000 ? "< 2 s" : nil
            control.append(
                TimingRow(
                    name: "apply \(size) bindings from a file", seconds: elapsed, goal: goal,
                    met: goal == nil ? nil : elapsed < 2))
            say("    apply \(size): \(fmt(elapsed, 3)) s")
            if size == options.statusSize {
                control.append(
                    contentsOf: try bindAndStatus(namespace: namespace, bpffs: bpffs.path, size: size, say: say))
            }
            try Dispatcher.unload(namespace: namespace, bpffs: bpffs.path)
        }
        if !options.applySizes.contains(options.statusSize) {
            let namespace = try NetworkNamespace.makeThrowaway()
            let bpffs = try BPFFileSystem.TemporaryMount()
            _ = try Dispatcher.load(namespace: namespace, bpffs: bpffs.path, maxBindings: options.statusSize + 64)
            try Dispatcher.open(namespace: namespace, bpffs: bpffs.path).apply(filler(options.statusSize))
            control.append(
                contentsOf: try bindAndStatus(
                    namespace: namespace, bpffs: bpffs.path, size: options.statusSize, say: say))
            try Dispatcher.unload(namespace: namespace, bpffs: bpffs.path)
        }

        say("[load path] DSL → assembled → loaded → attached")
        control.append(try loadPath(options, say: say))

        return Results(
            machine: machine(),
            options: [
                "sizes": options.sizes.map(String.init).joined(separator: ","), "repeat": "\(options.repeatCount)",
                "rounds": "\(options.rounds)", "connections per round": "\(options.connections)",
                "connection rounds": "\(options.connectionRounds)",
            ], dataPlane: dataPlane, connections: connections, controlPlane: control, instructions: instructions)
    }

    static func bindAndStatus(namespace: NetworkNamespace, bpffs: String, size: Int, say: (String) -> Void) throws
        -> [TimingRow]
    {
        let one = try Binding(label: "one", protocol: "tcp", prefix: "192.0.2.1", ports: "8080-8089")
        let bind = try seconds { try Dispatcher.open(namespace: namespace, bpffs: bpffs).bind(one) }
        let status = try seconds {
            _ = try Dispatcher.open(namespace: namespace, bpffs: bpffs, readOnly: true).status(findOwners: false)
        }
        say("    one bind with \(size) bindings: \(fmt(bind, 3)) s; status: \(fmt(status, 3)) s")
        return [
            TimingRow(name: "one bind, \(size) bindings present", seconds: bind),
            TimingRow(name: "status with \(size) bindings", seconds: status),
        ]
    }

    static func loadPath(_ options: Options, say: (String) -> Void) throws -> TimingRow {
        let namespace = try NetworkNamespace.makeThrowaway()
        let bpffs = try BPFFileSystem.TemporaryMount()
        _ = try Dispatcher.load(namespace: namespace, bpffs: bpffs.path, maxBindings: 1024)
        let dispatcher = try Dispatcher.open(namespace: namespace, bpffs: bpffs.path)
        var times: [Double] = []
        for _ in 0..<max(5, options.rounds * 2) {
            times.append(
                try seconds {
                    let assembly = try dispatcher.dataPlaneAssembly()
                    let program = try Program.load(assembly, type: .skLookup, name: "sksteer")
                    let link = try Link.attach(program, to: namespace)
                    try link.detach()
                })
        }
        say("    median \(fmt(median(times) * 1000, 2)) ms")
        return TimingRow(name: "load path: assemble, load, attach the data plane (median)", seconds: median(times))
    }

    // MARK: Connections

    /// Accepts and closes connections, or counts datagrams, on a thread of its own.
    final class Sink: Sendable {
        final class State: Sendable {
            let count = Atomic<Int>(0)
            let stop = Atomic<Bool>(false)
            /// When the last datagram or connection arrived (uptime ns).
            let last = Atomic<UInt64>(0)
        }
        let socket: Socket
        let state = State()
        let thread: JoinableThread
        var count: Int { state.count.load(ordering: .relaxed) }

        init(_ socket: Socket) throws {
            self.socket = socket
            try socket.setTimeout(milliseconds: 50)
            let state = self.state
            thread = try JoinableThread {
                while !state.stop.load(ordering: .relaxed) {
                    let arrived =
                        socket.transport == .tcp
                        ? (try? socket.accept()) != nil : (try? socket.receive(maximum: 64)) != nil
                    if arrived {
                        state.count.add(1, ordering: .relaxed)
                        state.last.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
                    }
                }
            }
        }

        func finish() {
            state.stop.store(true, ordering: .relaxed)
            thread.join()
        }
    }

    static func connectionRates(_ options: Options, small: Setup, large: Setup, say: (String) -> Void) throws
        -> [RateRow]
    {
        let plain = try NetworkNamespace.makeThrowaway()
        struct Target {
            var name: String
            var namespace: NetworkNamespace
            var tcp: Endpoint
            var udp: Endpoint
            var sinks: [Sink]
        }
        func target(_ name: String, _ namespace: NetworkNamespace, dispatcher: Dispatcher?) throws -> Target {
            let tcp = try namespace.run { try Socket.bound(.tcp, .loopback4, port: 7100, backlog: 4096) }
            let udp = try namespace.run { try Socket.bound(.udp, .loopback4, port: 7101) }
            if let dispatcher {
                try dispatcher.register(tcp, label: "bench")
                try dispatcher.register(udp, label: "bench")
                try dispatcher.bind(try Binding(label: "bench", protocol: "tcp", prefix: "127.0.0.1", ports: "8080"))
                try dispatcher.bind(try Binding(label: "bench", protocol: "udp", prefix: "127.0.0.1", ports: "8081"))
            }
            return Target(
                name: name, namespace: namespace, tcp: Endpoint(.loopback4, dispatcher == nil ? 7100 : 8080),
                udp: Endpoint(.loopback4, dispatcher == nil ? 7101 : 8081), sinks: [try Sink(tcp), try Sink(udp)])
        }
        let targets = [
            try target("plain listener", plain, dispatcher: nil),
            try target(
                "through sksteer, \(small.dispatcher.bindingCount()) bindings", small.namespace,
                dispatcher: small.dispatcher),
            try target(
                "through sksteer, \(large.dispatcher.bindingCount()) bindings", large.namespace,
                dispatcher: large.dispatcher),
        ]
        defer { for target in targets { for sink in target.sinks { sink.finish() } } }
        var tcpRates: [String: [Double]] = [:]
        var udpRates: [String: [Double]] = [:]
        for round in 0..<options.connectionRounds {
            // Rotate the order, so no target always runs first or last.
            let order = (0..<targets.count).map { targets[($0 + round) % targets.count] }
            for target in order {
                let n = options.connections
                let elapsed = try seconds {
                    try target.namespace.run {
                        for _ in 0..<n {
                            let client = try Socket.connected(.tcp, to: target.tcp.address, port: target.tcp.port)
                            try client.resetOnClose()
                        }
                    }
                }
                tcpRates[target.name, default: []].append(Double(n) / elapsed)
                let sink = target.sinks[1]
                let before = sink.count
                let start = DispatchTime.now().uptimeNanoseconds
                try target.namespace.run {
                    let client = try Socket.bound(.udp, .loopback4, port: 0)
                    let payload = [UInt8](repeating: 7, count: 16)
                    for _ in 0..<n { _ = try? client.send(payload, to: target.udp) }
                }
                var received = 0
                for _ in 0..<200 {
                    received = sink.count - before
                    if received >= n { break }
                    usleep(1_000)
                }
                // Until the last datagram arrived (waiting for lost ones is not counted).
                let udpElapsed = Double(max(sink.state.last.load(ordering: .relaxed), start + 1) - start) / 1e9
                udpRates[target.name, default: []].append(Double(received) / udpElapsed)
            }
            say("    round \(round + 1)/\(options.connectionRounds) done")
        }
        let plainTCP = median(tcpRates["plain listener"]!)
        let plainUDP = median(udpRates["plain listener"]!)
        var rows: [RateRow] = []
        for target in targets {
            let rounds = tcpRates[target.name]!
            rows.append(
                RateRow(
                    name: "TCP connect+accept+close/s, \(target.name)", perSecond: median(rounds),
                    lowest: rounds.min()!, highest: rounds.max()!, ratioToPlain: median(rounds) / plainTCP))
        }
        for target in targets {
            let rounds = udpRates[target.name]!
            rows.append(
                RateRow(
                    name: "UDP datagrams/s, \(target.name)", perSecond: median(rounds), lowest: rounds.min()!,
                    highest: rounds.max()!, ratioToPlain: median(rounds) / plainUDP))
        }
        for row in rows { say("    \(row.name): \(fmt(row.perSecond)) (\(fmt(row.ratioToPlain, 3)) of plain)") }
        return rows
    }

    // MARK: Output

    static func machine() -> [String: String] {
        var info: [String: String] = [
            "kernel": kernelRelease(), "cores": "\(ProcessInfo.processInfo.activeProcessorCount)",
        ]
        if let cpu = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8).split(separator: "\n")
            .first(where: { $0.hasPrefix("model name") })?.split(separator: ":", maxSplits: 1).last
        {
            info["cpu"] = cpu.trimmingCharacters(in: .whitespaces)
        }
        info["memory"] = "\(ProcessInfo.processInfo.physicalMemory / (1 << 30)) GiB"
        info["clang"] = (try? runTool(Tools.clang, ["--version"]))?.split(separator: "\n").first.map(String.init) ?? "?"
        info["date"] = ISO8601DateFormatter().string(from: Date())
        return info
    }

    /// The results as a Markdown report with tables, naming `command` as what made it.
    public static func markdown(_ results: Results, command: String) -> String {
        var out = "# Benchmarks\n\nMade by `\(command)` on one machine, all measurements side by side in one run"
        out += " (this machine is shared and noisy: compare the ratios, not the absolute numbers).\n\n"
        out += "| machine | |\n|---|---|\n"
        for (key, value) in results.machine.sorted(by: { $0.key < $1.key }) { out += "| \(key) | \(value) |\n" }
        out += "\n## Data plane: ns per lookup (kernel test run, median)\n\n"
        out += "Both programs run through `BPF_PROG_TEST_RUN` with the same bindings: N filler host bindings"
        out +=
            " (`tcp 10.x.y.z/32 80`) plus the four the scenarios hit. The reference is `Benchmarks/reference/tubular_like.c`"
        out += " (tubular's algorithm in C, clang -O2); it has no ranges, so the range binding is given to it as 100"
        out += " single-port entries. The floor is a program that only returns SK_PASS. Goal: ratio ≤ 1.00.\n\n"
        out +=
            "| bindings | scenario | sksteer ns | reference ns | floor ns | ratio | goal met | same choice |\n|---:|---|---:|---:|---:|---:|---|---|\n"
        for row in results.dataPlane {
            out +=
                "| \(row.bindings) | \(row.scenario) | \(fmt(row.oursNanoseconds)) | \(fmt(row.referenceNanoseconds)) | \(fmt(row.floorNanoseconds)) | \(fmt(row.ratio, 2)) | \(row.ratio <= 1.0 ? "yes" : "**no**") | \(row.agree ? "yes" : "**no**") |\n"
        }
        let missed = results.dataPlane.filter { $0.ratio > 1.0 }
        if !missed.isEmpty {
            out += "\nWhere the ratio is above 1.00: "
            out += missed.map { "\($0.scenario) at \($0.bindings) (\(fmt($0.ratio, 2)))" }.joined(separator: ", ") + "."
            out +=
                " A \"no binding\" lookup to a port that host bindings use (port 80 here, as the filler's) probes the"
            out += " host hash before the trie, one probe the reference does not make; other ports skip it through the"
            out += " host-port bitmap. A per-address filter (a bloom filter map) in front of the hash would close it."
            out += " Ratios within a few percent of 1.00 also move from run to run on this shared machine.\n"
        }
        out += "\nInstructions after verification: "
        out +=
            results.instructions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            + ".\n"
        out += "\n## Connections over loopback (median of rounds, target order rotating each round)\n\n"
        out += "| measurement | per second | slowest round | fastest round | ÷ plain | goal |\n"
        out += "|---|---:|---:|---:|---:|---|\n"
        for row in results.connections {
            let goal =
                row.name.hasPrefix("TCP") && !row.name.contains("plain")
                ? (row.ratioToPlain >= 0.97 ? "≥ 0.97: yes" : "≥ 0.97: **no**") : ""
            out += "| \(row.name) | \(fmt(row.perSecond)) | \(fmt(row.lowest)) | \(fmt(row.highest))"
            out += " | \(fmt(row.ratioToPlain, 3)) | \(goal) |\n"
        }
        if let plain = results.connections.first(where: { $0.name.hasPrefix("TCP") }),
            let hit = results.dataPlane.last(where: { $0.scenario == "single port" })
        {
            let perConnection = 1e9 / plain.perSecond
            out += "\nWhat the program itself adds to a connection is one lookup, about \(fmt(hit.oursNanoseconds)) ns"
            out += " (data plane table), against \(fmt(perConnection / 1000, 1)) µs per plain connection here:"
            out += " \(fmt(100 * hit.oursNanoseconds / perConnection, 2)) %. The spread between the slowest and fastest"
            out += " rounds of one configuration is far wider than that, so on this 2-core machine the connection"
            out += " ratios show noise more than the dispatcher.\n"
        }
        out += "\n## Control plane\n\n| operation | seconds | goal |\n|---|---:|---|\n"
        for row in results.controlPlane {
            let goal = row.goal.map { "\($0): \(row.met == true ? "yes" : "**no**")" } ?? ""
            out += "| \(row.name) | \(fmt(row.seconds, 4)) | \(goal) |\n"
        }
        return out
    }
}

func fmt(_ value: Double, _ decimals: Int = 0) -> String {
    String(format: "%.\(decimals)f", value)
}

extension Dispatcher {
    func bindingCount() -> Int { (try? bindings().count) ?? 0 }
}
