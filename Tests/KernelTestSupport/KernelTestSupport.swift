import BPF
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Whether this process may load BPF programs and create network namespaces.
public let isPrivileged: Bool = geteuid() == 0

/// Skips a kernel test, with the reason, where the process is not root.
public let needsRoot = ConditionTrait.enabled(
    if: isPrivileged, "needs root: loads BPF programs and creates throwaway network namespaces")

private let kernelLock = Mutex(())

/// Runs kernel-facing test code one at a time across the whole test process, so that fd
/// counts and timings of one test are not disturbed by another.
@discardableResult
public func exclusively<T>(_ body: () throws -> T) rethrows -> T {
    try kernelLock.withLock { _ in try body() }
}

/// Whether a TCP connection to `endpoint` is refused (run inside the namespace).
public func isRefused(_ endpoint: Endpoint) -> Bool {
    do {
        _ = try Socket.connected(.tcp, to: endpoint.address, port: endpoint.port)
        return false
    } catch {
        return error.code == ECONNREFUSED
    }
}
