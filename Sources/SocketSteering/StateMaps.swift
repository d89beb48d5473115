import BPF
import BPFAssembly

#if canImport(Glibc)
    import Glibc
#endif

/// One rule-set copy: its binding table, its port flags and the tables of every lane. Two
/// copies exist; the attached program reads exactly one of them (the active copy), and a
/// change is written to the other, switched to with one `BPF_LINK_UPDATE`, then written to
/// the first.
struct CopyMaps: Sendable {
    var index: Int
    /// ``Layout/PortFlags``.
    var ports: Map
    /// ``Layout/HostFilter``.
    var hostFilter: Map
    /// By lane and table.
    var tables: [Lane: [Table: Map]]
    /// `HASH` of ``GroupPages``: the bindings this copy holds, as ``GroupRecord``s by bucket.
    var groups: Map
    /// `ARRAY` of u32, ``Census``: how many all-ports bindings each (lane, mapped length) has.
    var census: Map

    func map(_ key: EntryKey) -> Map { tables[key.lane]![key.table]! }

    static func name(_ table: Table, _ lane: Lane, copy: Int) -> String { "c\(copy)-\(lane)-\(table)" }

    /// Pin names and maps.
    var all: [(String, Map)] {
        var result = [
            ("c\(index)-ports", ports), ("c\(index)-hostfilter", hostFilter), ("c\(index)-groups", groups),
            ("c\(index)-census", census),
        ]
        for lane in Lane.allCases {
            for table in Table.allCases { result.append((Self.name(table, lane, copy: index), tables[lane]![table]!)) }
        }
        return result
    }

    /// Entries one table may hold.
    static func entryLimit(capacity: Int) -> Int { capacity * 2 + 65536 }

    /// The size a host table starts at. A hash map allocates its whole bucket array (16
    /// bytes for each of `max_entries`, rounded up to a power of two) when it is created,
    /// whatever it holds; so host tables are created for the entries they are about to hold
    /// and replaced by larger ones as they fill (``Dispatcher/fitHostTable(copy:lane:count:shrink:)``).
    /// The tries allocate per entry, so they are created at the limit.
    static let initialHostEntries = 1024

    /// The `max_entries` of a host table for `count` entries: a power of two with room for
    /// twice as many (so a lookup's bucket holds one entry or none, on average), at least
    /// ``initialHostEntries`` and at most ``entryLimit(capacity:)``.
    static func hostEntries(for count: Int, capacity: Int) -> Int {
        var size = initialHostEntries
        while size < count * 2 { size *= 2 }
        return min(size, entryLimit(capacity: capacity))
    }

    /// A new, empty host table of `lane`.
    static func createHost(_ lane: Lane, maxEntries: Int) throws(BPFError) -> Map {
        try Map.create(
            type: .hash, keySize: Layout.HostKey.size(lane), valueSize: Layout.EntryValueLayout.size,
            maxEntries: maxEntries, flags: Map.noPreallocate, name: "sks_\(lane)_host")
    }

    /// New, empty maps for a copy, with host tables sized for `hostCounts` entries by lane
    /// (none where a lane is not given) and a `groups` table of `groupBuckets` buckets.
    static func create(
        index: Int, capacity: Int, hostCounts: [Lane: Int] = [:], groupBuckets: Int = 16
    ) throws(BPFError) -> CopyMaps {
        var tables: [Lane: [Table: Map]] = [:]
        let limit = entryLimit(capacity: capacity)
        for lane in Lane.allCases {
            tables[lane] = [
                .host: try createHost(lane, maxEntries: hostEntries(for: hostCounts[lane] ?? 0, capacity: capacity)),
                .exact: try Map.create(
                    type: .lpmTrie, keySize: Layout.ExactKey.size(lane), valueSize: Layout.EntryValueLayout.size,
                    maxEntries: limit, flags: Map.noPreallocate, name: "sks_\(lane)_exact"),
                .wild: try Map.create(
                    type: .lpmTrie, keySize: Layout.WildKey.size(lane), valueSize: Layout.EntryValueLayout.size,
                    maxEntries: limit, flags: Map.noPreallocate, name: "sks_\(lane)_wild"),
            ]
        }
        return CopyMaps(
            index: index,
            ports: try Map.create(
                type: .array, keySize: 4, valueSize: 8, maxEntries: Layout.PortFlags.words, name: "sks_ports"),
            hostFilter: try Map.create(
                type: .array, keySize: 4, valueSize: 8, maxEntries: Layout.HostFilter.words, name: "sks_hostfilter"),
            tables: tables,
            groups: try createGroups(capacity: capacity, buckets: groupBuckets),
            census: try Map.create(type: .array, keySize: 4, valueSize: 4, maxEntries: Census.size, name: "sks_census"))
    }

    /// A new `groups` table (``GroupPages``) of `buckets` buckets, holding only its header.
    static func createGroups(capacity: Int, buckets: Int) throws(BPFError) -> Map {
        let map = try Map.create(
            type: .hash, keySize: GroupPages.keySize, valueSize: GroupPages.valueSize,
            maxEntries: GroupPages.pageLimit(buckets: buckets, capacity: capacity), flags: Map.noPreallocate,
            name: "sks_groups")
        try map.update(GroupPages.headerKey, GroupPages.header(buckets: buckets))
        return map
    }

    static func open(index: Int, directory: String, readOnly: Bool) throws(BPFError) -> CopyMaps {
        func pinned(_ name: String) throws(BPFError) -> Map {
            try Map.openPinned(at: "\(directory)/\(name)", readOnly: readOnly)
        }
        var tables: [Lane: [Table: Map]] = [:]
        for lane in Lane.allCases {
            var byTable: [Table: Map] = [:]
            for table in Table.allCases { byTable[table] = try pinned(name(table, lane, copy: index)) }
            tables[lane] = byTable
        }
        return CopyMaps(
            index: index, ports: try pinned("c\(index)-ports"), hostFilter: try pinned("c\(index)-hostfilter"),
            tables: tables, groups: try pinned("c\(index)-groups"),
            census: try pinned("c\(index)-census"))
    }
}

/// Every map of the dispatcher's state, as pinned in its state directory.
struct StateMaps: Sendable {
    var copies: [CopyMaps]
    /// `SOCKMAP`: destination × ``Layout/socketsPerDestination`` slots.
    var sockets: Map
    /// `PERCPU_ARRAY` destination → ``Layout/DestinationCounter``.
    var destinationMetrics: Map
    /// `PERCPU_ARRAY` [1] → ``Layout/GlobalCounter``.
    var globalMetrics: Map
    /// `HASH` label (64 bytes, zero padded) → `{id u32, 0}`.
    var labels: Map
    /// `ARRAY` [1] → ``Meta``.
    var meta: Map
    /// `PERCPU_HASH` ``Layout/BindingCounterKey`` → ``Layout/BindingCounter``, pinned as
    /// ``bindingMetricsName`` while per-binding counters are on; programs loaded while it is
    /// pinned count into it.
    var bindingMetrics: Map? = nil

    /// The pin name of ``bindingMetrics``.
    static let bindingMetricsName = "binding_metrics"

    /// Pin names of the shared maps.
    enum Name: String, CaseIterable {
        case sockets
        case destinationMetrics = "destination_metrics"
        case globalMetrics = "global_metrics"
        case labels, meta
    }

    var shared: [(String, Map)] {
        [
            (Name.sockets.rawValue, sockets), (Name.destinationMetrics.rawValue, destinationMetrics),
            (Name.globalMetrics.rawValue, globalMetrics), (Name.labels.rawValue, labels), (Name.meta.rawValue, meta),
        ]
    }

    var all: [(String, Map)] { shared + copies.flatMap(\.all) }

    /// The maps a program over `copy` reads, and the tables that are empty now (the program
    /// leaves their lookups out: a copy is only written while no program reads it, and every
    /// switch to it loads a new program).
    func dataPlane(copy: Int) throws(BPFError) -> DataPlaneMaps {
        var empty: [Lane: Set<Table>] = [:]
        for (lane, tables) in copies[copy].tables {
            for (table, map) in tables where try map.isEmpty() { empty[lane, default: []].insert(table) }
        }
        return DataPlaneMaps(
            ports: copies[copy].ports, hostFilter: copies[copy].hostFilter, tables: copies[copy].tables,
            sockets: sockets,
            destinationMetrics: destinationMetrics, globalMetrics: globalMetrics, bindingMetrics: bindingMetrics,
            empty: empty)
    }

    /// Creates every map, both copies empty.
    static func create(capacity: Int) throws(BPFError) -> StateMaps {
        let destinations = Layout.maxDestinations
        let maps = StateMaps(
            copies: [
                try CopyMaps.create(index: 0, capacity: capacity), try CopyMaps.create(index: 1, capacity: capacity),
            ],
            sockets: try Map.create(
                type: .sockMap, keySize: 4, valueSize: 8, maxEntries: destinations * Layout.socketsPerDestination,
                name: "sksteer_sockets"),
            destinationMetrics: try Map.create(
                type: .perCPUArray, keySize: 4, valueSize: Layout.DestinationCounter.size, maxEntries: destinations,
                name: "sksteer_dmetrics"),
            globalMetrics: try Map.create(
                type: .perCPUArray, keySize: 4, valueSize: Layout.GlobalCounter.size, maxEntries: 1,
                name: "sksteer_gmetrics"),
            labels: try Map.create(
                type: .hash, keySize: Layout.labelSize, valueSize: 8, maxEntries: Layout.maxLabels,
                name: "sksteer_labels"),
            meta: try Map.create(type: .array, keySize: 4, valueSize: Meta.size, maxEntries: 1, name: "sksteer_meta"))
        var meta = Meta()
        meta.capacity = UInt32(capacity)
        try maps.writeMeta(meta)
        return maps
    }

    /// Opens every pinned map of a state directory.
    static func open(directory: String, readOnly: Bool) throws(BPFError) -> StateMaps {
        func pinned(_ name: Name) throws(BPFError) -> Map {
            try Map.openPinned(at: "\(directory)/\(name.rawValue)", readOnly: readOnly)
        }
        return StateMaps(
            copies: [
                try CopyMaps.open(index: 0, directory: directory, readOnly: readOnly),
                try CopyMaps.open(index: 1, directory: directory, readOnly: readOnly),
            ],
            sockets: try pinned(.sockets), destinationMetrics: try pinned(.destinationMetrics),
            globalMetrics: try pinned(.globalMetrics), labels: try pinned(.labels), meta: try pinned(.meta),
            bindingMetrics: try openBindingMetrics(directory: directory, readOnly: readOnly))
    }

    /// The pinned per-binding counters, or nil when they are off.
    static func openBindingMetrics(directory: String, readOnly: Bool) throws(BPFError) -> Map? {
        let path = "\(directory)/\(bindingMetricsName)"
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return try Map.openPinned(at: path, readOnly: readOnly)
    }

    func readMeta() throws(BPFError) -> Meta {
        Meta(try meta.lookup(rawBytes(of: UInt32(0))) ?? [])
    }

    func writeMeta(_ value: Meta) throws(BPFError) {
        try meta.update(rawBytes(of: UInt32(0)), value.bytes)
    }
}

/// The dispatcher's own record of its state (the `meta` map).
struct Meta: Equatable {
    static let size = 32
    /// The map layout version (``Layout/schemaVersion``).
    var schema: UInt32 = Layout.schemaVersion
    /// The binding limit chosen at load time.
    var capacity: UInt32 = 0
    /// A copy being written (1 + its index), or 0: a command that dies between changing one
    /// copy and the other leaves this set, and the next command brings that copy in line with
    /// the one the program uses.
    var pending: UInt32 = 0
    /// Bindings in each copy.
    var counts: [UInt32] = [0, 0]

    init() {}

    init(_ bytes: [UInt8]) {
        guard bytes.count >= 20 else { return }
        schema = value(UInt32.self, from: bytes[0..<4])
        capacity = value(UInt32.self, from: bytes[4..<8])
        pending = value(UInt32.self, from: bytes[8..<12])
        counts = [value(UInt32.self, from: bytes[12..<16]), value(UInt32.self, from: bytes[16..<20])]
    }

    var bytes: [UInt8] {
        rawBytes(of: schema) + rawBytes(of: capacity) + rawBytes(of: pending) + rawBytes(of: counts[0])
            + rawBytes(of: counts[1]) + [UInt8](repeating: 0, count: Meta.size - 20)
    }
}

/// Per copy: how many all-ports bindings each (lane, mapped prefix length) has, so a change
/// of one binding can tell whether an exact entry needs ``EntryValue/checkWildcard`` without
/// reading the other bindings (it sets the flag when any all-ports binding of the lane has a
/// longer prefix: never wrong, sometimes one lookup more; `apply` of a whole set sets it
/// exactly).
///
/// Two more counters (one per protocol) count the IPv6 bindings that cover IPv4.
enum Census {
    static let size = 4 * 129 + 2
    static func index(_ lane: Lane, mappedLength: UInt8) -> UInt32 { UInt32(lane.index * 129 + Int(mappedLength)) }
    static func coveringIndex(_ transport: Socket.Transport) -> UInt32 { UInt32(4 * 129 + (transport == .udp ? 1 : 0)) }

    /// The counts of a rule set.
    static func counts(_ rules: RuleSet) -> [UInt32: UInt32] {
        var counts: [UInt32: UInt32] = [:]
        for (key, group) in rules.groups {
            if group.all != nil {
                for (lane, length) in contributions(key) { counts[index(lane, mappedLength: length), default: 0] += 1 }
            }
            if RuleSet.coversIPv4(key) {
                counts[coveringIndex(key.lane.transport), default: 0] += UInt32(
                    group.finite.count + (group.all == nil ? 0 : 1))
            }
        }
        return counts
    }

    /// The (lane, mapped length) counters an all-ports binding of this group adds to.
    static func contributions(_ key: RuleSet.GroupKey) -> [(Lane, UInt8)] {
        var result = [(key.lane, RuleSet.mappedLength(key))]
        if RuleSet.coversIPv4(key) {
            result.append((Lane(transport: key.lane.transport, ipv6: false), RuleSet.mappedLength(key)))
        }
        return result
    }
}
