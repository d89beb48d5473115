import BPF
import Dispatch
import Synchronization

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
        let allField = group.all.map { labels[$0]! | passBit(group, .all) } ?? 0
        // Each record is zeroed, then its fields are stored in place.
        func page(_ sets: some Collection<(key: PortSet, value: String)>) {
            let base = bytes.count
            bytes.append(contentsOf: repeatElement(0, count: valueSize))
            bytes.withUnsafeMutableBytes { record in
                record[base] = UInt8(sets.count)
                record[base + 1] = group.all == nil ? 0 : 1
                record.storeBytes(of: allField.littleEndian, toByteOffset: base + 4, as: UInt32.self)
                var offset = base + 8
                for (ports, label) in sets {
                    record.storeBytes(of: ports.lower.littleEndian, toByteOffset: offset, as: UInt16.self)
                    record.storeBytes(of: ports.upper.littleEndian, toByteOffset: offset + 2, as: UInt16.self)
                    let field = labels[label]! | passBit(group, ports)
                    record.storeBytes(of: field.littleEndian, toByteOffset: offset + 4, as: UInt32.self)
                    offset += 8
                }
            }
        }
        // Most groups hold one port set: no sort, no array.
        if group.finite.count <= 1 {
            page(group.finite)
            return 1
        }
        let sets = group.finite.sorted { $0.key < $1.key }
        var pages = 0
        var index = 0
        repeat {
            page(sets[index..<min(sets.count, index + slots)])
            pages += 1
            index += slots
        } while index < sets.count
        return pages
    }

    /// How many records a group takes.
    static func pageCount(_ group: RuleSet.Group) -> Int { max(1, (group.finite.count + slots - 1) / slots) }

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

/// A copy's `groups` table as the kernel holds it: the ``GroupRecord``s packed into pages
/// of a hash by bucket, so that a million groups take a tenth as many map elements (each
/// element costs the kernel an allocation and a hash insert, which made the records most of
/// an apply's kernel time).
///
/// A group's bucket is a fixed hash of its (lane, prefix), modulo ``bucketCount(capacity:)``;
/// all of a group's records are in its bucket. Key (8 bytes): bucket (u32), page (u32).
/// Value: records in this page (u8), whether page + 1 exists (u8), 0 (u16), then
/// ``recordsPerPage`` slots of a record's key (20 bytes) and value (64 bytes). A bucket's
/// records are packed densely from page 0, so a bucket of n records has ⌈n / 11⌉ pages.
enum GroupPages {
    static let keySize = 8
    static let recordsPerPage = 11
    static let recordSize = GroupRecord.keySize + GroupRecord.valueSize
    static let valueSize = 4 + recordsPerPage * recordSize

    /// The most buckets of a dispatcher that holds `capacity` bindings: a power of two, about
    /// one per 16 bindings. A table without a ``headerKey`` page (state written before the
    /// header existed) has this many.
    static func bucketCount(capacity: Int) -> Int {
        var count = 16
        while count * 16 < capacity { count *= 2 }
        return count
    }

    /// Buckets for a table of `bindings` bindings: a power of two with at most 8 bindings
    /// (so at most 8 records) a bucket on average, at least 16, at most
    /// ``bucketCount(capacity:)``. Fewer buckets, fuller pages: a page is a map element of
    /// ``valueSize`` bytes whether it holds one record or eleven.
    static func bucketCount(bindings: Int, capacity: Int) -> Int {
        var count = 16
        while count * 8 < bindings { count *= 2 }
        return min(count, bucketCount(capacity: capacity))
    }

    /// Pages a table of `buckets` buckets may need: every bucket, the records beyond (a group
    /// of n port sets has ⌈n / 7⌉ records, so there are no more records than bindings), and
    /// the header. Its bindings are at most 8 a bucket (a change that would pass that
    /// regroups the table first) and at most `capacity`.
    static func pageLimit(buckets: Int, capacity: Int) -> Int {
        buckets + min(buckets * 8, capacity) / recordsPerPage + 2
    }

    /// The key of the header page: bucket `0xFFFF_FFFF` (no bucket: buckets are fewer than
    /// 2^31), page 0. Its value holds no records (byte 0 is 0, so a reader of every page sees
    /// none in it) and the table's bucket count as a u32 at byte 4.
    static let headerKey = key(bucket: UInt32.max, page: 0)

    /// The header page of a table of `buckets` buckets.
    static func header(buckets: Int) -> [UInt8] {
        var value = [UInt8](repeating: 0, count: valueSize)
        value.replaceSubrange(4..<8, with: rawBytes(of: UInt32(buckets)))
        return value
    }

    /// The bucket count a header page gives, or nil if it is not one.
    static func buckets(header value: [UInt8]) -> Int? {
        guard value.count == valueSize, value[0] == 0 else { return nil }
        let count = Int(BPF.value(UInt32.self, from: Array(value[4..<8])))
        return count > 0 && count & (count - 1) == 0 ? count : nil
    }

    /// The bucket of a group: a fixed mix of its lane, length and address (the same in
    /// every process and every version of this layout).
    static func bucket(_ key: RuleSet.GroupKey, count: Int) -> UInt32 {
        var x = key.prefix.high &* 0x9E37_79B9_7F4A_7C15 ^ key.prefix.low
        x ^= UInt64(key.lane.index) << 56 ^ UInt64(key.prefix.length) << 48
        x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
        x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
        x ^= x >> 31
        return UInt32(truncatingIfNeeded: x) & UInt32(count - 1)
    }

    static func key(bucket: UInt32, page: Int) -> [UInt8] { rawBytes(of: bucket) + rawBytes(of: UInt32(page)) }

    static func pages(records: Int) -> Int { (records + recordsPerPage - 1) / recordsPerPage }

    /// Appends the pages of one bucket, whose records are `records` (n × ``recordSize``
    /// bytes, key then value), to `keys` and `values`; returns how many pages.
    static func appendPages(
        bucket: UInt32, records: [UInt8], to keys: inout [UInt8], _ values: inout [UInt8]
    ) -> Int {
        let count = records.count / recordSize
        let pages = Self.pages(records: count)
        for page in 0..<pages {
            keys.append(contentsOf: key(bucket: bucket, page: page))
            let first = page * recordsPerPage
            let inPage = min(recordsPerPage, count - first)
            let base = values.count
            values.append(contentsOf: repeatElement(0, count: valueSize))
            values[base] = UInt8(inPage)
            values[base + 1] = page + 1 < pages ? 1 : 0
            values.replaceSubrange(
                (base + 4)..<(base + 4 + inPage * recordSize),
                with: records[(first * recordSize)..<((first + inPage) * recordSize)])
        }
        return pages
    }

    /// The records of one page (key, value), or nil if it cannot be read; and whether the
    /// next page exists.
    static func records(_ page: [UInt8]) -> (records: [(key: [UInt8], value: [UInt8])], more: Bool)? {
        guard page.count == valueSize, Int(page[0]) <= recordsPerPage else { return nil }
        var result: [(key: [UInt8], value: [UInt8])] = []
        result.reserveCapacity(Int(page[0]))
        for slot in 0..<Int(page[0]) {
            let start = 4 + slot * recordSize
            result.append(
                (
                    Array(page[start..<start + GroupRecord.keySize]),
                    Array(page[start + GroupRecord.keySize..<start + recordSize])
                ))
        }
        return (result, page[1] != 0)
    }

    /// Every record of a `groups` table.
    static func allRecords(_ map: Map) throws -> [(key: [UInt8], value: [UInt8])] {
        var result: [(key: [UInt8], value: [UInt8])] = []
        for (_, page) in try map.entries() {
            guard let (records, _) = records(page) else {
                throw SteeringError.kernel("the groups table has an unreadable page; run sksteer apply")
            }
            result.append(contentsOf: records)
        }
        return result
    }

    /// Appends the key of a page.
    static func appendKey(bucket: UInt32, page: Int, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: bucket.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(page).littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// Encodes groups into the pages of their buckets (every group of each bucket written
    /// must be given), in batches for ``ParallelJob``; `oldPages` is how many pages each
    /// bucket had, so the ones no longer needed are deleted.
    static func encode(
        _ groups: [RuleSet.GroupKey: RuleSet.Group], oldPages: [UInt32: Int], buckets: Int,
        labels: [String: UInt32], pagesPerBatch: Int = 1 << 14
    ) -> Dispatcher.EncodedGroups {
        // The groups by bucket (a counting sort), with each bucket's record count.
        var records = [Int32](repeating: 0, count: buckets)
        var bucketOf: [UInt32] = []
        bucketOf.reserveCapacity(groups.count)
        for (key, group) in groups {
            let bucket = bucket(key, count: buckets)
            bucketOf.append(bucket)
            records[Int(bucket)] += Int32(GroupRecord.pageCount(group))
        }
        var start = [Int](repeating: 0, count: buckets + 1)
        var members = [Int32](repeating: 0, count: buckets)
        for bucket in bucketOf { members[Int(bucket)] += 1 }
        for bucket in 0..<buckets { start[bucket + 1] = start[bucket] + Int(members[bucket]) }
        var fill = start
        var order = [Dictionary<RuleSet.GroupKey, RuleSet.Group>.Index](
            repeating: groups.startIndex, count: groups.count)
        var index = groups.startIndex
        for bucket in bucketOf {
            order[fill[Int(bucket)]] = index
            fill[Int(bucket)] += 1
            index = groups.index(after: index)
        }
        // The buckets in two halves, on two threads (a million groups take a second to encode).
        let halves = groups.count > 10_000 ? 2 : 1
        let parts = Mutex([Dispatcher.EncodedGroups](repeating: Dispatcher.EncodedGroups(), count: halves))
        let (sorted, starts, counts) = (order, start, records)
        DispatchQueue.concurrentPerform(iterations: halves) { half in
            let range = (buckets * half / halves)..<(buckets * (half + 1) / halves)
            let part = encodeBuckets(
                range, groups: groups, order: sorted, start: starts, records: counts, oldPages: oldPages,
                labels: labels, pagesPerBatch: pagesPerBatch)
            parts.withLock { $0[half] = part }
        }
        var result = Dispatcher.EncodedGroups()
        for part in parts.withLock({ $0 }) {
            result.batches += part.batches
            result.stale += part.stale
        }
        return result
    }

    /// The pages of a range of buckets: ``encode(_:oldPages:buckets:labels:pagesPerBatch:)``
    /// with the groups in bucket order (`order`, bucket b's from `start[b]` to `start[b + 1]`)
    /// and each bucket's record count.
    private static func encodeBuckets(
        _ range: Range<Int>, groups: [RuleSet.GroupKey: RuleSet.Group],
        order: [Dictionary<RuleSet.GroupKey, RuleSet.Group>.Index], start: [Int], records: [Int32],
        oldPages: [UInt32: Int], labels: [String: UInt32], pagesPerBatch: Int
    ) -> Dispatcher.EncodedGroups {
        var result = Dispatcher.EncodedGroups()
        var batch = Dispatcher.Batch()
        var scratch: [UInt8] = []
        var recordKey: [UInt8] = []
        for bucket in range {
            let count = Int(records[bucket])
            let pages = Self.pages(records: count)
            for page in pages..<max(pages, oldPages[UInt32(bucket)] ?? 0) {
                result.stale.append(key(bucket: UInt32(bucket), page: page))
            }
            guard count > 0 else { continue }
            if batch.count == 0 {
                batch.keys.reserveCapacity(pagesPerBatch * keySize)
                batch.values.reserveCapacity(pagesPerBatch * valueSize)
            }
            // Pages of the bucket, zeroed, then filled record by record.
            var page = -1
            var slot = recordsPerPage
            var base = 0
            for member in start[bucket]..<start[bucket + 1] {
                let (groupKey, group) = groups[order[member]]
                scratch.removeAll(keepingCapacity: true)
                let groupPages = GroupRecord.appendPages(group, labels: labels, to: &scratch)
                for groupPage in 0..<groupPages {
                    if slot == recordsPerPage {
                        page += 1
                        slot = 0
                        appendKey(bucket: UInt32(bucket), page: page, to: &batch.keys)
                        base = batch.values.count
                        batch.values.append(contentsOf: repeatElement(0, count: valueSize))
                        batch.values[base] = UInt8(min(recordsPerPage, count - page * recordsPerPage))
                        batch.values[base + 1] = page + 1 < pages ? 1 : 0
                        batch.count += 1
                    }
                    recordKey.removeAll(keepingCapacity: true)
                    GroupRecord.appendKey(groupKey, page: UInt16(groupPage), to: &recordKey)
                    let offset = base + 4 + slot * recordSize
                    let from = groupPage * GroupRecord.valueSize
                    batch.values.withUnsafeMutableBytes { values in
                        recordKey.withUnsafeBytes { key in
                            values.baseAddress!.advanced(by: offset).copyMemory(
                                from: key.baseAddress!, byteCount: GroupRecord.keySize)
                        }
                        scratch.withUnsafeBytes { source in
                            values.baseAddress!.advanced(by: offset + GroupRecord.keySize).copyMemory(
                                from: source.baseAddress!.advanced(by: from), byteCount: GroupRecord.valueSize)
                        }
                    }
                    slot += 1
                }
            }
            if batch.count >= pagesPerBatch {
                result.batches.append(batch)
                batch = Dispatcher.Batch()
            }
        }
        if batch.count > 0 { result.batches.append(batch) }
        return result
    }
}

/// The groups of one copy, read from the kernel on demand (and cached for one change).
final class KernelGroups: GroupSource {
    let map: Map
    let labels: [UInt32: String]
    /// ``GroupPages/bucketCount(capacity:)`` of the dispatcher.
    let buckets: Int
    /// By protocol: whether IPv6 bindings that cover IPv4 exist (from the census).
    var covering: [Socket.Transport: Bool] = [.tcp: true, .udp: true]
    private var cache: [RuleSet.GroupKey: RuleSet.Group?] = [:]
    /// Records by bucket, as read or last written.
    private var bucketRecords: [UInt32: [(key: [UInt8], value: [UInt8])]] = [:]

    init(map: Map, labels: [UInt32: String], buckets: Int) {
        self.map = map
        self.labels = labels
        self.buckets = buckets
    }

    func mayCoverIPv4(_ transport: Socket.Transport) -> Bool { covering[transport] ?? true }

    private func records(_ bucket: UInt32) throws -> [(key: [UInt8], value: [UInt8])] {
        if let cached = bucketRecords[bucket] { return cached }
        var result: [(key: [UInt8], value: [UInt8])] = []
        var page = 0
        while let bytes = try map.lookup(GroupPages.key(bucket: bucket, page: page)) {
            guard let (records, more) = GroupPages.records(bytes) else {
                throw SteeringError.kernel("the groups table has an unreadable page; run sksteer apply")
            }
            result.append(contentsOf: records)
            guard more else { break }
            page += 1
        }
        bucketRecords[bucket] = result
        return result
    }

    func group(_ key: RuleSet.GroupKey) throws -> RuleSet.Group? {
        if let cached = cache[key] { return cached }
        var group = RuleSet.Group()
        var found = false
        for (recordKey, value) in try records(GroupPages.bucket(key, count: buckets)) {
            guard let (owner, _) = GroupRecord.decodeKey(recordKey), owner == key else { continue }
            found = true
            guard GroupRecord.decode(value, into: &group, labels: labels) else {
                throw SteeringError.kernel("the groups table has an unreadable record; run sksteer apply")
            }
        }
        let result = found && !group.isEmpty ? group : nil
        cache[key] = .some(result)
        return result
    }

    /// Replaces a group's records (or removes them when it is empty or nil): its bucket's
    /// pages are written again.
    func write(_ key: RuleSet.GroupKey, _ group: RuleSet.Group?, labelIDs: [String: UInt32]) throws {
        let bucket = GroupPages.bucket(key, count: buckets)
        let old = try records(bucket)
        var kept = old.filter { GroupRecord.decodeKey($0.key).map { $0.0 != key } ?? true }
        if let group, !group.isEmpty {
            for (index, page) in GroupRecord.encode(group, labels: labelIDs).enumerated() {
                kept.append((GroupRecord.key(key, page: UInt16(index)), page))
            }
        }
        var packed: [UInt8] = []
        for (recordKey, value) in kept { packed += recordKey + value }
        var keys: [UInt8] = []
        var values: [UInt8] = []
        let pages = GroupPages.appendPages(bucket: bucket, records: packed, to: &keys, &values)
        try map.updateBatch(keys: keys, values: values)
        for page in pages..<max(pages, GroupPages.pages(records: old.count)) {
            _ = try map.delete(GroupPages.key(bucket: bucket, page: page))
        }
        bucketRecords[bucket] = kept
        cache[key] = .some(group.flatMap { $0.isEmpty ? nil : $0 })
    }

}
