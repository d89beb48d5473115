import BPF
import KernelTestSupport
import SKLookup
import Testing

@testable import SocketSteering

/// The kernel against the model: seeded random rule sets applied to a dispatcher in a
/// throwaway namespace, changed by `apply`, `bind` and `unbind`; every sampled lookup is
/// asked of the attached program by `BPF_PROG_TEST_RUN` (verdict and selected socket) and
/// must be what the model says; a sample is checked with real connections.
@Suite(needsRoot)
struct KernelDifferentialTests {
    @Test(arguments: [11, 12, 13] as [UInt64])
    func kernelAgreesWithTheModel(seed: UInt64) throws {
        try exclusively {
            let f = try Fixture()
            var cookies: [String: UInt64] = [:]
            for index in 0..<5 {
                let label = "l\(index)"
                for lane in Lane.allCases {
                    let address: IPAddress = lane.ipv6 ? .loopback6 : .loopback4
                    let server = try f.serve("\(label)-\(lane)", lane.transport, address, 0, label: label)
                    cookies["\(label)-\(lane)"] = try server.socket.cookie()
                }
            }
            var rng = SeededGenerator(seed: seed)
            var current: [Binding] = []
            var real = 0
            let directory = try f.dispatcher(readOnly: true).directory
            for round in 0..<12 {
                // A new writable open per change, as the CLI does (it holds the exclusive lock).
                let dispatcher = try f.dispatcher()
                switch round % 3 {
                case 0:
                    current = RandomRules.bindings(80, using: &rng)
                    // Every other apply compiles the whole set; the others write binding by binding.
                    try dispatcher.apply(current, incrementalUpTo: round % 2 == 0 ? 0 : 1_000)
                case 1:
                    let extra = RandomRules.binding(using: &rng)
                    if (try? RuleSet(current + [extra])) != nil {
                        try dispatcher.bind(extra)
                        current.append(extra)
                    }
                default:
                    if let gone = current.randomElement(using: &rng) {
                        try dispatcher.unbind(gone)
                        current.removeAll { $0 == gone }
                    }
                }
                _ = consume dispatcher
                let listed = Set(try f.dispatcher(readOnly: true).bindings())
                #expect(
                    listed == Set(current),
                    "seed \(seed) round \(round): listed, not set: \(listed.subtracting(current)); set, not listed: \(Set(current).subtracting(listed))"
                )
                let tables = try RuleSet(current).tables()
                let program = try Program.openPinned(at: "\(directory)/program")
                for _ in 0..<150 {
                    let (transport, address, port) = RandomRules.probe(current, using: &rng)
                    let lane = Lane(transport: transport, ipv6: !address.isIPv4)
                    let expected = tables.lookup(transport, address, port)
                    #expect(expected?.label == current.winner(for: transport, address, port)?.label)
                    let result = try program.testRun(Connection(transport, to: Endpoint(address, port)))
                    let want = expected.map { cookies["\($0.label)-\(lane)"]! }
                    #expect(
                        result.verdict == .pass && result.selectedCookie == want,
                        "seed \(seed) round \(round): \(transport) \(address):\(port) → \(result.verdict?.description ?? "?") \(result.selectedCookie.map(hexCookie) ?? "none"), model \(expected?.label ?? "none")"
                    )
                    // Real connections where the address is local (127/8).
                    if transport == .tcp, address.isIPv4, address.bytes[0] == 127, port != 0, real < 40 * (round + 1) {
                        real += 1
                        let landed = try f.land(.tcp, "\(address)", port)
                        #expect(landed == (expected.map { "\($0.label)-\(lane)" } ?? "refused"), "\(address):\(port)")
                    }
                }
            }
            #expect(real > 20, "real connections made: \(real)")
        }
    }

    /// A binding with `noSocket: .pass` lets the normal lookup take its traffic while its label
    /// has no socket; changing the policy by `apply` takes effect, and misses are counted.
    @Test func passPolicyLetsTheNormalLookupTakeOver() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("plain", .tcp, .loopback4, 8080)
            let pass = Binding(
                label: "gone", transport: .tcp, prefix: IPPrefix("127.0.0.0/24")!, ports: .single(8080),
                noSocket: .pass)
            try f.dispatcher().bind(pass)
            #expect(try f.land(.tcp, "127.0.0.1", 8080) == "plain")
            var drop = pass
            drop.noSocket = .drop
            let plan = try f.dispatcher().apply([drop])
            #expect(plan.added == [drop] && plan.removed == [pass])
            #expect(try f.land(.tcp, "127.0.0.1", 8080) == "refused")
            #expect(try f.dispatcher(readOnly: true).bindings() == [drop])
            try f.dispatcher().apply(adding: [pass], removing: [drop])
            #expect(try f.land(.tcp, "127.0.0.1", 8080) == "plain")
            let status = try f.dispatcher(readOnly: true).status()
            #expect(status.destinations.first { $0.destination.label == "gone" }?.misses == 3)
            #expect(try BindingFile.parse("gone tcp 127.0.0.0/24 8080 pass\n") == [pass])
            #expect(
                try BindingFile.parse(
                    #"{"bindings": [{"label": "gone", "protocol": "tcp", "prefix": "127.0.0.0/24", "ports": 8080, "no_socket": "pass"}]}"#
                ) == [pass])
        }
    }
}
