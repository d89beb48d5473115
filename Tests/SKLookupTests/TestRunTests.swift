import BPF
import BPFAssembly
import KernelTestSupport
import SKLookup
import Testing

/// What the kernel's test run says a program picks agrees with where real connections land.
@Suite(needsRoot)
struct TestRunTests {
    @Test func testRunAgreesWithRealConnections() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let names = ["web", "api", "proxy"]
            let servers = try names.enumerated().map { index, name in
                try NameServer(
                    name: name, socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: UInt16(7500 + index)) }
                )
            }
            let sockets = try SocketMap.create(count: 3)
            for (index, server) in servers.enumerated() { try sockets.set(UInt32(index), server.socket) }
            let cookies = Dictionary(uniqueKeysWithValues: try servers.map { ($0.name, try $0.socket.cookie()) })

            let web = Label("web")
            let api = Label("api")
            let proxy = Label("proxy")
            let normal = Label("normal")
            let program = try SKLookupProgram(defaultAction: .pass) {
                SKLookup.getLocalPort(.r6, into: .r7)
                SKLookup.checkPort(.r7, .single(80), goto: web)
                SKLookup.checkPort(.r7, .range(5000...5099), goto: api)
                SKLookup.checkAddress(.r6, .local, in: IPPrefix("127.0.0.0/24")!, scratch: .r8, goto: proxy)
                Statement.ja(to: normal)
                for (label, key) in [(web, Int32(0)), (api, 1), (proxy, 2)] {
                    label
                    SKLookup.assignAndPass(context: .r6, from: sockets.map, key: key, missing: normal, failed: normal)
                }
                normal
            }.load(name: "agree")
            let link = try program.attach(to: namespace)

            let targets: [(Endpoint, String?)] = [
                (Endpoint(.v4(127, 0, 0, 9), 80), "web"),
                (Endpoint(.v4(127, 5, 5, 5), 5050), "api"),
                (Endpoint(.v4(127, 0, 0, 200), 1234), "proxy"),
                (Endpoint(.v4(127, 1, 0, 1), 1234), nil),  // outside the /24, nothing bound: refused
            ]
            for (target, expected) in targets {
                let real: String? = try namespace.run { isRefused(target) ? nil : try NameServer.ask(.tcp, target) }
                #expect(real == expected, "\(target)")
                let decided = try program.testRun(Connection(.tcp, to: target, from: Endpoint(.loopback4, 40000)))
                #expect(decided.verdict == .pass)
                #expect(decided.selectedCookie == expected.flatMap { cookies[$0] }, "\(target)")
            }
            _ = link
        }
    }

    @Test func contextLayout() throws {
        let connection = Connection(
            .udp, to: Endpoint(IPAddress("2001:db8::1")!, 53), from: Endpoint(IPAddress("2001:db8::2")!, 0x1234))
        let context = try connection.context()
        #expect(context.count == 72)
        #expect(value(UInt32.self, from: context[8..<12]) == 10)
        #expect(value(UInt32.self, from: context[12..<16]) == 17)
        #expect(Array(context[20..<36]) == IPAddress("2001:db8::2")!.bytes)
        #expect(Array(context[36..<38]) == [0x12, 0x34])
        #expect(Array(context[44..<60]) == IPAddress("2001:db8::1")!.bytes)
        #expect(value(UInt32.self, from: context[60..<64]) == 53)
        #expect(context[64...].allSatisfy { $0 == 0 })
        #expect(throws: SKLookupError.self) {
            _ = try Connection(.tcp, to: Endpoint(.loopback4, 1), from: Endpoint(.loopback6, 2)).context()
        }
    }
}
