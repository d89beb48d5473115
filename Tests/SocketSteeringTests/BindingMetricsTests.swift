import BPF
import Foundation
import KernelTestSupport
import SKLookup
import Testing

@testable import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// Per-binding counters, on request: off by default (the program has no code for them), on
/// with `sksteer binding-metrics on`, counting real connections under the binding that won
/// them, keyed as the control plane computes it from the binding.
@Suite(needsRoot)
struct BindingMetricsTests {
    /// The counters of `binding` in the status, or nil when it has none.
    func counted(_ f: Fixture, _ binding: Binding) throws -> BindingMetricsStatus.Counter? {
        try f.dispatcher(readOnly: true).status(findOwners: false).bindingMetrics?.counters.first {
            $0.binding == binding
        }
    }

    /// The destination counters of a label (lookups, misses), summed over its families.
    func destinationCounts(_ f: Fixture, _ label: String, _ transport: Socket.Transport) throws -> (UInt64, UInt64) {
        let destinations = try f.dispatcher(readOnly: true).status(findOwners: false).destinations.filter {
            $0.destination.label == label && $0.destination.transport == transport
        }
        return (destinations.map(\.lookups).reduce(0, +), destinations.map(\.misses).reduce(0, +))
    }

    /// IPv4, IPv6, an IPv6 prefix that covers IPv4, a port range, all ports, UDP and a label
    /// without a socket: each binding's counts are those of the connections it won, the same
    /// as its destination's, and the exposition passes promtool.
    @Test func theyCountEachBindingsConnections() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 0, label: "web")
            try f.serve("any", .tcp, .any6, 0, label: "any", v6Only: false)
            try f.serve("dns", .udp, .loopback4, 0, label: "dns")
            let web = binding("web", "tcp", "127.0.0.0/24", "8080")
            let api = binding("api", "tcp", "127.0.0.0/8", "8000-8100")
            let any = binding("any", "tcp", "::/0", "*")
            let dns = binding("dns", "udp", "127.0.0.1", "53")
            try f.dispatcher().apply([web, api, any, dns])
            let plain = try f.dispatcher().dataPlaneAssembly().instructions.count

            // Off: no counters, no code for them.
            #expect(try f.land(.tcp, "127.0.0.1", 8080) == "web")
            #expect(try f.dispatcher(readOnly: true).status(findOwners: false).bindingMetrics == nil)
            #expect(
                !(try f.dispatcher(readOnly: true).status(findOwners: false).prometheusText(version: "t"))
                    .contains("sksteer_binding_"))

            try f.dispatcher().enableBindingMetrics()
            let counting = try f.dispatcher().dataPlaneAssembly().instructions.count
            #expect(counting > plain, "with counters \(counting) instructions, without \(plain)")
            let webBefore = try destinationCounts(f, "web", .tcp)
            for _ in 0..<3 { #expect(try f.land(.tcp, "127.0.0.7", 8080) == "web") }
            #expect(try f.land(.tcp, "127.0.0.5", 8050) == "refused")
            let mapped = try f.land(.tcp, "127.0.0.9", 9000)
            let why = try f.dispatcher().explain(.tcp, IPAddress("127.0.0.9")!, 9000)
            #expect(mapped == "any", "landed on \(mapped); \(why)")
            #expect(try f.land(.tcp, "::1", 9001) == "any")
            for _ in 0..<2 { #expect(try f.land(.udp, "127.0.0.1", 53) == "dns") }

            let webNow = try destinationCounts(f, "web", .tcp)
            let webCounted = try counted(f, web)
            #expect(webCounted?.lookups == webNow.0 - webBefore.0, "web: \(String(describing: webCounted))")
            #expect((webCounted?.lookups ?? 0) >= 3 && webCounted?.misses == 0)
            let apiCounted = try counted(f, api)
            #expect(apiCounted != nil && apiCounted?.lookups == apiCounted?.misses, "\(String(describing: apiCounted))")
            #expect(apiCounted.map { ($0.lookups, $0.misses) } ?? (0, 0) == (try destinationCounts(f, "api", .tcp)))
            // One binding, both families: IPv4 traffic through the mapped range, and IPv6.
            let anyCounted = try counted(f, any)
            #expect(anyCounted?.lookups == (try destinationCounts(f, "any", .tcp)).0 && (anyCounted?.lookups ?? 0) >= 2)
            #expect(try counted(f, dns).map { ($0.lookups, $0.misses) } ?? (0, 0) == (2, 0))

            let text = try f.dispatcher(readOnly: true).status(findOwners: false).prometheusText(version: "t")
            let webLine =
                "sksteer_binding_lookups_total{label=\"web\",protocol=\"tcp\",prefix=\"127.0.0.0/24\",ports=\"8080\"} \(webCounted?.lookups ?? 0)"
            #expect(text.contains(webLine + "\n"), "\(text)")
            #expect(
                text.contains(
                    "sksteer_binding_misses_total{label=\"api\",protocol=\"tcp\",prefix=\"127.0.0.0/8\",ports=\"8000-8100\"} "
                ))
            #expect(text.contains("sksteer_binding_counters_limit \(Layout.defaultBindingCounters)\n"))
            if let promtool = promtoolExecutable {
                let file = "/tmp/sksteer-bmetrics-\(getpid()).prom"
                try text.write(toFile: file, atomically: true, encoding: .utf8)
                defer { unlink(file) }
                let checked = try runProcess("/bin/sh", ["-c", "\"$0\" check metrics < \"$1\"", promtool, file])
                #expect(checked.status == 0 && checked.output.isEmpty, "promtool: \(checked.output)")
            }

            // Unbinding deletes the binding's counter; bound again, it starts at its first connection.
            try f.dispatcher().unbind(api)
            #expect(try counted(f, api) == nil)
            let keys = try f.dispatcher(readOnly: true).maps.bindingMetrics!.keys()
            #expect(keys.count == 4, "the overflow key and web, any, dns: \(keys.count) keys")
            try f.dispatcher().bind(api)
            #expect(try counted(f, api) == nil)
            #expect(try f.land(.tcp, "127.0.0.5", 8050) == "refused")
            #expect(try counted(f, api)?.misses ?? 0 >= 1)

            // Changing only the no-socket policy keeps the binding's counts.
            var passing = dns
            passing.noSocket = .pass
            let dnsCounts = try counted(f, dns)?.lookups
            try f.dispatcher().apply([web, api, any, passing])
            #expect(try counted(f, passing)?.lookups == dnsCounts)

            // Off again: the program without them, the map gone, traffic as before.
            try f.runSksteerChecked(["binding-metrics", "off"])
            #expect(try f.dispatcher().dataPlaneAssembly().instructions.count == plain)
            #expect(try f.dispatcher(readOnly: true).status(findOwners: false).bindingMetrics == nil)
            let directory = try f.dispatcher(readOnly: true).directory
            #expect(!FileManager.default.fileExists(atPath: "\(directory)/\(StateMaps.bindingMetricsName)"))
            #expect(try f.land(.tcp, "127.0.0.7", 8080) == "web")
        }
    }

    /// Differential, seeded: random bindings (IPv4 /0–/32, IPv6 /1–/128, IPv6 prefixes that
    /// cover IPv4, single ports, ranges, all ports, TCP and UDP), a test run of the counting
    /// program for an address and port inside each, and the counters the program made must
    /// be exactly those of the model's winners, under the key the control plane computes
    /// from the binding, with the model's count of wins.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func theProgramsKeysAreTheModelsWinners(_ seed: UInt64) throws {
        try exclusively {
            var random = SeededGenerator(seed: seed)
            var rules: [Binding.Rule: Binding] = [:]
            let labels = ["a", "b", "c", "d"]
            func ports() -> PortSet {
                switch random.next() % 3 {
                case 0: return .single(UInt16(1 + random.next() % 2000))
                case 1:
                    let lower = UInt16(1 + random.next() % 2000)
                    return PortSet(lower, lower + UInt16(random.next() % 50))!
                default: return .all
                }
            }
            func add(_ prefix: IPPrefix?, _ transport: Socket.Transport) {
                guard let prefix else { return }
                let binding = Binding(
                    label: labels[Int(random.next() % 4)], transport: transport, prefix: prefix, ports: ports())
                if (try? RuleSet.check(binding)) != nil { rules[binding.rule] = binding }
            }
            for _ in 0..<120 {
                let transport: Socket.Transport = random.next() % 2 == 0 ? .tcp : .udp
                if random.next() % 2 == 0 {
                    add(
                        IPPrefix(
                            IPAddress(ipv4: UInt32(truncatingIfNeeded: random.next())), length: Int(random.next() % 33)),
                        transport)
                } else {
                    let address = IPAddress(ipv6High: random.next(), low: random.next())
                    add(IPPrefix(address, length: Int(1 + random.next() % 128)), transport)
                }
            }
            // IPv6 prefixes that cover IPv4 (::ffff:0:0/96), and so win IPv4 traffic.
            for (text, transport) in [("::/64", Socket.Transport.tcp), ("::fffe:0:0/95", .udp), ("::/0", .tcp)] {
                add(IPPrefix(text), transport)
            }
            let bindings = Array(rules.values)
            let f = try Fixture()
            try f.dispatcher().apply(bindings)
            try f.dispatcher().enableBindingMetrics()
            let dispatcher = try f.dispatcher()
            let program = try dispatcher.measurementProgram()
            var expected: [[UInt8]: UInt64] = [:]
            var runs = 0
            for binding in bindings {
                // An address inside the prefix (random host bits), as IPv4 when it is mapped.
                let (maskHigh, maskLow) = FamilyPrefix.mask(binding.mappedLength)
                let mapped = binding.mappedAddress
                let high = mapped.high | (random.next() & ~maskHigh)
                let low = mapped.low | (random.next() & ~maskLow)
                var address = IPAddress(ipv6High: high, low: low)
                if let ipv4 = address.unmappedIPv4 { address = ipv4 }
                let port = UInt16(
                    clamping: Int(binding.ports.lower)
                        + Int(random.next() % UInt64(Int(binding.ports.upper) - Int(binding.ports.lower) + 1)))
                guard port != 0 else { continue }
                _ = try program.testRun(Connection(binding.transport, to: Endpoint(address, port)))
                runs += 1
                guard let winner = bindings.winner(for: binding.transport, address, port),
                    let id = try dispatcher.labelID(winner.label, create: false)
                else { continue }
                expected[Layout.BindingCounterKey.encode(winner, label: id), default: 0] += 1
            }
            var seen: [[UInt8]: UInt64] = [:]
            for (key, value) in try dispatcher.maps.bindingMetrics!.entries()
            where key != Layout.BindingCounterKey.overflowKey {
                seen[key] = Dispatcher.sums(value).0
            }
            #expect(runs > 100 && !expected.isEmpty, "seed \(seed): \(runs) runs")
            let differing = Set(seen.keys).union(expected.keys).filter { seen[$0] != expected[$0] }
            let first = differing.first.map { key in
                "\(Layout.BindingCounterKey.decode(key).map { "\($0)" } ?? "\(key)"): program \(seen[key] ?? 0),"
                    + " model \(expected[key] ?? 0)"
            }
            #expect(differing.isEmpty, "seed \(seed): \(differing.count) keys differ, e.g. \(first ?? "")")
            // (This dispatcher is open for writing: it holds the lock a read-only one would wait for.)
            let shown = try dispatcher.status(findOwners: false).bindingMetrics?.counters ?? []
            #expect(shown.count == expected.count && shown.allSatisfy { rules[$0.binding.rule] == $0.binding })
        }
    }

    /// Past the limit, connections are counted under the overflow counter; the limit is
    /// checked, and cannot change while the counters are on.
    @Test func theLimitHoldsAndTheRestOverflow() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("a", .udp, .loopback4, 0, label: "a")
            try f.serve("b", .udp, .loopback4, 0, label: "b")
            let a = binding("a", "udp", "127.0.0.1", "53")
            let b = binding("b", "udp", "127.0.0.2", "53")
            try f.dispatcher().apply([a, b])
            let zero = try f.runSksteer(["binding-metrics", "on", "--limit", "0"])
            #expect(zero.status == 1 && zero.errors.contains("1 to 1048576"), "\(zero)")
            try f.runSksteerChecked(["binding-metrics", "on", "--limit", "1"])
            let changed = try f.runSksteer(["binding-metrics", "on", "--limit", "2"])
            #expect(changed.status != 0 && changed.errors.contains("limit of 1"), "\(changed)")
            try f.runSksteerChecked(["binding-metrics", "on", "--limit", "1"])  // the same again: fine
            for _ in 0..<2 { #expect(try f.land(.udp, "127.0.0.1", 53) == "a") }
            for _ in 0..<3 { #expect(try f.land(.udp, "127.0.0.2", 53) == "b") }
            let status = try f.dispatcher(readOnly: true).status(findOwners: false).bindingMetrics
            #expect(status?.counters.map(\.binding) == [a])
            #expect(status?.counters.first?.lookups == 2)
            #expect(status?.overflowLookups == 3 && status?.limit == 1 && status?.counting == true)
            let text = try f.runSksteer(["status"])
            #expect(text.output.contains("Past the limit, not counted per binding: 3 lookups"), "\(text.output)")
        }
    }

    /// The README's walkthrough, run as written inside a throwaway namespace (`sksteer` is
    /// the built one, on this fixture's bpffs), after some traffic and with traffic between.
    @Test func theReadmeWalkthroughRuns() throws {
        try exclusively {
            guard let block = try readmeBlock("binding-metrics-walkthrough"), let executable = sksteerExecutable()
            else {
                Issue.record("the README has no binding-metrics walkthrough, or sksteer is not built")
                return
            }
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 0, label: "web")
            try f.bind("web", "tcp", "127.0.0.0/24", "80")
            let lines = block.split(separator: "\n").map(String.init)
            // Connections after the first line (on), so the status and the metrics have a binding to show.
            let script =
                "sksteer() { \"$SKSTEER\" \"$@\" --bpffs \"$BPFFS\"; }\n" + lines[0] + "\n"
                + "\"$CONNECT\" && \"$CONNECT\"\n" + lines.dropFirst().joined(separator: "\n") + "\n"
            let connect = "/tmp/sksteer-bmetrics-connect-\(getpid()).sh"
            try "#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/80\n".write(toFile: connect, atomically: true, encoding: .utf8)
            chmod(connect, 0o755)
            defer { unlink(connect) }
            let errors = Pipe()
            let (process, output) = try spawn(
                in: f.namespace, URL(fileURLWithPath: "/bin/sh"), ["-e", "-c", script], errors: errors,
                environment: ["SKSTEER": executable.path, "BPFFS": f.bpffs.path, "CONNECT": connect])
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "\(text)\(said)")
            #expect(text.contains("per-binding counters on (limit 10000)"), "\(text)")
            #expect(text.contains("Per-binding counters (limit 10000):"), "\(text)")
            #expect(
                text.contains(
                    "sksteer_binding_lookups_total{label=\"web\",protocol=\"tcp\",prefix=\"127.0.0.0/24\",ports=\"80\"} "
                ), "\(text)")
            #expect(text.contains("sksteer_binding_counters_limit 10000"), "\(text)")
            #expect(text.contains("per-binding counters off"), "\(text)")
            #expect(try f.dispatcher(readOnly: true).status(findOwners: false).bindingMetrics == nil)
        }
    }

    /// kill -9 at every `bpf()` call of an `unbind`, `apply` and `binding-metrics on|off`
    /// with counters on: afterwards (the next writable command repairs) the counters left in
    /// the map are exactly those of bindings in force (the overflow key aside), and the
    /// attached program counts exactly when the listing says it does.
    @Test(
        .enabled(if: straceExecutable != nil, "needs strace: apt-get install strace"),
        arguments: [
            ["unbind", "B", "tcp", "127.0.0.0/24", "*"], ["apply", "/tmp/sksteer-bmetrics-apply.txt"],
            ["binding-metrics", "off"], ["binding-metrics", "on", "--limit", "16"],
        ])
    func everyKillPointLeavesOnlyCountersOfBindingsInForce(_ arguments: [String]) throws {
        try exclusively {
            try "A tcp 127.0.0.1 80\n".write(
                toFile: "/tmp/sksteer-bmetrics-apply.txt", atomically: true, encoding: .utf8)
            defer { unlink("/tmp/sksteer-bmetrics-apply.txt") }
            let a = binding("A", "tcp", "127.0.0.1", "80")
            let b = binding("B", "tcp", "127.0.0.0/24", "*")
            let scenario = KillSweepTests.Scenario(
                name: arguments.joined(separator: " "), before: [a, b], after: nil, arguments: arguments)
            func fixture() throws -> Fixture {
                let f = try Fixture()
                for name in ["A", "B"] { try f.serve(name, .tcp, .loopback4, 0, label: name) }
                try f.dispatcher().apply([a, b])
                if arguments.prefix(2) != ["binding-metrics", "on"] {
                    try f.dispatcher().enableBindingMetrics(limit: 16)
                }
                #expect(try f.land(.tcp, "127.0.0.1", 80) == "A")
                #expect(try f.land(.tcp, "127.0.0.2", 80) == "B")
                return f
            }
            let calls = try KillSweepTests.calls(fixture(), arguments)
            #expect(calls > 0, "\(scenario): \(calls) bpf() calls")
            var landed = 0
            for k in 1...calls {
                let f = try fixture()
                if try KillSweepTests.run(f, arguments, fault: scenario, at: k) { landed += 1 }
                // The next writable command repairs what the kill left.
                _ = try f.dispatcher()
                let status = try f.dispatcher(readOnly: true).status(findOwners: false)
                let inForce = Set(status.bindings)
                if let perBinding = status.bindingMetrics {
                    let keys = try f.dispatcher(readOnly: true).maps.bindingMetrics!.keys()
                    let shown = perBinding.counters.map(\.binding)
                    #expect(Set(shown).isSubset(of: inForce), "\(scenario) K=\(k): \(shown) of \(inForce)")
                    #expect(keys.count == shown.count + 1, "\(scenario) K=\(k): \(keys.count) keys, \(shown)")
                    // Traffic to a binding in force is counted when the status says so.
                    let before = try counted(f, a)?.lookups ?? 0
                    #expect(try f.land(.tcp, "127.0.0.1", 80) == "A")
                    let after = try counted(f, a)?.lookups ?? 0
                    #expect((after > before) == perBinding.counting, "\(scenario) K=\(k): \(before) -> \(after)")
                }
                // Off in the listing: the attached program has no counter map.
                if status.bindingMetrics == nil {
                    let directory = try f.dispatcher(readOnly: true).directory
                    let used = try Program.openPinned(at: "\(directory)/program").info().mapIDs
                    let names = try used.map { try Map.open(id: $0).info().name }
                    #expect(
                        !names.contains { $0.hasPrefix("sksteer_bmetr") },
                        "\(scenario) K=\(k): the program counts: \(names)")
                }
                // Run again: it succeeds, and the counters are on or off as it says.
                try f.runSksteerChecked(arguments)
                let on = try f.dispatcher(readOnly: true).status(findOwners: false).bindingMetrics
                #expect((on?.counting ?? false) == (arguments != ["binding-metrics", "off"]), "\(scenario) K=\(k)")
                #expect(try f.runSksteer(["unload"]).status == 0)
            }
            #expect(landed == calls, "\(scenario): the kill landed at \(landed) of \(calls) points")
        }
    }
}

extension Fixture {
    /// Runs sksteer in the fixture and expects it to succeed.
    func runSksteerChecked(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try runSksteer(arguments)
        #expect(
            result.status == 0, "sksteer \(arguments.joined(separator: " ")): \(result.errors)",
            sourceLocation: sourceLocation)
    }
}
