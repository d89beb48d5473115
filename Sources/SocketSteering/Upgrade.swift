import BPF
import BPFAssembly
import Logging

#if canImport(Glibc)
    import Glibc
#endif

extension Dispatcher {
    /// What `upgrade` did.
    public struct UpgradeResult: Sendable, Codable, Equatable {
        /// The id of the program that was attached before.
        public var previousProgramID: UInt32
        /// The id of the program attached now.
        public var programID: UInt32
        /// The kernel tag (16 hex digits) of the program attached before.
        public var previousTag: String
        /// The kernel tag (16 hex digits) of the program attached now.
        public var tag: String
        /// The layout the state was migrated from, if it was.
        public var migratedFrom: UInt32?
    }

    /// Replaces the loaded program with the one this sksteer builds, through the pinned link
    /// (`BPF_LINK_UPDATE`, atomic: no connection is dropped), keeping every map; state of an
    /// older layout is migrated first.
    public static func upgrade(
        namespace: NetworkNamespace, bpffs: String = defaultBPFFS, logger: Logger = .disabled
    ) throws -> UpgradeResult {
        let dispatcher = try open(namespace: namespace, bpffs: bpffs, readOnly: false, anySchema: true, logger: logger)
        var meta = try dispatcher.maps.readMeta()
        var migratedFrom: UInt32?
        if meta.schema > Layout.schemaVersion {
            throw SteeringError.conflict(
                "the state has layout \(meta.schema), newer than this sksteer (\(Layout.schemaVersion)); use a newer sksteer"
            )
        }
        while meta.schema < Layout.schemaVersion {
            guard let migrate = Upgrade.migrations[meta.schema] else {
                throw SteeringError.conflict(
                    "no migration from layout \(meta.schema): sksteer unload, load, apply the bindings and register the sockets again"
                )
            }
            logger.info("migrating", metadata: ["from": "\(meta.schema)"])
            migratedFrom = migratedFrom ?? meta.schema
            try migrate(dispatcher)
            meta = try dispatcher.maps.readMeta()
            meta.schema += 1
            try dispatcher.maps.writeMeta(meta)
        }
        try dispatcher.repair()
        let directory = dispatcher.directory
        let old = try Program.openPinned(at: "\(directory)/program")
        let new = try Program.load(
            DataPlane.program(dispatcher.maps.dataPlane(copy: dispatcher.activeCopy())), type: .skLookup,
            name: "sksteer")
        let staging = "\(directory)/program-upgrade"
        unlink(staging)
        try new.pin(at: staging)
        chmod(staging, 0o640)
        let link = try Link.openPinned(at: "\(directory)/link")
        try link.update(to: new, replacing: old)
        guard rename(staging, "\(directory)/program") == 0 else {
            throw SteeringError.kernel("the program was swapped but could not be renamed: \(errnoDescription(errno))")
        }
        let (before, after) = (try old.info(), try new.info())
        logger.info("upgraded", metadata: ["program": "\(after.id)"])
        return UpgradeResult(
            previousProgramID: before.id, programID: after.id, previousTag: before.tag, tag: after.tag,
            migratedFrom: migratedFrom)
    }

    /// The bytes of kernel memory this dispatcher's maps are charged for (``Map/chargedMemory()``
    /// of each: both copies, the sockets, the counters, the labels and the listing).
    package func chargedMemory() throws -> Int {
        var total = 0
        for (_, map) in maps.all { total += try map.chargedMemory() }
        if let counters = maps.bindingMetrics { total += try counters.chargedMemory() }
        return total
    }

    /// A copy of the data plane over this dispatcher's maps that counts test runs like real
    /// traffic; benchmarks measure it with `BPF_PROG_TEST_RUN`. It is loaded, not attached.
    package func measurementProgram() throws -> Program {
        try Program.load(
            DataPlane.program(maps.dataPlane(copy: activeCopy()), counting: .everyRun), type: .skLookup,
            name: "sksteer_bench")
    }

    /// The assembled data plane of this dispatcher (for instruction counts and load timing).
    package func dataPlaneAssembly() throws -> BPFAssembly.Assembly {
        try DataPlane.program(maps.dataPlane(copy: activeCopy()))
    }
}

/// Migrations from older layouts to the next, by the version they start from. Layout 1 (one
/// rule trie in two slots of a map-in-map) has none: its maps and this layout's share nothing
/// but the SOCKMAP, which cannot be migrated (the kernel does not hand sockets back out), so
/// such state is unloaded and loaded again, and its sockets registered again.
enum Upgrade {
    static let migrations: [UInt32: @Sendable (Dispatcher) throws -> Void] = [2: pageGroups, 3: nearbyHostFilter]

    /// Layout 2 to 3: each copy's `groups` table held one ``GroupRecord`` per map element;
    /// layout 3 packs them into ``GroupPages``. The program does not read these tables, so
    /// each is replaced by a new map under its pin name (pinned beside it, then renamed over
    /// it). A copy whose table has pages already is skipped, so an interrupted migration
    /// finishes when `upgrade` runs again.
    static func pageGroups(_ dispatcher: Dispatcher) throws {
        let capacity = Int(try dispatcher.maps.readMeta().capacity)
        for copy in 0..<2 {
            let buckets = GroupPages.bucketCount(
                bindings: Int(try dispatcher.maps.readMeta().counts[copy]), capacity: capacity)
            let old = dispatcher.maps.copies[copy].groups
            guard old.keySize == GroupRecord.keySize else { continue }
            try dispatcher.packGroups(copy: copy, records: old.entries(), buckets: buckets)
        }
    }

    /// Layout 3 to 4: the host filter's bits moved (``Layout/HostFilter``: nearby addresses,
    /// nearby bits). Each copy's filter gets the new bits of its host entries added to the
    /// old ones, never cleared, so the program attached until the upgrade's link update
    /// (which reads the old bits) and the new one both find every host entry; an old bit
    /// left over only costs a probe. Running it again adds nothing new.
    static func nearbyHostFilter(_ dispatcher: Dispatcher) throws {
        for copy in 0..<2 {
            let maps = dispatcher.maps.copies[copy]
            var added: [UInt32: UInt64] = [:]
            for lane in Lane.allCases {
                for key in try maps.tables[lane]![.host]!.keys() {
                    guard key.count == Layout.HostKey.size(lane) else {
                        throw SteeringError.kernel("the host table of copy \(copy) (\(lane)) has an unreadable key")
                    }
                    let portField = Layout.HostKey.port
                    let port = BPF.value(UInt16.self, from: Array(key[portField.offset..<portField.end]))
                    let address = Array(key[Layout.HostKey.address(lane).offset...])
                    let bit = Layout.HostFilter.bit(lane: lane, port: port, address: address)
                    added[bit >> 6, default: 0] |= 1 << UInt64(bit & 63)
                }
            }
            var words: [(key: [UInt8], value: [UInt8])] = []
            for (word, bits) in added {
                let old = try maps.hostFilter.lookup(rawBytes(of: word)).map { BPF.value(UInt64.self, from: $0) } ?? 0
                if old | bits != old { words.append((rawBytes(of: word), rawBytes(of: old | bits))) }
            }
            try maps.hostFilter.updateBatch(words)
        }
    }
}
