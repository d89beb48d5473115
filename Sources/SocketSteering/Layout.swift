import BPF
import BPFAssembly

/// A field of a fixed layout: its byte offset and size.
struct Field: Sendable {
    var offset: Int
    var size: Int
    var end: Int { offset + size }
}

/// The key schema: every map key and value of the data plane, declared once. The entry
/// encoder (`Layout.encode(_:)` and friends) and the program generator (`DataPlane`) both
/// read their offsets from here.
///
/// Per lane (protocol × family) and per rule-set copy there are three tables:
///
/// - `host` (hash): `HostKey` → `EntryValueLayout`: a full address on one port, the most
///   specific binding there is, so a hit ends the lookup;
/// - `exact` (LPM trie): `ExactKey`: port first, then the address, so a lookup stays inside
///   the part of the trie that holds its port;
/// - `wild` (LPM trie): `WildKey`: the address alone, for bindings on all ports.
///
/// A per-copy `PortFlags` array says which ports have `host` or `exact` entries, so a
/// lookup skips the tables that cannot match.
public enum Layout {
    /// Bump when the maps change shape; `upgrade` migrates older state.
    public static let schemaVersion: UInt32 = 4

    /// Sockets per destination.
    public static let socketsPerDestination = 16
    /// Labels; each has 4 destinations (IPv4/IPv6 × TCP/UDP).
    public static let maxLabels = 4096
    /// Destinations: four per label, ``Lane/index`` in the low bits.
    public static var maxDestinations: Int { maxLabels * 4 }
    /// Bytes of a label key.
    static let labelSize = 64

    /// `label × 4 + lane index`.
    static func destination(label: UInt32, lane: Lane) -> UInt32 { label * 4 + UInt32(lane.index) }

    static func destination(label: UInt32, transport: Socket.Transport, ipv6: Bool) -> UInt32 {
        destination(label: label, lane: Lane(transport: transport, ipv6: ipv6))
    }

    /// `host` key: port (u16, host order, as `ctx->local_port`), then the address (network order).
    enum HostKey {
        static let port = Field(offset: 0, size: 2)
        static func address(_ lane: Lane) -> Field { Field(offset: 2, size: lane.addressSize) }
        static func size(_ lane: Lane) -> Int { address(lane).end }
    }

    /// `exact` key: LPM prefix length (16 port bits + address bits), port, address. The port
    /// and address are laid out as in `HostKey`, so a host key is this key from byte 4.
    enum ExactKey {
        static let prefixLength = Field(offset: 0, size: 4)
        static let port = Field(offset: 4, size: 2)
        static func address(_ lane: Lane) -> Field { Field(offset: 6, size: lane.addressSize) }
        static func size(_ lane: Lane) -> Int { address(lane).end }
        static let hostKeyOffset = port.offset
    }

    /// `wild` key: LPM prefix length (address bits), address.
    enum WildKey {
        static let prefixLength = Field(offset: 0, size: 4)
        static func address(_ lane: Lane) -> Field { Field(offset: 4, size: lane.addressSize) }
        static func size(_ lane: Lane) -> Int { address(lane).end }
    }

    /// The value of every table: destination, the winner's precedence and flags.
    enum EntryValueLayout {
        static let destination = Field(offset: 0, size: 4)
        /// The winner's prefix length in the 128-bit space (u8).
        static let mappedLength = Field(offset: 4, size: 1)
        /// ``EntryFlags``.
        static let flags = Field(offset: 5, size: 1)
        /// The winner's port count (u16; 0 means all ports).
        static let portCount = Field(offset: 6, size: 2)
        /// The winner's first port (u16).
        static let firstPort = Field(offset: 8, size: 2)
        static let size = 12
    }

    /// Bits of ``EntryValueLayout/flags``.
    enum EntryFlags {
        /// `exact` only: look in `wild` too, an all-ports binding of greater precedence may match.
        static let checkWildcard: UInt8 = 1
        /// The winner lets traffic pass to the normal lookup while its label has no socket.
        static let passWithoutSocket: UInt8 = 2
    }

    /// The port flags: an array of u64 words, 2 bits per (lane, port): bit 0 `host`, bit 1 `exact`.
    enum PortFlags {
        static let words = 2 * 4096
        static let host: UInt64 = 1
        static let exact: UInt64 = 2
        /// The word index: protocol (0 TCP, 1 UDP) × 4096 + port / 16.
        static func word(transport: Socket.Transport, port: UInt16) -> UInt32 {
            (transport == .udp ? 4096 : 0) + UInt32(port >> 4)
        }
        /// The shift of the lane's two bits in the word: (port % 16) × 4 + (IPv6 ? 2 : 0).
        static func shift(lane: Lane, port: UInt16) -> UInt64 { UInt64(port & 15) * 4 + (lane.ipv6 ? 2 : 0) }
    }

    /// A one-hash Bloom filter of host entries per copy: an array of u64 words, one bit per
    /// (lane, port, address). A lookup reads the host hash only if its bit is set, so a
    /// connection to an address with no host entry costs one read of a small array instead of
    /// a probe into a large hash table. Bits are never wrong by absence (a stale bit costs one
    /// probe).
    ///
    /// Nearby addresses have nearby bits, as they share nodes in a trie: the bit is a start
    /// chosen by a hash of the lane, the port and (IPv6) the address's first 96 bits, plus the
    /// address's last 32 bits as a number. Connections to one prefix read a few cache lines of
    /// the filter, not one line each (measured with `sksteer bench --data-plane-only`: a cold
    /// miss on a port with host entries took 190–250 ns with one hashed line per address,
    /// 130–161 ns this way, against tubular's 130–171).
    enum HostFilter {
        static let bits = 20
        static let words = (1 << bits) / 64
        static let multiplier: UInt32 = 0x9e37_79b1
        static let mask: UInt32 = (1 << bits) - 1

        /// The bit: `(port | lane << 16)` XOR the address's 32-bit words but the last (as the
        /// program loads them from the context), times ``multiplier``, top ``bits`` bits; plus
        /// the last word in network order read as a number; the low ``bits`` bits of the sum.
        static func bit(lane: Lane, port: UInt16, address: [UInt8]) -> UInt32 {
            func word(_ at: Int, bigEndian: Bool) -> UInt32 {
                let bytes = address[at..<(at + 4)].map(UInt32.init)
                return bigEndian
                    ? bytes[0] << 24 | bytes[1] << 16 | bytes[2] << 8 | bytes[3]
                    : bytes[0] | bytes[1] << 8 | bytes[2] << 16 | bytes[3] << 24
            }
            var h = UInt32(port) | UInt32(lane.index) << 16
            let last = address.count - 4
            for at in stride(from: 0, to: last, by: 4) { h ^= word(at, bigEndian: false) }
            let start = (h &* multiplier) >> UInt32(32 - bits)
            return (start &+ word(last, bigEndian: true)) & mask
        }
    }

    /// Counters per destination (per CPU), u64 each.
    enum DestinationCounter: Int, CaseIterable {
        case lookups = 0
        case misses
        case errorExists
        case errorSocketState
        case errorProtocol
        case errorFamily
        case errorOther
        static let size = allCases.count * 8
        var offset: Int16 { Int16(rawValue * 8) }
    }

    /// Global counters (per CPU): connections that matched no binding.
    enum GlobalCounter: Int, CaseIterable {
        case noMatch = 0
        static let size = allCases.count * 8
    }

    /// Per-binding counters, on request (``Dispatcher/enableBindingMetrics(limit:)``): a
    /// preallocated `PERCPU_HASH` from this key to ``BindingCounter``. The program adds a
    /// binding's key the first time traffic matches it (so only bindings that saw traffic
    /// have series) and stops adding at the map's limit, counting the rest under
    /// ``overflowKey``. Removing a binding deletes its key. Preallocated, because adding a key
    /// to a hash without preallocation cost 15–24 µs per first connection in `sksteer bench`,
    /// against about 0.5 µs preallocated.
    ///
    /// The key is the winning binding as the program knows it from the entry and the
    /// connection: its prefix in the 128-bit space (IPv4 as `::ffff:0:0/96` + its length; the
    /// local address masked to the winner's length), its ports and its label.
    enum BindingCounterKey {
        /// The prefix's first 64 bits, as a number (u64, host order).
        static let high = Field(offset: 0, size: 8)
        /// The prefix's last 64 bits, as a number (u64, host order).
        static let low = Field(offset: 8, size: 8)
        /// The label id (u32): the destination number shifted right by 2.
        static let label = Field(offset: 16, size: 4)
        /// The first port (u16), as ``EntryValueLayout/firstPort``.
        static let firstPort = Field(offset: 20, size: 2)
        /// The port count (u16; 0 means all ports), as ``EntryValueLayout/portCount``.
        static let portCount = Field(offset: 22, size: 2)
        /// The prefix length in the 128-bit space (u8).
        static let mappedLength = Field(offset: 24, size: 1)
        /// 0 TCP, 1 UDP (u8): bit 1 of the destination number.
        static let transport = Field(offset: 25, size: 1)
        static let size = 28
        /// Where lookups go that found the map full: every byte 0xff (no binding has label
        /// 0xffffffff), added when the counters are enabled.
        static let overflowKey = [UInt8](repeating: 0xff, count: size)

        /// The key of a binding whose label has id `label`.
        static func encode(_ binding: Binding, label: UInt32) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: size)
            let address = binding.mappedAddress
            put(address.high, at: high, in: &bytes)
            put(address.low, at: low, in: &bytes)
            put(label, at: Self.label, in: &bytes)
            put(binding.ports.lower, at: firstPort, in: &bytes)
            put(
                UInt16(truncatingIfNeeded: Int(binding.ports.upper) - Int(binding.ports.lower) + 1), at: portCount,
                in: &bytes)
            bytes[mappedLength.offset] = UInt8(binding.mappedLength)
            bytes[transport.offset] = binding.transport == .udp ? 1 : 0
            return bytes
        }

        /// The parts of a key: nil for the overflow key or one no binding can have.
        static func decode(_ bytes: [UInt8]) -> (
            label: UInt32, transport: Socket.Transport, prefix: IPPrefix, ports: PortSet
        )? {
            guard bytes.count == size, bytes != overflowKey, bytes[26] == 0, bytes[27] == 0 else { return nil }
            func read<T: FixedWidthInteger>(_ field: Field) -> T {
                var value: T = 0
                for i in (0..<field.size).reversed() { value = value << 8 | T(bytes[field.offset + i]) }
                return value
            }
            let length = Int(bytes[mappedLength.offset])
            let address = IPAddress(ipv6High: read(high), low: read(low))
            let prefix: IPPrefix?
            if length >= 96, let ipv4 = address.unmappedIPv4 {
                prefix = IPPrefix(ipv4, length: length - 96)
            } else {
                prefix = IPPrefix(address, length: length)
            }
            let first: UInt16 = read(firstPort)
            let count: UInt16 = read(portCount)
            let ports =
                count == 0
                ? (first == 0 ? PortSet.all : nil) : PortSet(first, UInt16(clamping: Int(first) + Int(count) - 1))
            guard let prefix, let ports, bytes[transport.offset] <= 1 else { return nil }
            return (read(label), bytes[transport.offset] == 1 ? .udp : .tcp, prefix, ports)
        }
    }

    /// Per-binding counters (per CPU), u64 each.
    enum BindingCounter: Int, CaseIterable {
        /// Connections the binding won.
        case lookups = 0
        /// Of those, how many found no socket.
        case misses
        static let size = allCases.count * 8
        var offset: Int16 { Int16(rawValue * 8) }
    }

    /// How many bindings are counted one by one when per-binding counters are enabled
    /// without a limit.
    public static let defaultBindingCounters = 65_536
    /// The largest per-binding counter limit.
    public static let maxBindingCounters = 1 << 20

    // MARK: Encoding entries

    /// The key bytes of an entry, for its table's map.
    static func encode(_ key: EntryKey) -> [UInt8] {
        let address = key.prefix.bytes(count: key.lane.addressSize)
        switch key.table {
        case .host:
            return rawBytes(of: key.port) + address
        case .exact:
            return rawBytes(of: UInt32(16 + Int(key.prefix.length))) + rawBytes(of: key.port) + address
        case .wild:
            return rawBytes(of: UInt32(key.prefix.length)) + address
        }
    }

    /// The key size of a lane's table.
    static func keySize(_ table: Table, _ lane: Lane) -> Int {
        switch table {
        case .host: 2 + lane.addressSize
        case .exact: 6 + lane.addressSize
        case .wild: 4 + lane.addressSize
        }
    }

    /// Appends the key bytes of an entry (the bytes of ``encode(_:)``) to `bytes`.
    static func append(_ key: EntryKey, to bytes: inout [UInt8]) {
        func raw<T>(_ value: T) { withUnsafeBytes(of: value) { bytes.append(contentsOf: $0) } }
        switch key.table {
        case .host: break
        case .exact: raw(UInt32(16 + Int(key.prefix.length)))
        case .wild: raw(UInt32(key.prefix.length))
        }
        if key.table != .wild { raw(key.port) }
        if key.lane.ipv6 {
            raw(key.prefix.high.bigEndian)
            raw(key.prefix.low.bigEndian)
        } else {
            raw(UInt32(truncatingIfNeeded: key.prefix.high >> 32).bigEndian)
        }
    }

    /// Appends the value bytes of an entry (the bytes of ``encode(_:label:lane:)``) to `bytes`.
    static func append(_ value: EntryValue, label: UInt32, lane: Lane, to bytes: inout [UInt8]) {
        let base = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: EntryValueLayout.size))
        func put<T: FixedWidthInteger>(_ value: T, at field: Field) {
            precondition(field.size == MemoryLayout<T>.size)
            withUnsafeBytes(of: value.littleEndian) { raw in
                for i in 0..<field.size { bytes[base + field.offset + i] = raw[i] }
            }
        }
        put(destination(label: label, lane: lane), at: EntryValueLayout.destination)
        put(value.mappedLength, at: EntryValueLayout.mappedLength)
        put(
            (value.checkWildcard ? EntryFlags.checkWildcard : 0)
                | (value.passWithoutSocket ? EntryFlags.passWithoutSocket : 0),
            at: EntryValueLayout.flags)
        put(UInt16(truncatingIfNeeded: value.portCount), at: EntryValueLayout.portCount)
        put(value.firstPort, at: EntryValueLayout.firstPort)
    }

    /// The value bytes of an entry.
    static func encode(_ value: EntryValue, label: UInt32, lane: Lane) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: EntryValueLayout.size)
        put(destination(label: label, lane: lane), at: EntryValueLayout.destination, in: &bytes)
        bytes[EntryValueLayout.mappedLength.offset] = value.mappedLength
        bytes[EntryValueLayout.flags.offset] =
            (value.checkWildcard ? EntryFlags.checkWildcard : 0)
            | (value.passWithoutSocket ? EntryFlags.passWithoutSocket : 0)
        put(UInt16(truncatingIfNeeded: value.portCount), at: EntryValueLayout.portCount, in: &bytes)
        put(value.firstPort, at: EntryValueLayout.firstPort, in: &bytes)
        return bytes
    }

    static func put<T: FixedWidthInteger>(_ value: T, at field: Field, in bytes: inout [UInt8]) {
        precondition(field.size == MemoryLayout<T>.size)
        withUnsafeBytes(of: value.littleEndian) { raw in
            for i in 0..<field.size { bytes[field.offset + i] = raw[i] }
        }
    }

}
