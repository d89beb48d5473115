import BPFAssembly
import CBPF
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Kernel features the dispatcher chooses by, each probed once per process (memoized).
package enum Features {
    /// Whether SK_LOOKUP programs may read `ctx->ingress_ifindex` (Linux 5.17): probed once
    /// by loading a program that reads it. `SKSTEER_NO_INGRESS_IFINDEX=1` in the environment
    /// makes it false, to exercise the path older kernels take on a newer one.
    package static let skLookupIngressInterface: Bool = {
        if ProcessInfo.processInfo.environment["SKSTEER_NO_INGRESS_IFINDEX"] == "1" { return false }
        let read = Assembly([.ldx(.w, .r2, .r1, 64), .mov(.r0, 1), .exit()])
        return (try? Program.load(read, type: .skLookup, name: "probe_ifindex")) != nil
    }()
}

/// What this kernel and process can do, found by asking the kernel rather than comparing
/// version numbers.
public struct FeatureReport: Sendable, Codable {
    /// The outcome of one probe.
    public struct Probe: Sendable, Codable, Hashable {
        /// What was probed, e.g. `sk_lookup programs` or `bpf_sk_assign helper`.
        public var name: String
        /// Whether the probe succeeded.
        public var available: Bool
        /// Why not, and what to do; for a missing feature, what doing without it costs.
        public var detail: String?
        /// The first Linux release that has it, e.g. `5.9`.
        public var since: String?

        /// A probe's outcome.
        public init(name: String, available: Bool, detail: String? = nil, since: String? = nil) {
            self.name = name
            self.available = available
            self.detail = detail
            self.since = since
        }
    }

    /// `uname -r`.
    public var kernelRelease: String
    /// The effective capabilities of this process (`cap_bpf`, `cap_net_admin`, …).
    public var capabilities: [String]
    /// Whether a bpf filesystem is mounted at /sys/fs/bpf.
    public var bpffsMounted: Bool
    /// The permission bits of /sys/fs/bpf when mounted (0o1777 lets every user plant entries).
    public var bpffsMode: UInt32?
    /// The outcome of every probe, in the order they ran.
    public var probes: [Probe]

    /// Whether SK_LOOKUP programs can be loaded, assign sockets and be attached here.
    public var skLookupUsable: Bool {
        probes.filter { ["sk_lookup programs", "bpf_sk_assign helper"].contains($0.name) }.allSatisfy(\.available)
    }

    /// Runs every probe. Loads a few tiny programs; attaches nothing.
    public static func probe() -> FeatureReport {
        var probes: [Probe] = []
        let pass = Assembly([.mov(.r0, 1), .exit()])
        var loaded: Program?
        do {
            loaded = try Program.load(pass, type: .skLookup, name: "probe")
            probes.append(Probe(name: "sk_lookup programs", available: true))
        } catch {
            probes.append(Probe(name: "sk_lookup programs", available: false, detail: explain(error)))
        }
        let assign = Assembly([.mov(.r2, 0), .mov(.r3, 0), .call(.skAssign), .mov(.r0, 1), .exit()])
        do {
            _ = try Program.load(assign, type: .skLookup, name: "probe_assign")
            probes.append(Probe(name: "bpf_sk_assign helper", available: true))
        } catch {
            probes.append(Probe(name: "bpf_sk_assign helper", available: false, detail: explain(error)))
        }
        if let loaded {
            var context = [UInt8](repeating: 0, count: 72)
            context.replaceSubrange(8..<12, with: rawBytes(of: UInt32(AF_INET)))
            context.replaceSubrange(12..<16, with: rawBytes(of: UInt32(IPPROTO_TCP)))
            do {
                _ = try loaded.testRun(context: context)
                probes.append(Probe(name: "sk_lookup test runs", available: true))
            } catch {
                probes.append(
                    Probe(
                        name: "sk_lookup test runs", available: false,
                        detail: "\(error.description); needs Linux 5.10.135 or later (explain and bench use it)"))
            }
        } else {
            probes.append(Probe(name: "sk_lookup test runs", available: false, detail: "no sk_lookup programs"))
        }
        probes.append(
            Features.skLookupIngressInterface
                ? Probe(name: "sk_lookup ctx->ingress_ifindex", available: true)
                : Probe(
                    name: "sk_lookup ctx->ingress_ifindex", available: false,
                    detail:
                        "needs Linux 5.17; without it the dispatcher cannot tell test runs from traffic, so explain"
                        + " test-runs an uncounted copy of the program (loaded for each explain)"))
        // BPF_LINK_UPDATE on a bad descriptor: EBADF means the command exists.
        let update = cbpf_link_update(-1, -1, -1, 0)
        probes.append(
            update == -Int(EBADF)
                ? Probe(name: "link update", available: true)
                : Probe(
                    name: "link update", available: false,
                    detail: "BPF_LINK_UPDATE answered \(errnoName(Int32(-update))); needs Linux 5.7 (upgrades need it)")
        )
        probes.append(contentsOf: mapProbes())
        let since = [
            "sk_lookup programs": "5.9", "bpf_sk_assign helper": "5.9", "sk_lookup test runs": "5.13, or 5.10.135",
            "sk_lookup ctx->ingress_ifindex": "5.17", "link update": "5.7",
        ]
        for index in probes.indices where probes[index].since == nil {
            probes[index].since = since[probes[index].name]
        }
        return FeatureReport(
            kernelRelease: BPF.kernelRelease(), capabilities: effectiveCapabilities(),
            bpffsMounted: BPFFileSystem.isMounted(at: BPFFileSystem.defaultPath),
            bpffsMode: BPFFileSystem.isMounted(at: BPFFileSystem.defaultPath)
                ? BPFFileSystem.mode(at: BPFFileSystem.defaultPath) : nil, probes: probes)
    }

    /// The map features the dispatcher's state uses: LPM tries and hashes allocated on demand
    /// (`BPF_F_NO_PREALLOC`), and batch updates for each map type it writes in bulk.
    static func mapProbes() -> [Probe] {
        var probes: [Probe] = []
        var maps: [(MapType, Map)] = []
        for (type, keySize, flags) in [
            (MapType.lpmTrie, 8, Map.noPreallocate), (.hash, 4, Map.noPreallocate), (.array, 4, UInt32(0)),
        ] {
            let name = "\(type) maps\(flags != 0 ? " (BPF_F_NO_PREALLOC)" : "")"
            do {
                maps.append(
                    (type, try Map.create(type: type, keySize: keySize, valueSize: 8, maxEntries: 1, flags: flags)))
                probes.append(Probe(name: name, available: true, since: type == .lpmTrie ? "4.11" : "4.6"))
            } catch {
                probes.append(
                    Probe(
                        name: name, available: false,
                        detail: "\(error.codeName): the dispatcher's prefix and group tables need it", since: "4.11"))
            }
        }
        for (type, map) in maps {
            var key = [UInt8](repeating: 0, count: map.keySize)
            if type == .lpmTrie { key[0] = 32 }  // prefix length 32 of a 4-byte address
            var value = [UInt8](repeating: 0, count: 8)
            var count: UInt32 = 1
            let result = key.withUnsafeMutableBytes { k in
                value.withUnsafeMutableBytes { v in
                    cbpf_map_batch(
                        Int32(BPF_MAP_UPDATE_BATCH.rawValue), map.descriptor.rawValue, nil, nil, k.baseAddress,
                        v.baseAddress, &count, 0, 0)
                }
            }
            probes.append(
                result == 0
                    ? Probe(
                        name: "batch updates of \(type) maps", available: true, since: type == .lpmTrie ? nil : "5.6")
                    : Probe(
                        name: "batch updates of \(type) maps", available: false,
                        detail:
                            "BPF_MAP_UPDATE_BATCH answered \(errnoName(Int32(-result))); apply writes these maps one"
                            + " entry per call instead (one system call per entry)",
                        since: type == .lpmTrie ? nil : "5.6"))
        }
        return probes
    }

    static func explain(_ error: BPFError) -> String {
        switch error.kind {
        case .permissionDenied:
            "\(error.codeName): needs root, or CAP_BPF and CAP_NET_ADMIN (CAP_SYS_ADMIN before Linux 5.8)"
        case .invalidArgument:
            "\(error.codeName): the kernel does not know SK_LOOKUP; it needs Linux 5.9 or later"
        default: error.description
        }
    }
}

/// The running kernel's release, as `uname -r` prints it.
public func kernelRelease() -> String {
    var name = utsname()
    guard uname(&name) == 0 else { return "unknown" }
    return withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// The effective capability names of this process (from `/proc/self/status`).
public func effectiveCapabilities() -> [String] {
    let names: [Int: String] = [
        0: "cap_chown", 1: "cap_dac_override", 5: "cap_kill", 6: "cap_setgid", 7: "cap_setuid",
        10: "cap_net_bind_service",
        12: "cap_net_admin", 13: "cap_net_raw", 14: "cap_ipc_lock", 19: "cap_sys_ptrace", 21: "cap_sys_admin",
        24: "cap_sys_resource", 38: "cap_perfmon", 39: "cap_bpf",
    ]
    guard let file = fopen("/proc/self/status", "r") else { return [] }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard text.hasPrefix("CapEff:") else { continue }
        let hexDigits = text.dropFirst(7).filter { !$0.isWhitespace }
        guard let mask = UInt64(hexDigits, radix: 16) else { return [] }
        return names.keys.sorted().filter { mask & (1 << UInt64($0)) != 0 }.compactMap { names[$0] }
    }
    return []
}
