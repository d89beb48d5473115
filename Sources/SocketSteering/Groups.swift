import BPF

/// Where a rule set's bindings come from when its entries are computed: the in-memory
/// ``RuleSet``, or a copy's `groups` table in the kernel (``KernelGroups``), so that a change
/// of a few bindings reads only the groups it touches.
protocol GroupSource {
    func group(_ key: RuleSet.GroupKey) throws -> RuleSet.Group?
    /// Whether some IPv6 binding of this protocol covers IPv4 (false lets a lookup at
    /// `0.0.0.0/0` skip asking for the 97 prefixes that could).
    func mayCoverIPv4(_ transport: Socket.Transport) -> Bool
}

extension RuleSet: GroupSource {
    func group(_ key: GroupKey) -> Group? { groups[key] }
    func mayCoverIPv4(_ transport: Socket.Transport) -> Bool { true }
}

extension GroupSource {
    /// The groups whose bindings can be candidates at `key`: its own, and at IPv4 `0.0.0.0/0`
    /// the IPv6 prefixes that cover IPv4.
    func candidateGroups(at key: EntryKey) throws -> [(RuleSet.GroupKey, RuleSet.Group)] {
        var result: [(RuleSet.GroupKey, RuleSet.Group)] = []
        let own = RuleSet.GroupKey(lane: key.lane, prefix: key.prefix)
        if let group = try group(own) { result.append((own, group)) }
        if !key.lane.ipv6 && key.prefix.length == 0 && key.table != .host && mayCoverIPv4(key.lane.transport) {
            let lane = Lane(transport: key.lane.transport, ipv6: true)
            for length in 0...96 {
                let covering = RuleSet.GroupKey(lane: lane, prefix: RuleSet.mappedBlock.truncated(to: length))
                if let group = try group(covering) { result.append((covering, group)) }
            }
        }
        return result
    }

    /// The winner at one entry key (without ``EntryValue/checkWildcard``), or nil.
    func winner(at key: EntryKey) throws -> EntryValue? {
        var best: EntryValue?
        for (groupKey, group) in try candidateGroups(at: key) {
            let length = RuleSet.mappedLength(groupKey)
            var candidates: [(String, PortSet)] = []
            if key.table == .wild {
                if let label = group.all { candidates.append((label, .all)) }
            } else {
                for (ports, label) in group.finite where ports.contains(key.port) { candidates.append((label, ports)) }
            }
            for (label, ports) in candidates {
                let candidate = EntryValue(
                    label: label, mappedLength: length, portCount: UInt32(ports.count), firstPort: ports.lower,
                    passWithoutSocket: group.passes.contains(ports))
                if let current = best, !RuleSet.precedes(candidate, current) { continue }
                best = candidate
            }
        }
        return best
    }

    /// The entry keys whose winner or wildcard check may change when `binding` comes or goes:
    /// its own keys, and for an all-ports binding the exact entries of the prefixes it lies in.
    func affectedKeys(by binding: Binding) throws -> [EntryKey] {
        var keys = RuleSet.keys(of: binding)
        guard binding.ports.isAll else { return keys }
        let own = RuleSet.groupKey(binding)
        var prefixes: [(Lane, FamilyPrefix)] = []
        for length in 0..<Int(own.prefix.length) { prefixes.append((own.lane, own.prefix.truncated(to: length))) }
        if RuleSet.coversIPv4(own) {
            prefixes.append(
                (Lane(transport: own.lane.transport, ipv6: false), FamilyPrefix(high: 0, low: 0, length: 0)))
        }
        for (lane, prefix) in prefixes {
            let probe = EntryKey(lane: lane, table: .exact, port: 0, prefix: prefix)
            for (_, group) in try candidateGroups(at: probe) {
                var ports = Set<UInt16>()
                for set in group.finite.keys { for port in set.lower...set.upper { ports.insert(port) } }
                for port in ports { keys.append(EntryKey(lane: lane, table: .exact, port: port, prefix: prefix)) }
            }
        }
        return keys
    }
}

extension RuleSet {
    /// The winner at one entry key (see ``GroupSource``).
    func winner(at key: EntryKey) -> EntryValue? {
        (try? (self as any GroupSource).winner(at: key)) ?? nil
    }
}

/// A copy's `groups` table: one record per (lane, prefix) with every port set bound there.
///
/// Key: lane index (u8; +0x80 for an overflow page), prefix length (u8), page (u16), address
/// (16 bytes, zero padded). Value (64 bytes): finite port sets in this record (u8), whether
/// the all-ports binding is set (u8), 0 (u16), the all-ports label id (u32), then 7 slots of
/// (first port u16, last port u16, label id u32); the top bit of a label id says the binding
/// passes traffic while it has no socket. Page 0 holds the first 7 port sets; pages
/// 1, 2, ... hold 7 more each.
enum GroupRecord {
    static let keySize = 20
    static let valueSize = 64
    static let slots = 7

    static func key(_ group: RuleSet.GroupKey, page: UInt16) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(keySize)
        appendKey(group, page: page, to: &bytes)
        return bytes
    }

    /// Appends the bytes of ``key(_:page:)`` (for whole rule sets: no array per record).
    static func appendKey(_ group: RuleSet.GroupKey, page: UInt16, to bytes: inout [UInt8]) {
        bytes.append(UInt8(group.lane.index) | (page == 0 ? 0 : 0x80))
        bytes.append(group.prefix.length)
        withUnsafeBytes(of: page) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: group.prefix.high.bigEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: group.prefix.low.bigEndian) { bytes.append(contentsOf: $0) }
    }

    static func decodeKey(_ bytes: [UInt8]) -> (RuleSet.GroupKey, page: UInt16)? {
        guard bytes.count == keySize else { return nil }
        let lane = Lane.allCases[Int(bytes[0] & 0x7f) % 4]
        let length = Int(bytes[1])
        guard length <= lane.addressBits else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for index in 4..<12 { high = high << 8 | UInt64(bytes[index]) }
        for index in 12..<20 { low = low << 8 | UInt64(bytes[index]) }
        let prefix = FamilyPrefix(high: high, low: low, length: length)
        return (RuleSet.GroupKey(lane: lane, prefix: prefix), value(UInt16.self, from: bytes[2..<4]))
    }

    /// The records of a group: page 0 first.
    static func encode(_ group: RuleSet.Group, labels: [String: UInt32]) -> [[UInt8]] {
        var bytes: [UInt8] = []
        let count = appendPages(group, labels: labels, to: &bytes)
        return (0..<count).map { Array(bytes[$0 * valueSize..<($0 + 1) * valueSize]) }
    }

    /// Appends the records of ``encode(_:labels:)`` back to back; returns how many.
    static func appendPages(_ group: RuleSet.Group, labels: [String: UInt32], to bytes: inout [UInt8]) -> Int {
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        // Most groups hold one port set: no sort, no array.
        let sets: [(key: PortSet, value: String)]
        if group.finite.count <= 1 {
            sets = group.finite.first.map { [$0] } ?? []
        } else {
            sets = group.finite.sorted { $0.key < $1.key }
        }
        var pages = 0
        var index = 0
        repeat {
            let end = min(sets.count, index + slots)
            let base = bytes.count
            bytes.append(UInt8(end - index))
            bytes.append(group.all == nil ? 0 : 1)
            put(UInt16(0))
            put(group.all.map { labels[$0]! | passBit(group, .all) } ?? 0)
            for slot in index..<end {
                let (ports, label) = sets[slot]
                put(ports.lower)
                put(ports.upper)
                put(labels[label]! | passBit(group, ports))
            }
            bytes.append(contentsOf: repeatElement(0, count: valueSize - (bytes.count - base)))
            pages += 1
            index += slots
        } while index < sets.count
        return pages
    }

    /// The top bit of a label id field: the binding passes traffic while it has no socket.
    static let passFlag: UInt32 = 1 << 31

    static func passBit(_ group: RuleSet.Group, _ ports: PortSet) -> UInt32 {
        group.passes.contains(ports) ? passFlag : 0
    }

    /// One record's port sets, each with its label and policy: the all-ports binding (if the
    /// record carries one) first. Nil if the record cannot be read.
    static func portSets(_ bytes: [UInt8], labels: [UInt32: String]) -> [(
        ports: PortSet, label: String, policy: Binding.NoSocketPolicy
    )]? {
        guard bytes.count == valueSize, Int(bytes[0]) <= slots else { return nil }
        var result: [(ports: PortSet, label: String, policy: Binding.NoSocketPolicy)] = []
        func add(_ field: UInt32, _ ports: PortSet) -> Bool {
            guard let label = labels[field & ~passFlag] else { return false }
            result.append((ports, label, field & passFlag != 0 ? .pass : .drop))
            return true
        }
        if bytes[1] != 0, !add(value(UInt32.self, from: bytes[4..<8]), .all) { return nil }
        for slot in 0..<Int(bytes[0]) {
            let start = 8 + 8 * slot
            guard
                let ports = PortSet(
                    value(UInt16.self, from: bytes[start..<start + 2]),
                    value(UInt16.self, from: bytes[start + 2..<start + 4])),
                add(value(UInt32.self, from: bytes[start + 4..<start + 8]), ports)
            else { return nil }
        }
        return result
    }

    /// Appends one record's bindings to `bindings`, without building groups (the listing's
    /// path: no dictionary per group). False if the record cannot be read.
    static func appendBindings(
        _ bytes: [UInt8], of key: RuleSet.GroupKey, page: UInt16, prefix: IPPrefix, labels: [UInt32: String],
        to bindings: inout [Binding]
    ) -> Bool {
        guard let slots = portSets(bytes, labels: labels) else { return false }
        // Every page repeats the all-ports label; it is one binding.
        for slot in slots where page == 0 || !slot.ports.isAll {
            bindings.append(
                Binding(
                    label: slot.label, transport: key.lane.transport, prefix: prefix, ports: slot.ports,
                    noSocket: slot.policy))
        }
        return true
    }

    /// Adds one record's port sets to a group.
    static func decode(_ bytes: [UInt8], into group: inout RuleSet.Group, labels: [UInt32: String]) -> Bool {
        guard let slots = portSets(bytes, labels: labels) else { return false }
        for slot in slots {
            if slot.ports.isAll { group.all = slot.label } else { group.finite[slot.ports] = slot.label }
            if slot.policy == .pass { group.passes.insert(slot.ports) }
        }
        return true
    }
}

/// The groups of one copy, read from the kernel on demand (and cached for one change).
final class KernelGroups: GroupSource {
    let map: Map
    let labels: [UInt32: String]
    /// By protocol: whether IPv6 bindings that cover IPv4 exist (from the census).
    var covering: [Socket.Transport: Bool] = [.tcp: true, .udp: true]
    private var cache: [RuleSet.GroupKey: RuleSet.Group?] = [:]

    init(map: Map, labels: [UInt32: String]) {
        self.map = map
        self.labels = labels
    }

    func mayCoverIPv4(_ transport: Socket.Transport) -> Bool { covering[transport] ?? true }

    func group(_ key: RuleSet.GroupKey) throws -> RuleSet.Group? {
        if let cached = cache[key] { return cached }
        var group = RuleSet.Group()
        var page: UInt16 = 0
        var found = false
        while let bytes = try map.lookup(GroupRecord.key(key, page: page)) {
            found = true
            guard GroupRecord.decode(bytes, into: &group, labels: labels) else {
                throw SteeringError.kernel("the groups table has an unreadable record; run sksteer apply")
            }
            guard Int(bytes[0]) == GroupRecord.slots else { break }
            page += 1
        }
        let result = found && !group.isEmpty ? group : nil
        cache[key] = .some(result)
        return result
    }

    /// Replaces a group's records (or removes them when it is empty or nil).
    func write(_ key: RuleSet.GroupKey, _ group: RuleSet.Group?, labelIDs: [String: UInt32]) throws {
        let oldPages = try self.group(key).map { GroupRecord.encode($0, labels: labelIDs).count } ?? 0
        let pages = group.flatMap { $0.isEmpty ? nil : GroupRecord.encode($0, labels: labelIDs) } ?? []
        for (index, page) in pages.enumerated() { try map.update(GroupRecord.key(key, page: UInt16(index)), page) }
        if pages.count < oldPages {
            for index in pages.count..<oldPages { _ = try map.delete(GroupRecord.key(key, page: UInt16(index))) }
        }
        cache[key] = .some(group.flatMap { $0.isEmpty ? nil : $0 })
    }

}
