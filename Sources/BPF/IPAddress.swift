#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 address. Stored inline (two words and a flag, no heap allocation), so that
/// a million bindings cost no reference counting; ``bytes`` gives the network-order bytes.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible, LosslessStringConvertible {
    /// For IPv6 the first 8 bytes as a big-endian number; 0 for IPv4.
    public let high: UInt64
    /// For IPv6 the last 8 bytes as a big-endian number; for IPv4 the address in the low 32 bits.
    public let low: UInt64
    /// Whether this is an IPv4 address (4 bytes).
    public let isIPv4: Bool

    /// An IPv4 address from its 32-bit value (`0x7f000001` is 127.0.0.1).
    public init(ipv4 value: UInt32) {
        high = 0
        low = UInt64(value)
        isIPv4 = true
    }

    /// An IPv6 address from its two halves as big-endian numbers (`high: 0, low: 1` is ::1).
    public init(ipv6High high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
        isIPv4 = false
    }

    /// An address from its bytes in network order; `nil` unless there are 4 or 16.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.init(networkOrder: bytes)
    }

    /// An address from 4 or 16 bytes in network order (the count is not checked).
    init<C: Collection>(networkOrder bytes: C) where C.Element == UInt8 {
        var words: (UInt64, UInt64) = (0, 0)
        var index = 0
        for byte in bytes {
            if index < 8 { words.0 = words.0 << 8 | UInt64(byte) } else { words.1 = words.1 << 8 | UInt64(byte) }
            index += 1
        }
        if index == 4 {
            self.init(ipv4: UInt32(truncatingIfNeeded: words.0))
        } else {
            self.init(ipv6High: words.0, low: words.1)
        }
    }

    /// Parses `127.0.0.1` or `::1` (no brackets, no zone).
    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(networkOrder: withUnsafeBytes(of: v4) { Array($0) })
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(networkOrder: withUnsafeBytes(of: v6) { Array($0) })
        } else {
            return nil
        }
    }

    /// 4 bytes for IPv4, 16 for IPv6, in network order.
    public var bytes: [UInt8] {
        if isIPv4 { return (0..<4).map { UInt8(truncatingIfNeeded: low >> (24 - 8 * $0)) } }
        return (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
    }

    /// 4 or 16.
    public var byteCount: Int { isIPv4 ? 4 : 16 }

    /// An IPv4 address from its four parts.
    public static func v4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> IPAddress {
        IPAddress(ipv4: UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d))
    }

    /// `127.0.0.1`.
    public static let loopback4 = IPAddress.v4(127, 0, 0, 1)
    /// `::1`.
    public static let loopback6 = IPAddress(ipv6High: 0, low: 1)
    /// `0.0.0.0`, the IPv4 wildcard address.
    public static let any4 = IPAddress(ipv4: 0)
    /// `::`, the IPv6 wildcard address.
    public static let any6 = IPAddress(ipv6High: 0, low: 0)

    /// `AF_INET` or `AF_INET6`.
    public var family: Int32 { isIPv4 ? AF_INET : AF_INET6 }

    /// The IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) of an IPv4 address; an IPv6 address as is.
    public var mappedToIPv6: IPAddress {
        isIPv4 ? IPAddress(ipv6High: 0, low: 0xffff_0000_0000 | low) : self
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address, or `nil`.
    public var unmappedIPv4: IPAddress? {
        guard !isIPv4, high == 0, low >> 32 == 0xffff else { return nil }
        return IPAddress(ipv4: UInt32(truncatingIfNeeded: low))
    }

    /// The address as a 32-bit number in network order, as `struct bpf_sk_lookup` stores it
    /// (`remote_ip4`, `local_ip4`); IPv4 only.
    public var networkOrderUInt32: UInt32? {
        guard isIPv4 else { return nil }
        return UInt32(truncatingIfNeeded: low).bigEndian
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
        if lhs.isIPv4 != rhs.isIPv4 { return lhs.isIPv4 }
        return (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// The address with all but the first `length` bits cleared.
    public func masked(to length: Int) -> IPAddress {
        func keep(_ word: UInt64, _ bits: Int) -> UInt64 {
            bits <= 0 ? 0 : bits >= 64 ? word : word & ~(UInt64.max >> UInt64(bits))
        }
        if isIPv4 {
            return IPAddress(ipv4: UInt32(truncatingIfNeeded: keep(low << 32, length) >> 32))
        }
        return IPAddress(ipv6High: keep(high, length), low: keep(low, length - 64))
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
        guard (0...address.byteCount * 8).contains(length) else { return nil }
        self.address = address.masked(to: length)
        self.length = length
    }

    /// Parses `10.0.0.0/8` or a bare address (a /32 or /128).
    public init?(_ text: String) {
        guard let parsed = Self.parse(text) else { return nil }
        self = parsed.prefix
    }

    /// Parses as ``init(_:)-(String)`` does, and also gives the address as written, host
    /// bits and all (`10.1.2.3/8` is `10.0.0.0/8`, written `10.1.2.3`).
    public static func parse(_ text: String) -> (prefix: IPPrefix, written: IPAddress)? {
        let slash = text.utf8.firstIndex(of: UInt8(ascii: "/"))
        guard let address = IPAddress(slash.map { String(text[..<$0]) } ?? text) else { return nil }
        var length = address.byteCount * 8
        if let slash {
            let digits = text.utf8[text.utf8.index(after: slash)...]
            guard !digits.isEmpty, digits.count <= 3,
                digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
            else { return nil }
            length = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        }
        guard let prefix = IPPrefix(address, length: length) else { return nil }
        return (prefix, address)
    }

    /// Whether `other` lies inside this prefix (same family).
    public func contains(_ other: IPAddress) -> Bool {
        other.isIPv4 == address.isIPv4 && other.masked(to: length) == address
    }

    /// `ADDRESS/LENGTH`, e.g. `10.0.0.0/8`.
    public var description: String { "\(address)/\(length)" }
}
