import BPF
import BPFAssembly

/// Every map of the dispatcher's state, as pinned in its state directory.
struct StateMaps: Sendable {
    var dataPlane: DataPlaneMaps
    /// `HASH` label (64 bytes, zero padded) → `{id u32, 0}`.
    var labels: Map
    /// `ARRAY` [1] → ``Meta``.
    var meta: Map

    /// Pin names in the state directory.
    enum Name: String, CaseIterable {
        case active, hosts
        case hostPorts = "host_ports"
        case rules, sockets
        case socketCounts = "socket_counts"
        case destinationMetrics = "destination_metrics"
        case bindingMetrics = "binding_metrics"
        case globalMetrics = "global_metrics"
        case labels, meta
    }

    var all: [(Name, Map)] {
        [
            (.active, dataPlane.active), (.hosts, dataPlane.hosts), (.hostPorts, dataPlane.hostPorts),
            (.rules, dataPlane.rules),
            (.sockets, dataPlane.sockets), (.socketCounts, dataPlane.socketCounts),
            (.destinationMetrics, dataPlane.destinationMetrics), (.bindingMetrics, dataPlane.bindingMetrics),
            (.globalMetrics, dataPlane.globalMetrics), (.labels, labels), (.meta, meta),
        ]
    }

    /// A new, empty rule trie (the inner map of `rules`).
    static func makeTrie(maxBindings: Int) throws(BPFError) -> Map {
        try Map.create(
            type: .lpmTrie, keySize: Layout.trieKeySize, valueSize: Layout.trieValueSize,
            maxEntries: maxBindings * 4, flags: Map.noPreallocate, name: "sksteer_rules")
    }

    /// A new, empty binding table: binding id → record.
    static func makeBindingTable(maxBindings: Int) throws(BPFError) -> Map {
        try Map.create(
            type: .hash, keySize: 4, valueSize: 32, maxEntries: maxBindings, flags: Map.noPreallocate,
            name: "sksteer_binds")
    }

    /// A new, empty host-binding hash (the inner map of `hosts`).
    static func makeHosts(maxBindings: Int) throws(BPFError) -> Map {
        try Map.create(
            type: .hash, keySize: Layout.hostKeySize, valueSize: Layout.trieValueSize, maxEntries: maxBindings,
            flags: Map.noPreallocate, name: "sksteer_hosts")
    }

    /// Creates every map, with an empty rule set in both slots and slot 0 active.
    static func create(maxBindings: Int) throws(BPFError) -> (StateMaps, trie: Map, bindings: Map) {
        let trie = try makeTrie(maxBindings: maxBindings)
        let hosts = try makeHosts(maxBindings: maxBindings)
        let rules = try Map.create(
            type: .arrayOfMaps, keySize: 4, valueSize: 4, maxEntries: 2, name: "sksteer_rules", innerMap: trie)
        let hostSets = try Map.create(
            type: .arrayOfMaps, keySize: 4, valueSize: 4, maxEntries: 2, name: "sksteer_hostsets", innerMap: hosts)
        try rules.setInnerMap(trie, at: 0)
        try hostSets.setInnerMap(hosts, at: 0)
        try rules.setInnerMap(try makeTrie(maxBindings: maxBindings), at: 1)
        try hostSets.setInnerMap(try makeHosts(maxBindings: maxBindings), at: 1)
        let active = try Map.create(type: .array, keySize: 4, valueSize: 4, maxEntries: 1, name: "sksteer_active")
        let bindings = try makeBindingTable(maxBindings: maxBindings)
        let destinations = Layout.maxDestinations
        let dataPlane = DataPlaneMaps(
            active: active, hosts: hostSets,
            hostPorts: try Map.create(
                type: .array, keySize: 4, valueSize: 8, maxEntries: Layout.hostPortWords, name: "sksteer_hostports"),
            rules: rules,
            sockets: try Map.create(
                type: .sockMap, keySize: 4, valueSize: 8, maxEntries: destinations * Layout.socketsPerDestination,
                name: "sksteer_sockets"),
            socketCounts: try Map.create(
                type: .array, keySize: 4, valueSize: 4, maxEntries: destinations, name: "sksteer_counts"),
            destinationMetrics: try Map.create(
                type: .perCPUArray, keySize: 4, valueSize: Layout.DestinationCounter.size, maxEntries: destinations,
                name: "sksteer_dmetrics"),
            bindingMetrics: try Map.create(
                type: .array, keySize: 4, valueSize: Layout.BindingCounter.size, maxEntries: maxBindings,
                name: "sksteer_bmetrics"),
            globalMetrics: try Map.create(
                type: .perCPUArray, keySize: 4, valueSize: Layout.GlobalCounter.size, maxEntries: 1,
                name: "sksteer_gmetrics"))
        let maps = StateMaps(
            dataPlane: dataPlane,
            labels: try Map.create(
                type: .hash, keySize: Layout.labelSize, valueSize: 8, maxEntries: Layout.maxLabels,
                name: "sksteer_labels"),
            meta: try Map.create(type: .array, keySize: 4, valueSize: Meta.size, maxEntries: 1, name: "sksteer_meta"))
        var meta = Meta()
        meta.maxBindings = UInt32(maxBindings)
        try maps.writeMeta(meta)
        return (maps, trie, bindings)
    }

    /// Opens every pinned map of a state directory.
    static func open(directory: String, readOnly: Bool) throws(BPFError) -> StateMaps {
        func pinned(_ name: Name) throws(BPFError) -> Map {
            try Map.openPinned(at: "\(directory)/\(name.rawValue)", readOnly: readOnly)
        }
        return StateMaps(
            dataPlane: DataPlaneMaps(
                active: try pinned(.active), hosts: try pinned(.hosts), hostPorts: try pinned(.hostPorts),
                rules: try pinned(.rules),
                sockets: try pinned(.sockets), socketCounts: try pinned(.socketCounts),
                destinationMetrics: try pinned(.destinationMetrics), bindingMetrics: try pinned(.bindingMetrics),
                globalMetrics: try pinned(.globalMetrics)),
            labels: try pinned(.labels), meta: try pinned(.meta))
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
    var maxBindings: UInt32 = 0
    /// The generation of the active rule set; its binding table is pinned as `bindings-<generation>`.
    var generation: UInt32 = 0
    /// The next rule set id to hand out for in-place changes.
    var nextRuleset: UInt32 = 0
    /// The next binding id to try.
    var nextBinding: UInt32 = 0

    init() {}

    init(_ bytes: [UInt8]) {
        guard bytes.count >= 20 else { return }
        schema = value(UInt32.self, from: bytes[0..<4])
        maxBindings = value(UInt32.self, from: bytes[4..<8])
        generation = value(UInt32.self, from: bytes[8..<12])
        nextRuleset = value(UInt32.self, from: bytes[12..<16])
        nextBinding = value(UInt32.self, from: bytes[16..<20])
    }

    var bytes: [UInt8] {
        rawBytes(of: schema) + rawBytes(of: maxBindings) + rawBytes(of: generation) + rawBytes(of: nextRuleset)
            + rawBytes(of: nextBinding) + [UInt8](repeating: 0, count: Meta.size - 20)
    }
}
