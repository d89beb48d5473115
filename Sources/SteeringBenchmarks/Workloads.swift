import BPF
import Foundation
import SocketSteering

/// One binding as the bench holds it: the address in the 128-bit space both dispatchers use
/// (IPv4 mapped into IPv6), masked to its length; port 0 means all ports.
struct Rule: Hashable, Sendable {
    var transport: Socket.Transport
    var high: UInt64
    var low: UInt64
    /// 0…128; IPv4 prefixes are 96 + their length.
    var mappedLength: Int
    /// A single port, or 0 for all ports.
    var port: UInt16

    init(_ transport: Socket.Transport, _ address: IPAddress, length: Int, port: UInt16) {
        let (high, low) = Address.words(address)
        let mapped = address.isIPv4 ? 96 + length : length
        (self.high, self.low) = Address.mask(high, low, mapped)
        self.transport = transport
        self.mappedLength = mapped
        self.port = port
    }

    var isIPv6: Bool { !Address.isMappedIPv4(high, low) || mappedLength < 96 }

    var mappedAddressBytes: [UInt8] { Address.bytes(high, low) }

    /// The prefix in its own family (IPv4 unmapped).
    var prefix: IPPrefix {
        let address = IPAddress(bytes: Address.bytes(high, low))!
        if !isIPv6, let v4 = address.unmappedIPv4 { return IPPrefix(v4, length: mappedLength - 96)! }
        return IPPrefix(address, length: mappedLength)!
    }

    func binding(label: String) -> Binding {
        Binding(label: label, transport: transport, prefix: prefix, ports: port == 0 ? .all : .single(port))
    }

    /// A random address inside the prefix.
    func randomAddress(_ random: inout SeededRandom) -> IPAddress {
        let (maskHigh, maskLow) = Address.mask(~0, ~0, mappedLength)
        let high = self.high | (random.next() & ~maskHigh)
        let low = self.low | (random.next() & ~maskLow)
        return Address.address(high, low, ipv4: !isIPv6)
    }

    var description: String { "\(transport) \(prefix) \(port == 0 ? "*" : String(port))" }
}

/// 128-bit address arithmetic on two words, most significant first.
enum Address {
    static func words(_ address: IPAddress) -> (UInt64, UInt64) {
        let bytes = address.mappedToIPv6.bytes
        var high: UInt64 = 0
        var low: UInt64 = 0
        for i in 0..<8 { high = high << 8 | UInt64(bytes[i]) }
        for i in 8..<16 { low = low << 8 | UInt64(bytes[i]) }
        return (high, low)
    }

    static func bytes(_ high: UInt64, _ low: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
    }

    static func mask(_ high: UInt64, _ low: UInt64, _ length: Int) -> (UInt64, UInt64) {
        let highMask: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~0 << (64 - length))
        let lowMask: UInt64 = length <= 64 ? 0 : (length >= 128 ? ~0 : ~0 << (128 - length))
        return (high & highMask, low & lowMask)
    }

    static func isMappedIPv4(_ high: UInt64, _ low: UInt64) -> Bool { high == 0 && low >> 32 == 0xffff }

    static func address(_ high: UInt64, _ low: UInt64, ipv4: Bool) -> IPAddress {
        let address = IPAddress(bytes: bytes(high, low))!
        return ipv4 ? address.unmappedIPv4! : address
    }

    static func v4(_ value: UInt32) -> IPAddress {
        .v4(UInt8(value >> 24), UInt8((value >> 16) & 255), UInt8((value >> 8) & 255), UInt8(value & 255))
    }
}

/// SplitMix64: a small seeded generator, so every run builds the same workloads.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A connection to look up, and what it should hit.
struct Probe: Sendable {
    var transport: Socket.Transport
    var address: IPAddress
    var port: UInt16
    var endpoint: Endpoint { Endpoint(address, port) }
    var description: String { "\(transport) \(endpoint)" }
}

/// The precedence both dispatchers share for single ports and all ports: the longest prefix,
/// and at equal length a single port before all ports.
struct Model {
    struct Key: Hashable {
        var transport: Socket.Transport
        var high: UInt64
        var low: UInt64
        var length: Int
        var port: UInt16
    }
    private(set) var labels: [Key: Int] = [:]
    private(set) var lengths: [Int] = []

    /// Adds a rule unless one with the same protocol, prefix and ports is there; returns whether it was added.
    mutating func add(_ rule: Rule, label: Int) -> Bool {
        let key = Key(
            transport: rule.transport, high: rule.high, low: rule.low, length: rule.mappedLength, port: rule.port)
        guard labels[key] == nil else { return false }
        labels[key] = label
        if !lengths.contains(rule.mappedLength) {
            lengths.append(rule.mappedLength)
            lengths.sort(by: >)
        }
        return true
    }

    /// The winning label for a connection, or nil.
    func winner(_ transport: Socket.Transport, _ address: IPAddress, _ port: UInt16) -> Int? {
        let (high, low) = Address.words(address)
        for length in lengths {
            let (h, l) = Address.mask(high, low, length)
            if let label = labels[Key(transport: transport, high: h, low: l, length: length, port: port)] {
                return label
            }
            if let label = labels[Key(transport: transport, high: h, low: l, length: length, port: 0)] {
                return label
            }
        }
        return nil
    }
}

/// One set of bindings and the lookups made against it.
struct Workload {
    var name: String
    var summary: String
    var labels: [String]
    /// The bindings, each with the index of its label.
    var rules: [(rule: Rule, label: Int)]
    /// Lookup kinds in report order, each with its connections.
    var probes: [(kind: String, probes: [Probe])]
    var model: Model

    init(name: String, summary: String, labels: [String]) {
        self.name = name
        self.summary = summary
        self.labels = labels
        rules = []
        probes = []
        model = Model()
    }

    mutating func add(_ rule: Rule, label: Int) {
        if model.add(rule, label: label) { rules.append((rule, label)) }
    }

    /// `count` connections of a kind: an address made by `address` from a randomly chosen
    /// candidate rule, on the port `port` gives; `wantHit` drops those that do (not) match.
    mutating func addProbes(
        _ kind: String, from candidates: [Rule], count: Int, random: inout SeededRandom,
        address: (Rule, inout SeededRandom) -> IPAddress = { $0.randomAddress(&$1) },
        port: (Rule, inout SeededRandom) -> UInt16 = { rule, _ in rule.port }, wantHit: Bool = true
    ) {
        guard !candidates.isEmpty else { return }
        var made: [Probe] = []
        var attempts = 0
        while made.count < count && attempts < count * 20 {
            attempts += 1
            let rule = candidates[Int(random.next() % UInt64(candidates.count))]
            let probe = Probe(transport: rule.transport, address: address(rule, &random), port: port(rule, &random))
            if (model.winner(probe.transport, probe.address, probe.port) != nil) == wantHit { made.append(probe) }
        }
        if !made.isEmpty { probes.append((kind, made)) }
    }

    /// Connections to 198.18.0.0/15 (kept free of bindings) on `port`.
    mutating func addMisses(_ transport: Socket.Transport, port: UInt16, count: Int, random: inout SeededRandom) {
        let candidate = Rule(transport, .v4(198, 18, 0, 0), length: 15, port: port)
        addProbes("miss", from: [candidate], count: count, random: &random, wantHit: false)
    }

    var ruleCount: Int { rules.count }
}

enum Workloads {
    static let missRange = Rule(.tcp, .v4(198, 18, 0, 0), length: 15, port: 0)

    /// tubular's `prefixes.json`.
    static func tubularPrefixes(reference: URL) throws -> [IPPrefix] {
        let data = try Data(contentsOf: reference.appendingPathComponent("prefixes.json"))
        return try JSONDecoder().decode([String].self, from: data).map { text in
            guard let prefix = IPPrefix(text) else {
                throw ToolFailure(description: "prefixes.json: bad prefix \(text)")
            }
            return prefix
        }
    }

    /// One binding: 192.0.2.0/24 on tcp/443, or on all ports.
    static func oneBinding(allPorts: Bool, probes count: Int) -> Workload {
        var random = SeededRandom(seed: allPorts ? 12 : 11)
        var workload = Workload(
            name: allPorts ? "one-binding-all" : "one-binding-443",
            summary: "tcp 192.0.2.0/24 \(allPorts ? "*" : "443")", labels: ["one"])
        let rule = Rule(.tcp, .v4(192, 0, 2, 0), length: 24, port: allPorts ? 0 : 443)
        workload.add(rule, label: 0)
        if allPorts {
            workload.addProbes(
                "all-ports", from: [rule], count: count, random: &random,
                port: { _, random in UInt16(10_000 + random.next() % 50_000) })
        } else {
            workload.addProbes("prefix", from: [rule], count: count, random: &random)
        }
        workload.addMisses(.tcp, port: 443, count: count, random: &random)
        return workload
    }

    /// tubular's prefix list as it is: each prefix on tcp/443 (labels `web0`…) and on tcp/*
    /// (labels `any0`…), spread over four labels each.
    static func prefixes(_ list: [IPPrefix], probes count: Int) -> Workload {
        var random = SeededRandom(seed: 21)
        let labels = (0..<4).map { "web\($0)" } + (0..<4).map { "any\($0)" }
        var workload = Workload(
            name: "tubular-prefixes",
            summary: "the \(list.count) prefixes of tubular's prefixes.json, each on tcp/443 and tcp/*", labels: labels)
        for (index, prefix) in list.enumerated() {
            workload.add(Rule(.tcp, prefix.address, length: prefix.length, port: 443), label: index % 4)
            workload.add(Rule(.tcp, prefix.address, length: prefix.length, port: 0), label: 4 + index % 4)
        }
        let rules = workload.rules.map(\.rule)
        workload.addProbes(
            "host", from: rules.filter { !$0.isIPv6 && $0.mappedLength == 128 && $0.port != 0 }, count: count,
            random: &random)
        workload.addProbes(
            "prefix", from: rules.filter { !$0.isIPv6 && $0.mappedLength < 128 && $0.port != 0 }, count: count,
            random: &random)
        workload.addProbes(
            "all-ports", from: rules.filter { !$0.isIPv6 && $0.port == 0 }, count: count, random: &random,
            port: { _, random in UInt16(10_000 + random.next() % 50_000) })
        workload.addProbes("ipv6", from: rules.filter { $0.isIPv6 && $0.port != 0 }, count: count, random: &random)
        workload.addMisses(.tcp, port: 443, count: count, random: &random)
        return workload
    }

    /// The same list expanded to host bindings on udp/53, as tubular's own benchmark does.
    static func hosts(_ list: [IPPrefix], probes count: Int) -> Workload {
        var random = SeededRandom(seed: 31)
        let labels = (0..<4).map { "dns\($0)" }
        var hostCount = 0
        for prefix in list { hostCount += 1 << (prefix.address.bytes.count * 8 - prefix.length) }
        var workload = Workload(
            name: "tubular-hosts",
            summary: "prefixes.json expanded to \(hostCount) host bindings on udp/53", labels: labels)
        for (index, prefix) in list.enumerated() {
            let base = Rule(.udp, prefix.address, length: prefix.length, port: 53)
            let hostBits = 128 - base.mappedLength
            for offset in 0..<(UInt64(1) << hostBits) {
                let address = Address.address(base.high, base.low | offset, ipv4: !base.isIPv6)
                workload.add(Rule(.udp, address, length: address.bytes.count * 8, port: 53), label: index % 4)
            }
        }
        let rules = workload.rules.map(\.rule)
        workload.addProbes("host", from: rules.filter { !$0.isIPv6 }, count: count, random: &random)
        workload.addProbes("ipv6", from: rules.filter { $0.isIPv6 }, count: count, random: &random)
        workload.addMisses(.udp, port: 53, count: count, random: &random)
        return workload
    }

    /// `count` random bindings (seeded): 90 % IPv4 (mostly /24, else /32 or /12…/31), 10 % IPv6
    /// in 2000::/3 (mostly /48 and /64, else /32…/128); tcp or udp on 80, 443 or *; 36 labels.
    static func random(count: Int, probes probeCount: Int) -> Workload {
        var random = SeededRandom(seed: 41)
        let labels = (0..<36).map { "svc\($0 < 10 ? "0" : "")\($0)" }
        var workload = Workload(
            name: "random-\(count >= 1_000_000 && count % 1_000_000 == 0 ? "\(count / 1_000_000)M" : "\(count)")",
            summary: "\(count) random prefixes, 10 % IPv6, mixed lengths, tcp/udp on 80, 443 and *", labels: labels)
        func percent() -> UInt64 { random.next() % 100 }
        while workload.ruleCount < count {
            let transport: Socket.Transport = percent() < 75 ? .tcp : .udp
            let portRoll = percent()
            let port: UInt16 = portRoll < 40 ? 80 : portRoll < 80 ? 443 : 0
            let rule: Rule
            if percent() < 90 {
                let roll = percent()
                let length = roll < 55 ? 24 : roll < 70 ? 32 : Int(12 + random.next() % 20)
                let value = UInt32(truncatingIfNeeded: random.next())
                let first = value >> 24
                if first == 0 || first == 127 || first >= 224 { continue }
                rule = Rule(transport, Address.v4(value), length: length, port: port)
                // Keep 198.18.0.0/15 free for misses.
                let (h, l) = Address.mask(rule.high, rule.low, min(rule.mappedLength, missRange.mappedLength))
                let (mh, ml) = Address.mask(
                    missRange.high, missRange.low, min(rule.mappedLength, missRange.mappedLength))
                if h == mh && l == ml { continue }
            } else {
                let roll = percent()
                let length = roll < 40 ? 48 : roll < 70 ? 64 : Int(32 + random.next() % 97)
                let high = (random.next() & 0x1FFF_FFFF_FFFF_FFFF) | 0x2000_0000_0000_0000
                let address = Address.address(high, random.next(), ipv4: false)
                rule = Rule(transport, address, length: length, port: port)
            }
            workload.add(rule, label: Int(random.next() % UInt64(labels.count)))
        }
        let rules = workload.rules.map(\.rule)
        workload.addProbes(
            "host", from: rules.filter { !$0.isIPv6 && $0.mappedLength == 128 && $0.port != 0 }, count: probeCount,
            random: &random)
        workload.addProbes(
            "prefix", from: rules.filter { !$0.isIPv6 && $0.mappedLength < 128 && $0.port != 0 }, count: probeCount,
            random: &random)
        workload.addProbes(
            "all-ports", from: rules.filter { !$0.isIPv6 && $0.port == 0 }, count: probeCount, random: &random,
            port: { _, _ in 8443 })
        workload.addProbes("ipv6", from: rules.filter { $0.isIPv6 && $0.port != 0 }, count: probeCount, random: &random)
        workload.addMisses(.tcp, port: 80, count: probeCount, random: &random)
        return workload
    }
}
