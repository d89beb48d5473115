import BPF

#if canImport(Glibc)
    import Glibc
#endif

extension Dispatcher {
    /// Registers the socket of process `pid` that serves `transport` on `address:port`: a
    /// listening TCP or unconnected UDP socket of this namespace bound exactly there. For an SO_REUSEPORT group
    /// the first socket is registered; the kernel spreads connections over the group.
    @discardableResult
    public func register(
        fromProcess pid: Int32, label: String, transport: Socket.Transport, address: IPAddress, port: UInt16
    ) throws -> [Registration] {
        try requireWritable()
        var seen: [String] = []
        // A process can hold sockets of several namespaces bound to the same address: only
        // this namespace's are candidates.
        let ours = try namespace.run { try Socket.bound(.udp, .loopback4, port: 0).facts().namespaceCookie }
        for (number, descriptor) in try descriptors(ofProcess: pid) {
            guard let facts = try? Socket.facts(of: descriptor), let kind = facts.transport else { continue }
            let local = facts.local.map { "\($0)" } ?? "?"
            seen.append("fd \(number): \(kind) \(local)\(facts.listening ? " listening" : "")")
            guard kind == transport, let endpoint = facts.local, endpoint.port == port,
                endpoint.address == address || endpoint.address.mappedToIPv6 == address.mappedToIPv6
            else { continue }
            if transport == .tcp && !facts.listening { continue }
            if transport == .udp && facts.connected { continue }
            if let ours, let theirs = facts.namespaceCookie, theirs != ours { continue }
            let socket = Socket(adopting: descriptor, transport: kind, family: facts.family)
            return try register(socket, label: label)
        }
        throw SteeringError.unsuitableSocket(
            "process \(pid) has no \(transport == .tcp ? "listening TCP" : "unconnected UDP") socket bound to"
                + " \(Endpoint(address, port))"
                + (seen.isEmpty ? " (it has no sockets)" : "; it has: " + seen.joined(separator: ", ")))
    }

    /// Registers the sockets systemd passed by socket activation (`LISTEN_FDS`, from fd 3;
    /// `LISTEN_PID`, when set, must be this process or its parent, so that a socket-activated
    /// service can run `sksteer register` as a child; `LISTEN_FDNAMES` names them).
    ///
    /// - Parameters:
    ///   - label: the label to register the sockets for.
    ///   - name: register only the descriptors with this `LISTEN_FDNAMES` name.
    ///   - environment: the process environment (`ProcessInfo.processInfo.environment`).
    ///   - firstDescriptor: where the passed descriptors start (`SD_LISTEN_FDS_START`, 3).
    @discardableResult
    public func registerActivatedSockets(
        label: String, name: String? = nil, environment: [String: String], firstDescriptor: Int32 = 3
    ) throws -> [Registration] {
        try requireWritable()
        guard let countText = environment["LISTEN_FDS"] else {
            throw SteeringError.invalidInput(
                "LISTEN_FDS is not set: run this from a systemd unit with sockets (socket activation),"
                    + " or name the descriptors with --fd")
        }
        guard let count = Int32(countText), count > 0 else {
            throw SteeringError.invalidInput("LISTEN_FDS is '\(countText)', not a positive number of descriptors")
        }
        // The sockets are this process's, or its parent's when a socket-activated service runs
        // `sksteer register` as a child (which inherits them).
        if let pid = environment["LISTEN_PID"], Int32(pid) != getpid(), Int32(pid) != getppid() {
            throw SteeringError.invalidInput(
                "LISTEN_PID is \(pid), neither this process (\(getpid())) nor its parent (\(getppid())):"
                    + " the sockets are not meant for it")
        }
        let names =
            environment["LISTEN_FDNAMES"]?.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            ?? []
        var result: [Registration] = []
        for index in 0..<count {
            let fdName = index < names.count ? names[Int(index)] : "unknown"
            if let name, fdName != name { continue }
            // Borrow the descriptor: it stays open for the service.
            let number = firstDescriptor + index
            let copy = dup(number)
            guard copy >= 0 else {
                throw SteeringError.invalidInput("descriptor \(number) from LISTEN_FDS is not open")
            }
            let descriptor = OwnedFileDescriptor(adopting: copy)
            let facts: SocketFacts
            do {
                facts = try Socket.facts(of: descriptor)
            } catch {
                throw SteeringError.unsuitableSocket("descriptor \(number) (\(fdName)) is not a socket")
            }
            guard let transport = facts.transport else {
                throw SteeringError.unsuitableSocket("descriptor \(number) (\(fdName)) is not a TCP or UDP socket")
            }
            result += try register(
                Socket(adopting: descriptor, transport: transport, family: facts.family), label: label)
        }
        if result.isEmpty, let name {
            throw SteeringError.invalidInput(
                "no descriptor is named '\(name)' in LISTEN_FDNAMES (\(names.joined(separator: ":")))")
        }
        return result
    }
}
