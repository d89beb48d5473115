import BPF
import BPFAssembly
import KernelTestSupport
import SKLookup
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The reuseport scenarios of the kernel's own sk_lookup selftest (`prog_tests/sk_lookup.c`:
/// "redir with reuseport", "redir and reuseport with conns", "redir skip reuseport", "drop on
/// reuseport"), written with this package's API: servers A and B form an `SO_REUSEPORT`
/// group with an SK_REUSEPORT program attached, and an SK_LOOKUP program assigns A.
@Suite(needsRoot)
struct ReuseportTests {
    enum Group: String, Sendable, CaseIterable {
        /// The reuseport program picks from the SOCKMAP the SK_LOOKUP program uses, as the selftest does.
        case sockMap
        /// It picks from a REUSEPORT_SOCKARRAY of the group.
        case reuseportArray
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var transport: Socket.Transport
        var ipv6: Bool
        var group: Group
        var testDescription: String { "\(transport) \(ipv6 ? "IPv6" : "IPv4") via \(group)" }
        /// Where clients send: nothing is bound there.
        var target: Endpoint { Endpoint(ipv6 ? .loopback6 : .v4(127, 0, 0, 5), 7007) }
        /// Where A and B listen.
        var listen: Endpoint { Endpoint(ipv6 ? .loopback6 : .loopback4, 8008) }
    }

    static let cases: [Case] = Socket.Transport.allCases.flatMap { transport in
        [false, true].flatMap { ipv6 in Group.allCases.map { Case(transport: transport, ipv6: ipv6, group: $0) } }
    }

    /// The namespace, A and B in one group with `reuseport` attached, the SOCKMAP holding A at
    /// 0, and B at 1 of the SOCKMAP or of the REUSEPORT_SOCKARRAY.
    struct Scene {
        var namespace: NetworkNamespace
        var a: NameServer
        var b: NameServer
        var sockets: SocketMap
        var array: ReuseportSocketArray
    }

    func scene(_ c: Case, reuseport: (Scene) throws -> Program, connectedExtra: Bool = false) throws -> (
        Scene, [Socket]
    ) {
        let namespace = try NetworkNamespace.makeThrowaway()
        func member() throws -> Socket {
            try namespace.run { () throws(BPFError) -> Socket in
                let socket = try Socket.unbound(c.transport, family: c.listen.address.family)
                try socket.set(.reusePort, true)
                try socket.bind(to: c.listen)
                if c.transport == .tcp { try socket.listen() }
                return socket
            }
        }
        let a = try NameServer(name: "A", socket: member())
        let b = try NameServer(name: "B", socket: member())
        // A socket in a SOCKMAP cannot also be in a REUSEPORT_SOCKARRAY (EBUSY): the SOCKMAP
        // holds A for the SK_LOOKUP program, and B either there or in the array.
        let sockets = try SocketMap.create(count: 2)
        try sockets.set(0, a.socket)
        let array = try ReuseportSocketArray.create(count: 2)
        if c.group == .sockMap {
            try sockets.set(1, b.socket)
        } else {
            try array.set(1, b.socket)
            #expect(throws: BPFError.self) { try array.set(0, a.socket) }
        }
        let scene = Scene(namespace: namespace, a: a, b: b, sockets: sockets, array: array)
        try a.socket.attachReuseportProgram(reuseport(scene))
        var extra: [Socket] = []
        if connectedExtra {
            // A third member of the group, connected to itself: the kernel's normal UDP lookup
            // treats a group with connected sockets differently; an assigned socket must not.
            let third = try member()
            let own = try third.localEndpoint()
            try namespace.run { try third.connect(to: own) }
            extra.append(third)
        }
        return (scene, extra)
    }

    func selectB(_ c: Case, _ scene: Scene) throws -> Program {
        let map = c.group == .sockMap ? scene.sockets.map : scene.array.map
        return try ReuseportProgram.select(from: map, key: 1).load(name: "select_b")
    }

    /// Answers for 16 tries: the names that answered.
    func names(_ c: Case, _ scene: Scene) throws -> [String: Int] {
        try scene.namespace.run {
            var seen: [String: Int] = [:]
            for _ in 0..<16 { seen[try NameServer.ask(c.transport, c.target), default: 0] += 1 }
            return seen
        }
    }

    /// "redir with reuseport": A is assigned, the group's program picks B, B gets everything.
    @Test(arguments: cases)
    func redirectWithReuseport(_ c: Case) throws {
        try exclusively {
            let (scene, _) = try scene(c, reuseport: { try selectB(c, $0) })
            let link = try steer(scene.sockets, key: 0, ports: .single(c.target.port)).attach(to: scene.namespace)
            #expect(try names(c, scene) == ["B": 16])
            // Without a program the group picks by hash, and both answer now and then.
            try scene.a.socket.detachReuseportProgram()
            let byHash = try scene.namespace.run {
                Set(try (0..<64).map { _ in try NameServer.ask(c.transport, c.target) })
            }
            #expect(byHash == ["A", "B"])
            #expect(throws: BPFError.self) { try scene.a.socket.detachReuseportProgram() }
            _ = link
        }
    }

    /// "redir and reuseport with conns" (UDP): a connected member does not change the pick.
    @Test(arguments: cases.filter { $0.transport == .udp })
    func redirectWithReuseportAndAConnectedMember(_ c: Case) throws {
        try exclusively {
            let (scene, extra) = try scene(c, reuseport: { try selectB(c, $0) }, connectedExtra: true)
            let link = try steer(scene.sockets, key: 0, ports: .single(c.target.port)).attach(to: scene.namespace)
            #expect(try names(c, scene) == ["B": 16])
            _ = (link, extra)
        }
    }

    /// "redir skip reuseport": with `noReuseport` the assigned socket A gets everything.
    @Test(arguments: cases)
    func redirectSkippingReuseport(_ c: Case) throws {
        try exclusively {
            let (scene, _) = try scene(c, reuseport: { try selectB(c, $0) })
            let link = try steer(scene.sockets, key: 0, flags: .noReuseport, ports: .single(c.target.port))
                .attach(to: scene.namespace)
            #expect(try names(c, scene) == ["A": 16])
            _ = link
        }
    }

    /// "drop on reuseport": the group's program drops, and neither A nor a server bound at the
    /// target itself gets anything: TCP is refused, a datagram goes unanswered.
    @Test(arguments: cases.filter { $0.group == .sockMap })
    func dropOnReuseport(_ c: Case) throws {
        try exclusively {
            let (scene, _) = try scene(c, reuseport: { _ in try ReuseportProgram.always(.drop).load(name: "drop") })
            let atTarget = try NameServer(
                name: "target",
                socket: scene.namespace.run {
                    try Socket.bound(c.transport, c.target.address, port: c.target.port, v6Only: true)
                })
            let link = try steer(scene.sockets, key: 0, ports: .single(c.target.port)).attach(to: scene.namespace)
            if c.transport == .tcp {
                #expect(try scene.namespace.run { isRefused(c.target) })
            } else {
                #expect(try scene.namespace.run { isUnanswered(c.target) })
            }
            #expect(scene.a.answered == 0 && scene.b.answered == 0 && atTarget.answered == 0)
            _ = link
        }
    }

    /// A REUSEPORT_SOCKARRAY names its sockets by cookie, refuses a socket outside any group,
    /// and forgets a socket when it closes.
    @Test func reuseportArrayEntries() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let array = try ReuseportSocketArray.create(count: 2)
            let member = try namespace.run { () throws(BPFError) -> Socket in
                let socket = try Socket.unbound(.tcp, family: AF_INET)
                try socket.set(.reusePort, true)
                #expect(try socket.value(of: .reusePort) == 1)
                try socket.bind(to: Endpoint(.loopback4, 8100))
                try socket.listen()
                return socket
            }
            try array.set(0, member)
            #expect(try array.cookie(at: 0) == member.cookie())
            let loner = try namespace.run { try Socket.bound(.tcp, .loopback4, port: 8101) }
            let refusal = #expect(throws: BPFError.self) { try array.set(1, loner) }
            #expect(refusal?.hint?.contains("SO_REUSEPORT") == true)
            #expect(try array.remove(0))
            #expect(try array.cookie(at: 0) == nil)
            // Only reuseport and socket filter programs attach to a group.
            let lookup = try SKLookupProgram(defaultAction: .pass) {}.load(name: "pass")
            #expect(throws: BPFError.self) { try member.attachReuseportProgram(lookup) }
        }
    }
}
