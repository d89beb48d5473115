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
    public final class TemporaryMount: Sendable {
        /// The mount point.
        public let path: String

        /// Creates a temporary directory and mounts a bpf filesystem on it; both are removed on release.
        public init() throws(BPFError) {
            var template = Array("/tmp/sksteer-bpffs-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else {
                throw BPFError(operation: "create a temporary directory", code: errno)
            }
            path = String(cString: made)
            do {
                try BPFFileSystem.mount(at: path)
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
