import BPF

/// The ports a binding covers: one port, a range, or all ports.
public struct PortSet: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// The first port (0 for all ports).
    public let lower: UInt16
    /// The last port (65535 for all ports).
    public let upper: UInt16

    /// Every port, written `*`.
    public static let all = PortSet(uncheckedLower: 0, upper: 65535)

    init(uncheckedLower lower: UInt16, upper: UInt16) {
        self.lower = lower
        self.upper = upper
    }

    /// One port. Port 0 makes no binding: `bind` and `apply` refuse it.
    public static func single(_ port: UInt16) -> PortSet { PortSet(uncheckedLower: port, upper: port) }

    /// A range; `nil` if `lower > upper` or if it is port 0 alone (no connection has it).
    public init?(_ lower: UInt16, _ upper: UInt16) {
        guard lower <= upper, upper > 0 else { return nil }
        self.init(uncheckedLower: lower, upper: upper)
    }

    /// Parses `80`, `8000-8999` or `*`; throws a message that says what is wrong.
    public init(parsing text: String) throws(SteeringError) {
        if text == "*" {
            self = .all
            return
        }
        // One port in plain digits, the common case, without splitting.
        if !text.isEmpty, text.utf8.count <= 5,
            text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        {
            let value = text.utf8.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            guard value <= 65535 else { throw .invalidInput("port \(value) is out of range (0-65535)") }
            guard value != 0 else { throw .invalidInput("port 0 is not a port; write * for all ports") }
            self = .single(UInt16(value))
            return
        }
        func port(_ part: Substring) throws(SteeringError) -> UInt16 {
            guard !part.isEmpty, part.allSatisfy(\.isNumber), let value = Int(part) else {
                throw .invalidInput("'\(text)' is not a port: write 80, 8000-8999 or *")
            }
            guard value <= 65535 else { throw .invalidInput("port \(value) is out of range (0-65535)") }
            return UInt16(value)
        }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        switch parts.count {
        case 1:
            let value = try port(parts[0])
            guard value != 0 else { throw .invalidInput("port 0 is not a port; write * for all ports") }
            self = .single(value)
        case 2:
            let (low, high) = (try port(parts[0]), try port(parts[1]))
            guard low <= high else { throw .invalidInput("range \(text) is empty: \(low) is above \(high)") }
            guard high > 0 else { throw .invalidInput("port 0 is not a port; write * for all ports") }
            self.init(uncheckedLower: low, upper: high)
        default:
            throw .invalidInput("'\(text)' is not a port: write 80, 8000-8999 or *")
        }
    }

    /// How many ports it covers.
    public var count: Int { Int(upper) - Int(lower) + 1 }
    /// Whether it covers every port (`*`).
    public var isAll: Bool { self == .all }
    /// Whether `port` is in the set.
    public func contains(_ port: UInt16) -> Bool { lower <= port && port <= upper }
    /// Whether the two sets share at least one port.
    public func overlaps(_ other: PortSet) -> Bool { lower <= other.upper && other.lower <= upper }

    /// `80`, `8000-8999` or `*`.
    public var description: String {
        isAll ? "*" : lower == upper ? "\(lower)" : "\(lower)-\(upper)"
    }

    /// Narrower sets first; equal widths by first port.
    public static func < (a: PortSet, b: PortSet) -> Bool { (a.count, a.lower) < (b.count, b.lower) }

    /// Decodes the text form (`80`, `8000-8999` or `*`), with the same checks as ``init(parsing:)``.
    public init(from decoder: any Decoder) throws {
        self = try PortSet(parsing: decoder.singleValueContainer().decode(String.self))
    }
    /// Encodes the text form, ``description``.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// A rule: traffic of `transport` to an address in `prefix` and a port in `ports` goes to
/// the sockets registered for `label`.
///
/// Precedence, when several bindings match a connection: the longest prefix wins; at equal
/// prefix the narrower port set wins (one port, then the narrowest range, then all ports);
/// ranges of equal width are ordered by their first port. Bindings of the same protocol,
/// prefix and ports are one binding (binding it again to another label is an error).
public struct Binding: Hashable, Sendable, CustomStringConvertible, Codable {
    /// The label whose registered sockets take the matching traffic.
    public var label: String
    /// The protocol it applies to, TCP or UDP.
    public var transport: Socket.Transport
    /// The destination addresses it covers.
    public var prefix: IPPrefix
    /// The destination ports it covers.
    public var ports: PortSet
    /// What happens to matching traffic while the label has no socket.
    public var noSocket: NoSocketPolicy = .drop

    /// What a binding does with traffic while its label has no socket.
    public enum NoSocketPolicy: String, Sendable, Hashable, Codable, CaseIterable {
        /// Refuse it (as tubular does), so it cannot reach some other socket bound to the address.
        case drop
        /// Let the kernel's normal socket lookup take it.
        case pass
    }

    /// A binding from parsed parts; the label is not checked (see ``checkLabel(_:)``).
    public init(
        label: String, transport: Socket.Transport, prefix: IPPrefix, ports: PortSet, noSocket: NoSocketPolicy = .drop
    ) {
        self.label = label
        self.transport = transport
        self.prefix = prefix
        self.ports = ports
        self.noSocket = noSocket
    }

    /// Parses the command-line form: `LABEL tcp|udp PREFIX PORTS`.
    public init(label: String, protocol proto: String, prefix: String, ports: String) throws(SteeringError) {
        self = try Self.parse(label: label, protocol: proto, prefix: prefix, ports: ports).binding
    }

    /// The command-line form parsed, with the address as written (for ``hostBitsNote(_:)``).
    static func parse(
        label: String, protocol proto: String, prefix: String, ports: String
    ) throws(SteeringError) -> (binding: Binding, written: IPAddress) {
        try Self.checkLabel(label)
        let transport: Socket.Transport
        switch proto {
        case "tcp": transport = .tcp
        case "udp": transport = .udp
        default:
            guard let parsed = Socket.Transport(rawValue: proto.lowercased()) else {
                throw .invalidInput("protocol '\(proto)' is not tcp or udp")
            }
            transport = parsed
        }
        guard let (parsed, written) = IPPrefix.parse(prefix) else {
            throw .invalidInput(
                "'\(prefix)' is not an IPv4 or IPv6 address or prefix (e.g. 127.0.0.1, 10.0.0.0/8, 2001:db8::/32)")
        }
        if !parsed.address.isIPv4, parsed.length >= 96, parsed.address.unmappedIPv4 != nil {
            throw .invalidInput("'\(prefix)' is an IPv4-mapped IPv6 prefix; write the IPv4 prefix instead")
        }
        return (
            Binding(label: label, transport: transport, prefix: parsed, ports: try PortSet(parsing: ports)), written
        )
    }

    /// A note when `prefix` has host bits set, which a binding drops: `127.0.0.1/24 has host
    /// bits set; it binds 127.0.0.0/24`. `nil` for a prefix written as its network.
    public static func hostBitsNote(_ prefix: String) -> String? {
        guard let (parsed, written) = IPPrefix.parse(prefix) else { return nil }
        return hostBitsNote(prefix, parsed: parsed, written: written)
    }

    static func hostBitsNote(_ text: String, parsed: IPPrefix, written: IPAddress) -> String? {
        written == parsed.address ? nil : "\(text) has host bits set; it binds \(parsed)"
    }

    /// Parses a no-socket policy: `drop` or `pass`.
    public static func policy(_ text: String) throws(SteeringError) -> NoSocketPolicy {
        guard let policy = NoSocketPolicy(rawValue: text.lowercased()) else {
            throw .invalidInput(
                "'\(text)' is not a no-socket policy: drop (refuse, the default) or pass (normal lookup)")
        }
        return policy
    }

    /// Labels: 1 to 63 bytes of letters, digits, `-`, `_`, `.`, `:`, `/`.
    public static func checkLabel(_ label: String) throws(SteeringError) {
        guard !label.isEmpty, label.utf8.count <= 63 else {
            throw .invalidInput("label '\(label)' must be 1 to 63 bytes long")
        }
        let allowed = label.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == 0x2d || byte == 0x5f || byte == 0x2e || byte == 0x3a || byte == 0x2f
        }
        guard allowed else {
            throw .invalidInput("label '\(label)' may only contain letters, digits and - _ . : /")
        }
    }

    /// The prefix in the 128-bit space the data plane uses (IPv4 as `::ffff:a.b.c.d`).
    var mappedAddress: IPAddress { prefix.address.mappedToIPv6 }
    /// The prefix length in that 128-bit space.
    var mappedLength: Int { prefix.address.isIPv4 ? 96 + prefix.length : prefix.length }

    /// Whether this binding matches a connection.
    public func matches(_ transport: Socket.Transport, _ address: IPAddress, _ port: UInt16) -> Bool {
        guard transport == self.transport, ports.contains(port) else { return false }
        return address.mappedToIPv6.masked(to: mappedLength) == mappedAddress
    }

    /// Whether `self` takes precedence over `other` where both match.
    public func precedes(_ other: Binding) -> Bool {
        if mappedLength != other.mappedLength { return mappedLength > other.mappedLength }
        return ports < other.ports
    }

    /// The identity of a binding without its label: what `unbind` and conflicts compare.
    var rule: Rule { Rule(transport: transport, prefix: prefix, ports: ports) }

    struct Rule: Hashable {
        var transport: Socket.Transport
        var prefix: IPPrefix
        var ports: PortSet
    }

    /// `tcp 127.0.0.0/24 * → proxy`.
    public var description: String {
        "\(transport) \(prefix) \(ports) → \(label)" + (noSocket == .pass ? " (no socket: pass)" : "")
    }

    enum CodingKeys: String, CodingKey {
        case label, `protocol`, prefix, ports
        case noSocket = "no_socket"
    }

    /// Decodes `label`, `protocol`, `prefix` and `ports` strings, checked as the command-line form is.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(
            label: container.decode(String.self, forKey: .label),
            protocol: container.decode(String.self, forKey: .protocol),
            prefix: container.decode(String.self, forKey: .prefix),
            ports: container.decode(String.self, forKey: .ports))
        if let policy = try container.decodeIfPresent(String.self, forKey: .noSocket) {
            noSocket = try Self.policy(policy)
        }
    }

    /// Encodes `label`, `protocol`, `prefix` and `ports` as strings.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(label, forKey: .label)
        try container.encode(transport.rawValue, forKey: .protocol)
        try container.encode(prefix.description, forKey: .prefix)
        try container.encode(ports.description, forKey: .ports)
        if noSocket == .pass { try container.encode(noSocket.rawValue, forKey: .noSocket) }
    }
}

extension Array where Element == Binding {
    /// By protocol (tcp, then udp), then most specific first: longest prefix, narrowest ports;
    /// then by address and label.
    public func sortedByPrecedence() -> [Binding] {
        // Sort plain keys (protocol, prefix length, port count, first port, then the address as
        // two big-endian words): no reference counting in the comparisons.
        var keys: [PrecedenceKey] = []
        keys.reserveCapacity(count)
        for (index, b) in enumerated() {
            let address = b.mappedAddress
            let (high, low) = (address.high, address.low)
            let primary =
                UInt64(b.transport == .tcp ? 0 : 1) << 60 | UInt64(128 - b.mappedLength) << 48
                | UInt64(b.ports.count) << 16 | UInt64(b.ports.lower)
            keys.append(PrecedenceKey(primary: primary, high: high, low: low, index: index))
        }
        keys.sort { a, b in
            (a.primary, a.high, a.low, a.index) < (b.primary, b.high, b.low, b.index)
        }
        return keys.map { self[$0.index] }
    }

    /// The binding that wins for a connection, as the data plane decides it.
    public func winner(for transport: Socket.Transport, _ address: IPAddress, _ port: UInt16) -> Binding? {
        filter { $0.matches(transport, address, port) }.min { $0.precedes($1) }
    }
}

/// A binding's sort key for ``Swift/Array/sortedByPrecedence()``.
private struct PrecedenceKey {
    var primary: UInt64
    var high: UInt64
    var low: UInt64
    var index: Int
}

/// Errors of the dispatcher, each one line that says what to do.
public enum SteeringError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Bad input: a malformed prefix, port, label or file.
    case invalidInput(String)
    /// The dispatcher is not loaded in this namespace and bpffs.
    case notLoaded(String)
    /// A request that conflicts with the current state.
    case conflict(String)
    /// A socket that cannot be registered.
    case unsuitableSocket(String)
    /// A limit of the data plane.
    case limit(String)
    /// The kernel refused something.
    case kernel(String)

    /// The message alone, one line that says what to do.
    public var description: String {
        switch self {
        case .invalidInput(let s), .notLoaded(let s), .conflict(let s), .unsuitableSocket(let s), .limit(let s),
            .kernel(let s):
            s
        }
    }
}
