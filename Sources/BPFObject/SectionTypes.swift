/// What a program section's name says, as libbpf reads it: the program type and the
/// expected attach type, by the kernel's numbers (`enum bpf_prog_type`, `enum bpf_attach_type`).
public struct SectionType: Sendable, Hashable {
    /// `BPF_PROG_TYPE_*`.
    public var programType: UInt32
    /// `BPF_*` of `enum bpf_attach_type`, for types whose load needs one.
    public var expectedAttachType: UInt32?
    /// The section name's known part (`sk_lookup`, `cgroup/connect4`).
    public var name: String

    /// How a section name matches a definition.
    enum Match {
        /// The name, or the name followed by `/` and anything.
        case nameOrSubsection
        /// Exactly the name.
        case exactly
    }

    // (section name, how it matches, program type, expected attach type).
    static let definitions: [(String, Match, UInt32, UInt32?)] = [
        ("socket", .nameOrSubsection, 1, nil),
        ("sk_lookup", .nameOrSubsection, 30, 36),
        ("sk_reuseport/migrate", .exactly, 21, 40),
        ("sk_reuseport", .nameOrSubsection, 21, 39),
        ("tc", .nameOrSubsection, 3, nil),
        ("classifier", .nameOrSubsection, 3, nil),
        ("action", .nameOrSubsection, 4, nil),
        ("xdp", .nameOrSubsection, 6, 37),
        ("cgroup_skb/ingress", .exactly, 8, 0),
        ("cgroup_skb/egress", .exactly, 8, 1),
        ("cgroup/skb", .exactly, 8, nil),
        ("cgroup/sock_create", .exactly, 9, 2),
        ("cgroup/sock_release", .exactly, 9, 34),
        ("cgroup/sock", .exactly, 9, 2),
        ("cgroup/post_bind4", .exactly, 9, 12),
        ("cgroup/post_bind6", .exactly, 9, 13),
        ("cgroup/dev", .exactly, 15, 6),
        ("sockops", .exactly, 13, 3),
        ("sk_skb/stream_parser", .exactly, 14, 4),
        ("sk_skb/stream_verdict", .exactly, 14, 5),
        ("sk_skb/verdict", .exactly, 14, 38),
        ("sk_skb", .nameOrSubsection, 14, nil),
        ("sk_msg", .nameOrSubsection, 16, 7),
        ("flow_dissector", .nameOrSubsection, 22, 17),
        ("cgroup/bind4", .exactly, 18, 8),
        ("cgroup/bind6", .exactly, 18, 9),
        ("cgroup/connect4", .exactly, 18, 10),
        ("cgroup/connect6", .exactly, 18, 11),
        ("cgroup/sendmsg4", .exactly, 18, 14),
        ("cgroup/sendmsg6", .exactly, 18, 15),
        ("cgroup/recvmsg4", .exactly, 18, 19),
        ("cgroup/recvmsg6", .exactly, 18, 20),
        ("cgroup/getpeername4", .exactly, 18, 29),
        ("cgroup/getpeername6", .exactly, 18, 30),
        ("cgroup/getsockname4", .exactly, 18, 31),
        ("cgroup/getsockname6", .exactly, 18, 32),
        ("cgroup/sysctl", .exactly, 23, 18),
        ("cgroup/getsockopt", .exactly, 25, 21),
        ("cgroup/setsockopt", .exactly, 25, 22),
    ]

    /// The type a section name says, or nil for a name libbpf would not load either.
    public init?(section: String) {
        for (name, match, type, attach) in Self.definitions {
            let matches =
                switch match {
                case .exactly: section == name
                case .nameOrSubsection: section == name || section.hasPrefix(name + "/")
                }
            if matches {
                self.init(programType: type, expectedAttachType: attach, name: name)
                return
            }
        }
        return nil
    }

    init(programType: UInt32, expectedAttachType: UInt32?, name: String) {
        self.programType = programType
        self.expectedAttachType = expectedAttachType
        self.name = name
    }

    /// The section names this loader knows.
    public static var knownSections: [String] { definitions.map(\.0) }
}
