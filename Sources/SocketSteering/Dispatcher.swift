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
/// The state directory is `<bpffs>/sksteer-<netns inode>`; it holds the maps, the program,
/// the link that attaches the program to the namespace, and the binding table of the active
/// rule set. Opening takes a lock on the directory for the life of the value: shared for
/// reading, exclusive for changes, so concurrent invocations are serialized.
public final class Dispatcher {
    /// The network namespace this dispatcher steers.
    public let namespace: NetworkNamespace
    /// The state directory.
    public let directory: String
    let maps: StateMaps
    let readOnly: Bool
    let lock: OwnedFileDescriptor
    let logger: Logger

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
            throw SteeringError.notLoaded(
                "\(bpffs) is not a bpf filesystem: mount one (mount -t bpf bpf \(bpffs)) or pass --bpffs DIR")
        }
    }

    // MARK: Load, open, unload

    /// Loads the dispatcher into `namespace` (creating and pinning its state), or opens it for
    /// changes if it is already loaded. The state is built in a temporary directory and
    /// renamed into place, so a half-built state is never seen.
    public static func load(
        namespace: NetworkNamespace, bpffs: String = defaultBPFFS, maxBindings: Int = 1 << 20,
        logger: Logger = .disabled
    ) throws -> Dispatcher {
        try checkFileSystem(bpffs)
        let directory = try stateDirectory(bpffs: bpffs, namespace: namespace)
        if access(directory, F_OK) == 0 { return try open(namespace: namespace, bpffs: bpffs, logger: logger) }
        guard (1...(1 << 24)).contains(maxBindings) else {
            throw SteeringError.invalidInput("the binding limit must be between 1 and 16777216")
        }
        // bpffs refuses names with a dot.
        var template = Array("\(bpffs)/sksteer-new-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw SteeringError.kernel("cannot create a directory in \(bpffs): \(errnoDescription(errno))")
        }
        let temporary = String(cString: made)
        var link: Link?
        do {
            chmod(temporary, 0o750)
            let (maps, _, bindings) = try StateMaps.create(maxBindings: maxBindings)
            for (name, map) in maps.all { try pin(map, at: "\(temporary)/\(name.rawValue)") }
            try pin(bindings, at: "\(temporary)/bindings-0")
            let program = try Program.load(DataPlane.program(maps.dataPlane), type: .skLookup, name: "sksteer")
            try program.pin(at: "\(temporary)/program")
            chmod("\(temporary)/program", 0o640)
            link = try Link.attach(program, to: namespace)
            try link!.pin(at: "\(temporary)/link")
            chmod("\(temporary)/link", 0o640)
            guard rename(temporary, directory) == 0 else {
                // Another invocation loaded it first: keep theirs.
                let code = errno
                try? link?.detach()
                removeTree(temporary)
                if code == EEXIST || code == ENOTEMPTY {
                    return try open(namespace: namespace, bpffs: bpffs, logger: logger)
                }
                throw SteeringError.kernel("cannot move the state into \(directory): \(errnoDescription(code))")
            }
            logger.info("loaded", metadata: ["directory": "\(directory)"])
        } catch {
            try? link?.detach()
            removeTree(temporary)
            throw error
        }
        return try open(namespace: namespace, bpffs: bpffs, logger: logger)
    }

    static func pin(_ map: Map, at path: String) throws(BPFError) {
        try map.pin(at: path)
        chmod(path, 0o640)
    }

    /// Opens the loaded dispatcher of `namespace`.
    ///
    /// - Parameter readOnly: take a shared lock and read-only map descriptors (enough for
    ///   status, bindings and metrics; the owning group can do this).
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
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
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
        let maps = try StateMaps.open(directory: directory, readOnly: readOnly)
        let dispatcher = Dispatcher(
            namespace: namespace, directory: directory, maps: maps, readOnly: readOnly, lock: lock, logger: logger)
        let meta = try maps.readMeta()
        if !readOnly && !anySchema {
            guard meta.schema == Layout.schemaVersion else {
                throw SteeringError.conflict(
                    "the state in \(directory) has layout \(meta.schema), this sksteer uses \(Layout.schemaVersion);"
                        + " run sksteer upgrade")
            }
            try dispatcher.repairGeneration()
        }
        return dispatcher
    }

    /// Detaches the dispatcher and removes its state. Registered sockets are not closed.
    public static func unload(namespace: NetworkNamespace, bpffs: String = defaultBPFFS) throws {
        let dispatcher = try open(namespace: namespace, bpffs: bpffs)
        if let link = try? Link.openPinned(at: "\(dispatcher.directory)/link") { try link.detach() }
        removeTree(dispatcher.directory)
    }

    static func removeTree(_ directory: String) {
        guard let handle = opendir(directory) else { return }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(handle)
        for name in names { unlink("\(directory)/\(name)") }
        rmdir(directory)
    }

    func requireWritable() throws {
        if readOnly { throw SteeringError.conflict("the dispatcher was opened read-only") }
    }

    // MARK: The active rule set

    /// The slot (0 or 1) of the rule set the program uses now.
    func activeSlot() throws -> UInt32 {
        try maps.dataPlane.active.lookup(rawBytes(of: UInt32(0))).map { value(UInt32.self, from: $0.prefix(4)) } ?? 0
    }

    /// The trie the program uses now.
    func activeTrie() throws -> Map {
        guard let trie = try maps.dataPlane.rules.innerMap(at: activeSlot()) else {
            throw SteeringError.kernel("the dispatcher has no active rule set; run sksteer unload and load again")
        }
        return trie
    }

    /// The host-binding hash the program uses now.
    func activeHosts() throws -> Map {
        guard let hosts = try maps.dataPlane.hosts.innerMap(at: activeSlot()) else {
            throw SteeringError.kernel("the dispatcher has no active rule set; run sksteer unload and load again")
        }
        return hosts
    }

    /// Installs a complete rule set in the inactive slot and switches to it with one update:
    /// the commit point. The old slot then gets empty maps, so its memory is freed.
    func install(_ bindings: [RuleCompiler.Numbered], generation: UInt32, maxBindings: Int) throws -> UInt32 {
        let compiled = RuleCompiler.compile(bindings, generation: generation)
        let trie = try StateMaps.makeTrie(maxBindings: maxBindings)
        let hosts = try StateMaps.makeHosts(maxBindings: maxBindings)
        try trie.updateBatch(compiled.trie)
        try hosts.updateBatch(compiled.hosts)
        let old = try activeSlot()
        let new = 1 - old
        let hostBindings = bindings.map(\.binding).filter(RuleCompiler.isHostBinding)
        try maps.dataPlane.hostPorts.updateBatch(
            Layout.hostPortBitmap(hostBindings, slot: new).map { (rawBytes(of: $0.key), rawBytes(of: $0.value)) })
        try maps.dataPlane.rules.setInnerMap(trie, at: new)
        try maps.dataPlane.hosts.setInnerMap(hosts, at: new)
        try maps.dataPlane.active.update(rawBytes(of: UInt32(0)), rawBytes(of: new))
        try maps.dataPlane.rules.setInnerMap(try StateMaps.makeTrie(maxBindings: maxBindings), at: old)
        try maps.dataPlane.hosts.setInnerMap(try StateMaps.makeHosts(maxBindings: maxBindings), at: old)
        return compiled.rulesets
    }

    func bindingTablePath(_ generation: UInt32) -> String { "\(directory)/bindings-\(generation)" }

    /// The binding table of the active rule set.
    func bindingTable() throws -> Map {
        let meta = try maps.readMeta()
        return try Map.openPinned(at: bindingTablePath(meta.generation), readOnly: readOnly)
    }

    /// After a crash between swapping the rule set and recording it, make the record match
    /// the rule set the program uses, and drop binding tables of rule sets never activated.
    func repairGeneration() throws {
        var meta = try maps.readMeta()
        if let entry = try activeTrie().lookup(Layout.catalogueKey) {
            let active = value(UInt32.self, from: entry.prefix(4))
            if active != meta.generation {
                logger.warning("repairing an interrupted apply", metadata: ["generation": "\(active)"])
                meta.generation = active
                try maps.writeMeta(meta)
            }
        }
        let prefix = "bindings-"
        if let handle = opendir(directory) {
            var stale: [String] = []
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name.hasPrefix(prefix), name != "\(prefix)\(meta.generation)" { stale.append(name) }
            }
            closedir(handle)
            for name in stale { unlink("\(directory)/\(name)") }
        }
    }

    /// Label names by id.
    func labelNames() throws -> [UInt32: String] {
        var names: [UInt32: String] = [:]
        for (key, value) in try maps.labels.entries() {
            names[BPF.value(UInt32.self, from: value.prefix(4))] = String(
                decoding: key.prefix { $0 != 0 }, as: UTF8.self)
        }
        return names
    }

    static func labelKey(_ label: String) -> [UInt8] {
        let bytes = Array(label.utf8.prefix(Layout.labelSize - 1))
        return bytes + [UInt8](repeating: 0, count: Layout.labelSize - bytes.count)
    }

    /// The id of `label`, creating it if needed.
    func labelID(_ label: String, create: Bool) throws -> UInt32? {
        if let existing = try maps.labels.lookup(Self.labelKey(label)) {
            return value(UInt32.self, from: existing.prefix(4))
        }
        guard create else { return nil }
        let used = Set(try labelNames().keys)
        guard let free = (0..<UInt32(Layout.maxLabels)).first(where: { !used.contains($0) }) else {
            throw SteeringError.limit("all \(Layout.maxLabels) labels are in use; remove unused ones first")
        }
        try maps.labels.update(Self.labelKey(label), Layout.pair(free, 0), mode: .onlyNew)
        return free
    }

    /// The bindings of the active rule set, with their ids.
    func numberedBindings() throws -> [RuleCompiler.Numbered] {
        let names = try labelNames()
        let ids = Dictionary(uniqueKeysWithValues: names.map { ($0.value, $0.key) })
        return try bindingTable().entries().compactMap { key, record in
            guard let binding = Layout.decodeRecord(record, labels: names) else { return nil }
            return RuleCompiler.Numbered(
                binding: binding, id: value(UInt32.self, from: key), label: ids[binding.label]!)
        }
    }

    /// Every binding, most specific first.
    public func bindings() throws -> [Binding] {
        try numberedBindings().map(\.binding).sortedByPrecedence()
    }

    // MARK: Checks shared by bind and apply

    /// The lookup follows at most ``Layout/maxNesting`` prefixes that contain one another.
    static func checkNesting(_ bindings: [Binding]) throws {
        var lengths: [Socket.Transport: Set<Int>] = [:]
        for binding in bindings where !RuleCompiler.isHostBinding(binding) {
            lengths[binding.transport, default: []].insert(binding.mappedLength)
        }
        // Fewer distinct lengths than the limit: no chain can be longer. The usual case.
        guard lengths.values.contains(where: { $0.count > Layout.maxNesting }) else { return }
        let nodes = Set(
            bindings.filter { !RuleCompiler.isHostBinding($0) }.map {
                RuleCompiler.Node(transport: $0.transport, address: $0.mappedAddress, length: $0.mappedLength)
            })
        for node in nodes {
            let candidates = lengths[node.transport, default: []].filter { $0 <= node.length }
            guard candidates.count > Layout.maxNesting else { continue }
            var depth = 0
            for length in candidates {
                let masked = IPPrefix(IPAddress(bytes: node.address)!, length: length)!.address.bytes
                if nodes.contains(RuleCompiler.Node(transport: node.transport, address: masked, length: length)) {
                    depth += 1
                }
            }
            if depth > Layout.maxNesting {
                throw SteeringError.limit(
                    "\(node.transport) \(IPAddress(bytes: node.address)!)/\(node.length) (as IPv6) lies inside"
                        + " \(depth - 1) other bound prefixes; the lookup follows at most \(Layout.maxNesting) nested prefixes"
                )
            }
        }
    }

    static func checkConflicts(_ bindings: [Binding]) throws {
        var seen: [Binding.Rule: String] = [:]
        for binding in bindings {
            if let other = seen[binding.rule], other != binding.label {
                throw SteeringError.conflict(
                    "\(binding.transport) \(binding.prefix) \(binding.ports) is bound to both '\(other)' and"
                        + " '\(binding.label)'")
            }
            seen[binding.rule] = binding.label
        }
    }

    func freeBindingIDs(excluding used: Set<UInt32>, count: Int) throws -> [UInt32] {
        var meta = try maps.readMeta()
        var result: [UInt32] = []
        var candidate = meta.nextBinding
        var scanned: UInt32 = 0
        while result.count < count {
            if candidate >= meta.maxBindings { candidate = 0 }
            guard scanned < meta.maxBindings else {
                throw SteeringError.limit(
                    "the dispatcher holds at most \(meta.maxBindings) bindings (sksteer load --max-bindings)")
            }
            if !used.contains(candidate) { result.append(candidate) }
            candidate += 1
            scanned += 1
        }
        meta.nextBinding = candidate
        try maps.writeMeta(meta)
        return result
    }

    func resetBindingMetrics(_ ids: [UInt32]) throws {
        let zero = [UInt8](repeating: 0, count: Layout.BindingCounter.size)
        try maps.dataPlane.bindingMetrics.updateBatch(ids.map { (rawBytes(of: $0), zero) })
    }

    // MARK: Bind, unbind

    /// What a change did.
    public enum Change: Sendable, Equatable {
        /// Added, removed, or already as asked (nothing changed).
        case added, removed, unchanged
    }

    /// Adds a binding, in place: only the ports of its prefix's rule set change.
    @discardableResult
    public func bind(_ binding: Binding) throws -> Change {
        try requireWritable()
        let current = try numberedBindings()
        if let existing = current.first(where: { $0.binding.rule == binding.rule }) {
            if existing.binding.label == binding.label { return .unchanged }
            throw SteeringError.conflict(
                "\(binding.transport) \(binding.prefix) \(binding.ports) is already bound to '\(existing.binding.label)';"
                    + " unbind it first")
        }
        try Self.checkNesting(current.map(\.binding) + [binding])
        let label = try labelID(binding.label, create: true)!
        let id = try freeBindingIDs(excluding: Set(current.map(\.id)), count: 1)[0]
        try resetBindingMetrics([id])
        try bindingTable().update(rawBytes(of: id), Layout.bindingRecord(binding, labelID: label))
        let numbered = RuleCompiler.Numbered(binding: binding, id: id, label: label)
        if RuleCompiler.isHostBinding(binding) {
            // Set the port's bit first, so the entry is looked up as soon as it exists. (Unbind
            // leaves bits set: a stale bit costs one hash lookup; the next apply rebuilds them.)
            let word = rawBytes(
                of: Layout.hostPortWord(slot: try activeSlot(), transport: binding.transport, port: binding.ports.lower)
            )
            let bits = try maps.dataPlane.hostPorts.lookup(word).map { value(UInt64.self, from: $0) } ?? 0
            try maps.dataPlane.hostPorts.update(word, rawBytes(of: bits | 1 << UInt64(binding.ports.lower & 63)))
            let entry = RuleCompiler.hostEntry(numbered)
            try activeHosts().update(entry.key, entry.value)
        } else {
            try rewriteNode(of: binding, old: current, new: current + [numbered])
        }
        logger.info("bound", metadata: ["binding": "\(binding)"])
        return .added
    }

    /// Removes a binding (it must exist with this label).
    @discardableResult
    public func unbind(_ binding: Binding) throws -> Change {
        try requireWritable()
        let current = try numberedBindings()
        guard let existing = current.first(where: { $0.binding.rule == binding.rule }) else {
            throw SteeringError.conflict("\(binding.transport) \(binding.prefix) \(binding.ports) is not bound")
        }
        guard existing.binding.label == binding.label else {
            throw SteeringError.conflict(
                "\(binding.transport) \(binding.prefix) \(binding.ports) is bound to '\(existing.binding.label)',"
                    + " not '\(binding.label)'")
        }
        if RuleCompiler.isHostBinding(binding) {
            try activeHosts().delete(RuleCompiler.hostEntry(existing).key)
        } else {
            try rewriteNode(of: binding, old: current, new: current.filter { $0.id != existing.id })
        }
        try bindingTable().delete(rawBytes(of: existing.id))
        try collectLabels()
        logger.info("unbound", metadata: ["binding": "\(binding)"])
        return .removed
    }

    /// Rewrites the trie entries of one prefix: new and changed entries first, stale ones last.
    func rewriteNode(of binding: Binding, old: [RuleCompiler.Numbered], new: [RuleCompiler.Numbered]) throws {
        let trie = try activeTrie()
        let node = RuleCompiler.Node(
            transport: binding.transport, address: binding.mappedAddress, length: binding.mappedLength)
        func atNode(_ list: [RuleCompiler.Numbered]) -> [RuleCompiler.Numbered] {
            list.filter {
                !RuleCompiler.isHostBinding($0.binding) && $0.binding.transport == node.transport
                    && $0.binding.mappedLength == node.length
                    && $0.binding.mappedAddress == node.address
            }
        }
        let before = atNode(old)
        let after = atNode(new)
        let prefixKey = Layout.prefixKey(transport: node.transport, address: node.address, length: node.length)
        var ruleset: UInt32
        if let found = try trie.lookup(prefixKey), value(UInt32.self, from: found[4..<8]) == UInt32(32 + node.length) {
            ruleset = value(UInt32.self, from: found.prefix(4))
        } else {
            var meta = try maps.readMeta()
            ruleset = meta.nextRuleset
            meta.nextRuleset += 1
            try maps.writeMeta(meta)
        }
        let oldEntries = RuleCompiler.portEntries(before, ruleset: ruleset)
        let newEntries = after.isEmpty ? [] : RuleCompiler.portEntries(after, ruleset: ruleset)
        let oldByKey = Dictionary(oldEntries.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        let newKeys = Set(newEntries.map(\.key))
        if after.isEmpty { try trie.delete(prefixKey) }
        let changed = newEntries.filter { oldByKey[$0.key] != $0.value }
        try trie.updateBatch(changed.map { ($0.key, $0.value) })
        if before.isEmpty && !after.isEmpty {
            try trie.update(prefixKey, RuleCompiler.prefixEntry(node, ruleset: ruleset).value)
        }
        for entry in oldEntries where !newKeys.contains(entry.key) { try trie.delete(entry.key) }
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

    /// What `apply` would change.
    public func plan(_ desired: [Binding]) throws -> Plan {
        try plan(desired, current: numberedBindings())
    }

    func plan(_ desired: [Binding], current numbered: [RuleCompiler.Numbered]) throws -> Plan {
        try Self.checkConflicts(desired)
        let current = Set(numbered.map(\.binding))
        let wanted = Set(desired)
        return Plan(
            added: wanted.filter { !current.contains($0) }.sortedByPrecedence(),
            removed: current.filter { !wanted.contains($0) }.sortedByPrecedence(),
            unchanged: current.count - current.filter { !wanted.contains($0) }.count)
    }

    /// Makes the bindings exactly `desired`, atomically: the new rule set is built beside the
    /// active one and swapped in with one map update, so every connection sees the old rules
    /// or the new ones, and an apply that stops early leaves the old rules in force.
    @discardableResult
    public func apply(_ desired: [Binding]) throws -> Plan {
        try requireWritable()
        let current = try timed("read the current bindings") { try numberedBindings() }
        let plan: Plan = try timed("plan") { try self.plan(desired, current: current) }
        if plan.isEmpty { return plan }
        let unique = Array(Set(desired))
        try timed("check nesting") { () throws -> Void in try Self.checkNesting(unique) }
        let numbered = try timed("number the bindings") { () throws -> [RuleCompiler.Numbered] in
            var keptIDs: [Binding: UInt32] = [:]
            for numbered in current { keptIDs[numbered.binding] = numbered.id }
            var labels: [String: UInt32] = [:]
            for label in Set(unique.map(\.label)) { labels[label] = try labelID(label, create: true)! }
            let fresh = unique.filter { keptIDs[$0] == nil }
            let freshIDs = try freeBindingIDs(excluding: Set(current.map(\.id)), count: fresh.count)
            try resetBindingMetrics(freshIDs)
            for (binding, id) in zip(fresh, freshIDs) { keptIDs[binding] = id }
            return unique.map { RuleCompiler.Numbered(binding: $0, id: keptIDs[$0]!, label: labels[$0.label]!) }
        }

        var meta = try maps.readMeta()
        let generation = meta.generation &+ 1
        let maxBindings = Int(meta.maxBindings)
        try timed("write the binding table") { () throws -> Void in
            let table = try StateMaps.makeBindingTable(maxBindings: maxBindings)
            try table.updateBatch(
                numbered.map { (rawBytes(of: $0.id), Layout.bindingRecord($0.binding, labelID: $0.label)) })
            unlink(bindingTablePath(generation))
            try Self.pin(table, at: bindingTablePath(generation))
        }
        // The commit point: one update switches to the new rule set.
        let rulesets = try timed("build and switch the rule set") {
            try install(numbered, generation: generation, maxBindings: maxBindings)
        }
        meta.generation = generation
        meta.nextRuleset = rulesets
        try maps.writeMeta(meta)
        unlink(bindingTablePath(generation &- 1))
        try collectLabels(inUse: Set(numbered.map(\.label)))
        logger.info("applied", metadata: ["added": "\(plan.added.count)", "removed": "\(plan.removed.count)"])
        return plan
    }

    /// Runs `body`, logging how long it took at debug level.
    func timed<T>(_ what: String, _ body: () throws -> T) rethrows -> T {
        let start = DispatchTime.now().uptimeNanoseconds
        defer {
            let milliseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            logger.debug("\(what): \(milliseconds) ms")
        }
        return try body()
    }

    /// Removes labels that no binding uses and no socket is registered for.
    func collectLabels(inUse: Set<UInt32>? = nil) throws {
        let used = try inUse ?? Set(numberedBindings().map(\.label))
        for (id, name) in try labelNames() where !used.contains(id) {
            let hasSockets = try (0..<4).contains { offset in
                try socketCount(destination: id * 4 + UInt32(offset)) > 0
            }
            if !hasSockets { try maps.labels.delete(Self.labelKey(name)) }
        }
    }

    // MARK: Sockets

    func socketCount(destination: UInt32) throws -> UInt32 {
        try maps.dataPlane.socketCounts.lookup(rawBytes(of: destination)).map { value(UInt32.self, from: $0.prefix(4)) }
            ?? 0
    }

    /// The cookies of a destination's live sockets, by slot.
    func sockets(destination: UInt32) throws -> [(slot: Int, cookie: UInt64)] {
        let count = Int(try socketCount(destination: destination))
        var result: [(Int, UInt64)] = []
        for slot in 0..<min(count, Layout.socketsPerDestination) {
            let key = rawBytes(of: destination * UInt32(Layout.socketsPerDestination) + UInt32(slot))
            if let cookie = try maps.dataPlane.sockets.lookup(key) {
                result.append((slot, value(UInt64.self, from: cookie)))
            }
        }
        return result
    }

    /// A destination: the sockets of one label for one family and protocol.
    public struct Destination: Hashable, Sendable, Codable, CustomStringConvertible {
        /// The label the sockets are registered for.
        public var label: String
        /// TCP or UDP.
        public var transport: Socket.Transport
        /// Whether this is the IPv6 destination (else IPv4).
        public var ipv6: Bool
        /// `LABEL ipv4|ipv6 PROTOCOL`, e.g. `web ipv4 tcp`.
        public var description: String { "\(label) \(ipv6 ? "ipv6" : "ipv4") \(transport)" }
    }

    /// What registering a socket did, per destination.
    public struct Registration: Sendable, Equatable, CustomStringConvertible {
        /// The destination the socket was registered in.
        public var destination: Destination
        /// The socket's cookie (`SO_COOKIE`).
        public var cookie: UInt64
        /// The socket's slot in the destination, 0 up to ``Layout/socketsPerDestination``.
        public var slot: Int
        /// Whether the socket was already there, so nothing changed.
        public var alreadyRegistered: Bool
        /// `DESTINATION: socket sk:0x… registered in slot N` (or `already registered`).
        public var description: String {
            "\(destination): socket \(hexCookie(cookie)) \(alreadyRegistered ? "already registered" : "registered") in slot \(slot)"
        }
    }

    /// Registers a socket for `label`: a listening TCP or an unconnected UDP socket in this
    /// namespace. IPv4 sockets serve IPv4 traffic; v6-only sockets IPv6; dual-stack IPv6
    /// sockets both. Another socket for the same destination is added beside the ones there
    /// (connections are spread by a hash of the remote address and port); the same socket
    /// twice is a no-op. A socket leaves when it is closed.
    @discardableResult
    public func register(_ socket: Socket, label: String) throws -> [Registration] {
        try requireWritable()
        try Binding.checkLabel(label)
        let facts = try socket.facts()
        guard let transport = facts.transport, facts.family == AF_INET || facts.family == AF_INET6 else {
            throw SteeringError.unsuitableSocket("only TCP and UDP sockets over IPv4 or IPv6 can be registered")
        }
        if transport == .tcp && !facts.listening {
            throw SteeringError.unsuitableSocket("the TCP socket is not listening; call listen() before registering it")
        }
        if transport == .udp && facts.connected {
            throw SteeringError.unsuitableSocket(
                "the UDP socket is connected; only unconnected UDP sockets can receive steered traffic")
        }
        if let theirs = facts.namespaceCookie, let ours = try namespaceCookie(), theirs != ours {
            throw SteeringError.unsuitableSocket(
                "the socket belongs to another network namespace than \(namespace.path)")
        }
        let families: [Bool] = facts.family == AF_INET ? [false] : facts.v6Only ? [true] : [false, true]
        let labelID = try labelID(label, create: true)!
        let cookie = try socket.cookie()
        var result: [Registration] = []
        for ipv6 in families {
            let destination = Layout.destination(label: labelID, transport: transport, ipv6: ipv6)
            let described = Destination(label: label, transport: transport, ipv6: ipv6)
            let live = try sockets(destination: destination)
            if let slot = live.first(where: { $0.cookie == cookie })?.slot {
                result.append(Registration(destination: described, cookie: cookie, slot: slot, alreadyRegistered: true))
                continue
            }
            let occupied = Set(live.map(\.slot))
            guard let slot = (0..<Layout.socketsPerDestination).first(where: { !occupied.contains($0) }) else {
                throw SteeringError.limit(
                    "\(described) already has \(Layout.socketsPerDestination) live sockets; close or unregister some")
            }
            let key = destination * UInt32(Layout.socketsPerDestination) + UInt32(slot)
            do {
                try SocketMap(maps.dataPlane.sockets).set(key, socket, mode: .onlyNew)
            } catch {
                throw SteeringError.unsuitableSocket("the kernel refused the socket for \(described): \(error)")
            }
            if UInt32(slot + 1) > (try socketCount(destination: destination)) {
                try maps.dataPlane.socketCounts.update(rawBytes(of: destination), rawBytes(of: UInt32(slot + 1)))
            }
            result.append(Registration(destination: described, cookie: cookie, slot: slot, alreadyRegistered: false))
        }
        logger.info("registered", metadata: ["label": "\(label)", "cookie": "\(hexCookie(cookie))"])
        return result
    }

    /// Removes every socket of a destination.
    public func unregister(label: String, transport: Socket.Transport, ipv6: Bool) throws {
        try requireWritable()
        guard let labelID = try labelID(label, create: false) else {
            throw SteeringError.conflict("no label '\(label)' is known")
        }
        let destination = Layout.destination(label: labelID, transport: transport, ipv6: ipv6)
        // Only live slots: the kernel answers EINVAL to deleting an empty SOCKMAP slot.
        for (slot, _) in try sockets(destination: destination) {
            try maps.dataPlane.sockets.delete(
                rawBytes(of: destination * UInt32(Layout.socketsPerDestination) + UInt32(slot)))
        }
        try maps.dataPlane.socketCounts.update(rawBytes(of: destination), rawBytes(of: UInt32(0)))
        try collectLabels()
    }

    private func namespaceCookie() throws -> UInt64? {
        try namespace.run { try Socket.bound(.udp, .loopback4, port: 0).facts().namespaceCookie }
    }
}

extension Logger {
    /// A logger that drops everything: the default, since libraries never set up logging.
    public static let disabled = Logger(label: "sksteer", factory: { _ in SwiftLogNoOpLogHandler() })
}

/// `sk:0x…`, as sockets are shown.
public func hexCookie(_ cookie: UInt64) -> String { "sk:0x" + String(cookie, radix: 16) }
