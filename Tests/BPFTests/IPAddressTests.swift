import BPF
import KernelTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// IPAddress keeps its bits inline; these check it against byte-wise reference rules on
/// seeded random addresses (no root needed).
@Suite struct IPAddressTests {
    /// The reference: clear all but the first `length` bits of the bytes.
    func maskedBytes(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.indices.map { i in
            let keep = max(0, min(8, length - i * 8))
            return keep == 0 ? 0 : bytes[i] & UInt8(truncatingIfNeeded: 0xff << (8 - keep))
        }
    }

    @Test(arguments: [1, 2, 3]) func matchesTheByteWiseRules(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        for _ in 0..<2000 {
            let count = random.next() % 2 == 0 ? 4 : 16
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
            let address = IPAddress(bytes: bytes)!
            #expect(address.bytes == bytes)
            #expect(address.isIPv4 == (count == 4))
            #expect(address.byteCount == count)
            #expect(IPAddress(address.description) == address)
            let length = Int.random(in: 0...(count * 8), using: &random)
            let prefix = IPPrefix(address, length: length)!
            #expect(prefix.address.bytes == maskedBytes(bytes, length))
            #expect(prefix.contains(address))
            let other = IPAddress(bytes: (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })!
            #expect(prefix.contains(other) == (maskedBytes(other.bytes, length) == prefix.address.bytes))
            #expect((address < other) == address.bytes.lexicographicallyPrecedes(other.bytes))
            #expect((address == other) == (address.bytes == other.bytes))
            if count == 4 {
                let mapped = address.mappedToIPv6
                #expect(mapped.bytes == [UInt8](repeating: 0, count: 10) + [0xff, 0xff] + bytes)
                #expect(mapped.unmappedIPv4 == address)
                #expect(address.networkOrderUInt32 == bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
                #expect(address < mapped, "IPv4 sorts before IPv6")
            } else {
                #expect(address.mappedToIPv6 == address)
                #expect(address.networkOrderUInt32 == nil)
            }
        }
    }

    @Test func constantsAndText() {
        #expect(IPAddress.loopback4.description == "127.0.0.1")
        #expect(IPAddress.loopback6.description == "::1")
        #expect(IPAddress.any6.description == "::")
        #expect(IPAddress("::ffff:1.2.3.4")?.unmappedIPv4 == IPAddress.v4(1, 2, 3, 4))
        #expect(IPAddress("2001:db8::1")!.bytes.prefix(4) == [0x20, 0x01, 0x0d, 0xb8])
        #expect(IPAddress(bytes: [1, 2, 3]) == nil)
        #expect(IPAddress("1.2.3.4") != IPAddress("::1.2.3.4"), "a family is part of the address")
        #expect(IPPrefix("10.1.2.3/8")?.description == "10.0.0.0/8")
        #expect(IPPrefix("2001:db8::1/0")?.description == "::/0")
        #expect(IPPrefix("10.0.0.0/33") == nil)
    }
}
