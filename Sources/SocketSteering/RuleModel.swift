import BPF

/// One of the four table groups of a rule set: a protocol and an address family.
///
/// Every lookup stays inside one lane: a TCP connection to an IPv4 address only ever reads
/// the TCP/IPv4 maps, whose keys hold 4-byte addresses.
public struct Lane: Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// TCP or UDP.
    public var transport: Socket.Transport
    /// IPv6 (else IPv4).
    public var ipv6: Bool

    /// Every lane, in index order.
    public static let allCases: [Lane] = [
        Lane(transport: .tcp, ipv6: false), Lane(transport: .tcp, ipv6: true),
        Lane(transport: .udp, ipv6: false), Lane(transport: .udp, ipv6: true),
    ]

    /// `(UDP ? 2 : 0) + (IPv6 ? 1 : 0)`: the low bits of a destination number.
    public var index: Int { (transport == .udp ? 2 : 0) + (ipv6 ? 1 : 0) }

    /// Address bits of the family: 32 or 128.
    public var addressBits: Int { ipv6 ? 128 : 32 }
    /// Address bytes of the family: 4 or 16.
    public var addressSize: Int { ipv6 ? 16 : 4 }

    /// `tcp4`, `udp6`, ...
    public var description: String { "\(transport)\(ipv6 ? 6 : 4)" }
}

/// A prefix inside one address family, its bits left-aligned in 128 (bits past the length zero).
struct FamilyPrefix: Hashable, Sendable, Comparable {
    var high: UInt64
    var low: UInt64
    var length: UInt8

    init(high: UInt64, low: UInt64, length: Int) {
        self.length = UInt8(length)
        let (maskHigh, maskLow) = Self.mask(length)
        self.high = high & maskHigh
        self.low = low & maskLow
    }

    /// The address as a full-length prefix (IPv4 in the first 32 bits).
    init(_ address: IPAddress) {
        if address.isIPv4 {
            self.init(high: address.low << 32, low: 0, length: 32)
        } else {
            self.init(high: address.high, low: address.low, length: 128)
        }
    }

    /// The prefix's address in `lane`'s family.
    func address(ipv6: Bool) -> IPAddress {
        ipv6 ? IPAddress(ipv6High: high, low: low) : IPAddress(ipv4: UInt32(truncatingIfNeeded: high >> 32))
    }

    static func mask(_ length: Int) -> (UInt64, UInt64) {
        let high: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~0 << UInt64(64 - length))
        let low: UInt64 = length >= 128 ? ~0 : (length <= 64 ? 0 : ~0 << UInt64(128 - length))
        return (high, low)
    }

    /// The first `length` bits of this prefix.
    func truncated(to length: Int) -> FamilyPrefix {
        FamilyPrefix(high: high, low: low, length: min(length, Int(self.length)))
    }

    /// Whether `other` lies inside this prefix (or is it).
    func contains(_ other: FamilyPrefix) -> Bool {
        other.length >= length && other.truncated(to: Int(length)) == self
    }

    /// The address bytes of the family (4 or 16), network order.
    func bytes(count: Int) -> [UInt8] {
        (0..<count).map { i -> UInt8 in
            let word = i < 8 ? high : low
            let shift = UInt64(56 - 8 * (i % 8))
            return UInt8(truncatingIfNeeded: word >> shift)
        }
    }

    static func < (a: FamilyPrefix, b: FamilyPrefix) -> Bool { (a.high, a.low, a.length) < (b.high, b.low, b.length) }
}

/// The three tables of a lane. `host`: a full address and one port (hash, exact match);
/// `exact`: a prefix and one port (LPM trie keyed port first, so a lookup stays inside the
/// port's part of the trie); `wild`: a prefix on all ports (LPM trie keyed by address).
enum Table: UInt8, Hashable, Sendable, CaseIterable {
    case host, exact, wild
}

/// Where an entry lives: a lane's table, the port (0 in `wild`) and the family prefix.
struct EntryKey: Hashable, Sendable {
    var lane: Lane
    var table: Table
    var port: UInt16
    var prefix: FamilyPrefix
}

/// What an entry says: the winning binding's label, its precedence and, for `exact`
/// entries, whether an all-ports binding of greater precedence may lie inside the prefix
/// (so the lookup must also ask `wild`).
struct EntryValue: Hashable, Sendable {
    var label: String
    /// The winner's prefix length in the 128-bit space (IPv4 as `::ffff:0:0/96` + its length).
    var mappedLength: UInt8
    /// How many ports the winner covers (65536 for all ports).
    var portCount: UInt32
    /// The winner's first port.
    var firstPort: UInt16
    /// `exact` only: a `wild` entry of greater precedence may match inside this prefix.
    var checkWildcard: Bool = false
    /// The winner lets traffic pass while its label has no socket (``Binding/NoSocketPolicy/pass``).
    var passWithoutSocket: Bool = false
}

/// A rule set: bindings, grouped by the prefix they are bound to, with the entries the data
/// plane needs computed from them. Pure: no kernel. The dispatcher writes the entries into
/// maps (``Schema``); the generated program (``DataPlane``) performs the same steps as
/// ``lookup(_:_:_:)``.
///
/// Precedence is ``Binding/precedes(_:)``: the longest prefix in the 128-bit space wins,
/// then the narrower port set. IPv6 prefixes of up to 96 bits that contain `::ffff:0:0/96`
/// also cover IPv4 traffic (as in tubular); they appear in the IPv4 tables at `0.0.0.0/0`.
struct RuleSet: Sendable {
    struct GroupKey: Hashable, Sendable {
        var lane: Lane
        var prefix: FamilyPrefix
    }

    /// The bindings of one (protocol, family, prefix).
    struct Group: Sendable, Equatable {
        /// Finite port sets (one port or a range) → label.
        var finite: [PortSet: String] = [:]
        /// The all-ports binding's label.
        var all: String?
        /// The port sets (``PortSet/all`` for the all-ports binding) whose binding lets
        /// traffic pass while its label has no socket.
        var passes: Set<PortSet> = []
        var isEmpty: Bool { finite.isEmpty && all == nil }
    }

    private(set) var groups: [GroupKey: Group] = [:]
    private(set) var count = 0

    init() {}

    init(groups: [GroupKey: Group]) {
        self.groups = groups.filter { !$0.value.isEmpty }
        count = self.groups.values.reduce(0) { $0 + $1.finite.count + ($1.all == nil ? 0 : 1) }
    }

    /// Builds a rule set; conflicting bindings (same rule, other label) throw.
    init(_ bindings: [Binding]) throws(SteeringError) {
        groups.reserveCapacity(bindings.count)
        for binding in bindings { try insert(binding) }
    }

    static func groupKey(_ binding: Binding) -> GroupKey {
        let lane = Lane(transport: binding.transport, ipv6: !binding.prefix.address.isIPv4)
        return GroupKey(
            lane: lane, prefix: FamilyPrefix(binding.prefix.address).truncated(to: binding.prefix.length)
        )
    }

    /// Adds a binding. Returns false if it was there already (with the same label).
    @discardableResult
    mutating func insert(_ binding: Binding) throws(SteeringError) -> Bool {
        try Self.check(binding)
        let key = Self.groupKey(binding)
        // Changed in place (one lookup, no copy of the group's tables).
        var existing: String?
        do {
            let group = groups[key, default: Group()]
            existing = binding.ports.isAll ? group.all : group.finite[binding.ports]
        }
        if let existing {
            if existing == binding.label { return false }
            throw .conflict(
                "\(binding.transport) \(binding.prefix) \(binding.ports) is already bound to '\(existing)'; unbind it first"
            )
        }
        Self.add(binding, to: &groups[key, default: Group()])
        count += 1
        return true
    }

    private static func add(_ binding: Binding, to group: inout Group) {
        if binding.ports.isAll { group.all = binding.label } else { group.finite[binding.ports] = binding.label }
        if binding.noSocket == .pass { group.passes.insert(binding.ports) }
    }

    /// Removes a binding; returns the label it had, or nil if it was not there.
    @discardableResult
    mutating func remove(_ binding: Binding) -> String? {
        let key = Self.groupKey(binding)
        guard var group = groups[key] else { return nil }
        let removed: String?
        if binding.ports.isAll {
            removed = group.all
            group.all = nil
        } else {
            removed = group.finite.removeValue(forKey: binding.ports)
        }
        guard removed != nil else { return nil }
        group.passes.remove(binding.ports)
        groups[key] = group.isEmpty ? nil : group
        count -= 1
        return removed
    }

    /// The label bound to exactly this rule (protocol, prefix, ports), if any.
    func label(of binding: Binding) -> String? {
        guard let group = groups[Self.groupKey(binding)] else { return nil }
        return binding.ports.isAll ? group.all : group.finite[binding.ports]
    }

    /// The binding of exactly this rule, with its label and policy, if any.
    func stored(_ binding: Binding) -> Binding? {
        let key = Self.groupKey(binding)
        guard let group = groups[key], let label = label(of: binding) else { return nil }
        var result = binding
        result.label = label
        result.noSocket = group.passes.contains(binding.ports) ? .pass : .drop
        return result
    }

    /// The labels the bindings use.
    var labels: Set<String> {
        var result = Set<String>()
        for group in groups.values {
            for label in group.finite.values { result.insert(label) }
            if let label = group.all { result.insert(label) }
        }
        return result
    }

    /// Every binding, unordered.
    var bindings: [Binding] {
        var result: [Binding] = []
        result.reserveCapacity(count)
        for (key, group) in groups {
            let prefix = key.binding(label: "", ports: .all).prefix
            for (ports, label) in group.finite {
                result.append(
                    Binding(
                        label: label, transport: key.lane.transport, prefix: prefix, ports: ports,
                        noSocket: group.passes.contains(ports) ? .pass : .drop))
            }
            if let label = group.all {
                result.append(
                    Binding(
                        label: label, transport: key.lane.transport, prefix: prefix, ports: .all,
                        noSocket: group.passes.contains(.all) ? .pass : .drop))
            }
        }
        return result
    }

    /// Inputs no table can hold.
    static func check(_ binding: Binding) throws(SteeringError) {
        if binding.ports == .single(0) {
            throw .invalidInput("port 0 is not a port; write * for all ports")
        }
        let address = binding.prefix.address
        if !address.isIPv4, binding.prefix.length >= 96, address.unmappedIPv4 != nil {
            throw .invalidInput("'\(binding.prefix)' is an IPv4-mapped IPv6 prefix; write the IPv4 prefix instead")
        }
    }

    // MARK: Entries

    /// `::ffff:0:0` as a 128-bit family prefix.
    static let mappedBlock = FamilyPrefix(high: 0, low: 0xffff_0000_0000, length: 96)

    /// Whether an IPv6 prefix covers IPv4 traffic.
    static func coversIPv4(_ key: GroupKey) -> Bool {
        key.lane.ipv6 && key.prefix.length <= 96 && key.prefix.contains(mappedBlock)
    }

    /// The mapped (128-bit) length of a group's prefix: its precedence.
    static func mappedLength(_ key: GroupKey) -> UInt8 {
        key.lane.ipv6 ? key.prefix.length : 96 + key.prefix.length
    }

    /// The entry keys a binding contributes to.
    static func keys(of binding: Binding) -> [EntryKey] {
        let group = groupKey(binding)
        var result: [EntryKey] = []
        func add(_ lane: Lane, _ prefix: FamilyPrefix) {
            if binding.ports.isAll {
                result.append(EntryKey(lane: lane, table: .wild, port: 0, prefix: prefix))
            } else {
                let table: Table = Int(prefix.length) == lane.addressBits ? .host : .exact
                result.reserveCapacity(result.count + binding.ports.count)
                for port in binding.ports.lower...binding.ports.upper {
                    result.append(EntryKey(lane: lane, table: table, port: port, prefix: prefix))
                }
            }
        }
        add(group.lane, group.prefix)
        if coversIPv4(group) {
            add(Lane(transport: group.lane.transport, ipv6: false), FamilyPrefix(high: 0, low: 0, length: 0))
        }
        return result
    }

    /// Precedence between entry values: longer mapped prefix, then fewer ports, then lower first port.
    static func precedes(_ a: EntryValue, _ b: EntryValue) -> Bool {
        if a.mappedLength != b.mappedLength { return a.mappedLength > b.mappedLength }
        return (a.portCount, a.firstPort) < (b.portCount, b.firstPort)
    }

    /// Every entry of the rule set.
    func tables() -> RuleTables {
        var entries: [EntryKey: EntryValue] = [:]
        entries.reserveCapacity(count)
        for (groupKey, group) in groups {
            // The group's own prefix, and IPv4 0.0.0.0/0 for an IPv6 prefix that covers IPv4
            // (no array per group: a million groups would allocate a million).
            let covers = Self.coversIPv4(groupKey)
            for pass in 0..<(covers ? 2 : 1) {
                let (lane, prefix) =
                    pass == 1
                    ? (Lane(transport: groupKey.lane.transport, ipv6: false), FamilyPrefix(high: 0, low: 0, length: 0))
                    : (groupKey.lane, groupKey.prefix)
                let table: Table = Int(prefix.length) == lane.addressBits ? .host : .exact
                // At IPv4 0.0.0.0/0 the IPv6 groups that cover IPv4 compete too: ask them all.
                if !lane.ipv6 && prefix.length == 0 {
                    if group.all != nil {
                        let key = EntryKey(lane: lane, table: .wild, port: 0, prefix: prefix)
                        if entries[key] == nil, let value = winner(at: key) { entries[key] = value }
                    }
                    var ports = Set<UInt16>()
                    for set in group.finite.keys { for port in set.lower...set.upper { ports.insert(port) } }
                    for port in ports {
                        let key = EntryKey(lane: lane, table: table, port: port, prefix: prefix)
                        if entries[key] == nil, let value = winner(at: key) { entries[key] = value }
                    }
                    continue
                }
                // Elsewhere the keys at this prefix are this group's alone: its all-ports
                // binding, and for each port the narrowest set that has it (fewer ports, then
                // the lower first port), as winner(at:) would decide.
                let length = Self.mappedLength(groupKey)
                if let label = group.all {
                    entries[EntryKey(lane: lane, table: .wild, port: 0, prefix: prefix)] = EntryValue(
                        label: label, mappedLength: length, portCount: UInt32(PortSet.all.count),
                        firstPort: PortSet.all.lower, passWithoutSocket: group.passes.contains(.all))
                }
                if group.finite.count == 1, let (ports, label) = group.finite.first {
                    let value = EntryValue(
                        label: label, mappedLength: length, portCount: UInt32(ports.count), firstPort: ports.lower,
                        passWithoutSocket: !group.passes.isEmpty && group.passes.contains(ports))
                    for port in ports.lower...ports.upper {
                        entries[EntryKey(lane: lane, table: table, port: port, prefix: prefix)] = value
                    }
                    continue
                }
                let sets = group.finite.sorted { ($0.key.count, $0.key.lower) < ($1.key.count, $1.key.lower) }
                var taken = Set<UInt16>()
                for (ports, label) in sets {
                    let value = EntryValue(
                        label: label, mappedLength: length, portCount: UInt32(ports.count), firstPort: ports.lower,
                        passWithoutSocket: group.passes.contains(ports))
                    for port in ports.lower...ports.upper {
                        if sets.count > 1, !taken.insert(port).inserted { continue }
                        entries[EntryKey(lane: lane, table: table, port: port, prefix: prefix)] = value
                    }
                }
            }
        }
        var tables = RuleTables(entries: entries)
        tables.markWildcardChecks()
        return tables
    }
}

extension RuleSet.GroupKey {
    /// A binding at this group's prefix.
    func binding(label: String, ports: PortSet) -> Binding {
        Binding(
            label: label, transport: lane.transport,
            prefix: IPPrefix(prefix.address(ipv6: lane.ipv6), length: Int(prefix.length))!, ports: ports)
    }
}

/// The entries of a rule set, by key, and the port flags derived from them.
struct RuleTables: Sendable, Equatable {
    private(set) var entries: [EntryKey: EntryValue]
    /// ``portFlags()``, computed once.
    private let flags: [Lane: [UInt16: UInt8]]

    init(entries: [EntryKey: EntryValue]) {
        self.entries = entries
        var flags: [Lane: [UInt16: UInt8]] = [:]
        for key in entries.keys where key.table != .wild {
            flags[key.lane, default: [:]][key.port, default: 0] |= key.table == .host ? 1 : 2
        }
        self.flags = flags
    }

    /// Sets ``EntryValue/checkWildcard`` on every `exact` entry that an all-ports binding of
    /// greater precedence lies inside (a prefix inside it, or the same prefix with a longer
    /// mapped length).
    mutating func markWildcardChecks() {
        var wild: [Lane: [(FamilyPrefix, UInt8)]] = [:]
        for (key, value) in entries where key.table == .wild {
            wild[key.lane, default: []].append((key.prefix, value.mappedLength))
        }
        for lane in wild.keys { wild[lane]!.sort { $0.0 < $1.0 } }
        // Collected first, changed after: changing `entries` while iterating it would copy
        // the whole dictionary (a million entries) on the first change.
        var flips: [EntryKey] = []
        for (key, value) in entries where key.table == .exact {
            guard let list = wild[key.lane] else { continue }
            let flag = Self.hasStronger(in: list, inside: key.prefix, than: value.mappedLength)
            if flag != value.checkWildcard { flips.append(key) }
        }
        for key in flips { entries[key]!.checkWildcard.toggle() }
    }

    /// Whether a sorted list of (prefix, mapped length) has one inside `prefix` with a longer mapped length.
    static func hasStronger(in list: [(FamilyPrefix, UInt8)], inside prefix: FamilyPrefix, than length: UInt8) -> Bool {
        // Sorted by (bits, length): the prefixes inside `prefix` start at its first entry at
        // or after `prefix` and run while they are inside it.
        var low = 0
        var high = list.count
        while low < high {
            let middle = (low + high) / 2
            if list[middle].0 < prefix { low = middle + 1 } else { high = middle }
        }
        var index = low
        while index < list.count, prefix.contains(list[index].0) {
            if list[index].1 > length { return true }
            index += 1
        }
        return false
    }

    /// Bit 0: the port has `host` entries; bit 1: `exact` entries.
    func portFlags() -> [Lane: [UInt16: UInt8]] { flags }

    /// What a lookup finds, performing the steps of the generated program.
    func lookup(_ transport: Socket.Transport, _ address: IPAddress, _ port: UInt16) -> EntryValue? {
        let lane = Lane(transport: transport, ipv6: !address.isIPv4)
        let full = FamilyPrefix(address)
        let flags = self.flags[lane]?[port] ?? 0
        if flags & 1 != 0, let hit = entries[EntryKey(lane: lane, table: .host, port: port, prefix: full)] {
            return hit
        }
        var exact: EntryValue?
        if flags & 2 != 0 {
            exact = longestMatch(lane, .exact, port, full)
            if let hit = exact, !hit.checkWildcard { return hit }
        }
        let wild = longestMatch(lane, .wild, 0, full)
        if let exact, let wild { return wild.mappedLength > exact.mappedLength ? wild : exact }
        return exact ?? wild
    }

    /// The entry of the longest prefix of `address` in one table (what an LPM trie returns).
    func longestMatch(_ lane: Lane, _ table: Table, _ port: UInt16, _ address: FamilyPrefix) -> EntryValue? {
        for length in stride(from: lane.addressBits, through: 0, by: -1) {
            if let hit = entries[EntryKey(lane: lane, table: table, port: port, prefix: address.truncated(to: length))]
            {
                return hit
            }
        }
        return nil
    }

    /// What to write to turn `old` into `self`: entries to add or change, keys to delete.
    func changes(from old: RuleTables) -> (upserts: [(EntryKey, EntryValue)], deletes: [EntryKey]) {
        var upserts: [(EntryKey, EntryValue)] = []
        var deletes: [EntryKey] = []
        for (key, value) in entries where old.entries[key] != value { upserts.append((key, value)) }
        for key in old.entries.keys where entries[key] == nil { deletes.append(key) }
        return (upserts, deletes)
    }
}
