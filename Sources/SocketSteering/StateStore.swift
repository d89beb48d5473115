import BPF
import BPFAssembly
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The commit protocol. Every change, one binding or a million, goes the same way:
///
/// 1. `meta.pending` names the idle copy (the one the program does not read);
/// 2. the change is written to the idle copy: entries, port flags, binding listing (``GroupPages``);
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
        let info = try link.info()
        // A namespace's links are detached when it dies, and its inode may then be reused:
        // state whose link is attached elsewhere (or nowhere) is not this namespace's.
        if let inode = info.namespaceInode, inode != (try namespace.inode()) {
            throw SteeringError.notLoaded(
                "the state in \(directory) belongs to a network namespace that no longer exists (its link is"
                    + " detached); run sksteer unload to remove it, then sksteer load")
        }
        // The attached program is one of the pinned ones (a switch renames program-next into
        // place, an upgrade program-upgrade; either can die before its rename); open it by pin, not by id, which would need CAP_SYS_ADMIN.
        var attached: Program?
        for name in ["program", "program-next", "program-upgrade"] {
            guard let candidate = try? Program.openPinned(at: "\(directory)/\(name)") else { continue }
            let id: UInt32? = try? candidate.info().id
            if id == info.programID {
                attached = candidate
                break
            }
        }
        guard let program = attached else {
            throw SteeringError.kernel(
                "the program attached by \(directory)/link is not pinned in \(directory); run sksteer load to repair")
        }
        let used = Set(try program.info().mapIDs)
        for copy in 0..<2 where used.contains(try maps.copies[copy].ports.info().id) { return copy }
        throw SteeringError.kernel(
            "the program attached by \(directory)/link reads neither rule-set copy; run sksteer load to repair")
    }

    /// A rule set compiled to the tables, port words and host filter words of a copy.
    struct Compiled: Sendable {
        var tables: RuleTables
        var ports: PortWords
        var filter: PortWords
        init(_ rules: RuleSet) {
            tables = rules.tables()
            ports = Dispatcher.portWords(tables)
            filter = Dispatcher.filterWords(tables)
        }
    }

    /// Commits a whole new rule set: both compiled in memory, only the differing entries
    /// written. The new rules are compiled on a second thread (`compiling`, if the caller
    /// started it already) while the old ones, the labels, the groups and the census are
    /// worked out here.
    func commit(
        from current: RuleSet, to desired: RuleSet, plan: Plan, compiling: Background<Compiled>? = nil
    ) throws {
        if plan.isEmpty { return }
        let compiling = compiling ?? Background { Compiled(desired) }
        let old = timed("compile the current rules") { Compiled(current) }
        // The labels in use, gathered once (a pass over every group).
        let inUse = timed("gather the labels") { desired.labels }
        let buckets = try wholeSetBuckets(bindings: desired.count)
        let (groups, oldPages) = timed("gather the changed groups") {
            Self.changedGroups(current, desired, plan, buckets: buckets)
        }
        let census = timed("count the census") { Census.counts(desired) }
        let oldCensus = Census.counts(current)
        let new = timed("wait for the new rules' compilation") { compiling.value }
        let hosts = try timed("check the limits") { try checkLimits(desired, new.tables, labels: inUse) }
        let labels = try timed("assign the labels") { try assignLabels(for: desired, labels: inUse) }
        let write = timed("diff the tables") {
            CopyWrite(
                entries: new.tables.changes(from: old.tables), ports: new.ports.changes(from: old.ports),
                filter: new.filter.changes(from: old.filter), groups: groups, oldPages: oldPages, buckets: buckets,
                census: Array(Set(census.keys).union(oldCensus.keys)).map { ($0, census[$0] ?? 0) },
                count: UInt32(desired.count), labels: labels)
        }
        let encoded = timed("encode the change") { encode(write) }
        // Label ids of removed bindings, for their counters (before the labels are collected).
        var labelIDs: [String: UInt32] = [:]
        if maps.bindingMetrics != nil { for (id, name) in try labelNames() { labelIDs[name] = id } }
        let deleteCounters = { try self.deleteBindingCounters(plan, labelIDs: labelIDs, desired: desired) }
        // A copy whose listing has another bucket count gets a new one holding every group.
        var allGroups: EncodedGroups?
        try commit(cleanup: deleteCounters) { copy, _ in
            try self.fitHostTables(copy: copy, counts: hosts, shrink: false)
            if try self.groupBuckets(copy: copy) != buckets {
                if allGroups == nil {
                    allGroups = self.timed("encode every group") {
                        GroupPages.encode(desired.groups, oldPages: [:], buckets: buckets, labels: labels)
                    }
                }
                try self.replaceGroups(copy: copy, buckets: buckets, with: allGroups!)
                try self.write(encoded, to: copy, groups: false)
            } else {
                try self.write(encoded, to: copy)
            }
            try self.fitHostTables(copy: copy, counts: hosts, shrink: true)
        }
        try timed("collect the labels") { try collectLabels(inUse: inUse) }
    }

    /// ``commit(from:to:plan:compiling:)`` into an empty rule set. Every group is new, so
    /// the group records do not wait for the tables: they are encoded and written to the
    /// idle copy while the tables compile on the other thread; then the tables follow on
    /// both threads. If the tables turn out too large for the maps, the idle copy is
    /// emptied again before the error is thrown.
    func commitIntoEmpty(_ desired: RuleSet, labels inUse: Set<String>, compiling: Background<Compiled>) throws {
        try checkCounts(desired, labels: inUse)
        let census = timed("count the census") { Census.counts(desired) }
        let labels = try timed("assign the labels") { try assignLabels(for: desired, labels: inUse) }
        // The compiling thread goes on to list and encode the entries.
        let count = UInt32(desired.count)
        let encoding = Background { () -> (RuleTables, EncodedWrite) in
            let new = compiling.value
            let tables = Self.encodeTables(count: new.tables.entries.count, labels: labels) { body in
                for (key, value) in new.tables.entries { body(key, value) }
            }
            let write = EncodedWrite(
                tables: tables, deletes: [], ports: new.ports.changes(from: PortWords(words: [:])).upserts,
                filter: new.filter.changes(from: PortWords(words: [:])).upserts, groups: EncodedGroups(),
                census: census.map { ($0.key, $0.value) }, count: count)
            return (new.tables, write)
        }
        let buckets = GroupPages.bucketCount(bindings: desired.count, capacity: Int(try maps.readMeta().capacity))
        let groups = timed("encode the group records") {
            GroupPages.encode(desired.groups, oldPages: [:], buckets: buckets, labels: labels)
        }
        var encoded: EncodedWrite?
        var hosts: [Lane: Int] = [:]
        let prepare = { (idle: Int) throws in
            if try self.groupBuckets(copy: idle) != buckets { try self.regroup(copy: idle, to: buckets) }
            try self.timed("write \(groups.count) group pages") { try self.writeGroups(groups, to: idle) }
            let (tables, entries) = self.timed("wait for the entries' compilation") { encoding.value }
            do {
                hosts = try self.timed("check the limits") { try self.checkLimits(desired, tables, labels: inUse) }
            } catch {
                // Nothing reads the idle copy: empty it again, so no repair is left to do.
                try self.rebuild(copy: idle, from: 1 - idle)
                try self.setPending(nil)
                try self.collectLabels(inUse: [])
                throw error
            }
            encoded = entries
            encoded!.groups = groups
        }
        try commit(prepare: prepare) { copy, first in
            if try !first && self.groupBuckets(copy: copy) != buckets { try self.regroup(copy: copy, to: buckets) }
            try self.fitHostTables(copy: copy, counts: hosts, shrink: false)
            try self.write(encoded!, to: copy, groups: !first)
        }
        try timed("collect the labels") { try collectLabels(inUse: inUse) }
    }

    /// The groups of every bucket a plan touches, as they are to be, and how many pages each
    /// of those buckets has now.
    static func changedGroups(_ current: RuleSet, _ desired: RuleSet, _ plan: Plan, buckets: Int) -> (
        groups: [RuleSet.GroupKey: RuleSet.Group], oldPages: [UInt32: Int]
    ) {
        var touched = Set<UInt32>()
        for binding in [plan.added, plan.removed].joined() {
            touched.insert(GroupPages.bucket(RuleSet.groupKey(binding), count: buckets))
        }
        var groups: [RuleSet.GroupKey: RuleSet.Group] = [:]
        for (key, group) in desired.groups where touched.contains(GroupPages.bucket(key, count: buckets)) {
            groups[key] = group
        }
        var records: [UInt32: Int] = [:]
        for (key, group) in current.groups {
            let bucket = GroupPages.bucket(key, count: buckets)
            if touched.contains(bucket) { records[bucket, default: 0] += GroupRecord.pageCount(group) }
        }
        return (groups, records.mapValues(GroupPages.pages(records:)))
    }

    /// The bucket count of a copy's `groups` table: its header's, or (a table written before
    /// the header existed) ``GroupPages/bucketCount(capacity:)``.
    func groupBuckets(copy: Int) throws -> Int {
        if let header = try maps.copies[copy].groups.lookup(GroupPages.headerKey),
            let count = GroupPages.buckets(header: header)
        {
            return count
        }
        return GroupPages.bucketCount(capacity: Int(try maps.readMeta().capacity))
    }

    /// The bucket count a whole-set change of `bindings` bindings writes both copies with:
    /// theirs, when both have the same and it is between what `bindings` asks
    /// (``GroupPages/bucketCount(bindings:capacity:)``) and four times as many; else what it asks.
    func wholeSetBuckets(bindings: Int) throws -> Int {
        let wanted = GroupPages.bucketCount(bindings: bindings, capacity: Int(try maps.readMeta().capacity))
        let current = try groupBuckets(copy: 0)
        guard try groupBuckets(copy: 1) == current, (wanted...(wanted * 4)).contains(current) else { return wanted }
        return current
    }

    /// Replaces the `groups` table of `copy` (a copy no program reads, and pending) by a new
    /// one of `buckets` buckets holding `groups` (every group of the rules it is to hold).
    func replaceGroups(copy: Int, buckets: Int, with groups: EncodedGroups) throws {
        maps.copies[copy].groups = try CopyMaps.createGroups(
            capacity: Int(try maps.readMeta().capacity), buckets: buckets)
        try writeGroups(groups, to: copy)
        try replacePin("c\(copy)-groups", with: maps.copies[copy].groups)
    }

    /// Replaces the `groups` table of `copy` (a copy no program reads, and pending) by one of
    /// `buckets` buckets holding the same records (at most 8 a bucket: it only grows). A
    /// bucket's records are all read to change one group, so a table whose bindings outgrow 8
    /// a bucket is regrouped to twice as many (or more) buckets: the cost of the copies stays
    /// proportional to the bindings written.
    func regroup(copy: Int, to buckets: Int) throws {
        let started = DispatchTime.now().uptimeNanoseconds
        let records = try GroupPages.allRecords(maps.copies[copy].groups)
        let pages = try packGroups(copy: copy, records: records, buckets: buckets)
        logger.debug(
            "groups regrouped",
            metadata: [
                "copy": "\(copy)", "buckets": "\(buckets)", "pages": "\(pages)",
                "ms": "\(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)",
            ])
    }

    /// Replaces the `groups` table of `copy` (a copy no program reads) by one of `buckets`
    /// buckets holding `records` (``GroupRecord`` keys and values), packed into pages by the
    /// bucket of their group; returns how many pages.
    @discardableResult
    func packGroups(copy: Int, records: [(key: [UInt8], value: [UInt8])], buckets: Int) throws -> Int {
        var byBucket: [UInt32: [UInt8]] = [:]
        for (key, value) in records {
            guard let (group, _) = GroupRecord.decodeKey(key), value.count == GroupRecord.valueSize else {
                throw SteeringError.kernel(
                    "the groups table of copy \(copy) has an unreadable record; sksteer apply writes it anew"
                        + " (state of a layout that apply refuses: unload, load and apply again)")
            }
            byBucket[GroupPages.bucket(group, count: buckets), default: []] += key + value
        }
        var keys: [UInt8] = []
        var values: [UInt8] = []
        var pages = 0
        for (bucket, records) in byBucket {
            pages += GroupPages.appendPages(bucket: bucket, records: records, to: &keys, &values)
        }
        let fresh = try CopyMaps.createGroups(capacity: Int(try maps.readMeta().capacity), buckets: buckets)
        try fresh.updateBatch(keys: keys, values: values)
        try replacePin("c\(copy)-groups", with: fresh)
        maps.copies[copy].groups = fresh
        return pages
    }

    /// The commit protocol around a change written by `body` to one copy at a time (told
    /// whether it is the first, the idle copy); `prepare` runs first on the idle copy, once
    /// it is pending; `cleanup` runs after both copies are written, while the change is
    /// still pending (so that the repair finishes it if it is interrupted).
    func commit(
        prepare: (Int) throws -> Void = { _ in }, cleanup: () throws -> Void = {}, _ body: (Int, Bool) throws -> Void
    ) throws {
        let active = try activeCopy()
        let idle = 1 - active
        try setPending(idle)
        try prepare(idle)
        try timed("write the idle copy") { try body(idle, true) }
        try timed("switch") { try switchProgram(to: idle) }
        try setPending(active)
        try timed("write the other copy") { try body(active, false) }
        try cleanup()
        try setPending(nil)
    }

    /// Adds and removes a few bindings, reading only the groups and entries they touch.
    @discardableResult
    func change(adding: [Binding], removing: [Binding]) throws -> Plan {
        try requireWritable()
        let active = try activeCopy()
        let probe = KernelGroups(
            map: maps.copies[active].groups, labels: try labelNames(), buckets: try groupBuckets(copy: active))
        var added: [Binding] = []
        var removed: [Binding] = []
        var seen = Set<Binding.Rule>()
        for binding in removing {
            try RuleSet.check(binding)
            let group = try probe.group(RuleSet.groupKey(binding))
            let label = binding.ports.isAll ? group?.all : group?.finite[binding.ports]
            guard let label else {
                throw SteeringError.conflict("\(binding.transport) \(binding.prefix) \(binding.ports) is not bound")
            }
            guard label == binding.label else {
                throw SteeringError.conflict(
                    "\(binding.transport) \(binding.prefix) \(binding.ports) is bound to '\(label)', not '\(binding.label)'"
                )
            }
            if seen.insert(binding.rule).inserted { removed.append(binding) }
        }
        var adds: [Binding.Rule: String] = [:]
        for binding in adding {
            try RuleSet.check(binding)
            if let other = adds[binding.rule], other != binding.label {
                throw SteeringError.conflict(
                    "\(binding.transport) \(binding.prefix) \(binding.ports) is bound to both '\(other)' and '\(binding.label)'"
                )
            }
            adds[binding.rule] = binding.label
            let group = try probe.group(RuleSet.groupKey(binding))
            let label = binding.ports.isAll ? group?.all : group?.finite[binding.ports]
            if let label, !seen.contains(binding.rule) {
                let policy: Binding.NoSocketPolicy = group?.passes.contains(binding.ports) == true ? .pass : .drop
                if label == binding.label && policy == binding.noSocket { continue }
                throw SteeringError.conflict(
                    "\(binding.transport) \(binding.prefix) \(binding.ports) is already bound to '\(label)'; unbind it first"
                )
            }
            if !added.contains(binding) { added.append(binding) }
        }
        let plan = Plan(
            added: added.sortedByPrecedence(), removed: removed.sortedByPrecedence(),
            unchanged: Int(try maps.readMeta().counts[active]) - removed.count)
        if plan.isEmpty { return plan }
        let meta = try maps.readMeta()
        let count = Int(meta.counts[active]) + added.count - removed.count
        if count > Int(meta.capacity) {
            throw SteeringError.limit(
                "\(count) bindings are more than this dispatcher holds (\(meta.capacity)); unload and load with a"
                    + " larger --max-bindings")
        }
        var labels: [String: UInt32] = [:]
        for (id, name) in try labelNames() { labels[name] = id }
        for label in Set(added.map(\.label)) where labels[label] == nil {
            labels[label] = try labelID(label, create: true)!
        }
        let deleteCounters = { try self.deleteBindingCounters(plan, labelIDs: labels) }
        try commit(cleanup: deleteCounters) { copy, _ in
            try self.write(changing: plan, labels: labels, count: UInt32(count), to: copy)
        }
        return plan
    }

    /// Writes a few added and removed bindings to one copy: its groups, the entries they
    /// touch (winners recomputed from the groups), the census and the port flags.
    func write(changing plan: Plan, labels: [String: UInt32], count: UInt32, to copy: Int) throws {
        var buckets = try groupBuckets(copy: copy)
        let wanted = GroupPages.bucketCount(bindings: Int(count), capacity: Int(try self.maps.readMeta().capacity))
        if wanted > buckets {
            try regroup(copy: copy, to: wanted)
            buckets = wanted
        }
        let maps = self.maps.copies[copy]
        var names: [UInt32: String] = [:]
        for (name, id) in labels { names[id] = name }
        let groups = KernelGroups(map: maps.groups, labels: names, buckets: buckets)
        var census: [UInt32: UInt32] = [:]
        for (key, value) in try maps.census.entries() {
            census[BPF.value(UInt32.self, from: key)] = BPF.value(UInt32.self, from: value)
        }
        var touchedCensus = Set<UInt32>()
        func bump(_ index: UInt32, _ adding: Bool) {
            census[index] = UInt32(max(0, Int(census[index] ?? 0) + (adding ? 1 : -1)))
            touchedCensus.insert(index)
        }
        for (binding, adding) in plan.removed.map({ ($0, false) }) + plan.added.map({ ($0, true) }) {
            let key = RuleSet.groupKey(binding)
            var group = try groups.group(key) ?? RuleSet.Group()
            if binding.ports.isAll {
                group.all = adding ? binding.label : nil
            } else {
                group.finite[binding.ports] = adding ? binding.label : nil
            }
            if adding && binding.noSocket == .pass {
                group.passes.insert(binding.ports)
            } else {
                group.passes.remove(binding.ports)
            }
            try groups.write(key, group, labelIDs: labels)
            if binding.ports.isAll {
                for (lane, length) in Census.contributions(key) {
                    bump(Census.index(lane, mappedLength: length), adding)
                }
            }
            if RuleSet.coversIPv4(key) { bump(Census.coveringIndex(key.lane.transport), adding) }
        }
        for transport in Socket.Transport.allCases {
            groups.covering[transport] = (census[Census.coveringIndex(transport)] ?? 0) > 0
        }
        var keys = Set<EntryKey>()
        for binding in plan.removed + plan.added { keys.formUnion(try groups.affectedKeys(by: binding)) }
        var words: [UInt32: UInt64] = [:]
        var filter: [UInt32: UInt64] = [:]
        struct TableID: Hashable {
            var lane: Lane
            var table: Table
        }
        var upserts: [TableID: (Map, [(key: [UInt8], value: [UInt8])])] = [:]
        for key in keys {
            guard var value = try groups.winner(at: key) else {
                _ = try maps.map(key).delete(Layout.encode(key))
                continue
            }
            if key.table == .exact {
                value.checkWildcard = ((Int(value.mappedLength) + 1)...128).contains { length in
                    (census[Census.index(key.lane, mappedLength: UInt8(length))] ?? 0) > 0
                }
            }
            if key.table != .wild {
                let word = Layout.PortFlags.word(transport: key.lane.transport, port: key.port)
                if words[word] == nil {
                    words[word] =
                        try maps.ports.lookup(rawBytes(of: word)).map { BPF.value(UInt64.self, from: $0) } ?? 0
                }
                let bit = key.table == .host ? Layout.PortFlags.host : Layout.PortFlags.exact
                words[word]! |= bit << Layout.PortFlags.shift(lane: key.lane, port: key.port)
            }
            if key.table == .host {
                let bit = Layout.HostFilter.bit(
                    lane: key.lane, port: key.port, address: key.prefix.bytes(count: key.lane.addressSize))
                if filter[bit >> 6] == nil {
                    filter[bit >> 6] =
                        try maps.hostFilter.lookup(rawBytes(of: bit >> 6)).map { BPF.value(UInt64.self, from: $0) } ?? 0
                }
                filter[bit >> 6]! |= 1 << UInt64(bit & 63)
            }
            upserts[TableID(lane: key.lane, table: key.table), default: (maps.map(key), [])].1.append(
                (Layout.encode(key), Layout.encode(value, label: labels[value.label]!, lane: key.lane)))
        }
        // Flags before entries would make a lookup try a table too early (harmless: it falls
        // through); entries before flags would hide them. This copy is idle, so order is free.
        for (table, (map, entries)) in upserts {
            do {
                try map.updateBatch(entries)
            } catch {
                // A full host table: replaced by a larger one holding what it holds (the
                // entries written before the error among them), and written again.
                guard error.code == E2BIG, table.table == .host else { throw error }
                try fitHostTable(copy: copy, lane: table.lane, count: map.maxEntries + entries.count, shrink: false)
                try self.maps.copies[copy].tables[table.lane]![.host]!.updateBatch(entries)
            }
        }
        try maps.ports.updateBatch(words.map { (rawBytes(of: $0.key), rawBytes(of: $0.value)) })
        try maps.hostFilter.updateBatch(filter.map { (rawBytes(of: $0.key), rawBytes(of: $0.value)) })
        try maps.census.updateBatch(touchedCensus.map { (rawBytes(of: $0), rawBytes(of: census[$0] ?? 0)) })
        var meta = try self.maps.readMeta()
        meta.counts[copy] = count
        try self.maps.writeMeta(meta)
    }

    func setPending(_ copy: Int?) throws {
        var meta = try maps.readMeta()
        meta.pending = copy.map { UInt32($0 + 1) } ?? 0
        try maps.writeMeta(meta)
    }

    /// Refuses rule sets larger than the maps; returns how many host entries each lane has.
    @discardableResult
    func checkLimits(_ rules: RuleSet, _ tables: RuleTables, labels known: Set<String>? = nil) throws -> [Lane: Int] {
        try checkCounts(rules, labels: known)
        let capacity = Int(try maps.readMeta().capacity)
        let limit = CopyMaps.entryLimit(capacity: capacity)
        var tally = [Int](repeating: 0, count: Lane.allCases.count * Table.allCases.count)
        for key in tables.entries.keys { tally[key.lane.index * Table.allCases.count + Int(key.table.rawValue)] += 1 }
        var counts: [String: Int] = [:]
        for lane in Lane.allCases {
            for table in Table.allCases {
                counts["\(lane) \(table)"] = tally[lane.index * Table.allCases.count + Int(table.rawValue)]
            }
        }
        if let (table, count) = counts.first(where: { $0.value > limit }) {
            throw SteeringError.limit(
                "the bindings need \(count) \(table) entries, more than the \(limit) this dispatcher holds (port"
                    + " ranges take one entry per port); load with a larger --max-bindings")
        }
        var hosts: [Lane: Int] = [:]
        for lane in Lane.allCases { hosts[lane] = tally[lane.index * Table.allCases.count + Int(Table.host.rawValue)] }
        return hosts
    }

    /// Refuses rule sets with more bindings or labels than the maps hold (the part of
    /// ``checkLimits(_:_:labels:)`` that needs no tables).
    func checkCounts(_ rules: RuleSet, labels known: Set<String>? = nil) throws {
        let capacity = Int(try maps.readMeta().capacity)
        if rules.count > capacity {
            throw SteeringError.limit(
                "\(rules.count) bindings are more than this dispatcher holds (\(capacity)); unload and load with a"
                    + " larger --max-bindings")
        }
        let labels = known ?? rules.labels
        if labels.count > Layout.maxLabels {
            throw SteeringError.limit("\(labels.count) labels are more than the \(Layout.maxLabels) a dispatcher holds")
        }
    }

    /// What one change writes to a copy.
    struct CopyWrite {
        var entries: (upserts: [(EntryKey, EntryValue)], deletes: [EntryKey])
        var ports: (upserts: [(UInt32, UInt64)], deletes: [UInt32])
        /// Host filter words to write.
        var filter: (upserts: [(UInt32, UInt64)], deletes: [UInt32])
        /// The groups of the buckets to write: every group in them.
        var groups: [RuleSet.GroupKey: RuleSet.Group]
        /// How many pages each of those buckets has now.
        var oldPages: [UInt32: Int]
        /// ``GroupPages/bucketCount(capacity:)``.
        var buckets: Int
        /// Census counters to set.
        var census: [(UInt32, UInt32)]
        /// The bindings the copy holds afterwards.
        var count: UInt32
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

    /// The host filter words of a rule set's tables (zero words left out).
    static func filterWords(_ tables: RuleTables) -> PortWords {
        var words: [UInt32: UInt64] = [:]
        for key in tables.entries.keys where key.table == .host {
            let bit = Layout.HostFilter.bit(
                lane: key.lane, port: key.port, address: key.prefix.bytes(count: key.lane.addressSize))
            words[bit >> 6, default: 0] |= 1 << UInt64(bit & 63)
        }
        return PortWords(words: words)
    }

    /// Array words by index (port flags, host filter).
    struct PortWords: Equatable, Sendable {
        var words: [UInt32: UInt64]
        func changes(from old: PortWords) -> (upserts: [(UInt32, UInt64)], deletes: [UInt32]) {
            var upserts: [(UInt32, UInt64)] = []
            for (word, bits) in words where old.words[word] != bits { upserts.append((word, bits)) }
            // An array has no deletes: a word that is gone becomes 0.
            for word in old.words.keys where words[word] == nil { upserts.append((word, 0)) }
            return (upserts, [])
        }
    }

    /// A ``CopyWrite`` encoded once for both copies: each table's entries, and the group
    /// records, as contiguous key and value buffers in the order they are written.
    struct EncodedWrite {
        /// Per table (lane × 3 + table): its upserts, sorted by port and address so the trie's
        /// inserts walk nodes that are already in cache.
        var tables: [Batch]
        var deletes: [EntryKey]
        var ports: [(UInt32, UInt64)]
        var filter: [(UInt32, UInt64)]
        var groups: EncodedGroups
        var census: [(UInt32, UInt32)]
        var count: UInt32
    }

    /// Keys and values for one batch update, back to back.
    struct Batch: Sendable {
        var keys: [UInt8] = []
        var values: [UInt8] = []
        var count = 0
    }

    /// A change's group pages (``GroupPages``), in batches (so that two threads can share
    /// them), and the pages to delete.
    struct EncodedGroups: Sendable {
        var batches: [Batch] = []
        var stale: [[UInt8]] = []
        var count: Int { batches.reduce(0) { $0 + $1.count } }
    }

    func encode(_ change: CopyWrite) -> EncodedWrite {
        // The group records are encoded on a second thread meanwhile.
        let records = Background {
            GroupPages.encode(change.groups, oldPages: change.oldPages, buckets: change.buckets, labels: change.labels)
        }
        return Self.encode(change, groups: records.value)
    }

    /// Encodes the entries of a change; `groups` (its group records, encoded already or on
    /// another thread meanwhile) is waited for at the end.
    static func encode(_ change: CopyWrite, groups: @autoclosure () -> EncodedGroups) -> EncodedWrite {
        let upserts = change.entries.upserts
        let tables = encodeTables(count: upserts.count, labels: change.labels) { body in
            for (key, value) in upserts { body(key, value) }
        }
        return EncodedWrite(
            tables: tables, deletes: change.entries.deletes, ports: change.ports.upserts, filter: change.filter.upserts,
            groups: groups(), census: change.census, count: change.count)
    }

    /// Entries to upsert (given by `forEach`, about `count` of them) as one batch per table
    /// (lane × 3 + table), each sorted by port and address so the trie's inserts walk nodes
    /// that are already in cache.
    static func encodeTables(
        count: Int, labels: [String: UInt32], _ forEach: ((EntryKey, EntryValue) -> Void) -> Void
    ) -> [Batch] {
        let tableCount = Table.allCases.count
        // Sorted as plain values: the key's fields and the value's, with its label's id (no
        // reference counting in the sort).
        struct Handle {
            var port: UInt16
            var high: UInt64
            var low: UInt64
            var length: UInt8
            var mappedLength: UInt8
            var checkWildcard: Bool
            var passWithoutSocket: Bool
            var label: UInt32
            var portCount: UInt32
            var firstPort: UInt16
        }
        var buckets = [[Handle]](repeating: [], count: Lane.allCases.count * tableCount)
        var lastLabel = ""
        var lastID: UInt32 = 0
        forEach { key, value in
            if value.label != lastLabel {
                lastLabel = value.label
                lastID = labels[value.label]!
            }
            buckets[key.lane.index * tableCount + Int(key.table.rawValue)].append(
                Handle(
                    port: key.port, high: key.prefix.high, low: key.prefix.low, length: key.prefix.length,
                    mappedLength: value.mappedLength, checkWildcard: value.checkWildcard,
                    passWithoutSocket: value.passWithoutSocket, label: lastID, portCount: value.portCount,
                    firstPort: value.firstPort))
        }
        var tables: [Batch] = []
        for (index, var handles) in buckets.enumerated() {
            let lane = Lane.allCases[index / tableCount]
            let table = Table.allCases[index % tableCount]
            handles.sort { ($0.port, $0.high, $0.low, $0.length) < ($1.port, $1.high, $1.low, $1.length) }
            var batch = Batch()
            batch.keys.reserveCapacity(handles.count * Layout.keySize(table, lane))
            batch.values.reserveCapacity(handles.count * Layout.EntryValueLayout.size)
            for handle in handles {
                let key = EntryKey(
                    lane: lane, table: table, port: handle.port,
                    prefix: FamilyPrefix(high: handle.high, low: handle.low, length: Int(handle.length)))
                let value = EntryValue(
                    label: "", mappedLength: handle.mappedLength, portCount: handle.portCount,
                    firstPort: handle.firstPort, checkWildcard: handle.checkWildcard,
                    passWithoutSocket: handle.passWithoutSocket)
                Layout.append(key, to: &batch.keys)
                Layout.append(value, label: handle.label, lane: lane, to: &batch.values)
            }
            batch.count = handles.count
            tables.append(batch)
        }
        return tables
    }

    /// Writes a change to one copy. The copy is not read by the program while this runs.
    func write(_ change: CopyWrite, to copy: Int) throws { try write(encode(change), to: copy) }

    /// Writes an encoded change to one copy (without its group records when `groups` is
    /// false: they were written already). The copy is not read by the program while this runs.
    func write(_ change: EncodedWrite, to copy: Int, groups: Bool = true) throws {
        let maps = self.maps.copies[copy]
        let tableCount = Table.allCases.count
        // The batches go in on two threads: the kernel inserts into different maps (or into
        // different buckets of the groups hash), and this machine class has more than one core.
        var jobs: [ParallelJob] = []
        let logger = self.logger
        for lane in Lane.allCases {
            for table in Table.allCases {
                let entries = change.tables[lane.index * tableCount + Int(table.rawValue)]
                guard entries.count > 0 else { continue }
                let map = maps.tables[lane]![table]!
                jobs.append(
                    ParallelJob(cost: entries.count) { () throws(BPFError) in
                        let start = DispatchTime.now().uptimeNanoseconds
                        try map.updateBatch(keys: entries.keys, values: entries.values)
                        let milliseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
                        logger.debug("write \(entries.count) \(lane) \(table) entries: \(milliseconds) ms")
                    })
            }
        }
        if groups {
            for batch in change.groups.batches {
                jobs.append(
                    ParallelJob(cost: batch.count) { () throws(BPFError) in
                        try maps.groups.updateBatch(keys: batch.keys, values: batch.values)
                    })
            }
        }
        try timed("write \(jobs.count) batches on two threads") { try ParallelJob.run(jobs) }
        for key in change.deletes { _ = try maps.map(key).delete(Layout.encode(key)) }
        try maps.ports.updateBatch(change.ports.map { (rawBytes(of: $0.0), rawBytes(of: $0.1)) })
        try maps.hostFilter.updateBatch(change.filter.map { (rawBytes(of: $0.0), rawBytes(of: $0.1)) })
        if groups { for key in change.groups.stale { _ = try maps.groups.delete(key) } }
        try maps.census.updateBatch(change.census.map { (rawBytes(of: $0.0), rawBytes(of: $0.1)) })
        var meta = try self.maps.readMeta()
        meta.counts[copy] = change.count
        try self.maps.writeMeta(meta)
    }

    /// Writes group records to one copy, on two threads.
    func writeGroups(_ groups: EncodedGroups, to copy: Int) throws {
        let map = maps.copies[copy].groups
        try ParallelJob.run(
            groups.batches.map { batch in
                ParallelJob(cost: batch.count) { () throws(BPFError) in
                    try map.updateBatch(keys: batch.keys, values: batch.values)
                }
            })
        for key in groups.stale { _ = try map.delete(key) }
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
        if try Self.isStale(directory, namespace: namespace) { _ = try activeCopy() }  // throws what to do
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
        let staging = "\(directory)/program-next"
        if (try? Program.openPinned(at: "\(directory)/program").info().id) != attached {
            // A switch (or an upgrade) killed before its rename left the attached program at
            // its staging name.
            let upgrade = "\(directory)/program-upgrade"
            if (try? Program.openPinned(at: staging).info().id) != attached,
                (try? Program.openPinned(at: upgrade).info().id) == attached
            {
                unlink(staging)
                guard rename(upgrade, staging) == 0 else {
                    throw SteeringError.kernel("cannot move the upgraded program: \(errnoDescription(errno))")
                }
            }
            if (try? Program.openPinned(at: staging).info().id) != attached {
                unlink(staging)
                if let program = try? Program.open(id: attached) {
                    try program.pin(at: staging)
                } else {
                    // Opening by id needs CAP_SYS_ADMIN: attach a new copy of the same program
                    // instead (one atomic link update) and pin that.
                    let assembly = try DataPlane.program(maps.dataPlane(copy: active))
                    let program = try Program.load(assembly, type: .skLookup, name: "sksteer")
                    let link = try Link.openPinned(at: "\(directory)/link")
                    try link.update(to: program)
                    try program.pin(at: staging)
                }
                chmod(staging, 0o640)
            }
            guard rename(staging, "\(directory)/program") == 0 else {
                throw SteeringError.kernel("cannot pin the attached program as program: \(errnoDescription(errno))")
            }
        }
        unlink(staging)
        if meta.pending != 0 {
            let idle = 1 - active
            logger.warning("repairing an interrupted change", metadata: ["copy": "\(idle)"])
            try rebuild(copy: idle, from: active)
            try sweepBindingCounters(keeping: ruleSet(copy: active), labels: labelNames())
            meta = try maps.readMeta()
            meta.pending = 0
            try maps.writeMeta(meta)
            try collectLabels(inUse: ruleSet(copy: active).labels)
        }
    }

    /// Replaces a copy that no program reads with new maps holding the rules of `source`.
    func rebuild(copy: Int, from source: Int) throws {
        let rules = try ruleSet(copy: source)
        let tables = rules.tables()
        var hosts: [Lane: Int] = [:]
        for key in tables.entries.keys where key.table == .host { hosts[key.lane, default: 0] += 1 }
        let capacity = Int(try maps.readMeta().capacity)
        let buckets = GroupPages.bucketCount(bindings: rules.count, capacity: capacity)
        let fresh = try CopyMaps.create(index: copy, capacity: capacity, hostCounts: hosts, groupBuckets: buckets)
        let write = CopyWrite(
            entries: tables.changes(from: RuleTables(entries: [:])),
            ports: Self.portWords(tables).changes(from: PortWords(words: [:])),
            filter: Self.filterWords(tables).changes(from: PortWords(words: [:])), groups: rules.groups,
            oldPages: [:], buckets: buckets,
            census: Census.counts(rules).map { ($0.key, $0.value) }, count: UInt32(rules.count),
            labels: try assignLabels(for: rules))
        var maps = self.maps
        maps.copies[copy] = fresh
        self.maps = maps
        try self.write(write, to: copy)
        for (name, map) in fresh.all { try replacePin(name, with: map) }
    }

    /// Pins `map` as `name` in the state directory in one step: pinned as `name-next`, then
    /// renamed over `name` (a command killed in between leaves the old map pinned, and a
    /// `-next` pin that the next replacement or `unload` removes).
    func replacePin(_ name: String, with map: Map) throws {
        let path = "\(directory)/\(name)"
        unlink(path + "-next")
        try Self.pin(map, at: path + "-next")
        guard rename(path + "-next", path) == 0 else {
            throw SteeringError.kernel("cannot replace \(path): \(errnoDescription(errno))")
        }
    }

    /// ``fitHostTable(copy:lane:count:shrink:)`` for every lane, around a whole rule set's
    /// change: grown where the rules need more room before it is written, shrunk where they
    /// need far less once it is (the table holds only the new rules' entries then).
    func fitHostTables(copy: Int, counts: [Lane: Int], shrink: Bool) throws {
        for lane in Lane.allCases {
            try fitHostTable(copy: copy, lane: lane, count: counts[lane] ?? 0, shrink: shrink)
        }
    }

    /// Makes the host table of `lane` in `copy` (a copy no program reads) fit `count`
    /// entries: when it holds fewer (or, with `shrink`, four times as many or more than
    /// ``CopyMaps/hostEntries(for:capacity:)`` asks), it is replaced by a table of that size
    /// holding the same entries. Doubling keeps the cost of the copies proportional to the
    /// entries written; the copy is pending meanwhile, so a command killed here leaves it to
    /// the repair, which rebuilds it.
    func fitHostTable(copy: Int, lane: Lane, count: Int, shrink: Bool) throws {
        let old = maps.copies[copy].tables[lane]![.host]!
        let size = CopyMaps.hostEntries(for: count, capacity: Int(try maps.readMeta().capacity))
        guard count > old.maxEntries || (shrink && old.maxEntries >= size * 4) else { return }
        let started = DispatchTime.now().uptimeNanoseconds
        let fresh = try CopyMaps.createHost(lane, maxEntries: size)
        let entries = try old.entries()
        var keys: [UInt8] = []
        var values: [UInt8] = []
        keys.reserveCapacity(entries.count * old.keySize)
        values.reserveCapacity(entries.count * old.valueSize)
        for (key, value) in entries {
            keys += key
            values += value
        }
        try fresh.updateBatch(keys: keys, values: values)
        try replacePin(CopyMaps.name(.host, lane, copy: copy), with: fresh)
        maps.copies[copy].tables[lane]![.host] = fresh
        logger.debug(
            "host table resized",
            metadata: [
                "copy": "\(copy)", "lane": "\(lane)", "from": "\(old.maxEntries)", "to": "\(size)",
                "entries": "\(entries.count)",
                "ms": "\(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)",
            ])
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
        var used = Set(try labelNames().keys)
        if used.count >= Layout.maxLabels {
            // Labels are collected after whole-set changes; one change at a time leaves
            // unused ones behind until this point.
            try collectLabels(inUse: ruleSet(copy: activeCopy()).labels)
            used = Set(try labelNames().keys)
        }
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
    func assignLabels(for rules: RuleSet, labels known: Set<String>? = nil) throws -> [String: UInt32] {
        var ids: [String: UInt32] = [:]
        for (id, name) in try labelNames() { ids[name] = id }
        for label in known ?? rules.labels where ids[label] == nil {
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

/// A piece of independent work for ``run(_:)``.
struct ParallelJob: Sendable {
    /// How long it takes, relative to the others (entries to write).
    var cost: Int
    var body: @Sendable () throws(BPFError) -> Void

    init(cost: Int, _ body: @escaping @Sendable () throws(BPFError) -> Void) {
        self.cost = cost
        self.body = body
    }

    /// Runs the jobs on two threads (this one and one more), the costliest first, each
    /// thread taking the next job when it is done; throws the first error once both stop.
    static func run(_ jobs: [ParallelJob]) throws(BPFError) {
        let sorted = jobs.sorted { $0.cost > $1.cost }
        let next = Mutex(0)
        let failure = Mutex<BPFError?>(nil)
        DispatchQueue.concurrentPerform(iterations: min(2, sorted.count)) { _ in
            while true {
                let index = next.withLock { (value: inout Int) -> Int in
                    defer { value += 1 }
                    return value
                }
                guard index < sorted.count, failure.withLock({ $0 == nil }) else { return }
                do throws(BPFError) {
                    try sorted[index].body()
                } catch {
                    failure.withLock { $0 = $0 ?? error }
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }
}

/// A value computed on another thread, started at once; ``value`` waits for it.
final class Background<Value: Sendable>: Sendable {
    private let done = DispatchGroup()
    private let result = Mutex<Value?>(nil)

    init(_ body: @escaping @Sendable () -> Value) {
        DispatchQueue.global().async(group: done) { [self] in
            let computed = body()
            result.withLock { $0 = computed }
        }
    }

    /// The value, once computed.
    var value: Value {
        done.wait()
        return result.withLock { $0! }
    }
}
