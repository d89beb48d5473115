import BPF
import BPFAssembly

/// The fields of `struct bpf_sk_lookup`, the context an SK_LOOKUP program reads (72 bytes;
/// read-only: the verifier refuses every write).
///
/// | field | offset | width | byte order |
/// |---|---|---|---|
/// | `sk` (selected socket) / `cookie` | 0 | 8 | – |
/// | `family` | 8 | 4 | host |
/// | `protocol` | 12 | 4 | host |
/// | `remote_ip4` | 16 | 4 | network |
/// | `remote_ip6[4]` | 20 | 16 | network |
/// | `remote_port` | 36 | 2 (+2 padding) | network |
/// | `local_ip4` | 40 | 4 | network |
/// | `local_ip6[4]` | 44 | 16 | network |
/// | `local_port` | 60 | 4 | host |
/// | `ingress_ifindex` | 64 | 4 | host |
public enum ContextField: Int16, Sendable, CaseIterable {
    /// `sk` / `cookie` at offset 0: the selected socket (8 bytes).
    case socket = 0
    /// `family` at offset 8: `AF_INET` or `AF_INET6` (4 bytes, host order).
    case family = 8
    /// `protocol` at offset 12: `IPPROTO_TCP` or `IPPROTO_UDP` (4 bytes, host order).
    case `protocol` = 12
    /// `remote_ip4` at offset 16 (4 bytes, network order).
    case remoteIPv4 = 16
    /// `remote_ip6` at offset 20 (16 bytes, network order).
    case remoteIPv6 = 20
    /// `remote_port` at offset 36 (2 bytes, network order, then 2 bytes of padding).
    case remotePort = 36
    /// `local_ip4` at offset 40 (4 bytes, network order).
    case localIPv4 = 40
    /// `local_ip6` at offset 44 (16 bytes, network order).
    case localIPv6 = 44
    /// `local_port` at offset 60 (4 bytes, host order).
    case localPort = 60
    /// `ingress_ifindex` at offset 64: the receiving interface (4 bytes, host order).
    case ingressInterface = 64

    /// The size of `struct bpf_sk_lookup`.
    public static let contextSize = 72

    /// The offset in the context.
    public var offset: Int16 { rawValue }

    /// The width a plain load uses.
    public var size: AccessSize {
        switch self {
        case .socket: .dw
        case .remotePort: .h
        default: .w
        }
    }
}

/// Address family values as the context reports them.
public enum AddressFamily: Int32, Sendable, CaseIterable, CustomStringConvertible {
    /// `AF_INET`.
    case ipv4 = 2  // AF_INET
    /// `AF_INET6`.
    case ipv6 = 10  // AF_INET6

    /// `ipv4` or `ipv6`.
    public var description: String { self == .ipv4 ? "ipv4" : "ipv6" }
}

/// The verdicts an SK_LOOKUP program returns.
public enum Verdict: Int32, Sendable, CustomStringConvertible {
    /// `SK_DROP` (0): refuse the connection (ECONNREFUSED) or drop the datagram, unless a
    /// later program selects a socket and passes.
    case drop = 0
    /// `SK_PASS` (1): use the selected socket, or go on to the normal lookup if none.
    case pass = 1

    /// `SK_PASS` or `SK_DROP`.
    public var description: String { self == .pass ? "SK_PASS" : "SK_DROP" }
}
