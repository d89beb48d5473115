import BPF
import SKLookup

#if canImport(Glibc)
    import Glibc
#endif

/// A destination with its sockets and counters.
public struct DestinationStatus: Sendable, Codable, Equatable {
    /// One live socket of the destination.
    public struct SocketEntry: Sendable, Codable, Equatable {
        /// Its slot in the destination, 0 up to ``Layout/socketsPerDestination``.
        public var slot: Int
        /// The socket's cookie (`SO_COOKIE`).
        public var cookie: UInt64
        /// Processes that hold the socket, where they could be found.
        public var owners: [Int32]
    }
    /// The label, protocol and family.
    public var destination: Dispatcher.Destination
    /// The live sockets, by slot.
    public var sockets: [SocketEntry]
    /// How many bindings of this label and protocol have a prefix of this family.
    public var bindings: Int
    /// Connections of this family that the label's bindings of this protocol matched.
    public var lookups: UInt64
    /// Of those, how many found no socket here (and were refused).
    public var misses: UInt64
    /// Assign errors by kind: `exists`, `socket-state`, `protocol`, `family`, `other`.
    public var errors: [String: UInt64]
}

/// Everything `sksteer status` shows.
public struct DispatcherStatus: Sendable, Codable, Equatable {
    /// The path the network namespace was opened from.
    public var namespace: String
    /// The state directory in the bpf filesystem.
    public var directory: String
    /// The layout version of the pinned state (``Layout/schemaVersion`` when current).
    public var schema: UInt32
    /// The rule-set copy (0 or 1) the attached program reads.
    public var activeCopy: Int
    /// The binding limit chosen at load time.
    public var maxBindings: UInt32
    /// The id of the program the pinned link attaches, if the link could be read.
    public var programID: UInt32?
    /// The id of the pinned link, if it could be read.
    public var linkID: UInt32?
    /// Every binding in force, in precedence order.
    public var bindings: [Binding]
    /// Destinations that have sockets, bindings or non-zero counters.
    public var destinations: [DestinationStatus]
    /// Connections that matched no binding (the kernel's normal lookup took them).
    public var noMatch: UInt64
    /// Per-binding counters, when they are on (``Dispatcher/enableBindingMetrics(limit:)``).
    public var bindingMetrics: BindingMetricsStatus? = nil
    /// The bytes of kernel memory the dispatcher's maps are charged for (`Map.chargedMemory()`
    /// of each), or nil where the kernel does not show it.
    public var mapMemoryBytes: Int? = nil
}

extension Dispatcher {
    /// Bindings, destinations, sockets and counters.
    public func status(findOwners: Bool = true) throws -> DispatcherStatus {
        let meta = try maps.readMeta()
        let active = try activeCopy()
        let bindings = try bindings(copy: active).sortedByPrecedence()
        let names = try labelNames()
        var bound: [Destination: Int] = [:]
        for binding in bindings {
            let lane = Lane(transport: binding.transport, ipv6: !binding.prefix.address.isIPv4)
            bound[Destination(label: binding.label, transport: lane.transport, ipv6: lane.ipv6), default: 0] += 1
        }
        let owners = findOwners ? socketOwners() : [:]
        var destinations: [DestinationStatus] = []
        for (labelID, label) in names.sorted(by: { $0.value < $1.value }) {
            for lane in Lane.allCases {
                let destination = Layout.destination(label: labelID, lane: lane)
                let described = Destination(label: label, transport: lane.transport, ipv6: lane.ipv6)
                let live = try sockets(destination: destination)
                let counters = try destinationCounters(destination)
                if live.isEmpty && bound[described] == nil && counters.allSatisfy({ $0 == 0 }) { continue }
                destinations.append(
                    DestinationStatus(
                        destination: described,
                        sockets: live.map { .init(slot: $0.slot, cookie: $0.cookie, owners: owners[$0.cookie] ?? []) },
                        bindings: bound[described] ?? 0, lookups: counters[0], misses: counters[1],
                        errors: [
                            "exists": counters[2], "socket-state": counters[3], "protocol": counters[4],
                            "family": counters[5], "other": counters[6],
                        ]))
            }
        }
        let global = try maps.globalMetrics.lookup(rawBytes(of: UInt32(0))) ?? []
        var noMatch: UInt64 = 0
        for cpu in 0..<possibleCPUCount where global.count >= (cpu + 1) * 8 {
            noMatch += value(UInt64.self, from: global[(cpu * 8)..<(cpu * 8 + 8)])
        }
        let link = try? Link.openPinned(at: "\(directory)/link").info()
        return DispatcherStatus(
            namespace: namespace.path, directory: directory, schema: meta.schema, activeCopy: active,
            maxBindings: meta.capacity, programID: link?.programID, linkID: link?.id, bindings: bindings,
            destinations: destinations, noMatch: noMatch,
            bindingMetrics: try bindingMetricsStatus(active: active, labels: names),
            mapMemoryBytes: try? chargedMemory())
    }

    /// A destination's counters summed over CPUs, in ``Layout/DestinationCounter`` order.
    func destinationCounters(_ destination: UInt32) throws -> [UInt64] {
        let bytes = try maps.destinationMetrics.lookup(rawBytes(of: destination)) ?? []
        var sums = [UInt64](repeating: 0, count: Layout.DestinationCounter.allCases.count)
        let stride = Layout.DestinationCounter.size
        for cpu in 0..<possibleCPUCount where bytes.count >= (cpu + 1) * stride {
            for index in sums.indices {
                let start = cpu * stride + index * 8
                sums[index] += value(UInt64.self, from: bytes[start..<start + 8])
            }
        }
        return sums
    }

    /// Which processes hold which sockets, by cookie: the kernel's socket diagnostics give
    /// each socket's cookie and inode; `/proc/*/fd` gives the inodes each process holds.
    func socketOwners() -> [UInt64: [Int32]] {
        guard let cookies = try? namespace.run({ try socketInodesByCookie() }) else { return [:] }
        let inodes = Dictionary(cookies.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        var owners: [UInt64: [Int32]] = [:]
        guard let proc = opendir("/proc") else { return [:] }
        defer { closedir(proc) }
        while let entry = readdir(proc) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let pid = Int32(name), let fds = opendir("/proc/\(pid)/fd") else { continue }
            var found = Set<UInt64>()
            while let fd = readdir(fds) {
                let fdName = withUnsafeBytes(of: fd.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                var buffer = [CChar](repeating: 0, count: 64)
                let length = readlink("/proc/\(pid)/fd/\(fdName)", &buffer, buffer.count - 1)
                guard length > 0 else { continue }
                let target = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                guard target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()),
                    let cookie = inodes[inode]
                else { continue }
                found.insert(cookie)
            }
            closedir(fds)
            for cookie in found { owners[cookie, default: []].append(pid) }
        }
        return owners.mapValues { $0.sorted() }
    }

    // MARK: Explain

    /// Which binding matches a connection, and which socket the live program picks for it.
    public struct Explanation: Sendable, Codable, Equatable {
        /// The connection tested, e.g. `tcp 127.0.0.1:40000 → 127.0.0.1:80`.
        public var connection: String
        /// The binding that wins by the precedence rules, worked out in user space.
        public var binding: Binding?
        /// What the kernel's test run of the loaded program decided.
        public var verdict: String
        /// The socket it selected (`sk:0x…`), if any.
        public var socket: String?
        /// The destination and slot of that socket.
        public var destination: Dispatcher.Destination?
        /// The slot of that socket in its destination.
        public var slot: Int?
        /// What happens to the connection, in words.
        public var outcome: String
    }

    /// Explains the fate of a connection to `address:port` (from `from`), asking the loaded
    /// program through the kernel's test run, so the answer is the kernel's.
    public func explain(_ transport: Socket.Transport, _ address: IPAddress, _ port: UInt16, from: Endpoint? = nil)
        throws -> Explanation
    {
        let winner = try bindings().winner(for: transport, address, port)
        // The attached program tells test runs from traffic by ctx->ingress_ifindex; where the
        // kernel lacks it (before 5.17), an uncounted copy over the copy in force answers.
        let program =
            Features.skLookupIngressInterface
            ? try Program.openPinned(at: "\(directory)/program")
            : try Program.load(
                DataPlane.program(maps.dataPlane(copy: activeCopy()), counting: .never), type: .skLookup,
                name: "sksteer_explain")
        let connection = Connection(transport, to: Endpoint(address, port), from: from)
        let result = try program.testRun(connection)
        var explanation = Explanation(
            connection: connection.description, binding: winner,
            verdict: result.verdict?.description ?? "\(result.returnValue)",
            socket: result.selectedCookie.map(hexCookie), destination: nil, slot: nil, outcome: "")
        if let cookie = result.selectedCookie, let winner, let labelID = try labelID(winner.label, create: false) {
            let destination = Layout.destination(label: labelID, transport: transport, ipv6: !address.isIPv4)
            if let slot = try sockets(destination: destination).first(where: { $0.cookie == cookie })?.slot {
                explanation.destination = Destination(label: winner.label, transport: transport, ipv6: !address.isIPv4)
                explanation.slot = slot
            }
        }
        switch (result.verdict, result.selectedCookie, winner) {
        case (.pass?, let cookie?, _):
            explanation.outcome =
                "delivered to socket \(hexCookie(cookie))"
                + (explanation.destination.map { " of \($0), slot \(explanation.slot ?? 0)" } ?? "")
        case (.pass?, nil, nil):
            explanation.outcome = "no binding matches: the kernel's normal socket lookup decides"
        case (.drop?, _, let winner?):
            explanation.outcome =
                "refused: \(winner.label) has no usable \(address.isIPv4 ? "ipv4" : "ipv6") \(transport) socket"
        default:
            explanation.outcome = "the program returned \(explanation.verdict)"
        }
        return explanation
    }
}
