import BPF
import BPFAssembly
import KernelTestSupport
import SKLookup
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Connections to addresses and ports no socket is bound to arrive at the socket the program
/// picked, for TCP and UDP, IPv4 and IPv6, and IPv4 to a dual-stack IPv6 socket.
@Suite(needsRoot)
struct SteeringTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var transport: Socket.Transport
        var bind: Endpoint
        var v6Only: Bool = true
        var target: Endpoint
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "tcp4", transport: .tcp, bind: Endpoint(.loopback4, 7000), target: unbound4),
        Case(name: "udp4", transport: .udp, bind: Endpoint(.loopback4, 7000), target: unbound4),
        Case(name: "tcp6", transport: .tcp, bind: Endpoint(.loopback6, 7000), target: unbound6),
        Case(name: "udp6", transport: .udp, bind: Endpoint(.loopback6, 7000), target: unbound6),
        Case(name: "tcp4-to-dual-stack", transport: .tcp, bind: Endpoint(.any6, 7100), v6Only: false, target: unbound4),
        Case(name: "udp4-to-dual-stack", transport: .udp, bind: Endpoint(.any6, 7100), v6Only: false, target: unbound4),
    ]

    @Test(arguments: cases)
    func steersToThePickedSocket(_ c: Case) throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let server = try NameServer(
                name: c.name,
                socket: namespace.run {
                    try Socket.bound(c.transport, c.bind.address, port: c.bind.port, v6Only: c.v6Only)
                })
            let sockets = try SocketMap.create(count: 1)
            try sockets.set(0, server.socket)
            // Before: nothing listens there.
            if c.transport == .tcp {
                #expect(try namespace.run { isRefused(c.target) })
            } else {
                #expect(try namespace.run { isUnanswered(c.target) })
            }
            let link = try steer(sockets, key: 0, ports: .set([4242, 65000])).attach(to: namespace)
            #expect(try namespace.run { try NameServer.ask(c.transport, c.target) } == c.name)
            // Another port of another address goes there too.
            let elsewhere = Endpoint(c.target.address.isIPv4 ? .v4(127, 1, 2, 3) : .loopback6, 65000)
            #expect(try namespace.run { try NameServer.ask(c.transport, elsewhere) } == c.name)
            _ = link
        }
    }

    /// SO_REUSEPORT: without the flag the kernel picks within the assigned socket's group;
    /// with `.noReuseport` exactly the assigned socket gets every connection.
    @Test func reuseportGroupWithAndWithoutTheFlag() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let a = try NameServer(
                name: "A", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 7200, reusePort: true) })
            let b = try NameServer(
                name: "B", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 7200, reusePort: true) })
            let sockets = try SocketMap.create(count: 1)
            try sockets.set(0, a.socket)
            func names() throws -> Set<String> {
                try namespace.run { Set(try (0..<64).map { _ in try NameServer.ask(.tcp, unbound4) }) }
            }
            let grouped = try steer(sockets, key: 0).attach(to: namespace)
            #expect(try names() == ["A", "B"])
            try grouped.detach()
            let exact = try steer(sockets, key: 0, flags: .noReuseport).attach(to: namespace)
            #expect(try names() == ["A"])
            _ = (exact, b)
        }
    }
}

/// Several programs on one namespace: they run in attach order; the last that passes with a
/// socket selected wins, a drop without a selection refuses, a redirect beats a drop.
@Suite(needsRoot)
struct MultipleProgramTests {
    @Test func theKernelsRulesForSeveralPrograms() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let a = try NameServer(name: "A", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 7301) })
            let b = try NameServer(name: "B", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 7302) })
            let sockets = try SocketMap.create(count: 2)
            try sockets.set(0, a.socket)
            try sockets.set(1, b.socket)
            let errors = try ArrayMap<Int64>.create(count: 1)
            let toA = try steer(sockets, key: 0)
            let toB = try steer(sockets, key: 1)
            let toBReplacing = try steer(sockets, key: 1, flags: .replace)
            let toBRecording = try recordingAssign(sockets, key: 1, errors: errors).load(name: "record")
            let drop = try SKLookupProgram(defaultAction: .drop) {}.load(name: "drop")
            let pass = try SKLookupProgram(defaultAction: .pass) {}.load(name: "pass")

            func outcome(_ programs: [Program]) throws -> String {
                let links = try programs.map { try $0.attach(to: namespace) }
                defer { for link in links { try? link.detach() } }
                return try namespace.run { () -> String in
                    do {
                        return try NameServer.ask(.tcp, unbound4)
                    } catch let error as BPFError {
                        return error.code == ECONNREFUSED ? "refused" : "\(error)"
                    }
                }
            }
            #expect(try outcome([toA, drop]) == "A")  // a redirect beats a later drop
            #expect(try outcome([drop, toB]) == "B")  // and an earlier one
            #expect(try outcome([drop, pass]) == "refused")  // a drop without a selection refuses
            #expect(try outcome([pass, pass]) == "refused")  // no selection: normal lookup, nothing bound
            #expect(try outcome([toA, toBReplacing]) == "B")  // the last selection with pass wins
            try errors.set(0, 0)
            #expect(try outcome([toA, toBRecording]) == "A")  // without REPLACE the second assign fails…
            #expect(try errors[0] == -Int64(AssignError.alreadySelected.rawValue))  // …with EEXIST
        }
    }
}
