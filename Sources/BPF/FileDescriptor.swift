import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// A file descriptor with exactly one owner, closed exactly once when the owner goes away.
///
/// Every kernel object in this module (program, map, link, namespace, socket) holds one. The
/// raw number is reachable only for the duration of ``withRawValue(_:)``, so it cannot
/// outlive its owner.
public final class OwnedFileDescriptor: Sendable {
    private let raw: Int32

    /// Takes ownership of `raw`; it will be closed when this value is released. Descriptor 0
    /// is first moved to another number (and 0 closed), as cilium/ebpf does: several `bpf()`
    /// fields read 0 as "no descriptor".
    public init(adopting raw: Int32) {
        if raw == 0, case let moved = fcntl(0, F_DUPFD_CLOEXEC, 1), moved > 0 {
            close(0)
            self.raw = moved
        } else {
            self.raw = raw
        }
    }

    deinit { _ = cbpf_close(raw) }

    /// Lends the raw descriptor to `body`. Do not close it or keep it.
    public func withRawValue<R, E: Error>(_ body: (Int32) throws(E) -> R) throws(E) -> R {
        try body(raw)
    }

    /// The raw value, for this module's own calls.
    var rawValue: Int32 { raw }
}

/// The number of descriptors this process has open (from `/proc/self/fd`); for leak checks.
package func openDescriptorCount() -> Int {
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { count += 1 }
    }
    return count - 1  // the directory stream's own descriptor
}
