import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// A network namespace, held open by a descriptor.
///
/// ``makeThrowaway()`` creates a fresh namespace with loopback up, for tests and demos: it has
/// no name and no mount, so it disappears once this value and every socket made inside it
/// are gone. ``run(_:)`` executes code inside the namespace on a thread of its own, so no
/// other thread of the process moves.
public final class NetworkNamespace: Sendable, CustomStringConvertible {
    /// The descriptor of `/proc/.../ns/net`, the target of links and `setns`.
    public let descriptor: OwnedFileDescriptor
    /// Where it was opened from, for messages.
    public let path: String

    init(descriptor: OwnedFileDescriptor, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    /// The namespace of the calling thread.
    public static func current() throws(BPFError) -> NetworkNamespace {
        try open(path: "/proc/thread-self/ns/net")
    }

    /// Opens a namespace by path: `/proc/PID/ns/net`, `/run/netns/NAME`, ….
    public static func open(path: String) throws(BPFError) -> NetworkNamespace {
        let raw = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard raw >= 0 else {
            let code = errno
            throw BPFError(
                operation: "open network namespace \(path)", code: code,
                hint: code == ENOENT ? "no such namespace; check the PID or the name under /run/netns" : nil)
        }
        let descriptor = OwnedFileDescriptor(adopting: raw)
        // NS_GET_NSTYPE (Linux 4.11): CLONE_NEWNET for a network namespace, ENOTTY for a file
        // that is no namespace at all.
        let nsGetNSType = UInt(0xb703)
        let type = ioctl(descriptor.rawValue, nsGetNSType)
        let cloneNewNet: Int32 = 0x4000_0000  // CLONE_NEWNET
        if type != cloneNewNet {
            let kinds: [Int32: String] = [
                0x0002_0000: "a mount", 0x0200_0000: "a cgroup", 0x0400_0000: "a UTS", 0x0800_0000: "an IPC",
                0x1000_0000: "a user", 0x2000_0000: "a PID", 0x0000_0080: "a time",
            ]
            throw BPFError(
                operation: "open network namespace \(path)", code: EINVAL, kind: .invalidArgument,
                hint: type >= 0
                    ? "\(path) is \(kinds[type] ?? "another kind of") namespace, not a network namespace"
                    : "\(path) is not a namespace file; give /run/netns/NAME or /proc/PID/ns/net")
        }
        return NetworkNamespace(descriptor: descriptor, path: path)
    }

    /// Opens the namespace of process `pid`.
    public static func open(pid: Int32) throws(BPFError) -> NetworkNamespace {
        try open(path: "/proc/\(pid)/ns/net")
    }

    /// Creates a new, empty network namespace with `lo` up (127.0.0.1/8 and ::1).
    ///
    /// Nothing else of the process moves: the namespace is made on a short-lived thread.
    public static func makeThrowaway() throws(BPFError) -> NetworkNamespace {
        let result: Result<NetworkNamespace, BPFError> = try onNewThread {
            do throws(BPFError) {
                try kernelCall("unshare(CLONE_NEWNET)", hints: unshareHints) { cbpf_unshare_network() }
                try kernelCall("bring lo up") { cbpf_interface_up("lo") }
                let namespace = try current()
                return .success(NetworkNamespace(descriptor: namespace.descriptor, path: "throwaway netns"))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Runs `body` on a new thread that has entered this namespace, and waits for it. Sockets
    /// created in `body` belong to this namespace, wherever they are used afterwards. Entering
    /// needs CAP_SYS_ADMIN, except when the thread is in the namespace already.
    public func run<T: Sendable>(_ body: @Sendable () throws -> T) throws -> T {
        let fd = descriptor.rawValue
        let path = self.path
        // The thread is joined before this returns, so `body` does not really escape.
        let result: Result<T, any Error> = try withoutActuallyEscaping(body) { body in
            try onNewThread {
                do {
                    // A thread already in the namespace (it is the process's own, say) does not
                    // enter it again: setns needs CAP_SYS_ADMIN even for that.
                    var target = stat()
                    var own = stat()
                    let already =
                        fstat(fd, &target) == 0 && stat("/proc/thread-self/ns/net", &own) == 0
                        && target.st_ino == own.st_ino && target.st_dev == own.st_dev
                    if !already {
                        try kernelCall("enter network namespace \(path)", hints: unshareHints) {
                            cbpf_enter_network(fd)
                        }
                    }
                    return .success(try body())
                } catch {
                    return .failure(error)
                }
            }
        }
        return try result.get()
    }

    /// The namespace's inode number, the identity the kernel reports in link info.
    public func inode() throws(BPFError) -> UInt64 {
        var info = stat()
        guard fstat(descriptor.rawValue, &info) == 0 else {
            throw BPFError(operation: "stat network namespace \(path)", code: errno)
        }
        return UInt64(info.st_ino)
    }

    /// Adds an address to an interface of this namespace (default `lo`), as
    /// `ip addr add ADDRESS/PREFIX dev lo` would; IPv6 addresses skip duplicate detection.
    /// Returns once the address can be used: a socket binds to it and its local route
    /// exists (an IPv6 route appears a little after the address; waits at most 2 s).
    public func addAddress(_ address: IPAddress, prefixLength: Int? = nil, interface: String = "lo") throws {
        let length = UInt8(prefixLength ?? address.bytes.count * 8)
        try run {
            let index = try kernelCall("find interface \(interface)") { cbpf_interface_index(interface) }
            try kernelCall("add address \(address)/\(length) to \(interface)") {
                address.bytes.withUnsafeBufferPointer {
                    cbpf_address_add(Int32(index), address.family, $0.baseAddress, length)
                }
            }
            let deadline = ContinuousClock.now + .seconds(2)
            while true {
                do throws(BPFError) {
                    _ = try Socket.bound(.udp, address, port: 0)
                    _ = try Socket.connected(.udp, to: address, port: 9)
                    return
                } catch {
                    guard ContinuousClock.now < deadline else {
                        throw BPFError(
                            operation: "use address \(address) on \(interface)", code: error.code,
                            hint: "the address was added but is still not usable after 2 s")
                    }
                    usleep(1000)
                }
            }
        }
    }

    /// `network namespace PATH`, e.g. `network namespace /proc/self/ns/net`.
    public var description: String { "network namespace \(path)" }
}

private let unshareHints: [Int32: String] = [
    EPERM: "creating or entering a network namespace needs CAP_SYS_ADMIN (run as root)"
]

private final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}

/// Runs `body` on a fresh POSIX thread and waits for it.
func onNewThread<T: Sendable>(_ body: @escaping @Sendable () -> T) throws(BPFError) -> T {
    let box = ResultBox<T>()
    try JoinableThread { box.value = body() }.join()
    return box.value!
}
