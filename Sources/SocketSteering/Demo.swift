import BPF

#if canImport(Glibc)
    import Glibc
#endif

/// The guided tour `sksteer demo` runs: a throwaway namespace and bpffs, the dispatcher,
/// a few servers that answer with their names, bindings, real connections, and counters.
/// Nothing is left behind.
package enum Demo {
    /// One connection the demo made.
    package struct Row: Sendable {
        /// TCP or UDP.
        package var transport: Socket.Transport
        /// The address and port connected to.
        package var target: Endpoint
        /// Which binding should take it, in words.
        package var why: String
        /// The server names that may answer (or `refused`).
        package var expected: [String]
        /// What did answer.
        package var landed: String
        /// Whether the server that answered is one of ``expected``.
        package var ok: Bool { expected.contains(landed) }
    }

    /// What the demo saw: every connection it made, and the dispatcher's status at the end.
    package struct Report: Sendable {
        /// The connections, in the order they were made.
        package var rows: [Row]
        /// The dispatcher's status after the connections, counters included.
        package var status: DispatcherStatus
    }

    /// Runs the demo; `say` receives each line of narration.
    package static func run(say: (String) -> Void) throws -> Report {
        let namespace = try NetworkNamespace.makeThrowaway()
        let bpffs = try BPFFileSystem.TemporaryMount()
        say("1. A throwaway network namespace (lo up) and a private bpf filesystem at \(bpffs.path).")
        _ = try Dispatcher.load(namespace: namespace, bpffs: bpffs.path)
        defer { _ = try? Dispatcher.unload(namespace: namespace, bpffs: bpffs.path) }
        say("2. Loaded the dispatcher: its SK_LOOKUP program is attached to that namespace only.")

        var servers: [NameServer] = []
        defer { for server in servers { server.stop() } }
        let dispatcher = try Dispatcher.open(namespace: namespace, bpffs: bpffs.path)
        let plan: [(String, String, Socket.Transport, UInt16)] = [
            ("proxy", "proxy", .tcp, 8000), ("web", "web", .tcp, 8080), ("api-1", "api", .tcp, 9000),
            ("api-2", "api", .tcp, 9001), ("dns", "dns", .udp, 5353),
        ]
        for (name, label, transport, port) in plan {
            let socket = try namespace.run { try Socket.bound(transport, .loopback4, port: port) }
            servers.append(try NameServer(name: name, socket: socket))
            try dispatcher.register(socket, label: label)
        }
        say("3. Started servers that answer with their names and registered their sockets:")
        for (name, label, transport, port) in plan {
            say("     \(name.padding(6)) \(transport) 127.0.0.1:\(port)  → label \(label)")
        }

        let bindings: [Binding] = [
            try Binding(label: "proxy", protocol: "tcp", prefix: "127.0.0.0/24", ports: "*"),
            try Binding(label: "web", protocol: "tcp", prefix: "127.0.0.1", ports: "80"),
            try Binding(label: "api", protocol: "tcp", prefix: "127.0.0.2", ports: "5000-5099"),
            try Binding(label: "dns", protocol: "udp", prefix: "127.0.0.53", ports: "53"),
            try Binding(label: "cache", protocol: "tcp", prefix: "127.0.0.3", ports: "6379"),
        ]
        try dispatcher.apply(bindings)
        say("4. Applied the bindings (most specific first); nothing listens on any of these ports:")
        for binding in bindings.sortedByPrecedence() { say("     \(binding)") }
        say("     (no socket is registered for 'cache')")

        let connections: [(Socket.Transport, String, UInt16, String, [String])] = [
            (.tcp, "127.0.0.1", 80, "127.0.0.1/32 port 80", ["web"]),
            (.tcp, "127.0.0.1", 443, "127.0.0.0/24 all ports", ["proxy"]),
            (.tcp, "127.0.0.2", 5000, "127.0.0.2/32 ports 5000-5099", ["api-1", "api-2"]),
            (.tcp, "127.0.0.2", 5099, "127.0.0.2/32 ports 5000-5099", ["api-1", "api-2"]),
            (.tcp, "127.0.0.2", 6000, "outside the range: 127.0.0.0/24", ["proxy"]),
            (.tcp, "127.0.0.200", 22, "127.0.0.0/24 all ports", ["proxy"]),
            (.udp, "127.0.0.53", 53, "udp 127.0.0.53/32 port 53", ["dns"]),
            (.tcp, "127.0.0.3", 6379, "cache has no socket: refused", ["refused"]),
            (.tcp, "127.1.0.1", 80, "no binding: normal lookup, no listener", ["refused"]),
        ]
        var rows: [Row] = []
        for (transport, address, port, why, expected) in connections {
            let target = Endpoint(IPAddress(address)!, port)
            let landed = try namespace.run { () -> String in
                do {
                    return try NameServer.ask(transport, target, timeoutMilliseconds: 1000)
                } catch let error as BPFError {
                    return error.code == ECONNREFUSED ? "refused" : error.codeName.lowercased()
                }
            }
            rows.append(Row(transport: transport, target: target, why: why, expected: expected, landed: landed))
        }
        say("5. Real connections, and where the kernel delivered them:")
        say("     " + "CONNECTION".padding(22) + "BINDING THAT DECIDES".padding(40) + "ANSWERED BY")
        for row in rows {
            say(
                "     " + "\(row.transport) \(row.target)".padding(22) + row.why.padding(40) + row.landed
                    + (row.ok ? "" : "   (expected \(row.expected.joined(separator: " or ")))"))
        }
        var spread: [String: Int] = [:]
        for port in UInt16(5000)..<5020 {
            let name = try namespace.run { try NameServer.ask(.tcp, Endpoint(IPAddress("127.0.0.2")!, port)) }
            spread[name, default: 0] += 1
        }
        say(
            "     20 more connections to 127.0.0.2:5000-5019 were spread over the api sockets by a hash of their source: "
                + spread.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        let status = try dispatcher.status(findOwners: false)
        say("6. The counters the program keeps:")
        for destination in status.destinations where destination.lookups > 0 {
            say(
                "     \(destination.destination.description.padding(36)) lookups \(destination.lookups)"
                    + (destination.misses > 0 ? ", misses \(destination.misses) (refused)" : ""))
        }
        say(
            "     no binding matched: \(status.noMatch) (the kernel's own lookup took those, such as the dns reply to its client)"
        )
        say("7. Unloaded; the namespace, the bpffs mount and the servers are gone with it.")
        return Report(rows: rows, status: status)
    }
}

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
