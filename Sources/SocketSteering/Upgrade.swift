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

    /// Migrations from older layouts to the next, by the version they start from.
    ///
    /// The rule trie is derived state, so a layout change that keeps the binding table's
    /// records is migrated by rebuilding the trie from them; that step is registered for
    /// layout 0, which no released sksteer wrote and the tests use to exercise this path.
    /// Sockets stay where they are: the kernel does not hand socket descriptors back out of a
    /// SOCKMAP, so that map's layout can never change.
    static let migrations: [UInt32: @Sendable (Dispatcher) throws -> Void] = [
        0: { dispatcher in try dispatcher.rebuildRules() }
    ]

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
            guard let migrate = migrations[meta.schema] else {
                throw SteeringError.conflict("no migration from layout \(meta.schema); unload and load again")
            }
            logger.info("migrating", metadata: ["from": "\(meta.schema)"])
            migratedFrom = migratedFrom ?? meta.schema
            try migrate(dispatcher)
            meta = try dispatcher.maps.readMeta()
            meta.schema += 1
            try dispatcher.maps.writeMeta(meta)
        }
        try dispatcher.repairGeneration()
        let directory = dispatcher.directory
        let old = try Program.openPinned(at: "\(directory)/program")
        let new = try Program.load(DataPlane.program(dispatcher.maps.dataPlane), type: .skLookup, name: "sksteer")
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

    /// A copy of the data plane over this dispatcher's maps that counts test runs like real
    /// traffic; benchmarks measure it with `BPF_PROG_TEST_RUN`. It is loaded, not attached.
    public func measurementProgram() throws -> Program {
        try Program.load(DataPlane.program(maps.dataPlane, countTestRuns: true), type: .skLookup, name: "sksteer_bench")
    }

    /// The assembled data plane of this dispatcher (for instruction counts and load timing).
    public func dataPlaneAssembly() throws -> BPFAssembly.Assembly { try DataPlane.program(maps.dataPlane) }

    /// Rebuilds the active rule set from the binding table and switches to it.
    func rebuildRules() throws {
        var meta = try maps.readMeta()
        meta.nextRuleset = try install(
            try numberedBindings(), generation: meta.generation, maxBindings: Int(meta.maxBindings))
        try maps.writeMeta(meta)
    }
}
