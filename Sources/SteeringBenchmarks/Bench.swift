import BPF
import Foundation
import Logging
import SKLookup
import SocketSteering

/// `sksteer bench`: sksteer's dispatcher against Cloudflare tubular's real data plane, with the
/// same bindings and sockets on both sides, in throwaway namespaces.
public enum Bench {
    /// What to measure and how hard; the defaults are the full run.
    public struct Options: Sendable {
        /// Bindings of the random workload.
        public var randomCount = 1_000_000
        /// Test-run repeat count of a hot measurement.
        public var repeatCount: UInt32 = 200_000
        /// Rounds of a hot measurement (the median is reported).
        public var rounds = 5
        /// Different connections per lookup kind (cold test runs, and the real traffic's targets).
        public var contexts = 2_000
        /// Connections or datagrams per lookup kind and program in one round of real traffic.
        public var trafficPerKind = 2_000
        /// Rounds of real traffic (the programs alternate each round).
        public var trafficRounds = 3
        /// Send real traffic (needs `ip` and `nsenter`).
        public var traffic = true
        /// Time the control plane.
        public var controlPlane = true
        /// tubular's reference directory: `inet-kern.c`, `include/` and `prefixes.json`.
        public var reference: URL
        /// Where sksteer's dispatchers log (their phase timings at debug level); nowhere by default.
        public var logger: Logger = .disabled
        /// The default (full) options.
        public init(reference: URL) { self.reference = reference }

        /// Small sizes: proves the command works; the numbers mean little.
        public static func smoke(reference: URL) -> Options {
            var options = Options(reference: reference)
            options.randomCount = 1_000
            options.repeatCount = 10_000
            options.rounds = 2
            options.contexts = 100
            options.trafficPerKind = 100
            options.trafficRounds = 1
            return options
        }

        var summary: [String: String] {
            [
                "random bindings": "\(randomCount)", "repeat": "\(repeatCount)", "rounds": "\(rounds)",
                "contexts per kind": "\(contexts)", "traffic per kind and round": "\(trafficPerKind)",
                "traffic rounds": "\(trafficRounds)", "traffic": "\(traffic)", "control plane": "\(controlPlane)",
                "reference": reference.path,
            ]
        }
    }

    /// One workload: its bindings and sockets.
    public struct WorkloadRow: Codable, Sendable {
        /// The workload's name, e.g. `tubular-hosts`.
        public var name: String
        /// What its bindings are.
        public var summary: String
        /// Bindings given to each dispatcher.
        public var bindings: Int
        /// Labels the bindings are spread over.
        public var labels: Int
        /// Sockets registered (one per label, family and protocol used).
        public var sockets: Int
    }

    /// One data-plane cell: a workload, a kind of lookup and hot or cold.
    public struct DataPlaneRow: Codable, Sendable {
        /// The workload's name.
        public var workload: String
        /// What the lookups hit: `host`, `prefix`, `all-ports`, `ipv6` or `miss`.
        public var kind: String
        /// `hot` (one context, repeated) or `cold` (different contexts, repeat 1 each).
        public var mode: String
        /// Test runs behind the numbers: rounds × repeat (hot) or contexts (cold).
        public var runs: Int
        /// sksteer's ns per lookup: the median of rounds (hot) or of contexts (cold).
        public var sksteerNanoseconds: Double
        /// tubular's ns per lookup, measured the same way.
        public var tubularNanoseconds: Double
        /// The 90th percentile over contexts (cold only).
        public var sksteerP90: Double?
        /// tubular's 90th percentile over contexts (cold only).
        public var tubularP90: Double?
        /// sksteer ÷ tubular.
        public var ratio: Double
        /// Contexts where either program picked another socket than the precedence rules say.
        public var disagreements: Int
    }

    /// A connection both programs (or the rules) answered differently.
    public struct Disagreement: Codable, Sendable {
        /// The workload's name.
        public var workload: String
        /// The kind of lookup.
        public var kind: String
        /// The connection, e.g. `tcp 10.1.2.3:443`.
        public var connection: String
        /// The label the precedence rules pick, or `none`.
        public var expected: String
        /// What sksteer's program selected (a label, `none`, or an unknown cookie).
        public var sksteer: String
        /// What tubular's program selected.
        public var tubular: String
    }

    /// Real traffic through the attached program, from the kernel's BPF statistics.
    public struct TrafficRow: Codable, Sendable {
        /// The workload's name.
        public var workload: String
        /// The kind of lookup the traffic's destinations are.
        public var kind: String
        /// `tcp connections` or `udp datagrams`.
        public var traffic: String
        /// Destinations sent to, per program.
        public var sent: Int
        /// Program runs counted for sksteer (`run_cnt` delta).
        public var sksteerRuns: UInt64
        /// sksteer's `run_time_ns / run_cnt` over its rounds.
        public var sksteerNanoseconds: Double
        /// Program runs counted for tubular.
        public var tubularRuns: UInt64
        /// tubular's `run_time_ns / run_cnt`.
        public var tubularNanoseconds: Double
        /// sksteer ÷ tubular.
        public var ratio: Double
    }

    /// One control-plane operation, sksteer against tubular's way of doing it.
    public struct ControlRow: Codable, Sendable {
        /// The workload's name.
        public var workload: String
        /// What was timed.
        public var operation: String
        /// Bindings present before the operation.
        public var present: Int
        /// sksteer's wall-clock seconds.
        public var sksteerSeconds: Double
        /// What tubular does for it, as timed here.
        public var tubularMethod: String
        /// tubular's seconds.
        public var tubularSeconds: Double
        /// sksteer ÷ tubular.
        public var ratio: Double
    }

    /// Everything one run measured, as written to JSON and rendered by ``markdown(_:command:)``.
    public struct Results: Codable, Sendable {
        /// The machine: kernel, cores, cpu, memory, clang version and date.
        public var machine: [String: String]
        /// The options the run used, as text.
        public var options: [String: String]
        /// The workloads.
        public var workloads: [WorkloadRow]
        /// Test-run cells.
        public var dataPlane: [DataPlaneRow]
        /// The first disagreements seen (at most 50).
        public var disagreements: [Disagreement]
        /// Real-traffic cells.
        public var traffic: [TrafficRow]
        /// Programs attached to a namespace while traffic was measured (the most seen at once).
        public var mostAttachedAtOnce: Int
        /// Control-plane timings.
        public var controlPlane: [ControlRow]
        /// Instructions after verification, by program.
        public var instructions: [String: Int]
        /// Whatever could not be measured, and why.
        public var problems: [String]
        /// The cost of per-binding counters, on request (`sksteer binding-metrics on`).
        public var bindingCounters: [CounterCostRow] = []
        /// Kernel memory of each dispatcher's maps.
        public var memory: [MemoryRow] = []
    }

    /// The kernel memory both dispatchers' maps are charged for with one workload loaded
    /// (``Map/chargedMemory()``: the kernel's own account since Linux 6.4).
    public struct MemoryRow: Codable, Sendable {
        /// The workload's name.
        public var workload: String
        /// Bindings loaded.
        public var bindings: Int
        /// sksteer's maps: both rule-set copies, sockets, counters, labels, listing.
        public var sksteerBytes: Int
        /// tubular's four maps.
        public var tubularBytes: Int
        /// sksteer ÷ tubular.
        public var ratio: Double
    }

    /// One lookup kind measured three ways side by side: sksteer without per-binding
    /// counters, with them, and tubular.
    public struct CounterCostRow: Codable, Sendable {
        /// The workload's name.
        public var workload: String
        /// The lookup kind.
        public var kind: String
        /// `hot` (one connection repeated) or `cold` (each context once; medians).
        public var mode: String
        /// Runs per program.
        public var runs: Int
        /// sksteer without per-binding counters, ns per run.
        public var plainNanoseconds: Double
        /// sksteer with them, ns per run (cold: the first connection of a binding adds its counter).
        public var countingNanoseconds: Double
        /// tubular, ns per run.
        public var tubularNanoseconds: Double
        /// counting ÷ plain.
        public var costRatio: Double
        /// counting ÷ tubular.
        public var tubularRatio: Double
    }

    /// A destination: one label's socket of one family and protocol.
    struct Destination: Hashable {
        var label: Int
        var transport: Socket.Transport
        var ipv6: Bool
    }

    /// One workload loaded into both dispatchers, in a namespace of its own.
    final class Setup {
        let workload: Workload
        let namespace: NetworkNamespace
        let bpffs: BPFFileSystem.TemporaryMount
        let dispatcher: Dispatcher
        let ours: Program
        let tubular: TubularDispatcher
        let destinations: [Destination]
        let sockets: [Destination: Socket]
        let labelsByCookie: [UInt64: String]
        let cookies: [Destination: UInt64]
        let bindings: [Binding]
        var applySeconds = 0.0
        var insertSeconds = 0.0

        init(_ workload: Workload, object: URL, logger: Logger, say: (String) -> Void) throws {
            self.workload = workload
            namespace = try NetworkNamespace.makeThrowaway()
            bpffs = try BPFFileSystem.TemporaryMount()
            dispatcher = try Dispatcher.load(
                namespace: namespace, bpffs: bpffs.path, maxBindings: Bench.capacity(for: workload.ruleCount),
                logger: logger)
            tubular = try TubularDispatcher(object: object)
            var used = Set<Destination>()
            for (rule, label) in workload.rules {
                used.insert(Destination(label: label, transport: rule.transport, ipv6: rule.isIPv6))
            }
            destinations = used.sorted {
                ($0.label, $0.transport.rawValue, $0.ipv6 ? 1 : 0) < ($1.label, $1.transport.rawValue, $1.ipv6 ? 1 : 0)
            }
            guard destinations.count <= TubularDispatcher.maxSockets else {
                throw ToolFailure(description: "\(workload.name): more destinations than tubular's 1024")
            }
            var sockets: [Destination: Socket] = [:]
            var cookies: [Destination: UInt64] = [:]
            var labelsByCookie: [UInt64: String] = [:]
            for (index, destination) in destinations.enumerated() {
                let socket = try namespace.run {
                    try Socket.bound(
                        destination.transport, destination.ipv6 ? .loopback6 : .loopback4, port: 0, v6Only: true,
                        backlog: 4096)
                }
                try dispatcher.register(socket, label: workload.labels[destination.label])
                try tubular.sockets.set(UInt32(index), socket)
                sockets[destination] = socket
                cookies[destination] = try socket.cookie()
                labelsByCookie[try socket.cookie()] = workload.labels[destination.label]
            }
            self.sockets = sockets
            self.cookies = cookies
            self.labelsByCookie = labelsByCookie
            let bindings = workload.rules.map { $0.rule.binding(label: workload.labels[$0.label]) }
            self.bindings = bindings
            say("    sksteer: apply \(bindings.count) bindings")
            let dispatcher = self.dispatcher
            applySeconds = try seconds { try dispatcher.apply(bindings) }
            say("    tubular: \(workload.ruleCount) map updates")
            var ids: [Destination: UInt32] = [:]
            for (index, destination) in destinations.enumerated() { ids[destination] = UInt32(index) }
            let rules = workload.rules
            let tubular = self.tubular
            insertSeconds = try seconds {
                for (rule, label) in rules {
                    let id = ids[Destination(label: label, transport: rule.transport, ipv6: rule.isIPv6)]!
                    try tubular.bindings.update(
                        TubularDispatcher.key(rule), TubularDispatcher.value(rule, destination: id))
                }
            }
            ours = try dispatcher.measurementProgram()
        }

        /// The cookie the precedence rules pick for a probe, or nil (no binding).
        func expectedCookie(_ probe: Probe) -> UInt64? {
            guard let label = workload.model.winner(probe.transport, probe.address, probe.port) else { return nil }
            return cookies[Destination(label: label, transport: probe.transport, ipv6: !probe.address.isIPv4)]
        }

        func name(_ cookie: UInt64?) -> String {
            guard let cookie else { return "none" }
            return labelsByCookie[cookie] ?? hexCookie(cookie)
        }

        /// Detaches sksteer; its pins, tubular's and both mounts go when this value does. (Not
        /// `Dispatcher.unload`: it would wait for the lock this setup's dispatcher holds.)
        func tearDown() {
            try? Link.openPinned(at: dispatcher.directory + "/link").detach()
        }
    }

    /// The binding limit sksteer is loaded with: room beyond the count, as its rule tables
    /// may hold more entries than there are bindings (nested prefixes).
    static func capacity(for count: Int) -> Int { min(1 << 24, max(1 << 20, count * 2)) }

    static func median(_ values: [Double]) -> Double { percentile(values, 0.5) }

    static func percentile(_ values: [Double], _ fraction: Double) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        if fraction == 0.5 && sorted.count % 2 == 0 {
            return (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded()))]
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    static func ratio(_ a: Double, _ b: Double) -> Double { b > 0 ? a / b : .infinity }

    /// Runs everything; `say` gets progress lines.
    public static func run(_ options: Options, say: (String) -> Void) throws -> Results {
        let work = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("sksteer-bench-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        say("compiling tubular's inet-kern.c with \(Tools.clang)")
        let object = try TubularDispatcher.compile(reference: options.reference, into: work)
        let prefixes = try Workloads.tubularPrefixes(reference: options.reference)

        let makers: [() -> Workload] = [
            { Workloads.oneBinding(allPorts: false, probes: options.contexts) },
            { Workloads.oneBinding(allPorts: true, probes: options.contexts) },
            { Workloads.prefixes(prefixes, probes: options.contexts) },
            { Workloads.hosts(prefixes, probes: options.contexts) },
            { Workloads.random(count: options.randomCount, probes: options.contexts) },
        ]
        var results = Results(
            machine: machine(), options: options.summary, workloads: [], dataPlane: [], disagreements: [],
            traffic: [], mostAttachedAtOnce: 0, controlPlane: [], instructions: [:], problems: [])
        for (index, make) in makers.enumerated() {
            let workload = make()
            say("[\(workload.name)] \(workload.ruleCount) bindings: \(workload.summary)")
            let setup: Setup
            do {
                setup = try Setup(workload, object: object, logger: options.logger, say: say)
            } catch {
                results.problems.append("\(workload.name): setting up failed, nothing measured: \(error)")
                say("    setting up failed: \(error)")
                continue
            }
            defer { setup.tearDown() }
            results.workloads.append(
                WorkloadRow(
                    name: workload.name, summary: workload.summary, bindings: workload.ruleCount,
                    labels: Set(workload.rules.map(\.label)).count, sockets: setup.destinations.count))
            results.controlPlane.append(
                ControlRow(
                    workload: workload.name,
                    operation: "apply \(workload.ruleCount) binding\(workload.ruleCount == 1 ? "" : "s")", present: 0,
                    sksteerSeconds: setup.applySeconds,
                    tubularMethod: "\(workload.ruleCount) × BPF_MAP_UPDATE_ELEM",
                    tubularSeconds: setup.insertSeconds, ratio: ratio(setup.applySeconds, setup.insertSeconds)))
            say("    apply: sksteer \(fmt(setup.applySeconds, 3)) s, tubular \(fmt(setup.insertSeconds, 3)) s")
            do {
                let ours = try setup.dispatcher.chargedMemory()
                let theirs = try setup.tubular.chargedMemory()
                results.memory.append(
                    MemoryRow(
                        workload: workload.name, bindings: workload.ruleCount, sksteerBytes: ours,
                        tubularBytes: theirs, ratio: ratio(Double(ours), Double(theirs))))
                say(
                    "    kernel memory: sksteer \(fmt(Double(ours) / 1_048_576, 1)) MiB, tubular \(fmt(Double(theirs) / 1_048_576, 1)) MiB"
                )
            } catch {
                results.problems.append("\(workload.name): kernel memory not read: \(error)")
            }
            if results.instructions.isEmpty {
                results.instructions["sksteer measurement copy"] = try setup.ours.info().instructionCount
                results.instructions["sksteer attached"] =
                    try Program.openPinned(at: setup.dispatcher.directory + "/program").info().instructionCount
                results.instructions["tubular"] = try setup.tubular.program.info().instructionCount
            }
            try measureDataPlane(setup, options, into: &results, say: say)
            do {
                try measureBindingCounters(setup, options, into: &results, say: say)
            } catch {
                results.problems.append("\(workload.name): per-binding counters failed: \(error)")
                say("    per-binding counters failed: \(error)")
            }
            if options.traffic {
                do {
                    try measureTraffic(setup, options, into: &results, say: say)
                } catch {
                    results.problems.append("\(workload.name): real traffic failed: \(error)")
                    say("    real traffic failed: \(error)")
                }
            }
            if options.controlPlane && index == makers.count - 1 {
                do {
                    try measureChanges(setup, into: &results, say: say)
                } catch {
                    results.problems.append("\(workload.name): control-plane changes failed: \(error)")
                    say("    control-plane changes failed: \(error)")
                }
            }
        }
        return results
    }

    // MARK: Data plane

    static func measureDataPlane(_ setup: Setup, _ options: Options, into results: inout Results, say: (String) -> Void)
        throws
    {
        let name = setup.workload.name
        for (kind, probes) in setup.workload.probes {
            var disagreements = 0
            func check(_ probe: Probe, _ ours: UInt64?, _ theirs: UInt64?) {
                let expected = setup.expectedCookie(probe)
                guard ours != expected || theirs != expected else { return }
                disagreements += 1
                if results.disagreements.count < 50 {
                    results.disagreements.append(
                        Disagreement(
                            workload: name, kind: kind, connection: probe.description, expected: setup.name(expected),
                            sksteer: setup.name(ours), tubular: setup.name(theirs)))
                }
            }
            // Hot: one connection, repeated.
            let hot = Connection(probes[0].transport, to: probes[0].endpoint)
            var ourTimes: [Double] = []
            var theirTimes: [Double] = []
            for round in 0..<options.rounds {
                let pair: [Program] =
                    round % 2 == 0 ? [setup.ours, setup.tubular.program] : [setup.tubular.program, setup.ours]
                var selected: [ObjectIdentifier: UInt64?] = [:]
                for program in pair {
                    let result = try program.testRun(hot, repeat: options.repeatCount)
                    selected[ObjectIdentifier(program)] = .some(result.selectedCookie)
                    if program === setup.ours {
                        ourTimes.append(Double(result.nanosecondsPerRun))
                    } else {
                        theirTimes.append(Double(result.nanosecondsPerRun))
                    }
                }
                if round == 0 {
                    check(
                        probes[0], selected[ObjectIdentifier(setup.ours)]!,
                        selected[ObjectIdentifier(setup.tubular.program)]!)
                }
            }
            let hotRow = DataPlaneRow(
                workload: name, kind: kind, mode: "hot", runs: options.rounds * Int(options.repeatCount),
                sksteerNanoseconds: median(ourTimes), tubularNanoseconds: median(theirTimes), sksteerP90: nil,
                tubularP90: nil, ratio: ratio(median(ourTimes), median(theirTimes)), disagreements: disagreements)
            // Cold: every connection once.
            disagreements = 0
            ourTimes = []
            theirTimes = []
            for (index, probe) in probes.enumerated() {
                let connection = Connection(probe.transport, to: probe.endpoint)
                let first = index % 2 == 0
                let a = try (first ? setup.ours : setup.tubular.program).testRun(connection, repeat: 1)
                let b = try (first ? setup.tubular.program : setup.ours).testRun(connection, repeat: 1)
                let (ours, theirs) = first ? (a, b) : (b, a)
                ourTimes.append(Double(ours.nanosecondsPerRun))
                theirTimes.append(Double(theirs.nanosecondsPerRun))
                check(probe, ours.selectedCookie, theirs.selectedCookie)
            }
            let coldRow = DataPlaneRow(
                workload: name, kind: kind, mode: "cold", runs: probes.count, sksteerNanoseconds: median(ourTimes),
                tubularNanoseconds: median(theirTimes), sksteerP90: percentile(ourTimes, 0.9),
                tubularP90: percentile(theirTimes, 0.9), ratio: ratio(median(ourTimes), median(theirTimes)),
                disagreements: disagreements)
            results.dataPlane += [hotRow, coldRow]
            for row in [hotRow, coldRow] {
                say(
                    "    \(kind) \(row.mode): sksteer \(fmt(row.sksteerNanoseconds)) ns, tubular \(fmt(row.tubularNanoseconds)) ns,"
                        + " ratio \(fmt(row.ratio, 2))"
                        + (row.disagreements > 0 ? " — \(row.disagreements) DISAGREEMENTS" : ""))
            }
        }
    }

    /// The same lookups through sksteer without and with per-binding counters, and tubular,
    /// in rotating order. The counters are turned on for this and off again after it.
    static func measureBindingCounters(
        _ setup: Setup, _ options: Options, into results: inout Results, say: (String) -> Void
    ) throws {
        try setup.dispatcher.enableBindingMetrics()
        defer { try? setup.dispatcher.disableBindingMetrics() }
        let counting = try setup.dispatcher.measurementProgram()
        if results.instructions["sksteer measurement copy with per-binding counters"] == nil {
            results.instructions["sksteer measurement copy with per-binding counters"] =
                try counting.info().instructionCount
        }
        let programs = [setup.ours, counting, setup.tubular.program]
        for (kind, probes) in setup.workload.probes {
            func measure(_ connections: [Connection], repeat count: UInt32, rounds: Int) throws -> [[Double]] {
                var times: [[Double]] = [[], [], []]
                for round in 0..<rounds {
                    for (index, connection) in connections.enumerated() {
                        for step in 0..<3 {
                            let which = (round + index + step) % 3
                            let result = try programs[which].testRun(connection, repeat: count)
                            times[which].append(Double(result.nanosecondsPerRun))
                        }
                    }
                }
                return times
            }
            let connections = probes.map { Connection($0.transport, to: $0.endpoint) }
            let hot = try measure([connections[0]], repeat: options.repeatCount, rounds: options.rounds)
            let cold = try measure(connections, repeat: 1, rounds: 1)
            for (mode, times, runs) in [
                ("hot", hot, options.rounds * Int(options.repeatCount)), ("cold", cold, connections.count),
            ] {
                let (plain, with, theirs) = (median(times[0]), median(times[1]), median(times[2]))
                let row = CounterCostRow(
                    workload: setup.workload.name, kind: kind, mode: mode, runs: runs, plainNanoseconds: plain,
                    countingNanoseconds: with, tubularNanoseconds: theirs, costRatio: ratio(with, plain),
                    tubularRatio: ratio(with, theirs))
                results.bindingCounters.append(row)
                say(
                    "    \(kind) \(mode) with per-binding counters: \(fmt(with)) ns (without \(fmt(plain)),"
                        + " tubular \(fmt(theirs)))")
            }
        }
    }

    // MARK: Control plane

    /// Rounds of `bind one` and of the 10-binding change; the report gives their medians.
    static let bindRounds = 5
    static let changeRounds = 3

    static func measureChanges(_ setup: Setup, into results: inout Results, say: (String) -> Void) throws {
        let name = setup.workload.name
        let present = setup.workload.ruleCount
        let dispatcher = setup.dispatcher
        let label = setup.workload.labels[0]
        let destination = UInt32(setup.destinations.firstIndex { $0.label == 0 } ?? 0)
        // Port 8080 is used by no workload, so these are new bindings.
        let one = Rule(.tcp, .v4(192, 0, 2, 0), length: 24, port: 8080)
        // Single changes are medians of several rounds (each undone, untimed, but the last).
        let bind = try median(
            (0..<bindRounds).map { round in
                let took = try seconds { _ = try dispatcher.bind(one.binding(label: label)) }
                if round < bindRounds - 1 { _ = try dispatcher.unbind(one.binding(label: label)) }
                return took
            })
        let tubular = setup.tubular
        // tubular's trie holds at most MAX_BINDINGS: make room for the 11 new ones (untimed).
        let removed = max(0, present + 11 - TubularDispatcher.maxBindings)
        for (rule, _) in setup.workload.rules.suffix(removed) {
            _ = try tubular.bindings.delete(TubularDispatcher.key(rule))
        }
        let note =
            removed > 0 ? " (\(removed) removed first: its trie holds at most \(TubularDispatcher.maxBindings))" : ""
        let bindTubular = try median(
            (0..<bindRounds).map { round in
                let took = try seconds {
                    try tubular.bindings.update(
                        TubularDispatcher.key(one), TubularDispatcher.value(one, destination: destination))
                }
                if round < bindRounds - 1 { _ = try tubular.bindings.delete(TubularDispatcher.key(one)) }
                return took
            })
        results.controlPlane.append(
            ControlRow(
                workload: name, operation: "bind one", present: present, sksteerSeconds: bind,
                tubularMethod: "1 × BPF_MAP_UPDATE_ELEM" + note, tubularSeconds: bindTubular,
                ratio: ratio(bind, bindTubular)))
        let ten = (0..<10).map { Rule(.tcp, .v4(198, 51, 100, UInt8($0)), length: 32, port: 8080) }
        let tenBindings = ten.map { $0.binding(label: label) }
        let change = try median(
            (0..<changeRounds).map { round in
                let took = try seconds { _ = try dispatcher.apply(adding: tenBindings, removing: []) }
                if round < changeRounds - 1 { _ = try dispatcher.apply(adding: [], removing: tenBindings) }
                return took
            })
        let changeTubular = try median(
            (0..<changeRounds).map { round in
                let took = try seconds {
                    for rule in ten {
                        try tubular.bindings.update(
                            TubularDispatcher.key(rule), TubularDispatcher.value(rule, destination: destination))
                    }
                }
                if round < changeRounds - 1 {
                    for rule in ten { _ = try tubular.bindings.delete(TubularDispatcher.key(rule)) }
                }
                return took
            })
        results.controlPlane.append(
            ControlRow(
                workload: name, operation: "apply a 10-binding change", present: present + 1, sksteerSeconds: change,
                tubularMethod: "10 × BPF_MAP_UPDATE_ELEM" + note, tubularSeconds: changeTubular,
                ratio: ratio(change, changeTubular)))
        // The same change as a whole desired set (what `sksteer apply FILE` does): it reads
        // every binding present to compute the diff, then writes only the diff.
        let moved = ten.map { $0.binding(label: setup.workload.labels[1 % setup.workload.labels.count]) }
        let desired = setup.bindings + [one.binding(label: label)] + moved
        let wholeSet = try seconds { _ = try dispatcher.apply(desired) }
        results.controlPlane.append(
            ControlRow(
                workload: name, operation: "apply the whole set with 10 bindings changed", present: present + 11,
                sksteerSeconds: wholeSet, tubularMethod: "10 × BPF_MAP_UPDATE_ELEM" + note,
                tubularSeconds: changeTubular, ratio: ratio(wholeSet, changeTubular)))
        // The dispatcher held here has the exclusive lock; a second, read-only open would wait for it.
        let status = try seconds { _ = try dispatcher.status(findOwners: false) }
        var read = 0
        let statusTubular = try seconds { read = try tubular.readBindings() }
        results.controlPlane.append(
            ControlRow(
                workload: name, operation: "status", present: present + 11, sksteerSeconds: status,
                tubularMethod: "walk its trie: \(read) keys, each looked up", tubularSeconds: statusTubular,
                ratio: ratio(status, statusTubular)))
        say(
            "    bind one: \(fmt(bind * 1000, 2)) ms vs \(fmt(bindTubular * 1000, 3)) ms; 10-binding change:"
                + " \(fmt(change, 3)) s vs \(fmt(changeTubular * 1000, 3)) ms; status: \(fmt(status, 3)) s vs \(fmt(statusTubular, 3)) s"
        )
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
        info["bpftool"] =
            (try? runTool(Tools.bpftool, ["version"]))?.split(separator: "\n").first.map(String.init) ?? "?"
        info["date"] = ISO8601DateFormatter().string(from: Date())
        return info
    }
}

func fmt(_ value: Double, _ decimals: Int = 0) -> String {
    value.isFinite ? String(format: "%.\(decimals)f", value) : "∞"
}
