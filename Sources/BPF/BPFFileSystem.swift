import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// The bpf filesystem, where programs, maps and links are pinned to outlive their process.
public enum BPFFileSystem {
    /// `BPF_FS_MAGIC`, the `statfs` type of a bpf filesystem.
    public static let magic: UInt64 = 0xcafe_4a11
    /// Where distributions mount it.
    public static let defaultPath = "/sys/fs/bpf"

    /// Whether `path` is on a bpf filesystem.
    public static func isMounted(at path: String) -> Bool {
        var magic: UInt64 = 0
        return cbpf_fs_magic(path, &magic) == 0 && magic == Self.magic
    }

    /// Mounts a bpf filesystem at `path` (which must exist), as `mount -t bpf bpf PATH`.
    public static func mount(at path: String, mode: UInt32 = 0o700) throws(BPFError) {
        try kernelCall(
            "mount a bpf filesystem at \(path)", hints: [EPERM: "mounting needs CAP_SYS_ADMIN (run as root)"]
        ) {
            cbpf_mount_bpffs(path, mode)
        }
    }

    /// The permission bits of the directory at `path` (a bpffs mount point: 0o1777 when
    /// mounted without `-o mode=`), or nil if it cannot be read.
    public static func mode(at path: String) -> UInt32? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return UInt32(info.st_mode & 0o7777)
    }

    /// Whether every user may create entries at `path` (world-writable): any of them can then
    /// plant a directory or link where a root service's state belongs.
    public static func isWorldWritable(at path: String) -> Bool {
        mode(at: path).map { $0 & 0o002 != 0 } ?? false
    }

    /// Whether this process runs in a mount namespace other than that of process 1 or of its
    /// parent, as under `ip netns exec` or `unshare -m` (both exec the command in a namespace
    /// they made): a mount made here is not seen by others and is gone when the namespace
    /// ends. Namespaces that cannot be read (another user namespace) are not compared.
    public static func inPrivateMountNamespace() -> Bool {
        func namespace(_ process: String) -> (dev_t, ino_t)? {
            var info = stat()
            guard stat("/proc/\(process)/ns/mnt", &info) == 0 else { return nil }
            return (info.st_dev, info.st_ino)
        }
        guard let ours = namespace("self") else { return false }
        return [namespace("1"), namespace("\(getppid())")].contains { other in
            other.map { $0 != ours } ?? false
        }
    }

    /// Unmounts what is mounted at `path` (lazily: pins are gone once nothing uses them).
    public static func unmount(at path: String) throws(BPFError) {
        try kernelCall("unmount \(path)") { cbpf_umount(path) }
    }

    /// Removes a pin; the object lives on while something else holds it.
    public static func unpin(_ path: String) throws(BPFError) {
        guard unlink(path) == 0 else { throw BPFError(operation: "unpin \(path)", code: errno) }
    }

    /// Mounts a private bpf filesystem on a new temporary directory and removes both when
    /// released: for tests and demos on machines where /sys/fs/bpf is not mounted.
    package final class TemporaryMount: Sendable {
        /// The mount point.
        package let path: String

        /// Creates a temporary directory and mounts a bpf filesystem on it, its root with
        /// permission bits `mode`; both are removed on release.
        package init(mode: UInt32 = 0o700) throws(BPFError) {
            var template = Array("/tmp/sksteer-bpffs-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else {
                throw BPFError(operation: "create a temporary directory", code: errno)
            }
            path = String(cString: made)
            do {
                try BPFFileSystem.mount(at: path, mode: mode)
            } catch {
                rmdir(path)
                throw error
            }
        }

        deinit {
            _ = cbpf_umount(path)
            rmdir(path)
        }
    }
}
