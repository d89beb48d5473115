import BPF
import BPFAssembly
import Dispatch
import Logging
import SKLookup

#if canImport(Glibc)
    import Glibc
#endif

/// The socket dispatcher of one network namespace: its state pinned in a bpf filesystem, so
/// no daemon is needed and every invocation sees the same state.
///
/// The state directory is `<bpffs>/sksteer-<netns inode>`; it holds the shared maps (sockets,
/// counters, labels), two copies of the rule set, the program and the link that attaches it
/// to the namespace. The program reads one copy, the active one, and which one that is is
/// read from the kernel (the maps the attached program uses), never from a record of ours.
/// Opening takes a lock on the directory for the life of the value: shared for reading,
/// exclusive for changes, so concurrent invocations are serialized.
public final class Dispatcher {
    /// The network namespace this dispatcher steers.
    public let namespace: NetworkNamespace
    /// The state directory.
    public let directory: String
    var maps: StateMaps
    let readOnly: Bool
    let lock: OwnedFileDescriptor
    let logger: Logger
    /// Called with the name of each step of a long change as it starts ("build the rule
    /// set", "write the idle copy", …): for progress on a terminal. `nil` by default.
    public var progress: ((String) -> Void)?

    private init(
        namespace: NetworkNamespace, directory: String, maps: StateMaps, readOnly: Bool, lock: OwnedFileDescriptor,
        logger: Logger
    ) {
        self.namespace = namespace
        self.directory = directory
        self.maps = maps
        self.readOnly = readOnly
        self.lock = lock
        self.logger = logger
    }

    /// The default bpf filesystem.
    public static let defaultBPFFS = BPFFileSystem.defaultPath

    /// The state directory for a namespace.
    public static func stateDirectory(bpffs: String, namespace: NetworkNamespace) throws -> String {
        "\(bpffs)/sksteer-\(try namespace.inode())"
    }

    static func checkFileSystem(_ bpffs: String) throws {
        guard BPFFileSystem.isMounted(at: bpffs) else {
            // Mounting over a directory that has other uses (/tmp, say) would hide its files:
            // suggest a mount only on the standard place.
            throw SteeringError.notLoaded(
                bpffs == BPFFileSystem.defaultPath
                    ? "\(bpffs) is not a bpf filesystem: mount one (mount -t bpf -o mode=0700 bpf \(bpffs))"
                        + " or pass --bpffs DIR"
                    : "\(bpffs) is not a bpf filesystem: pass --bpffs with a directory where one is mounted"
                        + " (awk '$3 == \"bpf\"' /proc/mounts lists them), or mount one on an empty directory of its own"
                        + " (mount -t bpf -o mode=0700 bpf DIR)")
        }
    }

    // MARK: Load, open, unload

    /// Loads the dispatcher into `namespace` (creating and pinning its state), or opens it for
    /// changes if it is already loaded. The state is built in a temporary directory and
    /// renamed into place, so a half-built state is never seen.
    ///
    /// - Parameters:
    ///   - namespace: the network namespace to steer.
    ///   - bpffs: the bpf filesystem that holds the state.
    ///   - maxBindings: the most bindings the dispatcher will hold.
    ///   - logger: where to log what is done (nothing by default).
    public static func load(
        namespace: NetworkNamespace, bpffs: String = defaultBPFFS, maxBindings: Int = 1 << 20,
        logger: Logger = .disabled
    ) throws -> Dispatcher {
        try checkFileSystem(bpffs)
        let directory = try stateDirectory(bpffs: bpffs, namespace: namespace)
        if BPFFileSystem.isWorldWritable(at: bpffs) {
            let mode = String(BPFFileSystem.mode(at: bpffs) ?? 0, radix: 8)
            logger.warning(
                "\(bpffs) is writable by every user (mode \(mode)): anyone can put entries where the state belongs (sksteer removes them, never follows them); chmod 0700 \(bpffs), and mount it with -o mode=0700"
            )
        }
        var existing = stat()
        if lstat(directory, &existing) == 0 {
            if let reason = untrusted(directory) {
                // Planted by someone else (possible only on a bpffs others can write): never
                // used, never followed; removed, and a state of our own is built.
                logger.warning(
                    "removing what someone else put at the state directory",
                    metadata: ["directory": "\(directory)", "reason": "\(reason)"])
                try removeUntrusted(directory)
            } else if try isStale(directory, namespace: namespace) {
                logger.warning(
                    "removing the state of a namespace that no longer exists", metadata: ["directory": "\(directory)"])
                try removeState(directory, namespace: namespace)
            } else {
                return try open(namespace: namespace, bpffs: bpffs, logger: logger)
            }
        }
        guard (1...(1 << 24)).contains(maxBindings) else {
            throw SteeringError.invalidInput("the binding limit must be between 1 and 16777216")
        }
        removeAbandonedBuilds(in: bpffs)
        // bpffs refuses names with a dot.
        var template = Array("\(bpffs)/sksteer-new-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw SteeringError.kernel("cannot create a directory in \(bpffs): \(errnoDescription(errno))")
        }
        let temporary = String(cString: made)
        // Held while building, so a concurrent load does not take this build for abandoned.
        let building = Glibc.open(temporary, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if building >= 0 { flock(building, LOCK_EX) }
        // Released before the state is opened (after the rename it locks the state itself).
        defer { if building >= 0 { close(building) } }
        do {
            defer { if building >= 0 { flock(building, LOCK_UN) } }
            chmod(temporary, 0o750)
            let maps = try StateMaps.create(capacity: maxBindings)
            for (name, map) in maps.all { try pin(map, at: "\(temporary)/\(name)") }
            let program = try Program.load(DataPlane.program(maps.dataPlane(copy: 0)), type: .skLookup, name: "sksteer")
            try program.pin(at: "\(temporary)/program")
            chmod("\(temporary)/program", 0o640)
            // Nothing is attached before the state is in place: a load killed before the
            // rename leaves an unattached directory (removed by the next load), one killed
            // after it leaves state without a link, which the open below attaches.
            guard rename(temporary, directory) == 0 else {
                let code = errno
                _ = try? removeTree(temporary)
                if code == EEXIST || code == ENOTEMPTY {
                    return try open(namespace: namespace, bpffs: bpffs, logger: logger)
                }
                throw SteeringError.kernel("cannot move the state into \(directory): \(errnoDescription(code))")
            }
            logger.info("loaded", metadata: ["directory": "\(directory)"])
        } catch {
            _ = try? removeTree(temporary)
            throw error
        }
        // Attached once the state is in place (a load killed here leaves state without a
        // link, which the next writable open attaches).
        do {
            let program = try Program.openPinned(at: "\(directory)/program")
            let link = try Link.attach(program, to: namespace)
            try link.pin(at: "\(directory)/link")
            chmod("\(directory)/link", 0o640)
        } catch {
            _ = try? removeState(directory, namespace: namespace)
            throw error
        }
        return try open(namespace: namespace, bpffs: bpffs, logger: logger)
    }

    /// Whether a state directory's link is attached to another namespace or to none.
    static func isStale(_ directory: String, namespace: NetworkNamespace) throws -> Bool {
        guard let info = try? Link.openPinned(at: "\(directory)/link").info(), let inode = info.namespaceInode else {
            return false
        }
        return inode != (try namespace.inode())
    }

    /// Removes builds of `load` that were killed before their rename (no lock held on them).
    static func removeAbandonedBuilds(in bpffs: String) {
        guard let handle = opendir(bpffs) else { return }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix("sksteer-new-") { names.append(name) }
        }
        closedir(handle)
        for name in names {
            let path = "\(bpffs)/\(name)"
            let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { _ = try? removeTree(path) }
        }
    }

    static func pin(_ map: Map, at path: String) throws(BPFError) {
        try map.pin(at: path)
        chmod(path, 0o640)
    }

    /// Opens the loaded dispatcher of `namespace`. A writable open first finishes or undoes
    /// whatever an earlier, interrupted command left half done.
    ///
    /// - Parameters:
    ///   - namespace: the network namespace whose dispatcher to open.
    ///   - bpffs: the bpf filesystem that holds the state.
    ///   - readOnly: take a shared lock and read-only map descriptors (enough for status,
    ///     bindings and metrics; the owning group can do this).
    ///   - logger: where to log what is done (nothing by default).
    public static func open(
        namespace: NetworkNamespace, bpffs: String = defaultBPFFS, readOnly: Bool = false,
        logger: Logger = .disabled
    ) throws -> Dispatcher {
        try open(namespace: namespace, bpffs: bpffs, readOnly: readOnly, anySchema: false, logger: logger)
    }

    static func open(
        namespace: NetworkNamespace, bpffs: String, readOnly: Bool, anySchema: Bool, logger: Logger
    ) throws -> Dispatcher {
        try checkFileSystem(bpffs)
        let directory = try stateDirectory(bpffs: bpffs, namespace: namespace)
        try checkDirectory(directory)
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT {
                throw SteeringError.notLoaded(
                    "sksteer is not loaded in \(namespace.path) (no \(directory)); run sksteer load")
            }
            throw SteeringError.kernel("cannot open \(directory): \(errnoDescription(code))")
        }
        let lock = OwnedFileDescriptor(adopting: fd)
        while flock(fd, readOnly ? LOCK_SH : LOCK_EX) != 0 {
            guard errno == EINTR else {
                throw SteeringError.kernel("cannot lock \(directory): \(errnoDescription(errno))")
            }
        }
        let metaMap: Map
        do {
            metaMap = try Map.openPinned(at: "\(directory)/\(StateMaps.Name.meta.rawValue)", readOnly: true)
        } catch {
            throw SteeringError.kernel(
                "the state in \(directory) is damaged (\(error)); run sksteer unload to remove it, then sksteer load")
        }
        let schema = Meta(try metaMap.lookup(rawBytes(of: UInt32(0))) ?? []).schema
        if schema != Layout.schemaVersion {
            let known = Upgrade.migrations[schema] != nil
            if !(anySchema && known) {
                throw SteeringError.conflict(
                    "the state in \(directory) has layout \(schema), this sksteer uses \(Layout.schemaVersion); "
                        + (known
                            ? "run sksteer upgrade"
                            : schema > Layout.schemaVersion
                                ? "use a newer sksteer, or sksteer unload to remove it"
                                : "it cannot be migrated: sksteer unload, load, apply the bindings and register the sockets again")
                )
            }
        }
        let maps: StateMaps
        do {
            maps = try StateMaps.open(directory: directory, readOnly: readOnly)
        } catch {
            throw SteeringError.kernel(
                "the state in \(directory) is damaged (\(error)); run sksteer unload to remove it, then sksteer load")
        }
        let dispatcher = Dispatcher(
            namespace: namespace, directory: directory, maps: maps, readOnly: readOnly, lock: lock, logger: logger)
        if !readOnly && !anySchema { try dispatcher.repair() }
        return dispatcher
    }

    /// Detaches the dispatcher and removes its state, whatever shape it is in (half removed,
    /// of another layout, of a namespace that no longer exists). Registered sockets are not
    /// closed. Returns the names it removed.
    @discardableResult
    public static func unload(namespace: NetworkNamespace, bpffs: String = defaultBPFFS) throws -> [String] {
        try checkFileSystem(bpffs)
        let directory = try stateDirectory(bpffs: bpffs, namespace: namespace)
        removeAbandonedBuilds(in: bpffs)
        // Not loaded: nothing to do (unload is idempotent).
        var info = stat()
        guard lstat(directory, &info) == 0 else { return [] }
        if untrusted(directory) != nil { return try removeUntrusted(directory) }
        return try removeState(directory, namespace: namespace)
    }

    /// Removes a state directory, detaching its link first if the link steers `namespace`
    /// (a link of another namespace, which a planted entry could lead to, is never touched).
    @discardableResult
    static func removeState(_ directory: String, namespace: NetworkNamespace) throws -> [String] {
        // Take the lock, so a command still at work finishes first.
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd >= 0 {
            while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        }
        defer { if fd >= 0 { close(fd) } }
        var info = stat()
        if lstat("\(directory)/link", &info) == 0, info.st_mode & S_IFMT != S_IFLNK,
            let link = try? Link.openPinned(at: "\(directory)/link"),
            let inode = try? link.info().namespaceInode, inode == (try? namespace.inode())
        {
            try? link.detach()
        }
        return try removeTree(directory)
    }

    /// Removes what someone else put at a state directory's name without following or using
    /// it: a symbolic link or file is unlinked, a directory emptied by name and removed.
    @discardableResult
    static func removeUntrusted(_ directory: String) throws -> [String] {
        var info = stat()
        guard lstat(directory, &info) == 0 else { return [] }
        if info.st_mode & S_IFMT != S_IFDIR {
            guard unlink(directory) == 0 || errno == ENOENT else {
                throw SteeringError.kernel("cannot remove \(directory): \(errnoDescription(errno))")
            }
            return [directory]
        }
        return try removeTree(directory)
    }

    /// Why a state directory cannot be trusted, or nil: it must be a real directory (not a
    /// symbolic link), owned by root or by this user, and writable by nobody else.
    static func untrusted(_ directory: String) -> String? {
        var info = stat()
        guard lstat(directory, &info) == 0 else { return nil }
        guard info.st_mode & S_IFMT == S_IFDIR else { return "it is not a directory (a symbolic link?)" }
        guard info.st_uid == 0 || info.st_uid == geteuid() else { return "it belongs to user \(info.st_uid)" }
        guard info.st_mode & 0o022 == 0 else {
            return "it is writable by others (mode \(String(info.st_mode & 0o777, radix: 8)))"
        }
        return nil
    }

    /// Removes a state directory and everything pinned in it, by names read from the
    /// directory itself (a half-removed or foreign state goes too). Returns the removed names;
    /// throws, naming them, if any entry or the directory could not be removed.
    @discardableResult
    static func removeTree(_ directory: String) throws -> [String] {
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return [] }
            throw SteeringError.kernel("cannot open \(directory) to remove it: \(errnoDescription(errno))")
        }
        defer { close(fd) }
        guard let handle = fdopendir(dup(fd)) else {
            throw SteeringError.kernel("cannot read \(directory) to remove it: \(errnoDescription(errno))")
        }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(handle)
        var removed: [String] = []
        var failures: [String] = []
        func attempt(_ what: String, _ call: () -> Int32) -> Bool {
            while true {
                if call() == 0 || errno == ENOENT { return true }
                if errno != EINTR {
                    failures.append("\(what): \(errnoDescription(errno))")
                    return false
                }
            }
        }
        // unlinkat on the directory we opened: a directory swapped in under the same name
        // meanwhile is not touched.
        for name in names.sorted() where attempt(name, { unlinkat(fd, name, 0) }) { removed.append(name) }
        if failures.isEmpty { _ = attempt(directory, { rmdir(directory) }) }
        guard failures.isEmpty else {
            throw SteeringError.kernel(
                "could not remove all of \(directory) (\(failures.joined(separator: "; "))); run sksteer unload again")
        }
        return removed
    }

    /// Refuses a state directory that someone other than us could have made or changed (see
    /// ``untrusted(_:)``); `load` and `unload` remove such an entry instead.
    static func checkDirectory(_ directory: String) throws {
        if let reason = untrusted(directory) {
            throw SteeringError.conflict(
                "\(directory) is not a state of ours: \(reason); someone else made it. Run sksteer unload to remove it"
                    + " (nothing is followed), and mount the bpf filesystem with mode 0700 (mount -t bpf -o mode=0700 bpf DIR)"
            )
        }
    }

    func requireWritable() throws {
        if readOnly { throw SteeringError.conflict("the dispatcher was opened read-only") }
    }

    // MARK: Bindings

    /// Every binding in force, most specific first.
    public func bindings() throws -> [Binding] {
        try bindings(copy: activeCopy()).sortedByPrecedence()
    }

    /// The bindings a copy holds, unordered, read from its `groups` table record by record.
    func bindings(copy: Int) throws -> [Binding] {
        let names = try labelNames()
        let records = try GroupPages.allRecords(maps.copies[copy].groups)
        var result: [Binding] = []
        result.reserveCapacity(records.count)
        for (key, value) in records {
            guard let (groupKey, page) = GroupRecord.decodeKey(key),
                GroupRecord.appendBindings(
                    value, of: groupKey, page: page, prefix: groupKey.binding(label: "", ports: .all).prefix,
                    labels: names,
                    to: &result)
            else {
                throw SteeringError.kernel(
                    "the groups table of copy \(copy) has an unreadable record; run sksteer apply")
            }
        }
        return result
    }

    /// The rule set a copy holds, read from its `groups` table.
    func ruleSet(copy: Int) throws -> RuleSet {
        let names = try labelNames()
        var groups: [RuleSet.GroupKey: RuleSet.Group] = [:]
        let records = try GroupPages.allRecords(maps.copies[copy].groups)
        groups.reserveCapacity(records.count)
        for (key, value) in records {
            guard let (groupKey, _) = GroupRecord.decodeKey(key),
                GroupRecord.decode(value, into: &groups[groupKey, default: RuleSet.Group()], labels: names)
            else {
                throw SteeringError.kernel(
                    "the groups table of copy \(copy) has an unreadable record; run sksteer apply")
            }
        }
        return RuleSet(groups: groups)
    }

    /// What a change did.
    public enum Change: Sendable, Equatable {
        /// Added, removed, or already as asked (nothing changed).
        case added, removed, unchanged
    }

    /// Adds a binding. Atomic, like every change: connections see the rules without it or
    /// with it. It reads and writes only the entries the binding touches.
    @discardableResult
    public func bind(_ binding: Binding) throws -> Change {
        try requireWritable()
        try Binding.checkLabel(binding.label)
        let plan = try change(adding: [binding], removing: [])
        if !plan.isEmpty { logger.info("bound", metadata: ["binding": "\(binding)"]) }
        return plan.isEmpty ? .unchanged : .added
    }

    /// Removes a binding. One bound to another label is an error; one that is not bound
    /// changes nothing (so running `unbind` again after it was interrupted succeeds).
    @discardableResult
    public func unbind(_ binding: Binding) throws -> Change {
        try requireWritable()
        let active = try activeCopy()
        let probe = KernelGroups(
            map: maps.copies[active].groups, labels: try labelNames(), buckets: try groupBuckets(copy: active))
        let group = try probe.group(RuleSet.groupKey(binding))
        if (binding.ports.isAll ? group?.all : group?.finite[binding.ports]) == nil { return .unchanged }
        try change(adding: [], removing: [binding])
        logger.info("unbound", metadata: ["binding": "\(binding)"])
        return .removed
    }

    // MARK: Apply, plan

    /// The difference between the current bindings and a desired set.
    public struct Plan: Sendable, Codable, Equatable {
        /// Bindings to add, in precedence order.
        public var added: [Binding]
        /// Bindings to remove, in precedence order.
        public var removed: [Binding]
        /// How many current bindings stay.
        public var unchanged: Int
        /// Whether nothing would change.
        public var isEmpty: Bool { added.isEmpty && removed.isEmpty }
    }

    /// What `apply` would change, with every check `apply` makes.
    public func plan(_ desired: [Binding]) throws -> Plan {
        let current = try ruleSet(copy: activeCopy())
        let wanted = try RuleSet(desired)
        try checkLimits(wanted, wanted.tables())
        return Self.plan(from: current, to: wanted)
    }

    /// `given`: the bindings `wanted` was built from, if known. Into an empty rule set, when
    /// they hold no duplicates, they are the plan's additions as they are (no pass over the
    /// groups while the new rules compile on another thread).
    static func plan(from current: RuleSet, to wanted: RuleSet, given: [Binding]? = nil) -> Plan {
        if current.groups.isEmpty, let given, given.count == wanted.count {
            return Plan(added: given.sortedByPrecedence(), removed: [], unchanged: 0)
        }
        var added: [Binding] = []
        var removed: [Binding] = []
        for binding in wanted.bindings where current.stored(binding) != binding { added.append(binding) }
        for binding in current.bindings where wanted.stored(binding) != binding { removed.append(binding) }
        return Plan(
            added: added.sortedByPrecedence(), removed: removed.sortedByPrecedence(),
            unchanged: current.count - removed.count)
    }

    /// Makes the bindings exactly `desired`, atomically: the change is written to the copy the
    /// program does not read, the program is switched to it with one `BPF_LINK_UPDATE`, then
    /// the other copy is brought up to date. Every connection sees the old rules or the new
    /// ones; an apply that stops early leaves the old rules in force (or, after the switch,
    /// the new ones), and the next command finishes the other copy. Only the entries that
    /// differ are written.
    @discardableResult
    public func apply(_ desired: [Binding]) throws -> Plan { try apply(desired, incrementalUpTo: Self.smallChange) }

    /// `apply`, writing changes of up to `limit` bindings through the incremental path.
    @discardableResult
    func apply(_ desired: [Binding], incrementalUpTo limit: Int) throws -> Plan {
        try requireWritable()
        let labels = Set(desired.map(\.label))
        try timed("check the labels") { for label in labels { try Binding.checkLabel(label) } }
        let current = try timed("read the rule set") { try ruleSet(copy: activeCopy()) }
        // Into an empty rule set, a large change is all new: the plan's order is sorted on a
        // second thread while the rule set is built here.
        let sorting =
            current.groups.isEmpty && desired.count > limit ? Background { desired.sortedByPrecedence() } : nil
        let wanted = try timed("build the rule set") { try RuleSet(desired) }
        if let sorting, wanted.count == desired.count {
            // Every binding given is new: the new rules compile on a second thread while the
            // group records are written from this one.
            let compiling = Background { Compiled(wanted) }
            try commitIntoEmpty(wanted, labels: labels, compiling: compiling)
            let plan = Plan(added: timed("sort the plan") { sorting.value }, removed: [], unchanged: 0)
            logger.info("applied", metadata: ["added": "\(plan.added.count)", "removed": "0"])
            return plan
        }
        // A change that is surely too large for the incremental path starts compiling the new
        // rules on a second thread while it plans.
        let compiling =
            abs(wanted.count - current.count) > limit ? Background { Compiled(wanted) } : nil
        let plan = timed("plan") { Self.plan(from: current, to: wanted, given: desired) }
        if plan.isEmpty { return plan }
        if plan.added.count + plan.removed.count <= limit {
            try change(adding: plan.added, removing: plan.removed)
        } else {
            try commit(from: current, to: wanted, plan: plan, compiling: compiling)
        }
        logger.info("applied", metadata: ["added": "\(plan.added.count)", "removed": "\(plan.removed.count)"])
        return plan
    }

    /// Adds and removes bindings in one atomic change, reading and writing only the entries
    /// they touch (so its cost does not grow with the bindings already there). A binding to
    /// remove must exist with its label; one to add that exists with another label is a
    /// conflict (remove it in the same call to move it).
    @discardableResult
    public func apply(adding: [Binding], removing: [Binding]) throws -> Plan {
        try requireWritable()
        for binding in adding { try Binding.checkLabel(binding.label) }
        return try change(adding: adding, removing: removing)
    }

    /// Changes up to this many bindings go through the incremental path.
    static let smallChange = 2_000

    /// Runs `body`, logging how long it took at debug level.
    func timed<T>(_ what: String, _ body: () throws -> T) rethrows -> T {
        progress?(what)
        let start = DispatchTime.now().uptimeNanoseconds
        defer {
            let milliseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            logger.debug("\(what): \(milliseconds) ms")
        }
        return try body()
    }
}

extension Logger {
    /// A logger that drops everything: the default, since libraries never set up logging.
    public static let disabled = Logger(label: "sksteer", factory: { _ in SwiftLogNoOpLogHandler() })
}

/// `sk:0x…`, as sockets are shown.
public func hexCookie(_ cookie: UInt64) -> String { "sk:0x" + String(cookie, radix: 16) }
