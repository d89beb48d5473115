import BPF

extension DispatcherStatus {
    /// The counters in Prometheus text format (version 0.0.4), per destination (label ×
    /// family × protocol), as tubular exports them: at most 4 series per label and family.
    public func prometheusText(version: String) -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(String, UInt64)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples { out += "\(name)\(labels) \(value)\n" }
        }
        func labels(_ pairs: [(String, String)]) -> String {
            "{" + pairs.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        func destinationLabels(_ d: DestinationStatus, _ extra: [(String, String)] = []) -> String {
            labels(
                [
                    ("label", d.destination.label), ("family", d.destination.ipv6 ? "ipv6" : "ipv4"),
                    ("protocol", d.destination.transport.rawValue),
                ] + extra)
        }
        family(
            "sksteer_destination_lookups_total", "counter", "Connections steered to the destination.",
            destinations.map { (destinationLabels($0), $0.lookups) })
        family(
            "sksteer_destination_misses_total", "counter", "Connections to the destination that found no socket.",
            destinations.map { (destinationLabels($0), $0.misses) })
        family(
            "sksteer_destination_errors_total", "counter", "bpf_sk_assign failures by reason.",
            destinations.flatMap { d in
                d.errors.sorted { $0.key < $1.key }.map { (destinationLabels(d, [("reason", $0.key)]), $0.value) }
            })
        family(
            "sksteer_destination_sockets", "gauge", "Live sockets registered for the destination.",
            destinations.map { (destinationLabels($0), UInt64($0.sockets.count)) })
        family(
            "sksteer_destination_bindings", "gauge", "Bindings whose traffic goes to the destination.",
            destinations.map { (destinationLabels($0), UInt64($0.bindings)) })
        family(
            "sksteer_destination_has_socket", "gauge", "1 if the destination has a live socket, else 0.",
            destinations.map { (destinationLabels($0), $0.sockets.isEmpty ? 0 : 1) })
        if let perBinding = bindingMetrics {
            func bindingLabels(_ b: Binding) -> String {
                labels([
                    ("label", b.label), ("protocol", b.transport.rawValue), ("prefix", "\(b.prefix)"),
                    ("ports", "\(b.ports)"),
                ])
            }
            family(
                "sksteer_binding_lookups_total", "counter", "Connections the binding won (per-binding counters).",
                perBinding.counters.map { (bindingLabels($0.binding), $0.lookups) })
            family(
                "sksteer_binding_misses_total", "counter", "Connections the binding won that found no socket.",
                perBinding.counters.map { (bindingLabels($0.binding), $0.misses) })
            family(
                "sksteer_binding_overflow_lookups_total", "counter",
                "Connections not counted per binding: the per-binding limit was reached.",
                [("", perBinding.overflowLookups)])
            family(
                "sksteer_binding_counters_limit", "gauge", "The most bindings counted one by one.",
                [("", UInt64(perBinding.limit))])
        }
        family(
            "sksteer_no_match_total", "counter", "Connections that matched no binding (normal lookup).", [("", noMatch)]
        )
        if let bytes = mapMemoryBytes {
            family(
                "sksteer_map_memory_bytes", "gauge", "Kernel memory the dispatcher's maps are charged for.",
                [("", UInt64(bytes))])
        }
        family("sksteer_build_info", "gauge", "The running sksteer.", [(labels([("version", version)]), 1)])
        return out
    }
}

private func escape(_ value: String) -> String {
    value.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"").replacingAll("\n", with: "\\n")
}

extension String {
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for character in self { if character == target { out += replacement } else { out.append(character) } }
        return out
    }
}
