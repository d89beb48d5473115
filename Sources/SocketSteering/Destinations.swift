import BPF
import SKLookup

#if canImport(Glibc)
    import Glibc
#endif

/// Destinations: the sockets of one label for one protocol and family, in
/// ``Layout/socketsPerDestination`` SOCKMAP slots. Every slot of a destination with sockets
/// holds one of them (a socket may fill several), so the program reads one slot, chosen by a
/// hash of the remote address and port, and needs no count; a closed socket leaves its slots
/// empty, and the program then tries the next slots, so its share moves to the others until
/// the next registration fills them again.
extension Dispatcher {
    /// A destination: the sockets of one label for one family and protocol.
    public struct Destination: Hashable, Sendable, Codable, CustomStringConvertible {
        /// The label the sockets are registered for.
        public var label: String
        /// TCP or UDP.
        public var transport: Socket.Transport
        /// Whether this is the IPv6 destination (else IPv4).
        public var ipv6: Bool
        /// `LABEL ipv4|ipv6 PROTOCOL`, e.g. `web ipv4 tcp`.
        public var description: String { "\(label) \(ipv6 ? "ipv6" : "ipv4") \(transport)" }
    }

    /// What registering a socket did, per destination.
    public struct Registration: Sendable, Equatable, CustomStringConvertible {
        /// The destination the socket was registered in.
        public var destination: Destination
        /// The socket's cookie (`SO_COOKIE`).
        public var cookie: UInt64
        /// The socket's position among the destination's live sockets (0 up to 15).
        public var slot: Int
        /// Whether the socket was already there, so nothing changed.
        public var alreadyRegistered: Bool
        /// `DESTINATION: socket sk:0x… registered in slot N` (or `already registered`).
        public var description: String {
            "\(destination): socket \(hexCookie(cookie)) \(alreadyRegistered ? "already registered" : "registered") in slot \(slot)"
        }
    }

    static func slotKey(_ destination: UInt32, _ slot: Int) -> [UInt8] {
        rawBytes(of: destination * UInt32(Layout.socketsPerDestination) + UInt32(slot))
    }

    /// The cookie in each slot of a destination (nil for an empty slot).
    func slots(destination: UInt32) throws -> [UInt64?] {
        try (0..<Layout.socketsPerDestination).map { slot in
            try maps.sockets.lookup(Self.slotKey(destination, slot)).map { value(UInt64.self, from: $0) }
        }
    }

    /// The destination's distinct live sockets, in slot order: (position, cookie).
    func sockets(destination: UInt32) throws -> [(slot: Int, cookie: UInt64)] {
        var seen: [UInt64] = []
        for case let cookie? in try slots(destination: destination) where !seen.contains(cookie) { seen.append(cookie) }
        return seen.enumerated().map { ($0.offset, $0.element) }
    }

    /// Registers a socket for `label`: a listening TCP or an unconnected UDP socket in this
    /// namespace. IPv4 sockets serve IPv4 traffic; v6-only sockets IPv6; dual-stack IPv6
    /// sockets both. Another socket for the same destination is added beside the ones there
    /// (connections are spread by a hash of the remote address and port); the same socket
    /// twice is a no-op. A socket leaves when it is closed.
    @discardableResult
    public func register(_ socket: Socket, label: String) throws -> [Registration] {
        try requireWritable()
        try Binding.checkLabel(label)
        let facts = try socket.facts()
        guard let transport = facts.transport, facts.family == AF_INET || facts.family == AF_INET6 else {
            throw SteeringError.unsuitableSocket("only TCP and UDP sockets over IPv4 or IPv6 can be registered")
        }
        if transport == .tcp && !facts.listening {
            throw SteeringError.unsuitableSocket("the TCP socket is not listening; call listen() before registering it")
        }
        if transport == .udp && facts.connected {
            throw SteeringError.unsuitableSocket(
                "the UDP socket is connected; only unconnected UDP sockets can receive steered traffic")
        }
        if let theirs = facts.namespaceCookie, let ours = try namespaceCookie(), theirs != ours {
            throw SteeringError.unsuitableSocket(
                "the socket belongs to another network namespace than \(namespace.path)")
        }
        let families: [Bool] = facts.family == AF_INET ? [false] : facts.v6Only ? [true] : [false, true]
        let labelID = try labelID(label, create: true)!
        let cookie = try socket.cookie()
        var result: [Registration] = []
        for ipv6 in families {
            let destination = Layout.destination(label: labelID, transport: transport, ipv6: ipv6)
            let described = Destination(label: label, transport: transport, ipv6: ipv6)
            let live = try sockets(destination: destination)
            let known = live.first(where: { $0.cookie == cookie })
            guard known != nil || live.count < Layout.socketsPerDestination else {
                throw SteeringError.limit(
                    "\(described) already has \(Layout.socketsPerDestination) live sockets; close or unregister some")
            }
            // A socket already there still gets its full share: a registration killed
            // half-way is finished by running it again.
            let changed = try spread(socket, destination: destination, described: described)
            result.append(
                Registration(
                    destination: described, cookie: cookie, slot: known?.slot ?? live.count,
                    alreadyRegistered: known != nil && changed == 0))
        }
        logger.info("registered", metadata: ["label": "\(label)", "cookie": "\(hexCookie(cookie))"])
        return result
    }

    /// Registers the socket behind a descriptor someone else owns (SwiftNIO, swift-system,
    /// systemd, C): as ``register(_:label:)``, with the same checks, naming the descriptor
    /// when it is not a suitable socket. The descriptor stays the caller's; the socket leaves
    /// the dispatcher when every descriptor of it is closed.
    ///
    /// ```swift
    /// // A listening socket made by other code (here with Glibc, as a C library would).
    /// let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    /// var address = sockaddr_in()
    /// address.sin_family = sa_family_t(AF_INET)
    /// address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    /// withUnsafePointer(to: &address) {
    ///     $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
    ///         _ = bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
    ///     }
    /// }
    /// listen(fd, 128)
    /// try dispatcher.register(descriptor: fd, label: "web")  // fd stays ours to serve and close
    /// ```
    /// (`DispatcherTests.aDescriptorOfOtherCodeIsRegistered` runs this.)
    @discardableResult
    public func register(descriptor: Int32, label: String) throws -> [Registration] {
        let socket: Socket
        do {
            socket = try Socket(duplicating: descriptor)
        } catch {
            throw SteeringError.unsuitableSocket("\(error.hint ?? "\(error)")")
        }
        return try register(socket, label: label)
    }

    /// Gives a socket its share of a destination's slots: every empty slot, then slots of the
    /// sockets that hold the most, until it holds 16 / n of them (n counting it). Other slots
    /// are left alone (the kernel only takes a SOCKMAP update with a descriptor, and only this
    /// socket's is at hand), so a destination with a socket is never seen empty. Returns how
    /// many slots it wrote.
    @discardableResult
    func spread(_ socket: Socket, destination: UInt32, described: Destination) throws -> Int {
        var current = try slots(destination: destination)
        let cookie = try socket.cookie()
        let others = Set(current.compactMap { $0 }).subtracting([cookie])
        let share = max(1, Layout.socketsPerDestination / (others.count + 1))
        var chosen = current.indices.filter { current[$0] == nil }
        for slot in chosen { current[slot] = cookie }
        while current.filter({ $0 == cookie }).count < share {
            var counts: [UInt64: [Int]] = [:]
            for (slot, holder) in current.enumerated() {
                if let holder, holder != cookie { counts[holder, default: []].append(slot) }
            }
            guard let (_, slotsOfLargest) = counts.max(by: { ($0.value.count, $0.key) < ($1.value.count, $1.key) }),
                let slot = slotsOfLargest.last
            else { break }
            current[slot] = cookie
            chosen.append(slot)
        }
        let map = try SocketMap(maps.sockets)
        for slot in chosen.sorted() {
            do {
                try map.set(destination * UInt32(Layout.socketsPerDestination) + UInt32(slot), socket)
            } catch {
                throw SteeringError.unsuitableSocket("the kernel refused the socket for \(described): \(error)")
            }
        }
        return chosen.count
    }

    /// Removes every socket of a destination.
    public func unregister(label: String, transport: Socket.Transport, ipv6: Bool) throws {
        try requireWritable()
        guard let labelID = try labelID(label, create: false) else {
            throw SteeringError.conflict("no label '\(label)' is known")
        }
        let destination = Layout.destination(label: labelID, transport: transport, ipv6: ipv6)
        // Only live slots: the kernel answers EINVAL to deleting an empty SOCKMAP slot.
        for (slot, cookie) in try slots(destination: destination).enumerated() where cookie != nil {
            _ = try maps.sockets.delete(Self.slotKey(destination, slot))
        }
        try collectLabels(inUse: ruleSet(copy: activeCopy()).labels)
    }

    private func namespaceCookie() throws -> UInt64? {
        try namespace.run { try Socket.bound(.udp, .loopback4, port: 0).facts().namespaceCookie }
    }
}
