import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// A BPF link: the attachment of a program to a hook, here a network namespace.
///
/// **Releasing an unpinned link detaches its program.** The attachment lasts exactly as long
/// as some descriptor or pin holds the link: keep this value alive, or ``pin(at:)`` it to
/// let the attachment outlive the process. ``detach()`` ends it explicitly, pinned or not.
public final class Link: Sendable, CustomStringConvertible {
    /// The link's descriptor; while it or a pin exists, the program stays attached.
    public let descriptor: OwnedFileDescriptor

    init(descriptor: OwnedFileDescriptor) { self.descriptor = descriptor }

    /// Attaches `program` to a network namespace (`BPF_LINK_CREATE`). SK_LOOKUP programs can
    /// only be attached this way; up to 64 per namespace run in attach order.
    ///
    /// - Parameters:
    ///   - program: the program to attach.
    ///   - namespace: the network namespace to attach it to.
    ///   - attachType: defaults to the one the program type requires (`BPF_SK_LOOKUP`).
    public static func attach(
        _ program: Program, to namespace: NetworkNamespace, attachType: AttachType? = nil
    ) throws(BPFError) -> Link {
        guard let type = attachType ?? program.type.requiredExpectedAttachType else {
            throw BPFError(
                operation: "attach \(program) to \(namespace)", code: EINVAL, kind: .invalidArgument,
                hint: "give the attach type; \(program.type) programs have no default")
        }
        let hints: [Int32: String] = [
            E2BIG: "a network namespace takes at most 64 SK_LOOKUP programs",
            EINVAL: "the kernel refused the attachment; SK_LOOKUP links need Linux 5.9",
        ]
        let fd = try kernelCall("BPF_LINK_CREATE of \(program) on \(namespace)", hints: hints) {
            cbpf_link_create(program.descriptor.rawValue, namespace.descriptor.rawValue, type.rawValue, 0)
        }
        return Link(descriptor: OwnedFileDescriptor(adopting: Int32(fd)))
    }

    /// Opens a link pinned in a bpf filesystem.
    public static func openPinned(at path: String) throws(BPFError) -> Link {
        let fd = try kernelCall("open pinned link \(path)", hints: pinHints(path)) { cbpf_obj_get(path, 0) }
        return Link(descriptor: OwnedFileDescriptor(adopting: Int32(fd)))
    }

    /// Opens a link by id (`BPF_LINK_GET_FD_BY_ID`).
    public static func open(id: UInt32) throws(BPFError) -> Link {
        let fd = try kernelCall("open link id \(id)") { cbpf_fd_by_id(Int32(BPF_LINK_GET_FD_BY_ID.rawValue), id, 0) }
        return Link(descriptor: OwnedFileDescriptor(adopting: Int32(fd)))
    }

    /// Pins the link so the attachment outlives this process.
    public func pin(at path: String) throws(BPFError) {
        try kernelCall("pin link at \(path)", hints: pinHints(path)) { cbpf_obj_pin(descriptor.rawValue, path) }
    }

    /// Replaces the program atomically (`BPF_LINK_UPDATE`): every lookup sees either the old
    /// or the new program. With `expected`, the update happens only if that program is the
    /// one attached now (`BPF_F_REPLACE`), and fails with EPERM otherwise.
    public func update(to program: Program, replacing expected: Program? = nil) throws(BPFError) {
        let flags: UInt32 = expected == nil ? 0 : UInt32(BPF_F_REPLACE)
        let hints: [Int32: String] =
            expected == nil
            ? [:] : [EPERM: "the attached program is not the expected one; someone else updated the link"]
        try kernelCall("BPF_LINK_UPDATE to \(program)", hints: hints) {
            cbpf_link_update(
                descriptor.rawValue, program.descriptor.rawValue, expected?.descriptor.rawValue ?? -1, flags)
        }
    }

    /// Detaches the program now (`BPF_LINK_DETACH`), even if the link is pinned or shared.
    public func detach() throws(BPFError) {
        try kernelCall("BPF_LINK_DETACH") { cbpf_link_detach(descriptor.rawValue) }
    }

    /// What the kernel knows of the link.
    public func info() throws(BPFError) -> LinkInfo { try LinkInfo(descriptor: descriptor) }

    /// The ids of the programs attached to `namespace`, in the order they run (`BPF_PROG_QUERY`).
    public static func programIDs(
        attachedTo namespace: NetworkNamespace, attachType: AttachType = .skLookup
    ) throws(BPFError) -> [UInt32] {
        try query(attachedTo: namespace, attachType: attachType).programIDs
    }

    /// What `BPF_PROG_QUERY` answers for `namespace`: every attached program's id, in the
    /// order they run, however many there are, and the attach flags (0 for SK_LOOKUP, whose
    /// programs are all attached through links).
    public static func query(
        attachedTo namespace: NetworkNamespace, attachType: AttachType = .skLookup
    ) throws(BPFError) -> ProgramQuery {
        var ids = [UInt32](repeating: 0, count: 64)
        while true {
            var count = UInt32(ids.count)
            var flags: UInt32 = 0
            do {
                try kernelCall("BPF_PROG_QUERY on \(namespace)") {
                    ids.withUnsafeMutableBufferPointer {
                        cbpf_prog_query(
                            namespace.descriptor.rawValue, attachType.rawValue, 0, &flags, $0.baseAddress, &count)
                    }
                }
                return ProgramQuery(programIDs: Array(ids.prefix(Int(count))), attachFlags: flags)
            } catch  where error.code == ENOSPC && Int(count) > ids.count {
                // More programs than room: the kernel said how many; ask again with room for them.
                ids = [UInt32](repeating: 0, count: Int(count) + 8)
            }
        }
    }

    /// `link fd N`, with the descriptor number.
    public var description: String { "link fd \(descriptor.rawValue)" }
}

/// The answer of `BPF_PROG_QUERY` for one attach point.
public struct ProgramQuery: Sendable, Hashable {
    /// The attached programs' ids, in the order they run.
    public var programIDs: [UInt32]
    /// The attach flags the kernel reports (`BPF_F_ALLOW_MULTI` and so on; 0 for netns links).
    public var attachFlags: UInt32
}

/// Facts about a link, from `BPF_OBJ_GET_INFO_BY_FD`.
public struct LinkInfo: Sendable, Hashable {
    /// The kernel's id for the link.
    public var id: UInt32
    /// The link type, e.g. ``LinkType/netns``.
    public var type: LinkType
    /// The id of the program the link attaches.
    public var programID: UInt32
    /// For a netns link: the namespace's inode, the type ``NetworkNamespace/inode()`` returns
    /// (the kernel reports 32 bits; 0 once the namespace is gone).
    public var namespaceInode: UInt64?
    /// For a netns link: the attach type.
    public var attachType: AttachType?

    init(descriptor: OwnedFileDescriptor) throws(BPFError) {
        var id: UInt32 = 0
        var type: UInt32 = 0
        var programID: UInt32 = 0
        var inode: UInt32 = 0
        var attach: UInt32 = 0
        try kernelCall("read link info") {
            cbpf_link_info(descriptor.rawValue, &id, &type, &programID, &inode, &attach)
        }
        self.id = id
        self.type = LinkType(rawValue: type)
        self.programID = programID
        self.namespaceInode = self.type == .netns ? UInt64(inode) : nil
        self.attachType = self.type == .netns ? AttachType(rawValue: attach) : nil
    }

    /// Every link in the kernel (`BPF_LINK_GET_NEXT_ID`).
    public static func all() throws(BPFError) -> [LinkInfo] {
        var result: [LinkInfo] = []
        for id in try objectIDs(BPF_LINK_GET_NEXT_ID) {
            guard let link = try? Link.open(id: id), let info = try? link.info() else { continue }
            result.append(info)
        }
        return result
    }
}
