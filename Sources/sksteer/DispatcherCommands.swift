import ArgumentParser
import BPF
import Foundation
import Logging
import ServiceLifecycle
import SocketSteering
import SocketSteeringNIO
import Synchronization

/// The version this build reports.
let sksteerVersion = "0.1.0"

/// `--netns` and `--bpffs`, accepted by every dispatcher command after its name.
struct StateOptions: ParsableArguments {
    @Option(help: "The network namespace: a path like /proc/PID/ns/net or /run/netns/NAME.")
    var netns = "/proc/self/ns/net"

    @Option(help: "The bpf filesystem that holds the dispatcher's state.")
    var bpffs = "/sys/fs/bpf"

    @Flag(name: .shortAndLong, help: "Log what is done, to standard error.")
    var verbose = false

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    /// Prints the outcome of a change: its text line, or `{"result": …, fields}` as JSON.
    func report(_ text: String, _ fields: [String: String] = [:]) throws {
        if format == .json {
            try printJSON(fields.merging(["result": text]) { a, _ in a })
        } else {
            print(text)
        }
    }

    func namespace() throws -> NetworkNamespace { try NetworkNamespace.open(path: netns) }

    func logger() -> Logger {
        var logger = Logger(label: "sksteer", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = verbose ? .debug : .warning
        return logger
    }

    func open(readOnly: Bool = false) throws -> Dispatcher {
        try Dispatcher.open(namespace: namespace(), bpffs: bpffs, readOnly: readOnly, logger: logger())
    }
}

struct Load: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load the dispatcher into a network namespace (already loaded counts as success).")
    @OptionGroup var state: StateOptions
    @Option(help: "The most bindings the dispatcher can hold.")
    var maxBindings = 1 << 20
    @Flag(help: "Mount a bpf filesystem at --bpffs first if none is mounted there.")
    var mount = false

    func run() throws {
        try reporting {
            if mount && !BPFFileSystem.isMounted(at: state.bpffs) {
                // Under `ip netns exec` (or `unshare -m`) a mount is made in that command's
                // own mount namespace and is gone, with all the state, when it exits.
                if BPFFileSystem.inPrivateMountNamespace() {
                    throw ToolError(
                        "sksteer runs in a mount namespace of its own (as under ip netns exec), where a bpf filesystem"
                            + " it mounts disappears when it exits; mount one from the host"
                            + " (mount -t bpf -o mode=0700 bpf \(state.bpffs)) and run without --mount,"
                            + " or use --netns /run/netns/NAME instead of ip netns exec")
                }
                try BPFFileSystem.mount(at: state.bpffs)
            }
            let dispatcher = try Dispatcher.load(
                namespace: state.namespace(), bpffs: state.bpffs, maxBindings: maxBindings, logger: state.logger())
            try state.report("loaded", ["directory": dispatcher.directory])
        }
    }
}

struct Unload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Detach the dispatcher and remove its state (registered sockets stay open).")
    @OptionGroup var state: StateOptions
    func run() throws {
        try reporting {
            let removed = try Dispatcher.unload(namespace: state.namespace(), bpffs: state.bpffs)
            try state.report(
                "unloaded: removed \(removed.count) pinned objects", ["removed": removed.joined(separator: " ")])
        }
    }
}

struct Upgrade: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Swap in this sksteer's program without dropping a connection, migrating older state.")
    @OptionGroup var state: StateOptions
    func run() throws {
        try reporting {
            let result = try Dispatcher.upgrade(
                namespace: state.namespace(), bpffs: state.bpffs, logger: state.logger())
            if state.format == .json { return try printJSON(result) }
            print(
                "program #\(result.previousProgramID) (tag \(result.previousTag)) → #\(result.programID) (tag \(result.tag))"
            )
            if let from = result.migratedFrom { print("migrated the state from layout \(from)") }
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    @Option(help: "Output format: text or json.") var format: OutputFormat = .text
    func run() throws {
        if format == .json {
            return try printJSON(["version": sksteerVersion, "layout": "\(Layout.schemaVersion)"])
        }
        print("sksteer \(sksteerVersion) (state layout \(Layout.schemaVersion))")
    }
}

/// `tcp` or `udp`, in any case; help and completions list the values.
struct ProtocolArgument: ExpressibleByArgument {
    var transport: Socket.Transport
    init?(argument: String) {
        guard let transport = Socket.Transport(rawValue: argument.lowercased()) else { return nil }
        self.transport = transport
    }
    static var allValueStrings: [String] { Socket.Transport.allCases.map(\.rawValue) }
}

/// `tcp`, `udp` or `any`, in any case.
struct ProtocolFilterArgument: ExpressibleByArgument {
    var transport: Socket.Transport?
    init?(argument: String) {
        if argument.lowercased() == "any" {
            transport = nil
        } else {
            guard let transport = Socket.Transport(rawValue: argument.lowercased()) else { return nil }
            self.transport = transport
        }
    }
    static var allValueStrings: [String] { Socket.Transport.allCases.map(\.rawValue) + ["any"] }
}

/// `ipv4` or `ipv6`, in any case.
enum FamilyArgument: String, ExpressibleByArgument, CaseIterable {
    case ipv4, ipv6
    init?(argument: String) { self.init(rawValue: argument.lowercased()) }
}

/// An IPv4 or IPv6 address.
struct AddressArgument: ExpressibleByArgument {
    var address: IPAddress
    init?(argument: String) {
        guard let address = IPAddress(argument) else { return nil }
        self.address = address
    }
}

/// An IPv4 or IPv6 address or CIDR prefix, kept as written (for the host-bits note).
struct PrefixArgument: ExpressibleByArgument {
    var text: String
    var prefix: IPPrefix
    init?(argument: String) { try? self.init(parsing: argument) }
    /// Parses, with the reason when it is not a prefix (the usage error shows it).
    init(parsing text: String) throws {
        guard let (prefix, _) = IPPrefix.parse(text) else {
            throw ToolError("not an IPv4 or IPv6 address or prefix (e.g. 127.0.0.1, 10.0.0.0/8, 2001:db8::/32)")
        }
        self.text = text
        self.prefix = prefix
    }
}

/// A port (`80`), a range (`8000-8999`) or `*`.
struct PortsArgument: ExpressibleByArgument {
    var text: String
    var ports: PortSet
    init?(argument: String) { try? self.init(parsing: argument) }
    init(parsing text: String) throws {
        do {
            ports = try PortSet(parsing: text)
        } catch {
            throw ToolError("\(error)")
        }
        self.text = text
    }
}

/// `IP:PORT`, or `[IPv6]:PORT`.
struct EndpointArgument: ExpressibleByArgument {
    var endpoint: Endpoint
    init?(argument: String) { try? self.init(parsing: argument) }
    init(parsing text: String) throws {
        guard let endpoint = Endpoint(text) else { throw ToolError("not IP:PORT ([v6]:PORT)") }
        self.endpoint = endpoint
    }
}

/// `LABEL PROTO PREFIX PORTS`.
struct BindingArguments: ParsableArguments {
    @Argument(help: "The label of the destination.") var label: String
    @Argument(help: "tcp or udp.") var proto: ProtocolArgument
    @Argument(
        help: "An address or CIDR prefix (127.0.0.1, 10.0.0.0/8, 2001:db8::/32).",
        transform: { try PrefixArgument(parsing: $0) })
    var prefix: PrefixArgument
    @Argument(
        help: "A port (80), a range (8000-8999) or * for all ports.", transform: { try PortsArgument(parsing: $0) })
    var ports: PortsArgument
    @Option(help: "While the label has no socket: drop (refuse, the default) or pass (the normal lookup).")
    var noSocket: String = "drop"

    func binding() throws -> Binding {
        var binding = try Binding(
            label: label, protocol: proto.transport.rawValue, prefix: prefix.text, ports: ports.text)
        binding.noSocket = try Binding.policy(noSocket)
        if let note = Binding.hostBitsNote(prefix.text) { warn(note) }
        return binding
    }
}

struct Bind: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send a protocol, prefix and ports to a label.")
    @OptionGroup var state: StateOptions
    @OptionGroup var arguments: BindingArguments
    func run() throws {
        try reporting {
            let binding = try arguments.binding()
            let change = try state.open().bind(binding)
            try state.report(change == .unchanged ? "already bound" : "bound", ["binding": binding.description])
        }
    }
}

struct Unbind: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a binding (same arguments as bind).")
    @OptionGroup var state: StateOptions
    @OptionGroup var arguments: BindingArguments
    func run() throws {
        try reporting {
            let binding = try arguments.binding()
            let change = try state.open().unbind(binding)
            try state.report(
                change == .removed ? "unbound" : "not bound (nothing to change)", ["binding": binding.description])
        }
    }
}

struct Bindings: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the bindings that match, most specific first.",
        discussion: "With an address or prefix, bindings that overlap it; with a port, bindings that cover it.")
    @OptionGroup var state: StateOptions
    @Argument(help: "tcp, udp or any.") var proto: ProtocolFilterArgument?
    @Argument(help: "An address or prefix.", transform: { try PrefixArgument(parsing: $0) })
    var prefix: PrefixArgument?
    @Argument(help: "A port.") var port: UInt16?

    func run() throws {
        try reporting {
            let transport = proto?.transport
            let filter = prefix?.prefix
            let status = try state.open(readOnly: true).status(findOwners: false)
            let rows = status.bindings.filter { b in
                if let transport, b.transport != transport { return false }
                if let port, !b.ports.contains(port) { return false }
                if let filter {
                    let mine = IPPrefix(
                        b.prefix.address.mappedToIPv6,
                        length: b.prefix.address.isIPv4 ? 96 + b.prefix.length : b.prefix.length)!
                    let theirs = IPPrefix(
                        filter.address.mappedToIPv6, length: filter.address.isIPv4 ? 96 + filter.length : filter.length)!
                    if !mine.contains(theirs.address) && !theirs.contains(mine.address) { return false }
                }
                return true
            }
            if state.format == .json { return try printJSON(rows) }
            printTable(
                ["PROTOCOL", "PREFIX", "PORTS", "LABEL"],
                rows.map { [$0.transport.rawValue, $0.prefix.description, $0.ports.description, $0.label] })
        }
    }
}

struct FileArgument: ParsableArguments {
    @Argument(
        help:
            "The binding file (- for standard input): JSON {\"bindings\": [...]} or lines of LABEL PROTO PREFIX PORTS.")
    var file: String

    func bindings() throws -> [Binding] { try bindings(from: readFile(file)) }

    /// The bindings of the file's content, read already.
    func bindings(from data: Data) throws -> [Binding] {
        guard let text = String(data: data, encoding: .utf8) else { throw ToolError("\(file): not UTF-8 text") }
        do {
            return try BindingFile.parse(text) { warn("\(file): \($0)") }
        } catch {
            throw ToolError("\(file): \(error)")
        }
    }
}

func printPlan(_ plan: Dispatcher.Plan, applied: Bool, all: Bool) {
    let limit = all ? Int.max : 50
    for binding in plan.removed.prefix(limit) { print("- \(binding)") }
    if plan.removed.count > limit { print("- … and \(plan.removed.count - limit) more (--all lists them)") }
    for binding in plan.added.prefix(limit) { print("+ \(binding)") }
    if plan.added.count > limit { print("+ … and \(plan.added.count - limit) more (--all lists them)") }
    let verb = applied ? "applied" : "would apply"
    print("\(verb): \(plan.added.count) added, \(plan.removed.count) removed, \(plan.unchanged) unchanged")
}

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show what apply would change.")
    @OptionGroup var state: StateOptions
    @OptionGroup var input: FileArgument
    @Flag(help: "List every change, not the first 50 of each kind.") var all = false
    func run() throws {
        try reporting {
            let progress = TerminalProgress(unless: state.verbose)
            defer { progress.clear() }
            progress.show("read \(input.file)")
            let bindings = try input.bindings()
            progress.show("compare with the rules in force")
            let plan = try state.open(readOnly: true).plan(bindings)
            progress.clear()
            if state.format == .json { return try printJSON(plan) }
            printPlan(plan, applied: false, all: all)
        }
    }
}

struct Apply: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the bindings exactly those of a file, atomically.",
        discussion:
            "The new rule set is built beside the old one and swapped in with one update: every connection sees the old rules or the new ones, and an apply that stops early leaves the old rules in force."
    )
    @OptionGroup var state: StateOptions
    @OptionGroup var input: FileArgument
    @Flag(help: "List every change, not the first 50 of each kind.") var all = false
    @Flag(
        help: """
            Keep running: apply the file again, atomically, whenever it changes (also when a \
            Kubernetes ConfigMap volume swaps it); a file that does not parse or apply is \
            reported and the rules in force stay. Stops on SIGTERM or SIGINT.
            """)
    var watch = false

    func run() throws {
        try reporting {
            guard watch else { return try applyOnce() }
            if input.file == "-" { throw ToolError("--watch needs a file, not standard input") }
            try watchFile()
        }
    }

    /// Applies the file, or `content` when it has been read already (by the watcher).
    func applyOnce(content: Data? = nil) throws {
        let progress = TerminalProgress(unless: state.verbose || watch)
        defer { progress.clear() }
        progress.show("read \(input.file)")
        let bindings = try content.map { try input.bindings(from: $0) } ?? input.bindings()
        let dispatcher = try state.open()
        dispatcher.progress = { progress.show($0) }
        let plan = try dispatcher.apply(bindings)
        progress.clear()
        if state.format == .json { return try printJSON(plan) }
        printPlan(plan, applied: true, all: all)
    }

    /// Applies the file whenever its content differs from what was last read. inotify on the
    /// file's directory says when to look (an editor's rename and a ConfigMap's `..data`
    /// swap are events of the directory); it also looks once a second.
    func watchFile() throws {
        for signal in [SIGTERM, SIGINT] {
            Glibc.signal(signal) { _ in watchStopRequested.store(true, ordering: .relaxed) }
        }
        let directory = (input.file as NSString).deletingLastPathComponent
        let events = inotify_init1(Int32(IN_CLOEXEC))
        defer { if events >= 0 { close(events) } }
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB)
        if events < 0 || inotify_add_watch(events, directory.isEmpty ? "." : directory, mask) < 0 {
            warn(
                "cannot watch the directory of \(input.file) (\(String(cString: strerror(errno)))); looking once a second"
            )
        }
        var applied: Data?
        var failed: (content: Data?, message: String)?
        var sinceRetry = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !watchStopRequested.load(ordering: .relaxed) {
            // Read on every event and once a second (an edit inside a ConfigMap's hidden
            // directory makes no event here); apply when the content differs from what is in
            // force. Content that failed is tried again every 5 s (the dispatcher may not be
            // loaded yet at boot), and its error is said once.
            let content = try? readFile(input.file)
            var due = content != applied
            if due, let failed, failed.content == content, sinceRetry < 5 { due = false }
            if due {
                sinceRetry = 0
                do {
                    guard let content else { throw ToolError("\(input.file): cannot be read") }
                    try applyOnce(content: content)
                    applied = content
                    failed = nil
                } catch {
                    let message = "\(error)"
                    if message != failed?.message {
                        FileHandle.standardError.write(Data("sksteer: \(message); the rules in force stay\n".utf8))
                    }
                    failed = (content, message)
                }
                fflush(nil)
            }
            guard events >= 0 else {
                usleep(1_000_000)
                sinceRetry += 1
                continue
            }
            var ready = pollfd(fd: events, events: Int16(POLLIN), revents: 0)
            if poll(&ready, 1, 1000) > 0 {
                _ = read(events, &buffer, buffer.count)
                usleep(50_000)  // let a writer finish before the file is read
            } else {
                sinceRetry += 1
            }
        }
    }
}

/// Set by SIGTERM or SIGINT: `apply --watch` stops between applies.
let watchStopRequested = Atomic<Bool>(false)

func printRegistrations(_ registrations: [Dispatcher.Registration], format: OutputFormat) throws {
    if format == .json {
        return try printJSON(
            registrations.map {
                [
                    "destination": $0.destination.description, "socket": hexCookie($0.cookie), "slot": "\($0.slot)",
                    "result": $0.alreadyRegistered ? "already registered" : "registered",
                ]
            })
    }
    for registration in registrations { print(registration.description) }
}

struct Register: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Register the sockets systemd passed by socket activation (LISTEN_FDS) for a label.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The label.") var label: String
    @Option(help: "Only the descriptors with this name in LISTEN_FDNAMES.") var name: String?
    @Option(
        name: .customLong("fd"),
        help: "Register this inherited descriptor instead of LISTEN_FDS (repeatable: --fd 3 --fd 4).")
    var descriptors: [Int32] = []
    func run() throws {
        try reporting {
            let dispatcher = try state.open()
            var registrations: [Dispatcher.Registration] = []
            if descriptors.isEmpty {
                registrations = try dispatcher.registerActivatedSockets(
                    label: label, name: name, environment: ProcessInfo.processInfo.environment)
            } else {
                if name != nil { throw ToolError("--name selects from LISTEN_FDNAMES; it does not go with --fd") }
                for descriptor in descriptors {
                    registrations += try dispatcher.register(descriptor: descriptor, label: label)
                }
            }
            try printRegistrations(registrations, format: state.format)
        }
    }
}

struct RegisterPID: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "register-pid",
        abstract: "Register the listening (TCP) or unconnected (UDP) socket a running process has on IP:PORT.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The process id, or a file that holds it.") var pid: String
    @Argument(help: "The label.") var label: String
    @Argument(help: "tcp or udp.") var proto: ProtocolArgument
    @Argument(help: "The address the socket is bound to.") var ip: AddressArgument
    @Argument(help: "The port the socket is bound to.") var port: UInt16

    func run() throws {
        try reporting {
            var pidText = pid
            if Int32(pid) == nil, let data = FileManager.default.contents(atPath: pid),
                let text = String(data: data, encoding: .utf8)
            {
                pidText = text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            guard let process = Int32(pidText) else { throw ToolError("'\(pid)' is not a process id or a pid file") }
            let registrations = try state.open().register(
                fromProcess: process, label: label, transport: proto.transport, address: ip.address, port: port)
            try printRegistrations(registrations, format: state.format)
        }
    }
}

struct Unregister: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove every socket of a destination.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The label.") var label: String
    @Argument(help: "tcp or udp.") var proto: ProtocolArgument
    @Argument(help: "ipv4 or ipv6.") var family: FamilyArgument
    func run() throws {
        try reporting {
            let transport = proto.transport
            try state.open().unregister(label: label, transport: transport, ipv6: family == .ipv6)
            try state.report("unregistered", ["destination": "\(label) \(family.rawValue) \(transport)"])
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show bindings, destinations, sockets and counters.")
    @OptionGroup var state: StateOptions
    @Argument(help: "Only this label.") var label: String?
    func run() throws {
        try reporting {
            var status = try state.open(readOnly: true).status()
            if let label {
                status.bindings = status.bindings.filter { $0.label == label }
                status.destinations = status.destinations.filter { $0.destination.label == label }
            }
            if state.format == .json { return try printJSON(status) }
            print(
                "netns \(status.namespace), state \(status.directory) (layout \(status.schema), copy \(status.activeCopy) in force)"
            )
            let memory = status.mapMemoryBytes.map { ", maps \(formatMiB($0)) MiB of kernel memory" } ?? ""
            print(
                "program #\(status.programID.map(String.init) ?? "?"), link #\(status.linkID.map(String.init) ?? "?")"
                    + "\(memory)\n")
            print("Bindings (most specific first):")
            printTable(
                ["PROTOCOL", "PREFIX", "PORTS", "LABEL"],
                status.bindings.map { [$0.transport.rawValue, $0.prefix.description, $0.ports.description, $0.label] })
            print("\nDestinations:")
            printTable(
                ["LABEL", "FAMILY", "PROTOCOL", "SOCKETS", "LOOKUPS", "MISSES", "ERRORS"],
                status.destinations.map { d in
                    let sockets = d.sockets.map { s in
                        hexCookie(s.cookie)
                            + (s.owners.isEmpty ? "" : " (pid \(s.owners.map(String.init).joined(separator: ",")))")
                    }
                    let errors = d.errors.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map {
                        "\($0.key)=\($0.value)"
                    }
                    return [
                        d.destination.label, d.destination.ipv6 ? "ipv6" : "ipv4", d.destination.transport.rawValue,
                        sockets.isEmpty ? "none" : sockets.joined(separator: " "), "\(d.lookups)", "\(d.misses)",
                        errors.isEmpty ? "0" : errors.joined(separator: ","),
                    ]
                })
            print("\nNo binding matched: \(status.noMatch)")
            if let perBinding = status.bindingMetrics {
                var counters = perBinding.counters
                if let label { counters = counters.filter { $0.binding.label == label } }
                print(
                    "\nPer-binding counters (limit \(perBinding.limit)"
                        + (perBinding.counting
                            ? "" : "; the attached program does not count: an on or off was interrupted; run it again")
                        + "):")
                printTable(
                    ["PROTOCOL", "PREFIX", "PORTS", "LABEL", "LOOKUPS", "MISSES"],
                    counters.map {
                        [
                            $0.binding.transport.rawValue, $0.binding.prefix.description, $0.binding.ports.description,
                            $0.binding.label, "\($0.lookups)", "\($0.misses)",
                        ]
                    })
                if perBinding.overflowLookups > 0 {
                    print(
                        "Past the limit, not counted per binding: \(perBinding.overflowLookups) lookups,"
                            + " \(perBinding.overflowMisses) misses")
                }
            }
        }
    }
}

struct BindingMetricsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "binding-metrics",
        abstract: "Turn per-binding counters on or off (off by default).",
        discussion: """
            While on, the program also counts each connection under the binding that won it; \
            status and metrics show the bindings that have had traffic \
            (sksteer_binding_lookups_total and sksteer_binding_misses_total, two series per \
            counted binding). A binding takes a counter at its first connection; past --limit \
            of them, connections are counted in sksteer_binding_overflow_lookups_total instead. \
            Turning them off removes the counts.
            """)
    enum Setting: String, ExpressibleByArgument, CaseIterable {
        case on, off
    }
    @OptionGroup var state: StateOptions
    @Argument(help: "on or off.") var setting: Setting
    @Option(help: "With on: the most bindings counted one by one (1-\(Layout.maxBindingCounters)).")
    var limit = Layout.defaultBindingCounters

    func run() throws {
        try reporting {
            let dispatcher = try state.open()
            switch setting {
            case .on:
                try dispatcher.enableBindingMetrics(limit: limit)
                try state.report("per-binding counters on (limit \(limit))", ["limit": "\(limit)"])
            case .off:
                try dispatcher.disableBindingMetrics()
                try state.report("per-binding counters off")
            }
        }
    }
}

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Say which binding matches a connection and which socket the live program picks (kernel test run).")
    @OptionGroup var state: StateOptions
    @Argument(help: "tcp or udp.") var proto: ProtocolArgument
    @Argument(help: "The destination address.") var ip: AddressArgument
    @Argument(help: "The destination port.") var port: UInt16
    @Option(help: "The source, IP:PORT ([v6]:PORT).", transform: { try EndpointArgument(parsing: $0) })
    var from: EndpointArgument?

    func run() throws {
        try reporting {
            let (transport, address) = (proto.transport, ip.address)
            let source = from?.endpoint
            if let source, source.address.isIPv4 != address.isIPv4 {
                throw ToolError("--from must be of the same family")
            }
            let explanation = try state.open(readOnly: true).explain(transport, address, port, from: source)
            if state.format == .json { return try printJSON(explanation) }
            print("connection  \(explanation.connection)")
            print("binding     \(explanation.binding.map(\.description) ?? "none")")
            print(
                "kernel      \(explanation.verdict)"
                    + (explanation.socket.map { ", socket \($0)" } ?? ", no socket selected"))
            print("outcome     \(explanation.outcome)")
        }
    }
}

struct Metrics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the counters in Prometheus text format, or serve them over HTTP.",
        discussion: """
            With --listen, serves GET and HEAD /metrics on SwiftNIO until SIGTERM or SIGINT. Each \
            connection must send a complete request within 5 s of opening or of its previous \
            response; at most 256 are open at once.
            """)
    @OptionGroup var state: StateOptions
    @Option(help: "Serve GET /metrics on ADDR:PORT ([v6]:PORT; port 0 picks one) instead of printing once.")
    var listen: String?
    @Option(help: .hidden) var requestTimeout: Int64 = 5

    func run() async throws {
        let state = self.state
        let text: @Sendable () throws -> String = {
            try state.open(readOnly: true).status(findOwners: false).prometheusText(version: sksteerVersion)
        }
        try reporting {
            guard listen == nil else { return }
            print(try text(), terminator: "")
        }
        guard let listen else { return }
        guard let endpoint = Endpoint(listen) else {
            try reporting { throw ToolError("--listen '\(listen)' is not ADDR:PORT") }
            return
        }
        // Refuse at once, not at the first scrape, when there is no dispatcher to read.
        try reporting { _ = try text() }
        let logger = state.logger()
        var limits = MetricsServer.Configuration()
        limits.requestTimeout = .seconds(requestTimeout)
        let server = MetricsServer(
            host: "\(endpoint.address)", port: Int(endpoint.port), configuration: limits, logger: logger,
            render: { try text() },
            onListening: { address in
                FileHandle.standardError.write(Data("serving metrics on http://\(address)/metrics\n".utf8))
                // A binding takes every connection it matches, the scrapes of this exporter too.
                if let bound = Endpoint(address), state.netns == "/proc/self/ns/net",
                    let binding = try? state.open(readOnly: true).status(findOwners: false).bindings.first(where: {
                        $0.matches(.tcp, bound.address, bound.port)
                    })
                {
                    warn(
                        "\(address) is covered by the binding \(binding): connections to it go to"
                            + " '\(binding.label)', not to this exporter; listen on an address no binding covers")
                }
            })
        let group = ServiceGroup(
            services: [server], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [],
            logger: logger)
        do {
            try await group.run()
        } catch {
            FileHandle.standardError.write(Data("sksteer: metrics server: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Show the dispatcher at work in a throwaway namespace, with real connections; leaves nothing behind.")
    func run() throws {
        try reporting {
            let report = try Demo.run { print($0) }
            let failed = report.rows.filter { !$0.ok }
            if !failed.isEmpty { throw ToolError("\(failed.count) connection(s) did not land where expected") }
            print("\nAll \(report.rows.count) connections landed where the bindings say.")
        }
    }
}

/// Bytes in MiB with one decimal, e.g. `12.9`.
func formatMiB(_ bytes: Int) -> String {
    let tenths = (bytes * 10 + 524_288) / 1_048_576
    return "\(tenths / 10).\(tenths % 10)"
}
