import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// Kernel-wide BPF run-time statistics (`BPF_ENABLE_STATS`).
public enum BPFStatistics {
    /// Turns on `BPF_STATS_RUN_TIME` for as long as the returned descriptor is open: while it
    /// is, every program's ``ProgramInfo/runTimeNanoseconds`` and ``ProgramInfo/runCount``
    /// grow with each run. Closing the descriptor (releasing the value) turns them off again
    /// unless someone else holds them on. Needs `CAP_SYS_ADMIN`.
    public static func enableRunTime() throws(BPFError) -> OwnedFileDescriptor {
        let fd = try kernelCall(
            "BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)",
            hints: [EPERM: "enabling BPF statistics needs CAP_SYS_ADMIN (run as root)"]
        ) {
            cbpf_enable_stats(UInt32(BPF_STATS_RUN_TIME.rawValue))
        }
        return OwnedFileDescriptor(adopting: Int32(fd))
    }
}
