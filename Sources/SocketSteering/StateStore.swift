import BPF
import BPFAssembly

#if canImport(Glibc)
    import Glibc
#endif

/// The commit protocol. Every change, one binding or a million, goes the same way:
///
/// 1. `meta.pending` names the idle copy (the one the program does not read);
/// 2. the change is written to the idle copy: entries, port flags, binding table;
/// 3. a program over the idle copy is loaded and swapped in with one `BPF_LINK_UPDATE`
///    (the commit point: before it every connection sees the old rules, after it the new);
/// 4. `meta.pending` names the other copy, which gets the same change;
/// 5. `meta.pending` is cleared.
///
/// Which copy is active is read from the kernel: the copy whose maps the attached program
/// uses. So a listing always shows the rules in force, and a command that died anywhere
/// leaves `pending` set; the next writable command rebuilds that copy from the active one.
extension Dispatcher {
    /// The copy the attached program reads.
    func activeCopy() throws -> Int {
        let link: Link
        do {
            link = try Link.openPinned(at: "\(directory)/link")
        } catch {
            throw SteeringError.notLoaded(
                "the dispatcher in \(directory) has no link (\(error)); run sksteer load to attach it again")
        }
        let program = try Program.open(id: link.info().programID)
        let used = Set(try program.info().mapIDs)
        for copy in 0..<2 where used.contains(try maps.copies[copy].ports.info().id) { return copy }
        throw SteeringError.kernel(
            "the program attached by \(directory)/link reads neither rule-set copy; run sksteer load to repair")
    }

    /// Applies `change` to the rule set in force and commits the result (see the protocol above).
    /// A change that throws, or fails a check, changes nothing.
    func commit(_ change: (inout RuleSet) throws -> Void) throws {
        try requireWritable()
        let active = try activeCopy()
        let current = try timed("read the rule set") { try ruleSet(copy: active) }
        var desired = current
        try change(&desired)
        let old = timed("compile the current rules") { current.tables() }
        let new = timed("compile the new rules") { desired.tables() }
        try checkLimits(desired, new)
        let plan = Self.plan(from: current, to: desired)
        if plan.isEmpty { return }
        let labels = try assignLabels(for: desired)
        let write = CopyWrite(
            entries: new.changes(from: old), ports: Self.portWords(new).changes(from: Self.portWords(old)),
            bindings: plan, labels: labels)
        let idle = 1 - active
        try setPending(idle)
        try timed("write the idle copy") { try self.write(write, to: idle) }
        try timed("switch") { try switchProgram(to: idle) }
        try setPending(active)
        try timed("write the other copy") { try self.write(write, to: active) }
        try setPending(nil)
        try collectLabels(inUse: Set(desired.bindings.map(\.label)))
    }

    func setPending(_ copy: Int?) throws {
        var meta = try maps.readMeta()
        meta.pending = copy.map { UInt32($0 + 1) } ?? 0
        try maps.writeMeta(meta)
    }

    /// Refuses rule sets larger than the maps.
    func checkLimits(_ rules: RuleSet, _ tables: RuleTables) throws {
        let capacity = Int(try maps.readMeta().capacity)
        if rules.count > capacity {
            throw SteeringError.limit(
                "\(rules.count) bindings are more than this dispatcher holds (\(capacity)); unload and load with a"
                    + " larger --max-bindings")
        }
        let limit = CopyMaps.entryLimit(capacity: capacity)
        var counts: [String: Int] = [:]
        for key in tables.entries.keys { counts["\(key.lane) \(key.table)", default: 0] += 1 }
        if let (table, count) = counts.first(where: { $0.value > limit }) {
            throw SteeringError.limit(
                "the bindings need \(count) \(table) entries, more than the \(limit) this dispatcher holds (port"
                    + " ranges take one entry per port); load with a larger --max-bindings")
        }
        let labels = Set(rules.bindings.map(\.label))
        if labels.count > Layout.maxLabels {
            throw SteeringError.limit("\(labels.count) labels are more than the \(Layout.maxLabels) a dispatcher holds")
        }
    }

    /// What one change writes to a copy.
    struct CopyWrite {
        var entries: (upserts: [(EntryKey, EntryValue)], deletes: [EntryKey])
        var ports: (upserts: [(UInt32, UInt64)], deletes: [UInt32])
        var bindings: Plan
        var labels: [String: UInt32]
    }

    /// The port-flag words of a rule set's tables, by word index (zero words left out).
    static func portWords(_ tables: RuleTables) -> PortWords {
        var words: [UInt32: UInt64] = [:]
        for (lane, ports) in tables.portFlags() {
            for (port, bits) in ports {
                let word = Layout.PortFlags.word(transport: lane.transport, port: port)
                words[word, default: 0] |= UInt64(bits) << Layout.PortFlags.shift(lane: lane, port: port)
            }
        }
        return PortWords(words: words)
    }

    struct PortWords: Equatable {
        var words: [UInt32: UInt64]
        func changes(from old: PortWords) -> (upserts: [(UInt32, UInt64)], deletes: [UInt32]) {
            var upserts: [(UInt32, UInt64)] = []
            for (word, bits) in words where old.words[word] != bits { upserts.append((word, bits)) }
            // An array has no deletes: a word that is gone becomes 0.
            for word in old.words.keys where words[word] == nil { upserts.append((word, 0)) }
            return (upserts, [])
        }
    }

    /// Writes a change to one copy. The copy is not read by the program while this runs.
    func write(_ change: CopyWrite, to copy: Int) throws {
        let maps = self.maps.copies[copy]
        var byMap: [String: (Map, [(key: [UInt8], value: [UInt8])])] = [:]
        // Sorted by address, so the trie's inserts walk nodes that are already in cache.
        let upserts = change.entries.upserts.sorted { a, b in
            (a.0.lane.index, a.0.table.rawValue, a.0.port, a.0.prefix) < (
                b.0.lane.index, b.0.table.rawValue, b.0.port, b.0.prefix
            )
        }
        for (key, value) in upserts {
            let name = CopyMaps.name(key.table, key.lane, copy: copy)
            let bytes = (
                key: Layout.encode(key), value: Layout.encode(value, label: change.labels[value.label]!, lane: key.lane)
            )
            byMap[name, default: (maps.map(key), [])].1.append(bytes)
        }
        for (_, (map, entries)) in byMap { try map.updateBatch(entries) }
        for key in change.entries.deletes { _ = try maps.map(key).delete(Layout.encode(key)) }
        try maps.ports.updateBatch(change.ports.upserts.map { (rawBytes(of: $0.0), rawBytes(of: $0.1)) })
        // Removed first: a binding whose label changes is removed and added under the same key.
        for binding in change.bindings.removed { _ = try maps.bindings.delete(Layout.BindingRecord.key(binding)) }
        try maps.bindings.updateBatch(
            change.bindings.added.map {
                (Layout.BindingRecord.key($0), Layout.BindingRecord.value(label: change.labels[$0.label]!))
            })
    }

    /// Loads a program over `copy` and swaps it in through the pinned link.
    func switchProgram(to copy: Int) throws {
        let program = try Program.load(DataPlane.program(maps.dataPlane(copy: copy)), type: .skLookup, name: "sksteer")
        let staging = "\(directory)/program-next"
        unlink(staging)
        try program.pin(at: staging)
        chmod(staging, 0o640)
        let link = try Link.openPinned(at: "\(directory)/link")
        try link.update(to: program)
        guard rename(staging, "\(directory)/program") == 0 else {
            throw SteeringError.kernel("the program was switched but could not be renamed: \(errnoDescription(errno))")
        }
    }

    /// Finishes what an interrupted command left: re-attaches a missing link, pins the
    /// program in force as `program`, and rebuilds a copy left half written from the active one.
    func repair() throws {
        var meta = try maps.readMeta()
        let active: Int
        if let copy = try? activeCopy() {
            active = copy
        } else {
            // No link, or one that reads neither copy: attach a program over the copy that
            // was not being written.
            active = meta.pending == 1 ? 1 : 0
            logger.warning("re-attaching the dispatcher", metadata: ["copy": "\(active)"])
            let program = try Program.load(
                DataPlane.program(maps.dataPlane(copy: active)), type: .skLookup, name: "sksteer")
            unlink("\(directory)/link")
            let link = try Link.attach(program, to: namespace)
            try link.pin(at: "\(directory)/link")
            chmod("\(directory)/link", 0o640)
            meta.pending = UInt32(2 - active)
            try maps.writeMeta(meta)
        }
        // `program` is the attached one (a switch can die before its rename).
        let attached = try Link.openPinned(at: "\(directory)/link").info().programID
        if (try? Program.openPinned(at: "\(directory)/program").info().id) != attached {
            try Program.open(id: attached).pin(at: "\(directory)/program-next")
            rename("\(directory)/program-next", "\(directory)/program")
        }
        unlink("\(directory)/program-next")
        if meta.pending != 0 {
            let idle = 1 - active
            logger.warning("repairing an interrupted change", metadata: ["copy": "\(idle)"])
            try rebuild(copy: idle, from: active)
            meta.pending = 0
            try maps.writeMeta(meta)
        }
        try collectLabels(inUse: Set(ruleSet(copy: active).bindings.map(\.label)))
    }

    /// Replaces a copy that no program reads with new maps holding the rules of `source`.
    func rebuild(copy: Int, from source: Int) throws {
        let rules = try ruleSet(copy: source)
        let fresh = try CopyMaps.create(index: copy, capacity: Int(try maps.readMeta().capacity))
        let tables = rules.tables()
        let write = CopyWrite(
            entries: tables.changes(from: RuleTables(entries: [:])),
            ports: Self.portWords(tables).changes(from: PortWords(words: [:])),
            bindings: Plan(added: rules.bindings, removed: [], unchanged: 0), labels: try assignLabels(for: rules))
        var maps = self.maps
        maps.copies[copy] = fresh
        self.maps = maps
        try self.write(write, to: copy)
        for (name, map) in fresh.all {
            unlink("\(directory)/\(name)")
            try Self.pin(map, at: "\(directory)/\(name)")
        }
    }

    // MARK: Labels

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

    /// The id of `label`, creating it if needed (with zeroed counters).
    func labelID(_ label: String, create: Bool) throws -> UInt32? {
        if let existing = try maps.labels.lookup(Self.labelKey(label)) {
            return value(UInt32.self, from: existing.prefix(4))
        }
        guard create else { return nil }
        let used = Set(try labelNames().keys)
        guard let free = (0..<UInt32(Layout.maxLabels)).first(where: { !used.contains($0) }) else {
            throw SteeringError.limit("all \(Layout.maxLabels) labels are in use; remove unused ones first")
        }
        let zero = [UInt8](repeating: 0, count: Layout.DestinationCounter.size * possibleCPUCount)
        for lane in Lane.allCases {
            try maps.destinationMetrics.update(rawBytes(of: Layout.destination(label: free, lane: lane)), zero)
        }
        try maps.labels.update(Self.labelKey(label), rawBytes(of: free) + [0, 0, 0, 0], mode: .onlyNew)
        return free
    }

    /// Ids for every label of a rule set, created where missing.
    func assignLabels(for rules: RuleSet) throws -> [String: UInt32] {
        var ids: [String: UInt32] = [:]
        for (id, name) in try labelNames() { ids[name] = id }
        for label in Set(rules.bindings.map(\.label)) where ids[label] == nil {
            ids[label] = try labelID(label, create: true)!
        }
        return ids
    }

    /// Removes labels that no binding in force uses and no socket is registered for.
    func collectLabels(inUse: Set<String>) throws {
        guard !readOnly else { return }
        for (id, name) in try labelNames() where !inUse.contains(name) {
            let hasSockets = try Lane.allCases.contains { lane in
                try !sockets(destination: Layout.destination(label: id, lane: lane)).isEmpty
            }
            if !hasSockets { _ = try maps.labels.delete(Self.labelKey(name)) }
        }
    }
}
