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

/// `probe()`, then again every 10 ms until `done` accepts its value or `seconds` pass; the
/// last value. For the kernel's deferred work: the last reference to a link, dropped by an
/// unpin or by a process's exit, is often released from a work item, so the detach can lag.
public func settled<T>(within seconds: Int = 2, _ probe: () throws -> T, until done: (T) -> Bool) rethrows -> T {
    var value = try probe()
    for _ in 0..<(seconds * 100) where !done(value) {
        usleep(10_000)
        value = try probe()
    }
    return value
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

/// A seeded generator (SplitMix64): every random test case is replayable from its seed.
public struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
