import BPF
import KernelTestSupport
import Testing

@testable import SocketSteering

/// Random rule sets that overlap a lot: few base addresses, every prefix length, single
/// ports, ranges and all ports, IPv4 and IPv6 (including `::/0`, which covers IPv4 too).
enum RandomRules {
    static let ports: [UInt16] = [0, 1, 53, 80, 443, 8080, 65535]

    static func address(ipv6: Bool, using rng: inout SeededGenerator) -> IPAddress {
        if ipv6 {
            let bases = [
                IPAddress("2001:db8::")!.bytes, IPAddress("2001:db8:ff00::")!.bytes, IPAddress("::")!.bytes,
                IPAddress("fe80::")!.bytes,
            ]
            var bytes = bases.randomElement(using: &rng)!
            for i in Int.random(in: 4...15, using: &rng)..<16 where Bool.random(using: &rng) {
                bytes[i] = UInt8.random(in: 0...255, using: &rng)
            }
            return IPAddress(bytes: bytes)!
        }
        let bases: [[UInt8]] = [[10, 0, 0, 0], [10, 1, 2, 0], [127, 0, 0, 0], [192, 0, 2, 0], [0, 0, 0, 0]]
        var bytes = bases.randomElement(using: &rng)!
        for i in Int.random(in: 1...3, using: &rng)..<4 where Bool.random(using: &rng) {
            bytes[i] = UInt8.random(in: 0...3, using: &rng)
        }
        return IPAddress(bytes: bytes)!
    }

    static func portSet(using rng: inout SeededGenerator) -> PortSet {
        switch Int.random(in: 0..<10, using: &rng) {
        case 0..<3: return .all
        case 3..<7: return .single(ports.randomElement(using: &rng)!)
        default:
            let lower = ports.randomElement(using: &rng)!
            let width = [1, 2, 30, 500].randomElement(using: &rng)!
            return PortSet(lower, UInt16(min(65535, Int(lower) + width)))!
        }
    }

    static func binding(using rng: inout SeededGenerator) -> Binding {
        let ipv6 = Int.random(in: 0..<4, using: &rng) == 0
        let address = address(ipv6: ipv6, using: &rng)
        var length = Int.random(in: 0...(ipv6 ? 128 : 32), using: &rng)
        if ipv6, length >= 96, IPPrefix(address, length: length)!.address.unmappedIPv4 != nil { length = 95 }
        let prefix = IPPrefix(address, length: length)!
        return Binding(
            label: "l\(Int.random(in: 0..<5, using: &rng))", transport: Bool.random(using: &rng) ? .tcp : .udp,
            prefix: prefix, ports: portSet(using: &rng),
            noSocket: Int.random(in: 0..<8, using: &rng) == 0 ? .pass : .drop)
    }

    /// A rule set of up to `count` bindings without conflicts.
    static func bindings(_ count: Int, using rng: inout SeededGenerator) -> [Binding] {
        var rules = RuleSet()
        var result: [Binding] = []
        for _ in 0..<count {
            let b = binding(using: &rng)
            if (try? rules.insert(b)) == true { result.append(b) }
        }
        return result
    }

    /// A connection that is likely to hit something: near the bindings' addresses and ports.
    static func probe(_ bindings: [Binding], using rng: inout SeededGenerator) -> (
        Socket.Transport, IPAddress, UInt16
    ) {
        let ipv6 = Int.random(in: 0..<3, using: &rng) == 0
        var bytes = address(ipv6: ipv6, using: &rng).bytes
        if let b = bindings.randomElement(using: &rng), b.prefix.address.isIPv4 == !ipv6, Bool.random(using: &rng) {
            bytes = b.prefix.address.bytes
            let last = bytes.count - 1
            if Bool.random(using: &rng) { bytes[last] ^= UInt8.random(in: 0...3, using: &rng) }
        }
        let port =
            Bool.random(using: &rng) ? ports.randomElement(using: &rng)! : UInt16.random(in: 0...600, using: &rng)
        return (Bool.random(using: &rng) ? .tcp : .udp, IPAddress(bytes: bytes)!, port)
    }
}

@Suite struct RuleModelTests {
    /// Thousands of seeded random rule sets: the model's lookup (the steps the program takes,
    /// over the entries the dispatcher writes) picks what the precedence oracle picks.
    @Test(arguments: 0..<40)
    func modelLookupAgreesWithPrecedence(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        for round in 0..<50 {
            let bindings = RandomRules.bindings(Int.random(in: 1...40, using: &rng), using: &rng)
            let tables = try RuleSet(bindings).tables()
            for _ in 0..<60 {
                let (transport, address, port) = RandomRules.probe(bindings, using: &rng)
                let expected = bindings.winner(for: transport, address, port)
                let found = tables.lookup(transport, address, port)
                #expect(
                    found?.label == expected?.label,
                    "seed \(seed) round \(round): \(transport) \(address):\(port) → model \(found?.label ?? "none"), oracle \(expected?.description ?? "none")"
                )
                if let expected, let found {
                    #expect(found.passWithoutSocket == (expected.noSocket == .pass))
                    #expect(Int(found.mappedLength) == expected.mappedLength)
                    #expect(found.portCount == UInt32(expected.ports.count) && found.firstPort == expected.ports.lower)
                }
            }
        }
    }

    /// Diffs are exact: applying the changes from A to B gives B's entries, whatever A and B are.
    @Test func changesTurnOneRuleSetIntoAnother() throws {
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<200 {
            let a = try RuleSet(RandomRules.bindings(30, using: &rng)).tables()
            let b = try RuleSet(RandomRules.bindings(30, using: &rng)).tables()
            var entries = a.entries
            let (upserts, deletes) = b.changes(from: a)
            for key in deletes { entries[key] = nil }
            for (key, value) in upserts { entries[key] = value }
            #expect(entries == b.entries)
        }
    }

    /// The wildcard check is set exactly where an all-ports binding of greater precedence lies
    /// inside an exact entry's prefix, so most exact hits need one trie lookup.
    @Test func wildcardChecksAreExact() throws {
        let rules = try RuleSet([
            binding("outer", "tcp", "10.0.0.0/8", "443"), binding("inner", "tcp", "10.1.0.0/16", "*"),
            binding("alone", "tcp", "192.0.2.0/24", "443"), binding("same", "tcp", "192.0.2.0/24", "*"),
        ])
        let tables = rules.tables()
        func entry(_ prefix: String) -> EntryValue? {
            let p = IPPrefix(prefix)!
            return tables.entries[
                EntryKey(
                    lane: Lane(transport: .tcp, ipv6: false), table: .exact, port: 443,
                    prefix: FamilyPrefix(p.address).truncated(to: p.length))]
        }
        #expect(entry("10.0.0.0/8")?.checkWildcard == true)
        #expect(entry("192.0.2.0/24")?.checkWildcard == false)
        #expect(tables.lookup(.tcp, IPAddress("10.1.2.3")!, 443)?.label == "inner")
        #expect(tables.lookup(.tcp, IPAddress("10.2.2.3")!, 443)?.label == "outer")
        #expect(tables.lookup(.tcp, IPAddress("192.0.2.9")!, 443)?.label == "alone")
        #expect(tables.lookup(.tcp, IPAddress("192.0.2.9")!, 80)?.label == "same")
    }

    /// `::/0` and other IPv6 prefixes around `::ffff:0:0/96` cover IPv4 traffic, below every IPv4 prefix.
    @Test func ipv6PrefixesThatCoverIPv4() throws {
        let tables = try RuleSet([
            binding("v6all", "tcp", "::/0", "*"), binding("v6port", "tcp", "::/64", "80"),
            binding("v4", "tcp", "10.0.0.0/8", "*"),
        ]).tables()
        #expect(tables.lookup(.tcp, IPAddress("192.0.2.1")!, 80)?.label == "v6port")
        #expect(tables.lookup(.tcp, IPAddress("192.0.2.1")!, 81)?.label == "v6all")
        #expect(tables.lookup(.tcp, IPAddress("10.0.0.1")!, 80)?.label == "v4")
        #expect(tables.lookup(.tcp, IPAddress("2001:db8::1")!, 80)?.label == "v6all")
        #expect(tables.lookup(.udp, IPAddress("10.0.0.1")!, 80) == nil)
    }

    @Test func conflictsAndMappedPrefixesAreRefused() {
        var rules = RuleSet()
        #expect(throws: Never.self) { try rules.insert(binding("a", "tcp", "10.0.0.0/8", "80")) }
        #expect(throws: SteeringError.self) { try rules.insert(binding("b", "tcp", "10.0.0.0/8", "80")) }
        #expect((try? rules.insert(binding("a", "tcp", "10.0.0.0/8", "80"))) == false)
        let mapped = Binding(
            label: "m", transport: .tcp, prefix: IPPrefix(IPAddress("::ffff:10.0.0.0")!, length: 104)!, ports: .all)
        #expect(throws: SteeringError.self) { try rules.insert(mapped) }
    }
}

/// The encoders of the batch path write the same bytes as the per-entry ones.
@Test func appendedEntriesEncodeAsSingleOnes() {
    var generator = SeededGenerator(seed: 7)
    for _ in 0..<2000 {
        let lane = Lane.allCases.randomElement(using: &generator)!
        let table = Table.allCases.randomElement(using: &generator)!
        let length = Int.random(in: 0...(lane.addressSize * 8), using: &generator)
        let key = EntryKey(
            lane: lane, table: table, port: UInt16.random(in: 0...65535, using: &generator),
            prefix: FamilyPrefix(high: generator.next(), low: generator.next(), length: length))
        let value = EntryValue(
            label: "x", mappedLength: UInt8.random(in: 0...128, using: &generator),
            portCount: UInt32.random(in: 1...65536, using: &generator),
            firstPort: UInt16.random(in: 0...65535, using: &generator),
            checkWildcard: Bool.random(using: &generator), passWithoutSocket: Bool.random(using: &generator))
        var keys: [UInt8] = [9]
        var values: [UInt8] = [9]
        Layout.append(key, to: &keys)
        Layout.append(value, label: 77, lane: lane, to: &values)
        #expect(Array(keys.dropFirst()) == Layout.encode(key))
        #expect(keys.count - 1 == Layout.keySize(table, lane))
        #expect(Array(values.dropFirst()) == Layout.encode(value, label: 77, lane: lane))
    }
}

/// Group pages hold exactly the records of their groups: a seeded rule set (groups of one to
/// twenty port sets) packed into 16 buckets (so most buckets take several pages) unpacks to
/// the records `GroupRecord.encode` makes, each in the bucket of its group; a second
/// encoding with fewer groups names the pages it leaves behind as stale.
@Test(arguments: [1, 2, 3] as [UInt64])
func groupPagesHoldEveryRecordOnce(seed: UInt64) throws {
    var rng = SeededGenerator(seed: seed)
    var rules = RuleSet()
    for _ in 0..<600 { _ = try? rules.insert(RandomRules.binding(using: &rng)) }
    for port in 1...20 { try rules.insert(binding("many", "tcp", "10.9.0.0/16", "\(port)")) }
    var labels: [String: UInt32] = [:]
    for (index, label) in rules.labels.sorted().enumerated() { labels[label] = UInt32(index) }
    let buckets = 16
    let encoded = GroupPages.encode(rules.groups, oldPages: [:], buckets: buckets, labels: labels, pagesPerBatch: 7)
    #expect(encoded.stale.isEmpty)
    #expect(encoded.batches.count > 1)
    var expected: [[UInt8]: [UInt8]] = [:]
    var recordsPerBucket: [UInt32: Int] = [:]
    for (key, group) in rules.groups {
        for (page, value) in GroupRecord.encode(group, labels: labels).enumerated() {
            expected[GroupRecord.key(key, page: UInt16(page))] = value
        }
        recordsPerBucket[GroupPages.bucket(key, count: buckets), default: 0] += GroupRecord.pageCount(group)
    }
    var found: [[UInt8]: [UInt8]] = [:]
    var pagesPerBucket: [UInt32: [UInt32]] = [:]
    for batch in encoded.batches {
        #expect(batch.keys.count == batch.count * GroupPages.keySize)
        #expect(batch.values.count == batch.count * GroupPages.valueSize)
        for index in 0..<batch.count {
            let key = Array(batch.keys[(index * 8)..<(index * 8 + 8)])
            let bucket = value(UInt32.self, from: key[0..<4])
            let page = value(UInt32.self, from: key[4..<8])
            pagesPerBucket[bucket, default: []].append(page)
            let bytes = Array(batch.values[(index * GroupPages.valueSize)..<((index + 1) * GroupPages.valueSize)])
            let (records, more) = try #require(GroupPages.records(bytes))
            #expect(more == (Int(page) + 1 < GroupPages.pages(records: recordsPerBucket[bucket] ?? 0)))
            for (recordKey, recordValue) in records {
                let (group, _) = try #require(GroupRecord.decodeKey(recordKey))
                #expect(GroupPages.bucket(group, count: buckets) == bucket)
                #expect(found.updateValue(recordValue, forKey: recordKey) == nil, "a record twice")
            }
        }
    }
    #expect(found == expected)
    for (bucket, pages) in pagesPerBucket {
        #expect(pages == (0..<UInt32(GroupPages.pages(records: recordsPerBucket[bucket]!))).map { $0 })
    }
    // Half the groups gone: pages beyond each bucket's new count are stale, and a bucket
    // left empty loses all of its pages.
    let kept = Dictionary(
        uniqueKeysWithValues: rules.groups.sorted { $0.key.prefix < $1.key.prefix }.prefix(100).map {
            ($0.key, $0.value)
        })
    var oldPages: [UInt32: Int] = [:]
    for (bucket, records) in recordsPerBucket { oldPages[bucket] = GroupPages.pages(records: records) }
    let smaller = GroupPages.encode(kept, oldPages: oldPages, buckets: buckets, labels: labels)
    var newRecords: [UInt32: Int] = [:]
    for (key, group) in kept {
        newRecords[GroupPages.bucket(key, count: buckets), default: 0] += GroupRecord.pageCount(group)
    }
    var stale = Set<[UInt8]>()
    for (bucket, pages) in oldPages {
        for page in GroupPages.pages(records: newRecords[bucket] ?? 0)..<pages {
            stale.insert(GroupPages.key(bucket: bucket, page: page))
        }
    }
    #expect(Set(smaller.stale) == stale)
    #expect(!stale.isEmpty)
}

/// The host filter keeps nearby addresses together: the 256 addresses of an IPv4 /24 or of
/// an IPv6 /120 on one port take 256 consecutive bits (modulo the filter), so connections to
/// one prefix read 4 or 5 words of it, not 256 random ones; another port starts elsewhere.
@Test func hostFilterBitsOfAPrefixAreConsecutive() {
    var generator = SeededGenerator(seed: 5)
    for _ in 0..<500 {
        let lane = Lane.allCases.randomElement(using: &generator)!
        let port = UInt16.random(in: 0...65535, using: &generator)
        var address = (0..<lane.addressSize).map { _ in UInt8.random(in: 0...255, using: &generator) }
        address[address.count - 1] = 0
        var bits: [UInt32] = []
        for last in 0..<256 {
            address[address.count - 1] = UInt8(last)
            bits.append(Layout.HostFilter.bit(lane: lane, port: port, address: address))
        }
        #expect(bits.allSatisfy { $0 <= Layout.HostFilter.mask })
        for (index, bit) in bits.enumerated() {
            #expect(bit == (bits[0] &+ UInt32(index)) & Layout.HostFilter.mask)
        }
        #expect(Set(bits.map { $0 >> 6 }).count <= 5)
        let otherPort = port &+ 1
        #expect(Layout.HostFilter.bit(lane: lane, port: otherPort, address: address) != bits[255])
    }
}

/// A `groups` table's bucket count follows its bindings (a power of two, at least 16, at most
/// 8 bindings a bucket until the capacity's count), and the pages of any rule set of that
/// many bindings fit the table's page limit with its header; a header page reads back as
/// the bucket count and holds no records.
@Test(arguments: [4, 5] as [UInt64])
func groupBucketsFollowTheBindings(seed: UInt64) throws {
    let capacity = 1 << 16
    #expect(GroupPages.bucketCount(bindings: 0, capacity: capacity) == 16)
    #expect(GroupPages.bucketCount(bindings: 128, capacity: capacity) == 16)
    #expect(GroupPages.bucketCount(bindings: 129, capacity: capacity) == 32)
    #expect(
        GroupPages.bucketCount(bindings: capacity, capacity: capacity) == GroupPages.bucketCount(capacity: capacity))
    for bindings in [0, 1, 7, 128, 129, 1000, 1024, 1025, 40_000, capacity] {
        let buckets = GroupPages.bucketCount(bindings: bindings, capacity: capacity)
        #expect(buckets >= 16 && buckets & (buckets - 1) == 0)
        #expect(bindings <= buckets * 8 || buckets == GroupPages.bucketCount(capacity: capacity))
        let header = GroupPages.header(buckets: buckets)
        #expect(GroupPages.buckets(header: header) == buckets)
        #expect(try #require(GroupPages.records(header)).records.isEmpty)
    }
    #expect(GroupPages.buckets(header: [UInt8](repeating: 0, count: GroupPages.valueSize)) == nil)
    var rng = SeededGenerator(seed: seed)
    for bindings in [100, 1000, 5000] {
        var rules = RuleSet()
        while rules.count < bindings { _ = try? rules.insert(RandomRules.binding(using: &rng)) }
        var labels: [String: UInt32] = [:]
        for (index, label) in rules.labels.sorted().enumerated() { labels[label] = UInt32(index) }
        let buckets = GroupPages.bucketCount(bindings: rules.count, capacity: capacity)
        let pages = GroupPages.encode(rules.groups, oldPages: [:], buckets: buckets, labels: labels).count
        #expect(pages + 1 <= GroupPages.pageLimit(buckets: buckets, capacity: capacity), "\(bindings) bindings")
        // Fuller pages than at the capacity's bucket count.
        let sparse = GroupPages.encode(
            rules.groups, oldPages: [:], buckets: GroupPages.bucketCount(capacity: capacity), labels: labels
        ).count
        #expect(pages < sparse, "\(pages) pages against \(sparse)")
    }
}
