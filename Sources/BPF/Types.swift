import CBPF

/// A BPF program type (`enum bpf_prog_type`). Unknown kernel values pass through.
public struct ProgramType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `BPF_PROG_TYPE_SOCKET_FILTER`.
    public static let socketFilter = ProgramType(rawValue: BPF_PROG_TYPE_SOCKET_FILTER.rawValue)
    /// `BPF_PROG_TYPE_KPROBE`.
    public static let kprobe = ProgramType(rawValue: BPF_PROG_TYPE_KPROBE.rawValue)
    /// `BPF_PROG_TYPE_SCHED_CLS`: tc classifiers.
    public static let schedCLS = ProgramType(rawValue: BPF_PROG_TYPE_SCHED_CLS.rawValue)
    /// `BPF_PROG_TYPE_SCHED_ACT`: tc actions.
    public static let schedACT = ProgramType(rawValue: BPF_PROG_TYPE_SCHED_ACT.rawValue)
    /// `BPF_PROG_TYPE_TRACEPOINT`.
    public static let tracepoint = ProgramType(rawValue: BPF_PROG_TYPE_TRACEPOINT.rawValue)
    /// `BPF_PROG_TYPE_XDP`.
    public static let xdp = ProgramType(rawValue: BPF_PROG_TYPE_XDP.rawValue)
    /// `BPF_PROG_TYPE_PERF_EVENT`.
    public static let perfEvent = ProgramType(rawValue: BPF_PROG_TYPE_PERF_EVENT.rawValue)
    /// `BPF_PROG_TYPE_CGROUP_SKB`.
    public static let cgroupSKB = ProgramType(rawValue: BPF_PROG_TYPE_CGROUP_SKB.rawValue)
    /// `BPF_PROG_TYPE_CGROUP_SOCK`.
    public static let cgroupSock = ProgramType(rawValue: BPF_PROG_TYPE_CGROUP_SOCK.rawValue)
    /// `BPF_PROG_TYPE_SOCK_OPS`.
    public static let sockOps = ProgramType(rawValue: BPF_PROG_TYPE_SOCK_OPS.rawValue)
    /// `BPF_PROG_TYPE_SK_SKB`.
    public static let skSKB = ProgramType(rawValue: BPF_PROG_TYPE_SK_SKB.rawValue)
    /// `BPF_PROG_TYPE_SK_MSG`.
    public static let skMsg = ProgramType(rawValue: BPF_PROG_TYPE_SK_MSG.rawValue)
    /// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
    public static let cgroupSockAddr = ProgramType(rawValue: BPF_PROG_TYPE_CGROUP_SOCK_ADDR.rawValue)
    /// `BPF_PROG_TYPE_SK_REUSEPORT`.
    public static let skReuseport = ProgramType(rawValue: BPF_PROG_TYPE_SK_REUSEPORT.rawValue)
    /// `BPF_PROG_TYPE_FLOW_DISSECTOR`.
    public static let flowDissector = ProgramType(rawValue: BPF_PROG_TYPE_FLOW_DISSECTOR.rawValue)
    /// `BPF_PROG_TYPE_TRACING`.
    public static let tracing = ProgramType(rawValue: BPF_PROG_TYPE_TRACING.rawValue)
    /// `BPF_PROG_TYPE_LSM`.
    public static let lsm = ProgramType(rawValue: BPF_PROG_TYPE_LSM.rawValue)
    /// `BPF_PROG_TYPE_SK_LOOKUP` (Linux 5.9): picks the socket for a new connection.
    public static let skLookup = ProgramType(rawValue: BPF_PROG_TYPE_SK_LOOKUP.rawValue)
    /// `BPF_PROG_TYPE_SYSCALL`.
    public static let syscall = ProgramType(rawValue: BPF_PROG_TYPE_SYSCALL.rawValue)

    static let names: [UInt32: String] = [
        0: "unspec", 1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act", 5: "tracepoint", 6: "xdp",
        7: "perf_event", 8: "cgroup_skb", 9: "cgroup_sock", 10: "lwt_in", 11: "lwt_out", 12: "lwt_xmit",
        13: "sock_ops", 14: "sk_skb", 15: "cgroup_device", 16: "sk_msg", 17: "raw_tracepoint",
        18: "cgroup_sock_addr", 19: "lwt_seg6local", 20: "lirc_mode2", 21: "sk_reuseport", 22: "flow_dissector",
        23: "cgroup_sysctl", 24: "raw_tracepoint_writable", 25: "cgroup_sockopt", 26: "tracing", 27: "struct_ops",
        28: "ext", 29: "lsm", 30: "sk_lookup", 31: "syscall", 32: "netfilter",
    ]

    /// The name `bpftool` uses (`sk_lookup`), or `type <n>` for an unknown value.
    public var description: String { Self.names[rawValue] ?? "type \(rawValue)" }

    /// Looks a type up by its `bpftool` name (`sk_lookup`).
    public init?(name: String) {
        guard let raw = Self.names.first(where: { $0.value == name })?.key else { return nil }
        self.rawValue = raw
    }

    /// The attach type the kernel requires at load time for this program type, if any.
    /// SK_LOOKUP programs must be loaded with `BPF_SK_LOOKUP`, or the kernel answers EINVAL.
    public var requiredExpectedAttachType: AttachType? {
        self == .skLookup ? .skLookup : nil
    }
}

/// A BPF map type (`enum bpf_map_type`). Unknown kernel values pass through.
public struct MapType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `BPF_MAP_TYPE_HASH`.
    public static let hash = MapType(rawValue: BPF_MAP_TYPE_HASH.rawValue)
    /// `BPF_MAP_TYPE_ARRAY`: indexed by a 32-bit key.
    public static let array = MapType(rawValue: BPF_MAP_TYPE_ARRAY.rawValue)
    /// `BPF_MAP_TYPE_PROG_ARRAY`: programs, for tail calls.
    public static let progArray = MapType(rawValue: BPF_MAP_TYPE_PROG_ARRAY.rawValue)
    /// `BPF_MAP_TYPE_PERCPU_HASH`.
    public static let perCPUHash = MapType(rawValue: BPF_MAP_TYPE_PERCPU_HASH.rawValue)
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    public static let perCPUArray = MapType(rawValue: BPF_MAP_TYPE_PERCPU_ARRAY.rawValue)
    /// `BPF_MAP_TYPE_LRU_HASH`.
    public static let lruHash = MapType(rawValue: BPF_MAP_TYPE_LRU_HASH.rawValue)
    /// Longest-prefix match: keys are a 32-bit prefix length followed by the data.
    public static let lpmTrie = MapType(rawValue: BPF_MAP_TYPE_LPM_TRIE.rawValue)
    /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`: an array whose values are inner maps.
    public static let arrayOfMaps = MapType(rawValue: BPF_MAP_TYPE_ARRAY_OF_MAPS.rawValue)
    /// `BPF_MAP_TYPE_HASH_OF_MAPS`: a hash whose values are inner maps.
    public static let hashOfMaps = MapType(rawValue: BPF_MAP_TYPE_HASH_OF_MAPS.rawValue)
    /// An array of sockets, indexed by a 32-bit key.
    public static let sockMap = MapType(rawValue: BPF_MAP_TYPE_SOCKMAP.rawValue)
    /// A hash of sockets, by a key of any size.
    public static let sockHash = MapType(rawValue: BPF_MAP_TYPE_SOCKHASH.rawValue)
    /// `BPF_MAP_TYPE_REUSEPORT_SOCKARRAY`: sockets of one `SO_REUSEPORT` group by index, for
    /// `bpf_sk_select_reuseport` in SK_REUSEPORT programs.
    public static let reuseportSocketArray = MapType(rawValue: BPF_MAP_TYPE_REUSEPORT_SOCKARRAY.rawValue)
    /// `BPF_MAP_TYPE_RINGBUF`.
    public static let ringBuffer = MapType(rawValue: BPF_MAP_TYPE_RINGBUF.rawValue)

    static let names: [UInt32: String] = [
        1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array", 5: "percpu_hash", 6: "percpu_array",
        7: "stack_trace", 8: "cgroup_array", 9: "lru_hash", 10: "lru_percpu_hash", 11: "lpm_trie",
        12: "array_of_maps", 13: "hash_of_maps", 14: "devmap", 15: "sockmap", 16: "cpumap", 17: "xskmap",
        18: "sockhash", 19: "cgroup_storage", 20: "reuseport_sockarray", 21: "percpu_cgroup_storage", 22: "queue",
        23: "stack", 24: "sk_storage", 25: "devmap_hash", 26: "struct_ops", 27: "ringbuf", 28: "inode_storage",
        29: "task_storage", 30: "bloom_filter", 31: "user_ringbuf", 32: "cgrp_storage", 33: "arena",
    ]

    /// The name `bpftool` uses (`sockmap`).
    public var description: String { Self.names[rawValue] ?? "type \(rawValue)" }

    /// Whether lookups return one value per possible CPU.
    public var isPerCPU: Bool {
        [MapType.perCPUHash, .perCPUArray, MapType(rawValue: 10), MapType(rawValue: 21)].contains(self)
    }
}

/// A BPF attach type (`enum bpf_attach_type`). Unknown kernel values pass through.
public struct AttachType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `BPF_SK_LOOKUP` (36): SK_LOOKUP programs on a network namespace.
    public static let skLookup = AttachType(rawValue: BPF_SK_LOOKUP.rawValue)
    /// `BPF_SK_REUSEPORT_SELECT`: an SK_REUSEPORT program that picks a socket of its group.
    public static let skReuseportSelect = AttachType(rawValue: BPF_SK_REUSEPORT_SELECT.rawValue)
    /// `BPF_FLOW_DISSECTOR`.
    public static let flowDissector = AttachType(rawValue: BPF_FLOW_DISSECTOR.rawValue)

    /// The `bpftool` name (`sk_lookup`, `flow_dissector`), or `attach type <n>` for others.
    public var description: String {
        switch self {
        case .skLookup: "sk_lookup"
        case .flowDissector: "flow_dissector"
        case .skReuseportSelect: "sk_reuseport_select"
        default: "attach type \(rawValue)"
        }
    }
}

/// A BPF link type (`enum bpf_link_type`).
public struct LinkType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `BPF_LINK_TYPE_NETNS`: an attachment to a network namespace.
    public static let netns = LinkType(rawValue: BPF_LINK_TYPE_NETNS.rawValue)

    static let names: [UInt32: String] = [
        1: "raw_tracepoint", 2: "tracing", 3: "cgroup", 4: "iter", 5: "netns", 6: "xdp", 7: "perf_event",
        8: "kprobe_multi", 9: "struct_ops", 10: "netfilter", 11: "tcx", 12: "uprobe_multi", 13: "netkit",
        14: "sockmap",
    ]

    /// The name `bpftool` uses (`netns`).
    public var description: String { Self.names[rawValue] ?? "type \(rawValue)" }
}
