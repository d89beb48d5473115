import ArgumentParser
import BPF
import Foundation

/// `--format text|json`, shared by every command that prints.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Prints rows as aligned columns.
func printTable(_ header: [String], _ rows: [[String]]) {
    let widths = header.indices.map { column in
        ([header[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
    }
    // Built as bytes (Foundation's padding is ~20 µs a cell: 28 s for a million rows).
    var text: [UInt8] = []
    func flush() {
        text.withUnsafeBufferPointer { FileHandle.standardOutput.write(Data($0)) }
        text.removeAll(keepingCapacity: true)
    }
    func line(_ cells: [String]) {
        for (index, (cell, width)) in zip(cells, widths).enumerated() {
            if index > 0 { text += [0x20, 0x20] }
            text += cell.utf8
            text += repeatElement(0x20, count: max(0, width - cell.count))
        }
        while text.last == 0x20 { text.removeLast() }
        text.append(0x0a)
        if text.count > 1 << 16 { flush() }
    }
    fflush(nil)
    line(header)
    for row in rows { line(row) }
    flush()
    fflush(nil)
}

struct Prog: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect loaded BPF programs; load and show objects compiled from C.",
        subcommands: [ProgList.self, ProgLoad.self, ProgShow.self], defaultSubcommand: ProgList.self)
}

struct ProgList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List loaded BPF programs, as `bpftool prog list` does.")

    @Option(help: "Only programs of this type (e.g. sk_lookup).")
    var type: String?

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    func run() throws {
        try reporting {
            var filter: ProgramType?
            if let type {
                guard let known = ProgramType(name: type) else {
                    throw ToolError("unknown program type '\(type)' (for example: sk_lookup, xdp, socket_filter)")
                }
                filter = known
            }
            let programs = try ProgramInfo.all(type: filter)
            if format == .json { return try printJSON(programs) }
            printTable(
                ["ID", "TYPE", "NAME", "TAG", "INSNS", "MAPS"],
                programs.map {
                    [
                        "\($0.id)", $0.type.description, $0.name, $0.tag, "\($0.instructionCount)",
                        $0.mapIDs.map(String.init).joined(separator: ","),
                    ]
                })
        }
    }
}

struct LinkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "link", abstract: "Inspect BPF links.", subcommands: [LinkList.self],
        defaultSubcommand: LinkList.self)
}

struct LinkList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List BPF links, as `bpftool link list` does.")

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    struct Row: Encodable {
        var id: UInt32
        var type: String
        var programID: UInt32
        var namespaceInode: UInt64?
        var attachType: String?
    }

    func run() throws {
        try reporting {
            let links = try LinkInfo.all()
            let rows = links.map {
                Row(
                    id: $0.id, type: $0.type.description, programID: $0.programID, namespaceInode: $0.namespaceInode,
                    attachType: $0.attachType?.description)
            }
            if format == .json { return try printJSON(rows) }
            printTable(
                ["ID", "TYPE", "PROG", "NETNS INODE", "ATTACH"],
                rows.map {
                    [
                        "\($0.id)", $0.type, "\($0.programID)", $0.namespaceInode.map { "\($0)" } ?? "-",
                        $0.attachType ?? "-",
                    ]
                })
        }
    }
}

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check whether SK_LOOKUP works here, and say how to fix what does not.",
        discussion: "Exits non-zero when SK_LOOKUP programs cannot be used on this machine.")

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    func run() throws {
        let report = FeatureReport.probe()
        if format == .json {
            try printJSON(report)
        } else {
            print("kernel       \(report.kernelRelease)")
            let needed = ["cap_bpf", "cap_net_admin", "cap_sys_admin"]
            let have = needed.filter(report.capabilities.contains)
            print(
                "capabilities \(have.isEmpty ? "none of " + needed.joined(separator: ", ") : have.joined(separator: ", "))"
            )
            if !report.capabilities.contains("cap_bpf") && !report.capabilities.contains("cap_sys_admin") {
                print("  fix: run as root, or grant CAP_BPF and CAP_NET_ADMIN")
            }
            print("bpffs        \(report.bpffsMounted ? "mounted at /sys/fs/bpf" : "not mounted at /sys/fs/bpf")")
            if !report.bpffsMounted {
                print(
                    "  fix: mount -t bpf -o mode=0700 bpf /sys/fs/bpf (sksteer can also use a private one: --bpffs DIR)"
                )
            } else if let mode = report.bpffsMode, mode & 0o002 != 0 {
                print("  warning: /sys/fs/bpf is writable by every user (mode \(String(mode, radix: 8))); any user can")
                print("  put entries where a root service keeps its state. fix: chmod 0700 /sys/fs/bpf")
                print("  (and mount it with -o mode=0700 at boot)")
            }
            for probe in report.probes {
                print("\(probe.available ? "ok " : "NO ") \(probe.name)\(probe.since.map { " (Linux \($0))" } ?? "")")
                if let detail = probe.detail { print("  \(detail)") }
            }
            print(
                report.skLookupUsable ? "SK_LOOKUP works here." : "SK_LOOKUP cannot be used here; see the fixes above.")
        }
        if !report.skLookupUsable { throw ExitCode.failure }
    }
}
