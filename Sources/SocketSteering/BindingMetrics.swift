import BPF

#if canImport(Glibc)
    import Glibc
#endif

/// Per-binding counters, kept only on request.
public struct BindingMetricsStatus: Sendable, Codable, Equatable {
    /// One binding's counters.
    public struct Counter: Sendable, Codable, Equatable {
        /// The binding, as it is in force.
        public var binding: Binding
        /// Connections the binding won (its label's destination took them or refused them).
        public var lookups: UInt64
        /// Of those, how many found no socket.
        public var misses: UInt64
    }
    /// The most bindings counted one by one (the map's limit, chosen when they were enabled).
    public var limit: Int
    /// Whether the attached program counts (false while an `on` was interrupted before its
    /// program switch, or an `off` after it; running the same command again finishes it).
    public var counting: Bool
    /// Bindings that have had traffic since the counters were enabled (or since they were
    /// bound, if later), in precedence order.
    public var counters: [Counter]
    /// Connections to bindings that found the map full: counted here, not per binding.
    public var overflowLookups: UInt64
    /// Of those, how many found no socket.
    public var overflowMisses: UInt64
}

extension Dispatcher {
    /// Turns per-binding counters on: the program counts every connection under the binding
    /// that won it as well as under its destination. A binding takes a counter at its first
    /// connection; past `limit` of them, connections are counted under an overflow counter
    /// instead. The map is preallocated for `limit` counters (the kernel's memlock figure
    /// was 9,962,552 bytes for the default 65,536 on a machine with 2 possible CPUs; each CPU
    /// adds 16 bytes per counter). The switch is one `BPF_LINK_UPDATE`, like every change;
    /// running it again (also after an interruption) makes sure the attached program counts.
    ///
    /// ```swift
    /// let dispatcher = try Dispatcher.open(namespace: namespace, bpffs: bpffs)
    /// try dispatcher.enableBindingMetrics(limit: 10_000)
    /// let counters = try dispatcher.status().bindingMetrics?.counters ?? []
    /// ```
    public func enableBindingMetrics(limit: Int = Layout.defaultBindingCounters) throws {
        try requireWritable()
        guard (1...Layout.maxBindingCounters).contains(limit) else {
            throw SteeringError.invalidInput(
                "a per-binding counter limit must be 1 to \(Layout.maxBindingCounters), not \(limit)")
        }
        let active = try activeCopy()
        if let existing = maps.bindingMetrics {
            let pinned = try existing.info().maxEntries - 1
            if pinned != limit {
                throw SteeringError.conflict(
                    "per-binding counters are on with a limit of \(pinned); turn them off first to change it")
            }
        } else {
            // One entry more than the limit: the overflow key, added first so it always exists.
            let map = try Map.create(
                type: .perCPUHash, keySize: Layout.BindingCounterKey.size, valueSize: Layout.BindingCounter.size,
                maxEntries: limit + 1, name: "sksteer_bmetrics")
            try map.update(
                Layout.BindingCounterKey.overflowKey,
                [UInt8](repeating: 0, count: Layout.BindingCounter.size * possibleCPUCount))
            try Self.pin(map, at: "\(directory)/\(StateMaps.bindingMetricsName)")
            maps.bindingMetrics = map
        }
        try switchProgram(to: active)
        logger.info("per-binding counters on", metadata: ["limit": "\(limit)"])
    }

    /// Turns per-binding counters off: the program without them is switched in, then their
    /// map is removed (its counts are gone). Interrupted between the two, the map stays
    /// pinned and the status says the program does not count; running it again finishes it.
    public func disableBindingMetrics() throws {
        try requireWritable()
        let active = try activeCopy()
        maps.bindingMetrics = nil
        try switchProgram(to: active)
        unlink("\(directory)/\(StateMaps.bindingMetricsName)")
        logger.info("per-binding counters off")
    }

    /// The per-binding counters, or nil when they are off.
    func bindingMetricsStatus(active: Int, labels: [UInt32: String]) throws -> BindingMetricsStatus? {
        guard let map = maps.bindingMetrics else { return nil }
        let attached = try? Program.openPinned(at: "\(directory)/program").info().mapIDs
        let counting = attached?.contains(try map.info().id) ?? false
        let probe = KernelGroups(
            map: maps.copies[active].groups, labels: labels, buckets: try groupBuckets(copy: active))
        var counters: [BindingMetricsStatus.Counter] = []
        var overflow: (UInt64, UInt64) = (0, 0)
        for (key, value) in try map.entries() {
            let (lookups, misses) = Self.sums(value)
            if key == Layout.BindingCounterKey.overflowKey {
                overflow = (lookups, misses)
                continue
            }
            // A key is shown only for the binding in force with that label: a counter left by
            // an interrupted removal is not.
            guard let parts = Layout.BindingCounterKey.decode(key), let label = labels[parts.label] else { continue }
            let binding = Binding(label: label, transport: parts.transport, prefix: parts.prefix, ports: parts.ports)
            guard let group = try probe.group(RuleSet.groupKey(binding)),
                (parts.ports.isAll ? group.all : group.finite[parts.ports]) == label
            else { continue }
            var shown = binding
            shown.noSocket = group.passes.contains(parts.ports) ? .pass : .drop
            counters.append(.init(binding: shown, lookups: lookups, misses: misses))
        }
        let order = Dictionary(
            counters.map(\.binding).sortedByPrecedence().enumerated().map { ($1, $0) }, uniquingKeysWith: min)
        counters.sort { order[$0.binding]! < order[$1.binding]! }
        return BindingMetricsStatus(
            limit: try map.info().maxEntries - 1, counting: counting, counters: counters, overflowLookups: overflow.0,
            overflowMisses: overflow.1)
    }

    /// Lookups and misses summed over CPUs.
    static func sums(_ value: [UInt8]) -> (UInt64, UInt64) {
        var sums: (UInt64, UInt64) = (0, 0)
        let stride = Layout.BindingCounter.size
        for cpu in 0..<possibleCPUCount where value.count >= (cpu + 1) * stride {
            let base = cpu * stride
            sums.0 += BPF.value(
                UInt64.self, from: value[(base + Int(Layout.BindingCounter.lookups.offset))...].prefix(8))
            sums.1 += BPF.value(
                UInt64.self, from: value[(base + Int(Layout.BindingCounter.misses.offset))...].prefix(8))
        }
        return sums
    }

    /// What a counter is kept by: the binding without its no-socket policy.
    struct BindingCounterIdentity: Hashable {
        var rule: Binding.Rule
        var label: String
        init(_ binding: Binding) {
            rule = binding.rule
            label = binding.label
        }
    }

    /// Deletes the counters of bindings that are gone. Called after the switch, while the
    /// change is still pending, so that a command killed before it leaves the counters to
    /// ``sweepBindingCounters(keeping:labels:)`` in the repair. When more bindings go than the
    /// map holds, the map's keys are swept against `desired` instead (at most its limit).
    func deleteBindingCounters(_ plan: Plan, labelIDs: [String: UInt32], desired: RuleSet? = nil) throws {
        guard let map = maps.bindingMetrics, !plan.removed.isEmpty else { return }
        if let desired, plan.removed.count > (try map.info().maxEntries) {
            // Every label id in use now, old and new (they are collected after this).
            return try sweepBindingCounters(keeping: desired, labels: labelNames())
        }
        // A binding that stays with its label (its no-socket policy changed) keeps counting.
        let staying = Set(plan.added.map { BindingCounterIdentity($0) })
        for binding in plan.removed where !staying.contains(BindingCounterIdentity(binding)) {
            guard let id = labelIDs[binding.label] else { continue }
            _ = try map.delete(Layout.BindingCounterKey.encode(binding, label: id))
        }
    }

    /// Deletes every counter whose binding is not in `rules` (the repair of a change killed
    /// before its counters were deleted; bounded by the map's limit).
    func sweepBindingCounters(keeping rules: RuleSet, labels: [UInt32: String]) throws {
        guard let map = maps.bindingMetrics else { return }
        for key in try map.keys() where key != Layout.BindingCounterKey.overflowKey {
            var keep = false
            if let parts = Layout.BindingCounterKey.decode(key), let label = labels[parts.label] {
                let binding = Binding(
                    label: label, transport: parts.transport, prefix: parts.prefix, ports: parts.ports)
                if let group = rules.groups[RuleSet.groupKey(binding)] {
                    keep = (parts.ports.isAll ? group.all : group.finite[parts.ports]) == label
                }
            }
            if !keep { _ = try map.delete(key) }
        }
    }
}
