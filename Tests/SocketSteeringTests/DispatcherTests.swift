import BPF
import KernelTestSupport
import Testing

@testable import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

@Suite(needsRoot)
struct DispatcherTests {
    /// The demo's configuration, checked connection by connection.
    @Test func bindingsSteerRealConnections() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("proxy", .tcp, .loopback4, 9000, label: "proxy")
            try f.serve("web", .tcp, .loopback4, 9001, label: "web")
            try f.serve("api", .tcp, .loopback4, 9002, label: "api")
            try f.serve("dns", .udp, .loopback4, 9053, label: "dns")
            try f.serve("normal", .tcp, .v4(127, 1, 0, 1), 80)
            try f.bind("proxy", "tcp", "127.0.0.0/24", "*")
            try f.bind("web", "tcp", "127.0.0.1", "80")
            try f.bind("api", "tcp", "127.0.0.2", "5000-5099")
            try f.bind("dns", "udp", "127.0.0.53", "53")
            try f.bind("cache", "tcp", "127.0.0.9", "11211")  // no socket registered

            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            #expect(try f.land(.tcp, "127.0.0.1", 443) == "proxy")
            #expect(try f.land(.tcp, "127.0.0.2", 5000) == "api")
            #expect(try f.land(.tcp, "127.0.0.2", 5099) == "api")
            #expect(try f.land(.tcp, "127.0.0.2", 5100) == "proxy")
            #expect(try f.land(.tcp, "127.0.0.200", 22) == "proxy")
            #expect(try f.land(.udp, "127.0.0.53", 53) == "dns")
            #expect(try f.land(.tcp, "127.0.0.9", 11211) == "refused")  // bound, no socket: a miss
            #expect(try f.land(.tcp, "127.1.0.1", 80) == "normal")  // no binding: normal lookup
            #expect(try f.land(.tcp, "127.1.0.2", 80) == "refused")  // no binding, nothing there

            // State survives: a new invocation sees the same bindings.
            let bindings = try f.dispatcher(readOnly: true).bindings()
            #expect(bindings.count == 5)
            #expect(bindings.first == binding("web", "tcp", "127.0.0.1", "80"))
            #expect(bindings.last(where: { $0.transport == .tcp }) == binding("proxy", "tcp", "127.0.0.0/24", "*"))
            #expect(bindings.last == binding("dns", "udp", "127.0.0.53", "53"))
        }
    }

    /// Every overlap case of the precedence rules: longest prefix, then narrower ports.
    /// A socket made by other code (SwiftNIO, systemd, C) is registered by its descriptor,
    /// which stays the caller's; bad descriptors are named in the error.
    @Test func aDescriptorOfOtherCodeIsRegistered() throws {
        try exclusively {
            let f = try Fixture()
            let dispatcher = try f.dispatcher()
            try dispatcher.bind(binding("web", "tcp", "127.0.0.1", "80"))
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "refused")
            let fd = try f.namespace.run { () -> Int32 in
                // The documented example.
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        _ = bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
                listen(fd, 128)
                return fd
            }
            defer { close(fd) }
            let registered = try dispatcher.register(descriptor: fd, label: "web")
            #expect(registered.map(\.destination.description) == ["web ipv4 tcp"])
            // The caller's descriptor is still open, and connections now reach its socket.
            #expect(fcntl(fd, F_GETFD) >= 0)
            #expect(try f.namespace.run { !isRefused(Endpoint(.loopback4, 80)) })
            var pipes: [Int32] = [0, 0]
            #expect(pipe(&pipes) == 0)
            defer { for p in pipes { close(p) } }
            #expect {
                try dispatcher.register(descriptor: pipes[0], label: "web")
            } throws: { "\($0)".contains("descriptor \(pipes[0]) is not a socket") }
            #expect {
                try dispatcher.register(descriptor: 9999, label: "web")
            } throws: { "\($0)".contains("descriptor 9999 is not open") }
        }
    }

    /// The listing reads group records directly: a prefix with more port sets than one record
    /// holds (several pages, each repeating the all-ports label) lists each binding once.
    @Test func listingOfGroupsOfSeveralRecords() throws {
        try exclusively {
            let f = try Fixture()
            var wanted = (1...20).map { i in
                var b = binding("s\(i % 3)", "tcp", "127.0.0.0/24", "\(1000 + i)")
                if i % 4 == 0 { b.noSocket = .pass }
                return b
            }
            var all = binding("all", "tcp", "127.0.0.0/24", "*")
            all.noSocket = .pass
            wanted += [all, binding("v6", "udp", "2001:db8::/32", "53"), binding("v6", "udp", "2001:db8::/32", "*")]
            let dispatcher = try f.dispatcher()
            try dispatcher.apply(wanted)
            let listed = try dispatcher.bindings()
            #expect(listed.count == wanted.count)
            #expect(Set(listed) == Set(wanted))
            #expect(try Set(dispatcher.ruleSet(copy: dispatcher.activeCopy()).bindings) == Set(wanted))
            #expect(try dispatcher.status(findOwners: false).bindings == listed)
        }
    }

    @Test func precedenceAndOverlaps() throws {
        try exclusively {
            let f = try Fixture()
            for name in ["wide", "narrow", "range", "small-range", "single", "host", "host-range", "v6", "v6-host"] {
                try f.serve(name, .tcp, name.hasPrefix("v6") ? .loopback6 : .loopback4, 0, label: name)
            }
            try f.namespace.addAddress(IPAddress("fd00::2")!)
            try f.bind("wide", "tcp", "127.0.0.0/8", "*")
            try f.bind("narrow", "tcp", "127.0.0.0/16", "*")
            try f.bind("range", "tcp", "127.0.0.0/16", "1000-1999")
            try f.bind("small-range", "tcp", "127.0.0.0/16", "1500-1509")
            try f.bind("single", "tcp", "127.0.0.0/16", "1505")
            try f.bind("host", "tcp", "127.0.0.7", "*")
            try f.bind("host-range", "tcp", "127.0.0.7", "1-1023")
            try f.bind("v6", "tcp", "::/0", "*")
            try f.bind("v6-host", "tcp", "::1", "7000-7999")
            let expectations: [(String, UInt16, String)] = [
                ("127.9.9.9", 1505, "wide"),  // only /8 covers it
                ("127.0.9.9", 80, "narrow"),  // /16 beats /8
                ("127.0.9.9", 1200, "range"),  // same /16: a range beats all ports
                ("127.0.9.9", 1500, "small-range"),  // a narrower range beats a wider one
                ("127.0.9.9", 1505, "single"),  // one port beats every range
                ("127.0.9.9", 1510, "range"),
                ("127.0.0.7", 1505, "host"),  // /32 beats /16 even though /16 has the single port
                ("127.0.0.7", 80, "host-range"),
                ("127.0.0.7", 2000, "host"),
                ("::1", 7500, "v6-host"),
                ("::1", 8000, "v6"),
                ("fd00::2", 7500, "v6"),
            ]
            for (address, port, expected) in expectations {
                #expect(try f.land(.tcp, address, port) == expected, "\(address):\(port)")
                let winner = try f.dispatcher(readOnly: true).bindings().winner(for: .tcp, IPAddress(address)!, port)
                #expect(winner?.label == expected, "user-space precedence for \(address):\(port)")
            }
            // Unbinding the single port uncovers the range below it.
            try f.dispatcher().unbind(binding("single", "tcp", "127.0.0.0/16", "1505"))
            #expect(try f.land(.tcp, "127.0.9.9", 1505) == "small-range")
            try f.dispatcher().unbind(binding("small-range", "tcp", "127.0.0.0/16", "1500-1509"))
            try f.dispatcher().unbind(binding("range", "tcp", "127.0.0.0/16", "1000-1999"))
            #expect(try f.land(.tcp, "127.0.9.9", 1505) == "narrow")
            try f.dispatcher().unbind(binding("narrow", "tcp", "127.0.0.0/16", "*"))
            #expect(try f.land(.tcp, "127.0.9.9", 1505) == "wide")
        }
    }

    /// An apply into an empty dispatcher, too large for the incremental path, whose port
    /// ranges need more entries than a table holds: it is refused after its group records
    /// went to the idle copy, and leaves nothing behind (no bindings in either copy, no
    /// pending repair, no label), so the next change goes as if it had not been tried.
    @Test func anApplyTooLargeForTheTablesLeavesNothing() throws {
        try exclusively {
            let f = try Fixture(maxBindings: 2100)
            try f.serve("web", .tcp, .loopback4, 0, label: "web")
            // 2,001 bindings of 40 ports each: 80,040 host entries, more than the
            // 2 × 2,100 + 65,536 = 69,736 a table of this dispatcher holds.
            let wide = (0...Dispatcher.smallChange).map {
                binding("wide", "tcp", "127.1.\($0 / 250).\($0 % 250 + 1)", "1000-1039")
            }
            do {
                try f.dispatcher().apply(wide)
                Issue.record("an apply of 80,040 host entries into tables of 69,736 was accepted")
            } catch let error as SteeringError {
                guard case .limit(let message) = error else { throw error }
                #expect(message.contains("80040 tcp4 host entries"), "\(message)")
            }
            let d = try f.dispatcher()
            #expect(try d.maps.readMeta().pending == 0)
            for copy in 0..<2 { #expect(try d.bindings(copy: copy).isEmpty, "copy \(copy)") }
            #expect(try d.labelNames().values.sorted() == ["web"])
            try d.apply([binding("web", "tcp", "127.1.0.1", "1000")])
            #expect(try f.land(.tcp, "127.1.0.1", 1000) == "web")
            #expect(try f.land(.tcp, "127.1.0.1", 1001) == "refused")
        }
    }

    @Test func badInputChangesNothing() throws {
        try exclusively {
            let f = try Fixture()
            try f.bind("web", "tcp", "127.0.0.1", "80")
            #expect(throws: SteeringError.self) { try f.bind("x", "tcp", "127.0.0.300", "80") }
            #expect(throws: SteeringError.self) { try f.bind("x", "tcp", "127.0.0.1", "70000") }
            #expect(throws: SteeringError.self) { try f.bind("x", "tcp", "127.0.0.1", "9-3") }
            #expect(throws: SteeringError.self) { try f.bind("x", "sctp", "127.0.0.1", "80") }
            #expect(throws: SteeringError.self) { try f.bind("bad label!", "tcp", "127.0.0.1", "80") }
            #expect(throws: SteeringError.self) { try f.bind("other", "tcp", "127.0.0.1", "80") }  // taken
            #expect(throws: SteeringError.self) {
                try f.dispatcher().unbind(binding("other", "tcp", "127.0.0.1", "80"))
            }
            // Not bound: nothing to do, and no error (so an interrupted unbind can be run again).
            #expect(try f.dispatcher().unbind(binding("web", "tcp", "127.0.0.1", "81")) == .unchanged)
            // A socket of the wrong state.
            let connected = try f.namespace.run { try Socket.connected(.udp, to: .loopback4, port: 9) }
            #expect(throws: SteeringError.self) { try f.dispatcher().register(connected, label: "web") }
            let unbound = Fixture.self
            _ = unbound
            #expect(try f.dispatcher(readOnly: true).bindings() == [binding("web", "tcp", "127.0.0.1", "80")])
            #expect(throws: SteeringError.self) {
                try f.dispatcher(readOnly: true).bind(binding("a", "tcp", "::1", "1"))
            }
        }
    }
}
