import Foundation
import SocketSteering

extension Bench {
    /// How a set of ratios (sksteer ÷ tubular) came out, in words computed from them.
    static func verdict(_ cells: [(name: String, ratio: Double)], noun: String) -> String {
        let finite = cells.filter { $0.ratio.isFinite && $0.ratio > 0 }
        guard let worst = finite.max(by: { $0.ratio < $1.ratio }), let best = finite.min(by: { $0.ratio < $1.ratio })
        else { return "No \(noun) produced a ratio." }
        let faster = finite.filter { $0.ratio < 1 }.count
        let slower = finite.filter { $0.ratio > 1 }.count
        let mean = exp(finite.map { log($0.ratio) }.reduce(0, +) / Double(finite.count))
        var text = "sksteer took less time than tubular in \(faster) of \(cells.count) \(noun)"
        text += slower > 0 ? " and more in \(slower)" : ""
        text += cells.count - finite.count > 0 ? " (\(cells.count - finite.count) without a ratio)" : ""
        text += "; the highest ratio is \(worst.name) at \(fmt(worst.ratio, 2))×, the lowest \(best.name) at"
        text += " \(fmt(best.ratio, 2))×, and the geometric mean of the ratios is \(fmt(mean, 2))×."
        return text
    }

    /// The results as a Markdown report; every sentence is computed from `results`.
    public static func markdown(_ results: Results, command: String) -> String {
        var out = "# Benchmarks: sksteer against tubular\n\n"
        out += "Made by `\(command)` in throwaway network namespaces; ratios are sksteer ÷ tubular"
        out += " (below 1.00: sksteer took less time). tubular is its own `inet-kern.c`, compiled at bench time"
        out +=
            " (\(results.machine["clang"] ?? "clang")) and loaded with \(results.machine["bpftool"] ?? "bpftool").\n\n"
        out += "| machine | |\n|---|---|\n"
        for (key, value) in results.machine.sorted(by: { $0.key < $1.key }) { out += "| \(key) | \(value) |\n" }
        out += "\n| option | |\n|---|---|\n"
        for (key, value) in results.options.sorted(by: { $0.key < $1.key }) { out += "| \(key) | \(value) |\n" }

        out +=
            "\n## Workloads\n\nThe same bindings and the same sockets (one per label, family and protocol) in both.\n\n"
        out += "| workload | bindings | labels | sockets | bindings are |\n|---|---:|---:|---:|---|\n"
        for row in results.workloads {
            out += "| \(row.name) | \(row.bindings) | \(row.labels) | \(row.sockets) | \(row.summary) |\n"
        }

        let hot = results.dataPlane.filter { $0.mode == "hot" }
        let cold = results.dataPlane.filter { $0.mode == "cold" }
        let checked = hot.count + cold.reduce(0) { $0 + $1.runs }
        let disagreeing = results.dataPlane.reduce(0) { $0 + $1.disagreements }
        out += "\n## Data plane: BPF_PROG_TEST_RUN\n\n"
        out += "sksteer runs a copy of its data plane over its own maps that counts test runs like traffic;"
        out += " tubular's program counts its `destination_metrics` anyway. "
        out +=
            disagreeing == 0
            ? "All \(checked) checked lookups selected the same socket in both programs, the one the precedence rules pick.\n\n"
            : "**\(disagreeing) of \(checked) checked lookups disagree** between the programs and the precedence rules (see below).\n\n"
        out += "### Hot: one connection, repeated\n\n"
        out += verdict(hot.map { ("\($0.workload)/\($0.kind)", $0.ratio) }, noun: "hot cells") + "\n\n"
        out += "| workload | kind | runs | sksteer ns | tubular ns | ratio | disagreements |\n"
        out += "|---|---|---:|---:|---:|---:|---:|\n"
        for row in hot {
            out += "| \(row.workload) | \(row.kind) | \(row.runs) | \(fmt(row.sksteerNanoseconds)) |"
            out += " \(fmt(row.tubularNanoseconds)) | \(fmt(row.ratio, 2)) | \(mark(row.disagreements)) |\n"
        }
        out += "\n### Cold: different connections, repeat 1 each\n\n"
        out += verdict(cold.map { ("\($0.workload)/\($0.kind)", $0.ratio) }, noun: "cold cells (medians)")
        let samples = cold.flatMap { [$0.sksteerNanoseconds, $0.tubularNanoseconds] }
        if let low = samples.min(), let high = cold.flatMap({ [$0.sksteerP90 ?? 0, $0.tubularP90 ?? 0] }).max() {
            out += " Medians of single runs ranged from \(fmt(low)) ns to a 90th percentile of \(fmt(high)) ns;"
            out += " the kernel reports each run in whole nanoseconds, including its own timer's cost.\n\n"
        } else {
            out += "\n\n"
        }
        out +=
            "| workload | kind | contexts | sksteer median | sksteer p90 | tubular median | tubular p90 | ratio | disagreements |\n"
        out += "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        for row in cold {
            out += "| \(row.workload) | \(row.kind) | \(row.runs) | \(fmt(row.sksteerNanoseconds)) |"
            out += " \(fmt(row.sksteerP90 ?? 0)) | \(fmt(row.tubularNanoseconds)) | \(fmt(row.tubularP90 ?? 0)) |"
            out += " \(fmt(row.ratio, 2)) | \(mark(row.disagreements)) |\n"
        }
        if !results.disagreements.isEmpty {
            out += "\n### Disagreements (the first \(results.disagreements.count))\n\n"
            out +=
                "| workload | kind | connection | rules pick | sksteer picked | tubular picked |\n|---|---|---|---|---|---|\n"
            for row in results.disagreements {
                out +=
                    "| \(row.workload) | \(row.kind) | \(row.connection) | \(row.expected) | \(row.sksteer) | \(row.tubular) |\n"
            }
        }

        out += "\n## Real traffic: run_time_ns / run_cnt of the attached program\n\n"
        if results.traffic.isEmpty {
            out += "No real traffic was measured in this run.\n"
        } else {
            let silent = results.traffic.filter { $0.sksteerRuns == 0 || $0.tubularRuns == 0 }
            out += "Connections and datagrams to the lookups' addresses, routed locally (AnyIP) inside the namespace,"
            out += " with `BPF_STATS_RUN_TIME` on; the dispatcher's link is switched between the two programs, and at"
            out += " most \(results.mostAttachedAtOnce) program\(results.mostAttachedAtOnce == 1 ? " was" : "s were")"
            out += " attached at any time. "
            out += verdict(results.traffic.map { ("\($0.workload)/\($0.kind)", $0.ratio) }, noun: "traffic cells")
            out += silent.isEmpty ? "\n\n" : " \(silent.count) cells counted no runs for one program.\n\n"
            out +=
                "| workload | kind | traffic | sent per program | sksteer runs | sksteer ns/run | tubular runs | tubular ns/run | ratio |\n"
            out += "|---|---|---|---:|---:|---:|---:|---:|---:|\n"
            for row in results.traffic {
                out += "| \(row.workload) | \(row.kind) | \(row.traffic) | \(row.sent) | \(row.sksteerRuns) |"
                out += " \(fmt(row.sksteerNanoseconds)) | \(row.tubularRuns) | \(fmt(row.tubularNanoseconds)) |"
                out += " \(fmt(row.ratio, 2)) |\n"
            }
        }

        out += "\n## Control plane\n\n"
        if results.controlPlane.isEmpty {
            out += "The control plane was not timed in this run.\n"
        } else {
            out += "tubular's side is what its Go control plane does to its maps, timed from here (one map update"
            out += " per binding, no destination bookkeeping); sksteer's is the public API. `bind one` and the"
            out += " 10-binding change are medians of \(bindRounds) and \(changeRounds) rounds, each undone (untimed)"
            out += " but the last, in both. "
            out += verdict(
                results.controlPlane.map { ("\($0.workload)/\($0.operation)", $0.ratio) }, noun: "operations")
            out += "\n\n| workload | operation | bindings present | sksteer ms | tubular does | tubular ms | ratio |\n"
            out += "|---|---|---:|---:|---|---:|---:|\n"
            for row in results.controlPlane {
                out += "| \(row.workload) | \(row.operation) | \(row.present) | \(fmt(row.sksteerSeconds * 1000, 3)) |"
                out += " \(row.tubularMethod) | \(fmt(row.tubularSeconds * 1000, 3)) | \(fmt(row.ratio, 1)) |\n"
            }
        }
        if !results.memory.isEmpty {
            let rows = results.memory
            out += "\n## Kernel memory of the maps\n\n"
            out += "What the kernel charges each dispatcher's maps for with the workload loaded (`memlock:` of"
            out += " their fdinfo, the maps' own account on this kernel \(results.machine["kernel"] ?? "")). sksteer's"
            out += " are both rule-set copies (each with its binding listing), the sockets and counters of its"
            out += " \(Layout.maxDestinations) destinations and the labels; tubular's are its four maps. "
            let more = rows.filter { $0.ratio > 1 }.count
            out += "sksteer's took more than tubular's in \(more) of \(rows.count) workloads"
            if let low = rows.map(\.ratio).min(), let high = rows.map(\.ratio).max() {
                out += " (sksteer ÷ tubular from \(fmt(low, 2))× to \(fmt(high, 2))×)"
            }
            out += ".\n\n| workload | bindings | sksteer MiB | tubular MiB | ratio |\n|---|---:|---:|---:|---:|\n"
            for row in rows {
                out += "| \(row.workload) | \(row.bindings) | \(fmt(Double(row.sksteerBytes) / 1_048_576, 1)) |"
                out += " \(fmt(Double(row.tubularBytes) / 1_048_576, 1)) | \(fmt(row.ratio, 2)) |\n"
            }
        }
        if !results.bindingCounters.isEmpty {
            let rows = results.bindingCounters
            out += "\n## Per-binding counters (on request)\n\n"
            out += "With `sksteer binding-metrics on` the program also counts each lookup under its binding."
            out += " The same lookups through sksteer without them, with them (the default limit,"
            out += " \(Layout.defaultBindingCounters); cold runs"
            out += " include each binding's first connection, which adds its counter) and tubular, in rotating order. "
            let costs = rows.map(\.costRatio).filter(\.isFinite)
            if let low = costs.min(), let high = costs.max() {
                out += "With counters ÷ without ranged from \(fmt(low, 2))× to \(fmt(high, 2))×. "
            }
            out += verdict(rows.map { ("\($0.workload)/\($0.kind)/\($0.mode)", $0.tubularRatio) }, noun: "cells")
            out += " (sksteer with per-binding counters against tubular, which has none)\n\n"
            out +=
                "| workload | kind | mode | runs | without ns | with ns | tubular ns | with ÷ without | with ÷ tubular |\n"
            out += "|---|---|---|---:|---:|---:|---:|---:|---:|\n"
            for row in rows {
                out += "| \(row.workload) | \(row.kind) | \(row.mode) | \(row.runs) | \(fmt(row.plainNanoseconds)) |"
                out += " \(fmt(row.countingNanoseconds)) | \(fmt(row.tubularNanoseconds)) | \(fmt(row.costRatio, 2)) |"
                out += " \(fmt(row.tubularRatio, 2)) |\n"
            }
        }
        out += targets(results)
        if !results.instructions.isEmpty {
            out += "\nInstructions after verification (xlated): "
            out +=
                results.instructions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(
                    separator: "; ") + ".\n"
        }
        if !results.problems.isEmpty {
            out += "\n## Not measured\n\n" + results.problems.map { "- \($0)\n" }.joined()
        }
        return out
    }

    /// The targets of the rule engine's issue, each met or missed by this run's numbers.
    static func targets(_ results: Results) -> String {
        var rows: [(target: String, measured: String, met: Bool)] = []
        func ratioTarget(_ name: String, _ cells: [(String, Double)], limit: Double) {
            guard let worst = cells.filter({ $0.1.isFinite }).max(by: { $0.1 < $1.1 }) else { return }
            let over = cells.filter { $0.1 > limit }.count
            rows.append(
                (
                    "\(name): every cell ≤ \(fmt(limit, 2))×",
                    "\(over) of \(cells.count) cells above; worst \(worst.0) \(fmt(worst.1, 2))×", over == 0
                ))
        }
        let hot = results.dataPlane.filter { $0.mode == "hot" }
        let cold = results.dataPlane.filter { $0.mode == "cold" }
        ratioTarget("hot test runs", hot.map { ("\($0.workload)/\($0.kind)", $0.ratio) }, limit: 1)
        ratioTarget("cold test runs", cold.map { ("\($0.workload)/\($0.kind)", $0.ratio) }, limit: 1)
        ratioTarget("real traffic", results.traffic.map { ("\($0.workload)/\($0.kind)", $0.ratio) }, limit: 1)
        ratioTarget(
            "host lookups",
            (hot + cold).filter { $0.kind == "host" }.map { ("\($0.workload)/\($0.mode)", $0.ratio) }, limit: 0.5)
        func control(_ operation: String, _ target: String, met: (ControlRow) -> Bool, measured: (ControlRow) -> String)
        {
            for row in results.controlPlane where row.operation == operation || row.operation.hasPrefix(operation) {
                guard row.present >= 1_000_000 || (operation.hasPrefix("apply 1000000") && row.present == 0) else {
                    continue
                }
                rows.append(("\(row.workload) \(row.operation): \(target)", measured(row), met(row)))
            }
        }
        control(
            "bind one", "≤ 5 ms", met: { $0.sksteerSeconds <= 0.005 },
            measured: { "\(fmt($0.sksteerSeconds * 1000, 2)) ms" })
        control(
            "apply a 10-binding change", "≤ 50 ms", met: { $0.sksteerSeconds <= 0.05 },
            measured: { "\(fmt($0.sksteerSeconds * 1000, 2)) ms" })
        control(
            "apply 1000000 bindings", "≤ 1.00× tubular-style insertion", met: { $0.ratio <= 1 },
            measured: { "\(fmt($0.sksteerSeconds, 2)) s against \(fmt($0.tubularSeconds, 2)) s: \(fmt($0.ratio, 2))×" })
        control(
            "status", "< 2 s", met: { $0.sksteerSeconds < 2 }, measured: { "\(fmt($0.sksteerSeconds, 2)) s" })
        guard !rows.isEmpty else { return "" }
        var out = "\n## Targets\n\n"
        let missed = rows.filter { !$0.met }.count
        out += "This run met \(rows.count - missed) of the \(rows.count) targets"
        out += missed > 0 ? " and missed \(missed).\n\n" : ".\n\n"
        out += "| target | measured | |\n|---|---|---|\n"
        for row in rows { out += "| \(row.target) | \(row.measured) | \(row.met ? "met" : "**missed**") |\n" }
        return out
    }

    static func mark(_ count: Int) -> String { count == 0 ? "0" : "**\(count)**" }
}
