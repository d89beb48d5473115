import BPF
import BPFAssembly

/// The data plane's map layout, shared by the program generator and the control plane.
///
/// A rule set is two maps: a hash of **host bindings** (a /32 or /128 with one port, the most
/// specific binding there can be) for a one-lookup fast path, and an LPM trie for the rest.
/// Two rule sets exist side by side, in slots 0 and 1 of the `hosts` and `rules`
/// map-in-maps; the `active` array says which slot the program uses, so replacing the rule
/// set is one update of `active`. The trie's 24-byte keys start with a kind byte:
///
/// - **prefix** entries (kind 0): `[0, protocol, 0, 0] + address(16, IPv4 mapped)`, prefix length
///   32 + address bits → `{ruleset u32, prefix length u32}`;
/// - **port** entries (kind 1): `[1, 0, 0, 0] + ruleset(u32) + port(big-endian u16) + zeros`,
///   prefix length 64 + port bits (aligned power-of-two blocks) → `{label u32, binding u32}`;
/// - one **catalogue** entry (kind 3): the id of the binding table that describes this rule set.
///
/// A lookup finds the longest prefix of the connection's protocol and local address, then the
/// port in that prefix's rule set; if the port is not there, the next shorter prefix is tried
/// (up to ``maxNesting`` levels), so the cost depends on nesting, not on the number of bindings.
public enum Layout {
    /// Bump when the maps change shape; `upgrade` migrates older state.
    public static let schemaVersion: UInt32 = 1

    static let trieKeySize = 24
    static let trieValueSize = 8
    static let prefixKind: UInt8 = 0
    static let portKind: UInt8 = 1
    static let catalogueKind: UInt8 = 3
    /// The trie prefix length of a full prefix key (kind, protocol, padding, 128 address bits).
    static let fullPrefixLength: UInt32 = 32 + 128
    /// The trie prefix length of a full port key.
    static let fullPortLength: UInt32 = 64 + 16

    /// How many prefixes of one protocol may contain one another (the lookup's loop bound).
    public static let maxNesting = 16
    /// Sockets per destination.
    public static let socketsPerDestination = 16
    /// Labels; each has 4 destinations (IPv4/IPv6 × TCP/UDP).
    public static let maxLabels = 4096
    /// Destinations: four per label (IPv4/IPv6 × TCP/UDP).
    public static var maxDestinations: Int { maxLabels * 4 }
    /// Bytes of a label.
    static let labelSize = 64

    /// Destination index: label × 4 + (UDP ? 2 : 0) + (IPv6 ? 1 : 0).
    static func destination(label: UInt32, transport: Socket.Transport, ipv6: Bool) -> UInt32 {
        label * 4 + (transport == .udp ? 2 : 0) + (ipv6 ? 1 : 0)
    }

    static func prefixKey(transport: Socket.Transport, address: [UInt8], length: Int) -> [UInt8] {
        rawBytes(of: UInt32(32 + length)) + [prefixKind, UInt8(transport.ipProtocol), 0, 0] + address
    }

    static func portKey(ruleset: UInt32, port: UInt16, blockBits: Int) -> [UInt8] {
        rawBytes(of: UInt32(64 + 16 - blockBits)) + [portKind, 0, 0, 0] + rawBytes(of: ruleset)
            + [UInt8(port >> 8), UInt8(port & 0xff)] + [UInt8](repeating: 0, count: 10)
    }

    static let catalogueKey: [UInt8] = rawBytes(of: UInt32(32)) + [catalogueKind] + [UInt8](repeating: 0, count: 19)

    static func pair(_ a: UInt32, _ b: UInt32) -> [UInt8] { rawBytes(of: a) + rawBytes(of: b) }

    /// The host-port bitmap: per slot and protocol, one bit per port that some host binding
    /// uses; a connection to a port without the bit skips the host hash.
    static let hostPortWords = 2 * 2 * 1024

    static func hostPortWord(slot: UInt32, transport: Socket.Transport, port: UInt16) -> UInt32 {
        slot * 2048 + (transport == .udp ? 1024 : 0) + UInt32(port >> 6)
    }

    /// The bitmap words of one slot for a set of host bindings, indexed by word.
    static func hostPortBitmap(_ bindings: [Binding], slot: UInt32) -> [UInt32: UInt64] {
        var words: [UInt32: UInt64] = [:]
        for transport in Socket.Transport.allCases {
            for index in 0..<UInt32(1024) {
                words[hostPortWord(slot: slot, transport: transport, port: UInt16(index << 6))] = 0
            }
        }
        for binding in bindings {
            let word = hostPortWord(slot: slot, transport: binding.transport, port: binding.ports.lower)
            words[word, default: 0] |= 1 << UInt64(binding.ports.lower & 63)
        }
        return words
    }

    /// Host-binding hash keys: `[protocol, 0] + port (host order u16) + address(16, IPv4 mapped)`.
    static let hostKeySize = 20

    static func hostKey(transport: Socket.Transport, port: UInt16, address: [UInt8]) -> [UInt8] {
        [UInt8(transport.ipProtocol), 0] + rawBytes(of: port) + address
    }

    /// Counters per destination (per CPU): misses, then assign errors by kind. (Lookups per
    /// destination are summed from the bindings' counters, which keeps the hot path short;
    /// the first slot is unused.)
    enum DestinationCounter: Int, CaseIterable {
        case unused = 0
        case misses
        case errorExists
        case errorSocketState
        case errorProtocol
        case errorFamily
        case errorOther
        static let size = allCases.count * 8
    }

    /// Counters per binding (shared, atomically added): lookups, misses, errors, and the
    /// lookups that were IPv6 traffic (so destinations, which are per family, can be summed).
    enum BindingCounter: Int, CaseIterable {
        case lookups = 0
        case misses
        case errors
        case lookupsIPv6
        static let size = allCases.count * 8
    }

    /// Global counters (per CPU): connections that matched no binding.
    enum GlobalCounter: Int, CaseIterable {
        case noMatch = 0
        static let size = allCases.count * 8
    }

    /// A binding table record (`bindings` hash, binding id → record), 32 bytes:
    /// protocol, mapped prefix length, IPv4 flag, ports, label id and the 16-byte address.
    static func bindingRecord(_ binding: Binding, labelID: UInt32) -> [UInt8] {
        var record: [UInt8] = [
            UInt8(binding.transport.ipProtocol), UInt8(binding.mappedLength), binding.prefix.address.isIPv4 ? 4 : 6, 0,
        ]
        record += rawBytes(of: binding.ports.lower) + rawBytes(of: binding.ports.upper)
        record += rawBytes(of: labelID) + [0, 0, 0, 0]
        record += binding.mappedAddress
        return record
    }

    static func decodeRecord(_ record: [UInt8], labels: [UInt32: String]) -> Binding? {
        guard record.count == 32, let label = labels[value(UInt32.self, from: record[8..<12])] else { return nil }
        let transport: Socket.Transport = record[0] == 17 ? .udp : .tcp
        let mapped = IPAddress(bytes: Array(record[16..<32]))!
        let isIPv4 = record[2] == 4
        let address = isIPv4 ? (mapped.unmappedIPv4 ?? mapped) : mapped
        let length = isIPv4 ? Int(record[1]) - 96 : Int(record[1])
        guard let prefix = IPPrefix(address, length: length),
            let ports = PortSet(value(UInt16.self, from: record[4..<6]), value(UInt16.self, from: record[6..<8]))
        else { return nil }
        return Binding(label: label, transport: transport, prefix: prefix, ports: ports)
    }
}

/// Turns bindings into trie entries: one prefix entry per (protocol, prefix), and per prefix
/// the port space split among its bindings by precedence, in aligned blocks.
struct RuleCompiler {
    struct Entry {
        var key: [UInt8]
        var value: [UInt8]
    }

    /// A binding with the ids the data plane uses.
    struct Numbered {
        var binding: Binding
        var id: UInt32
        var label: UInt32
    }

    struct Node: Hashable {
        var transport: Socket.Transport
        var address: [UInt8]
        var length: Int
    }

    /// Whether a binding lives in the host hash: a full address and one port. No binding can
    /// beat it for the connections it matches, so a hit there ends the lookup.
    static func isHostBinding(_ binding: Binding) -> Bool {
        binding.mappedLength == 128 && binding.ports.count == 1
    }

    static func hostEntry(_ numbered: Numbered) -> Entry {
        Entry(
            key: Layout.hostKey(
                transport: numbered.binding.transport, port: numbered.binding.ports.lower,
                address: numbered.binding.mappedAddress),
            value: Layout.pair(numbered.label, numbered.id))
    }

    /// Every entry of a rule set: host entries, and the trie's prefix and port entries.
    static func compile(_ bindings: [Numbered], generation: UInt32) -> (
        hosts: [(key: [UInt8], value: [UInt8])], trie: [(key: [UInt8], value: [UInt8])], rulesets: UInt32
    ) {
        let hosts = bindings.filter { isHostBinding($0.binding) }.map { hostEntry($0) }.map { ($0.key, $0.value) }
        var trie: [(key: [UInt8], value: [UInt8])] = []
        var ruleset: UInt32 = 0
        for (node, members) in nodes(bindings) {
            for entry in portEntries(members, ruleset: ruleset) { trie.append((entry.key, entry.value)) }
            let prefix = prefixEntry(node, ruleset: ruleset)
            trie.append((prefix.key, prefix.value))
            ruleset += 1
        }
        trie.append((Layout.catalogueKey, Layout.pair(generation, 0)))
        return (hosts, trie, ruleset)
    }

    /// Groups the bindings that live in the trie (not host bindings) by (protocol, prefix).
    static func nodes(_ bindings: [Numbered]) -> [Node: [Numbered]] {
        Dictionary(grouping: bindings.filter { !isHostBinding($0.binding) }) {
            Node(transport: $0.binding.transport, address: $0.binding.mappedAddress, length: $0.binding.mappedLength)
        }
    }

    static func prefixEntry(_ node: Node, ruleset: UInt32) -> Entry {
        Entry(
            key: Layout.prefixKey(transport: node.transport, address: node.address, length: node.length),
            value: Layout.pair(ruleset, UInt32(32 + node.length)))
    }

    /// The port entries of one prefix's rule set.
    static func portEntries(_ bindings: [Numbered], ruleset: UInt32) -> [Entry] {
        var entries: [Entry] = []
        for (lower, upper, winner) in partition(bindings) {
            for (start, bits) in blocks(lower, upper) {
                entries.append(
                    Entry(
                        key: Layout.portKey(ruleset: ruleset, port: start, blockBits: bits),
                        value: Layout.pair(winner.label, winner.id)))
            }
        }
        return entries
    }

    /// Splits the ports among bindings of one prefix: each port goes to the narrowest set
    /// that contains it. Returns disjoint inclusive intervals with their winner.
    static func partition(_ bindings: [Numbered]) -> [(UInt16, UInt16, Numbered)] {
        if bindings.count == 1 {
            return [(bindings[0].binding.ports.lower, bindings[0].binding.ports.upper, bindings[0])]
        }
        let ordered = bindings.sorted { $0.binding.ports < $1.binding.ports }  // winners first
        var points = Set<Int>()
        for b in bindings {
            points.insert(Int(b.binding.ports.lower))
            points.insert(Int(b.binding.ports.upper) + 1)
        }
        let sorted = points.sorted()
        var result: [(UInt16, UInt16, Numbered)] = []
        for (index, start) in sorted.enumerated() where start <= 65535 {
            let end = (index + 1 < sorted.count ? sorted[index + 1] : 65536) - 1
            guard let winner = ordered.first(where: { $0.binding.ports.contains(UInt16(start)) }) else { continue }
            if let last = result.last, Int(last.1) + 1 == start, last.2.id == winner.id {
                result[result.count - 1].1 = UInt16(end)
            } else {
                result.append((UInt16(start), UInt16(end), winner))
            }
        }
        return result
    }

    /// Aligned power-of-two blocks covering [lower, upper]: (first port, log2 of the size).
    static func blocks(_ lower: UInt16, _ upper: UInt16) -> [(UInt16, Int)] {
        var result: [(UInt16, Int)] = []
        var start = Int(lower)
        let end = Int(upper)
        while start <= end {
            var bits = start == 0 ? 16 : start.trailingZeroBitCount
            while bits > 0 && start + (1 << bits) - 1 > end { bits -= 1 }
            result.append((UInt16(start), bits))
            start += 1 << bits
        }
        return result
    }
}
