#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 address, as bytes in network order.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible, LosslessStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6, in network order.
    public let bytes: [UInt8]

    /// An address from its bytes; `nil` unless there are 4 or 16.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses `127.0.0.1` or `::1` (no brackets, no zone).
    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: v4) { Array($0) }
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: v6) { Array($0) }
        } else {
            return nil
        }
    }

    /// An IPv4 address from its four parts.
    public static func v4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> IPAddress {
        IPAddress(bytes: [a, b, c, d])!
    }

    /// `127.0.0.1`.
    public static let loopback4 = IPAddress.v4(127, 0, 0, 1)
    /// `::1`.
    public static let loopback6 = IPAddress("::1")!
    /// `0.0.0.0`, the IPv4 wildcard address.
    public static let any4 = IPAddress.v4(0, 0, 0, 0)
    /// `::`, the IPv6 wildcard address.
    public static let any6 = IPAddress("::")!

    /// Whether this is an IPv4 address (4 bytes).
    public var isIPv4: Bool { bytes.count == 4 }

    /// Hashes the address bytes.
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    /// Whether two addresses have the same bytes (so IPv4 and its IPv4-mapped IPv6 form differ).
    public static func == (a: IPAddress, b: IPAddress) -> Bool { a.bytes == b.bytes }
    /// `AF_INET` or `AF_INET6`.
    public var family: Int32 { isIPv4 ? AF_INET : AF_INET6 }

    /// The IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) of an IPv4 address; an IPv6 address as is.
    public var mappedToIPv6: IPAddress {
        isIPv4 ? IPAddress(bytes: Array(repeating: 0, count: 10) + [0xff, 0xff] + bytes)! : self
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address, or `nil`.
    public var unmappedIPv4: IPAddress? {
        guard bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff else {
            return nil
        }
        return IPAddress(bytes: Array(bytes[12...]))
    }

    /// The address as a 32-bit number in network order, as `struct bpf_sk_lookup` stores it
    /// (`remote_ip4`, `local_ip4`); IPv4 only.
    public var networkOrderUInt32: UInt32? {
        guard isIPv4 else { return nil }
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    }

    /// The conventional text form from `inet_ntop`, e.g. `127.0.0.1` or `2001:db8::1`; `?` if it fails.
    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let ok = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) }
        guard ok != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// IPv4 before IPv6, then by bytes.
    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        lhs.bytes.count != rhs.bytes.count
            ? lhs.bytes.count < rhs.bytes.count : lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }
}

/// An address prefix such as `127.0.0.0/8` or `2001:db8::/32`; host bits are cleared.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    /// The network address (host bits zero).
    public let address: IPAddress
    /// The prefix length in bits, 0…32 or 0…128.
    public let length: Int

    /// A prefix; host bits of `address` are masked off. `nil` if `length` is out of range.
    public init?(_ address: IPAddress, length: Int) {
        let bits = address.bytes.count * 8
        guard (0...bits).contains(length) else { return nil }
        var bytes = address.bytes
        for i in 0..<bytes.count {
            let keep = max(0, min(8, length - i * 8))
            bytes[i] &= keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - keep))
        }
        self.address = IPAddress(bytes: bytes)!
        self.length = length
    }

    /// Parses `10.0.0.0/8` or a bare address (a /32 or /128).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(String(parts[0])) else { return nil }
        var length = address.bytes.count * 8
        if parts.count == 2 {
            guard let n = Int(parts[1]), parts[1].allSatisfy(\.isNumber) else { return nil }
            length = n
        }
        self.init(address, length: length)
    }

    /// Whether `other` lies inside this prefix (same family).
    public func contains(_ other: IPAddress) -> Bool {
        other.bytes.count == address.bytes.count && IPPrefix(other, length: length)?.address == address
    }

    /// `ADDRESS/LENGTH`, e.g. `10.0.0.0/8`.
    public var description: String { "\(address)/\(length)" }
}
