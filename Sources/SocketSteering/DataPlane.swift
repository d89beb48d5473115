import BPF
import BPFAssembly
import SKLookup

/// The maps one program reads: one rule-set copy and the shared socket and counter maps.
struct DataPlaneMaps: Sendable {
    /// ``Layout/PortFlags`` of the copy.
    var ports: Map
    /// ``Layout/HostFilter`` of the copy.
    var hostFilter: Map
    /// The copy's tables, by lane and table.
    var tables: [Lane: [Table: Map]]
    /// `SOCKMAP`: destination × ``Layout/socketsPerDestination`` slots.
    var sockets: Map
    /// `PERCPU_ARRAY` destination → ``Layout/DestinationCounter``.
    var destinationMetrics: Map
    /// `PERCPU_ARRAY` [1] → ``Layout/GlobalCounter``.
    var globalMetrics: Map
    /// `PERCPU_HASH` ``Layout/BindingCounterKey`` → ``Layout/BindingCounter``, when
    /// per-binding counters are on; without it the program has no code for them.
    var bindingMetrics: Map? = nil
    /// The tables that were empty when the program was made, by lane: the program has no
    /// code for them (a lane with none has only a jump to "no binding"). Only for maps that
    /// nothing writes while the program reads them (a copy, from its switch on).
    var empty: [Lane: Set<Table>] = [:]

    /// Whether `lane`'s `table` is left out of the program.
    func isEmpty(_ lane: Lane, _ table: Table) -> Bool { empty[lane]?.contains(table) ?? false }
}

/// Generates the dispatcher's SK_LOOKUP program with the DSL (no C). The steps are those of
/// ``RuleTables/lookup(_:_:_:)``; the offsets come from ``Layout``.
///
/// Per connection: the port's flags (an array read the verifier inlines); the `host` hash if
/// the port has host entries (a hit ends the search); the `exact` trie if it has exact
/// entries (a hit ends the search unless the entry says an all-ports binding may beat it);
/// else the `wild` trie. A table that was empty when the program was made has no code (a
/// lookup of an empty table is a helper call that finds nothing): without `host` and `exact`
/// entries the port's flags are not read, and a lane with no entries at all goes straight to
/// "no binding". Then the destination's counters, one SOCKMAP read at a slot chosen by a hash of the remote address
/// and port (the next slots if that socket has closed), and `bpf_sk_assign`.
enum DataPlane {
    // Stack layout (offsets from r10). The exact key starts 2 bytes past an 8-byte boundary so
    // that its address, after the 4-byte length and 2-byte port, is 8-byte aligned.
    static let exactKey: Int16 = -32 + 2  // up to 22 bytes: [-30, -8)
    static let wildKey: Int16 = -56  // up to 20 bytes: [-56, -36)
    static let scratch: Int16 = -60  // u32 map keys
    static let destinationSlot: Int16 = -64  // u32
    static let hashSlot: Int16 = -68  // u32
    static let countingSlot: Int16 = -72  // u32: the ingress ifindex; 0 in test runs, which are not counted
    static let entryFlagsSlot: Int16 = -76  // u32: the matched entry's flags
    static let bindingKey: Int16 = -104  // Layout.BindingCounterKey, 28 bytes: [-104, -76)
    static let zeroValue: Int16 = -120  // Layout.BindingCounter of zeros, 16 bytes: [-120, -104)

    static let afInet6: Int32 = 10
    static let afInet: Int32 = 2
    static let ipprotoTCP: Int32 = 6
    static let ipprotoUDP: Int32 = 17

    /// Which runs of the program update the counters.
    enum Counting {
        /// Real traffic, not test runs: reads `ctx->ingress_ifindex` (0 in test runs; Linux 5.17).
        case realTraffic
        /// Every run: benchmarks (which measure through test runs and must pay for the
        /// counters), and the attached program on kernels without `ingress_ifindex`.
        case everyRun
        /// None: `explain` on kernels without `ingress_ifindex`.
        case never

        /// What the attached program does on this kernel.
        static var attached: Counting { Features.skLookupIngressInterface ? .realTraffic : .everyRun }
    }

    static func program(_ maps: DataPlaneMaps, counting mode: Counting = .attached) throws -> Assembly {
        let ctx = Register.r6
        let found4 = Label("found4")
        let found6 = Label("found6")
        let nomatch = Label("nomatch")
        let live = Lane.allCases.filter { hasCode($0, maps) }
        let lanes = Dictionary(uniqueKeysWithValues: Lane.allCases.map { ($0, Label("lane_\($0)")) })

        return try assemble {
            Instruction.mov(ctx, .r1)
            switch mode {
            case .realTraffic:
                SKLookup.load(.ingressInterface, from: ctx, into: .r2)
                Instruction.stx(.w, .r10, .r2, countingSlot)
            case .everyRun: Instruction.st(.w, .r10, countingSlot, 1)
            case .never: Instruction.st(.w, .r10, countingSlot, 0)
            }
            // Readers tell which copy a program reads by its port flags (`activeCopy()`), and
            // whether it counts per binding by that map: a program whose code does not read
            // them still refers to them.
            if !live.contains(where: { !maps.isEmpty($0, .host) || !maps.isEmpty($0, .exact) }) {
                Statement.loadMap(.r2, maps.ports)
            }
            if live.isEmpty, let bindingMetrics = maps.bindingMetrics { Statement.loadMap(.r2, bindingMetrics) }
            // Which lane: family, then protocol; anything else is not ours.
            SKLookup.getFamily(ctx, into: .r2)
            SKLookup.getProtocol(ctx, into: .r3)
            for lane in Lane.allCases {
                let next = Label("not_\(lane)")
                Statement.jump(.jne, .r2, lane.ipv6 ? afInet6 : afInet, to: next)
                Statement.jump(
                    .jeq, .r3, lane.transport == .tcp ? ipprotoTCP : ipprotoUDP,
                    to: live.contains(lane) ? lanes[lane]! : nomatch)
                next
            }
            SKLookup.pass()

            // Only code that can run: the verifier refuses a program with unreachable instructions.
            for lane in live {
                lanes[lane]!
                laneLookup(lane, maps, found: lane.ipv6 ? found6 : found4, nomatch: nomatch)
            }
            if !live.isEmpty { found(maps, ipv4: live.contains { !$0.ipv6 }, ipv6: live.contains(where: \.ipv6)) }

            // No binding: the kernel's normal lookup goes on.
            nomatch
            counting("nomatch") {
                Instruction.st(.w, .r10, scratch, 0)
                lookup(maps.globalMetrics, keyAt: scratch)
                Statement.jump(.jeq, .r0, 0, to: Label("uncounted_nomatch"))
                Instruction.ldx(.dw, .r1, .r0, 0)
                Instruction.add(.r1, 1)
                Instruction.stx(.dw, .r0, .r1, 0)
            }
            SKLookup.pass()
        }
    }

    /// Whether `lane` has code in the program: some table of it is not left out.
    static func hasCode(_ lane: Lane, _ maps: DataPlaneMaps) -> Bool {
        Table.allCases.contains { !maps.isEmpty(lane, $0) }
    }

    /// From `found4` or `found6` (r0 the matched entry) to the verdict: the destination's
    /// counters, its socket and `bpf_sk_assign`. Only the families that have lanes with code.
    @ProgramBuilder
    static func found(_ maps: DataPlaneMaps, ipv4: Bool, ipv6: Bool) -> [Statement] {
        let ctx = Register.r6
        let select = Label("select")
        let miss = Label("miss")
        let assign = Label("assign")
        let passVerdict = Label("pass")
        // A binding matched; r0 is its entry. The socket slot comes from a hash of the
        // remote address and port (Fibonacci hashing: the top bits of the product).
        if ipv4 {
            Label("found4")
            Instruction.ldx(.w, .r7, .r0, Int16(Layout.EntryValueLayout.destination.offset))
            Instruction.ldx(.b, .r3, .r0, Int16(Layout.EntryValueLayout.flags.offset))
            Instruction.stx(.w, .r10, .r3, entryFlagsSlot)
            if maps.bindingMetrics != nil { bindingKeyFromEntry(ipv6: false) }
            SKLookup.getRemoteIPv4(ctx, into: .r3)
            Statement.ja(to: select)
        }
        if ipv6 {
            Label("found6")
            Instruction.ldx(.w, .r7, .r0, Int16(Layout.EntryValueLayout.destination.offset))
            Instruction.ldx(.b, .r3, .r0, Int16(Layout.EntryValueLayout.flags.offset))
            Instruction.stx(.w, .r10, .r3, entryFlagsSlot)
            if maps.bindingMetrics != nil { bindingKeyFromEntry(ipv6: true) }
            SKLookup.getRemoteIPv6(ctx, word: 0, into: .r3)
            for word in 1..<4 {
                SKLookup.getRemoteIPv6(ctx, word: word, into: .r4)
                Instruction.alu(.xor, .r3, .r4, is64: false)
            }
        }
        select
        SKLookup.getRemotePort(ctx, into: .r4)
        Instruction.alu(.xor, .r3, .r4, is64: false)
        Instruction.mul32(.r3, Int32(bitPattern: 0x9e37_79b1))
        Instruction.rsh32(.r3, 28)
        Instruction.stx(.w, .r10, .r3, hashSlot)
        Instruction.stx(.w, .r10, .r7, destinationSlot)
        // The destination's counters (r8, or 0 when not counting).
        Instruction.mov(.r8, 0)
        counting("found") {
            lookup(maps.destinationMetrics, keyAt: destinationSlot)
            Instruction.mov(.r8, .r0)
            Statement.jump(.jeq, .r8, 0, to: Label("uncounted_found"))
            increment(.r8, Layout.DestinationCounter.lookups)
        }
        // The binding's counters (r9, or 0 when not counting).
        if let bindingMetrics = maps.bindingMetrics {
            Instruction.mov(.r9, 0)
            counting("binding") { countBinding(bindingMetrics) }
        }
        // The slot the hash picks, then the ones after it: a closed socket's slots are
        // empty until the next registration spreads the live sockets again.
        for attempt in 0..<Int32(Layout.socketsPerDestination) {
            Instruction.ldx(.w, .r4, .r10, hashSlot)
            if attempt > 0 {
                Instruction.add32(.r4, attempt)
                Instruction.and32(.r4, Int32(Layout.socketsPerDestination - 1))
            }
            Instruction.mov32(.r3, .r7)
            Instruction.lsh32(.r3, 4)
            Instruction.or32(.r3, .r4)
            Instruction.stx(.w, .r10, .r3, scratch)
            lookup(maps.sockets, keyAt: scratch)
            Statement.jump(.jne, .r0, 0, to: assign)
        }

        // A binding matched but no socket is there: refuse, so the traffic does not reach
        // some other socket bound to the address (unless the binding says to pass it on).
        miss
        if maps.bindingMetrics != nil {
            Statement.jump(.jeq, .r9, 0, to: Label("binding_uncounted_miss"))
            increment(.r9, offset: Layout.BindingCounter.misses.offset)
            Label("binding_uncounted_miss")
        }
        Statement.jump(.jeq, .r8, 0, to: Label("uncounted_miss"))
        increment(.r8, Layout.DestinationCounter.misses)
        Label("uncounted_miss")
        Instruction.ldx(.w, .r2, .r10, entryFlagsSlot)
        Statement.jump(.jset, .r2, Int32(Layout.EntryFlags.passWithoutSocket), to: passVerdict)
        SKLookup.drop()

        assign
        Instruction.mov(.r9, .r0)
        // Real traffic: flags 0, so an SO_REUSEPORT group still spreads its load. Test runs
        // cannot pick within a group, so they take exactly the registered socket.
        Instruction.mov(.r3, 0)
        Instruction.ldx(.w, .r2, .r10, countingSlot)
        Instruction.jump(.jne, .r2, 0, offset: 1)
        Instruction.mov(.r3, Int32(AssignFlags.noReuseport.rawValue))
        Instruction.mov(.r1, ctx)
        Instruction.mov(.r2, .r9)
        Instruction.call(.skAssign)
        Instruction.mov(.r7, .r0)
        Instruction.mov(.r1, .r9)
        Instruction.call(.skRelease)
        Statement.jump(.jeq, .r7, 0, to: passVerdict)
        Statement.jump(.jeq, .r8, 0, to: Label("uncounted_error"))
        for (code, counter) in [
            (AssignError.alreadySelected, Layout.DestinationCounter.errorExists),
            (.socketNotSupported, .errorSocketState), (.protocolMismatch, .errorProtocol),
            (.familyMismatch, .errorFamily),
        ] {
            let next = Label("error_not_\(code.rawValue)")
            Statement.jump(.jne, .r7, -code.rawValue, to: next)
            increment(.r8, counter)
            SKLookup.drop()
            next
        }
        increment(.r8, .errorOther)
        Label("uncounted_error")
        SKLookup.drop()

        passVerdict
        SKLookup.pass()
    }

    /// One lane's search; ends at `found` with r0 = the entry, or at `nomatch`. Tables in
    /// ``DataPlaneMaps/empty`` have no code.
    static func laneLookup(_ lane: Lane, _ maps: DataPlaneMaps, found: Label, nomatch: Label) -> [Statement] {
        let tables = maps.tables[lane]!
        let name = "\(lane)"
        let hasHost = !maps.isEmpty(lane, .host)
        let hasExact = !maps.isEmpty(lane, .exact)
        let hasWild = !maps.isEmpty(lane, .wild)
        // Host and exact entries are keyed by port, and the port's flags say which it has.
        let byPort = hasHost || hasExact
        guard byPort || hasWild else { return [.ja(to: nomatch)] }
        let noHost = Label("nohost_\(name)")
        let wildOnly = Label("wild_\(name)")
        let exactWins = Label("exact_wins_\(name)")
        let exactKeyAddress = exactKey + Int16(Layout.ExactKey.address(lane).offset)
        let wildKeyAddress = wildKey + Int16(Layout.WildKey.address(lane).offset)
        let prefixLength = exactKey + Int16(Layout.ExactKey.prefixLength.offset)
        var body: [Statement] = []
        // Keys: the exact key's length is written in two halves (it is only 2-byte aligned).
        if byPort {
            let exactLength = UInt32(16 + lane.addressBits)
            body += [
                .instruction(.st(.h, .r10, prefixLength, Int32(exactLength & 0xffff))),
                .instruction(.st(.h, .r10, prefixLength + 2, Int32(exactLength >> 16))),
            ]
            body += SKLookup.getLocalPort(.r6, into: .r7)
            body.append(.instruction(.stx(.h, .r10, .r7, exactKey + Int16(Layout.ExactKey.port.offset))))
        }
        if hasWild {
            body.append(
                .instruction(
                    .st(.w, .r10, wildKey + Int16(Layout.WildKey.prefixLength.offset), Int32(lane.addressBits))))
        }
        for word in 0..<(lane.addressSize / 4) {
            body +=
                lane.ipv6 ? SKLookup.getLocalIPv6(.r6, word: word, into: .r2) : SKLookup.getLocalIPv4(.r6, into: .r2)
            if byPort { body.append(.instruction(.stx(.w, .r10, .r2, exactKeyAddress + Int16(4 * word)))) }
            if hasWild { body.append(.instruction(.stx(.w, .r10, .r2, wildKeyAddress + Int16(4 * word)))) }
        }
        if byPort {
            // The port's flags: word = protocol × 4096 + port / 16; two bits at (port % 16) × 4 (+2 for IPv6).
            body += [
                .instruction(.mov32(.r2, .r7)),
                .instruction(.rsh32(.r2, 4)),
            ]
            if lane.transport == .udp { body.append(.instruction(.add32(.r2, 4096))) }
            body.append(.instruction(.stx(.w, .r10, .r2, scratch)))
            body += lookup(maps.ports, keyAt: scratch)
            body.append(.jump(.jeq, .r0, 0, to: wildOnly))
            body += [
                .instruction(.ldx(.dw, .r8, .r0, 0)),
                .instruction(.mov32(.r3, .r7)),
                .instruction(.and32(.r3, 15)),
                .instruction(.lsh32(.r3, 2)),
            ]
            if lane.ipv6 { body.append(.instruction(.add32(.r3, 2))) }
            body.append(.instruction(.rsh(.r8, .r3)))
        }
        if hasHost {
            body += hostProbe(lane, tables[.host]!, maps.hostFilter, found: found, noHost: noHost)
        }
        if hasExact {
            body.append(.jump(.jset, .r8, Int32(Layout.PortFlags.exact), to: Label("exact_\(name)")))
            body.append(.ja(to: wildOnly))
            body.append(.label(Label("exact_\(name)")))
            body += lookup(tables[.exact]!, keyAt: exactKey)
            body.append(.jump(.jeq, .r0, 0, to: wildOnly))
            body.append(.instruction(.mov(.r9, .r0)))
            body.append(.instruction(.ldx(.b, .r2, .r9, Int16(Layout.EntryValueLayout.flags.offset))))
            body.append(.jump(.jset, .r2, Int32(Layout.EntryFlags.checkWildcard), to: Label("check_\(name)")))
            body.append(.ja(to: found))
            // An all-ports binding of a longer prefix beats the exact entry.
            body.append(.label(Label("check_\(name)")))
            if hasWild {
                body += lookup(tables[.wild]!, keyAt: wildKey)
                body.append(.jump(.jeq, .r0, 0, to: exactWins))
                body.append(.instruction(.ldx(.b, .r2, .r0, Int16(Layout.EntryValueLayout.mappedLength.offset))))
                body.append(.instruction(.ldx(.b, .r3, .r9, Int16(Layout.EntryValueLayout.mappedLength.offset))))
                body.append(.jump(.jgt, .r2, .r3, to: found))
            }
            body.append(.label(exactWins))
            body.append(.instruction(.mov(.r0, .r9)))
            body.append(.ja(to: found))
        }
        body.append(.label(wildOnly))
        if hasWild {
            body += lookup(tables[.wild]!, keyAt: wildKey)
            body.append(.jump(.jne, .r0, 0, to: found))
        }
        body.append(.ja(to: nomatch))
        return body
    }

    /// With r8 the port's flags and the exact key written: the `host` hash, if the port has
    /// host entries and the host filter's bit for (lane, port, address) is set. Ends at
    /// `found` with r0 = the entry, or falls through to `noHost`, its last statement.
    static func hostProbe(_ lane: Lane, _ host: Map, _ hostFilter: Map, found: Label, noHost: Label) -> [Statement] {
        let name = "\(lane)"
        let exactKeyAddress = exactKey + Int16(Layout.ExactKey.address(lane).offset)
        var body: [Statement] = []
        // A host entry is the most specific there is: a hit ends the search.
        body.append(.jump(.jset, .r8, Int32(Layout.PortFlags.host), to: Label("host_\(name)")))
        body.append(.ja(to: noHost))
        body.append(.label(Label("host_\(name)")))
        // The filter's start is hashed from the lane, port and all address words but the
        // last, plus the last word as a number (byte-swapped to host order), so nearby
        // addresses share filter lines.
        body += [
            .instruction(.mov32(.r2, .r7)),
            .instruction(.or32(.r2, Int32(lane.index << 16))),
        ]
        let lastWord = lane.addressSize / 4 - 1
        for word in 0..<lastWord {
            body.append(.instruction(.ldx(.w, .r3, .r10, exactKeyAddress + Int16(4 * word))))
            body.append(.instruction(.alu(.xor, .r2, .r3, is64: false)))
        }
        body += [
            .instruction(.mul32(.r2, Int32(bitPattern: Layout.HostFilter.multiplier))),
            .instruction(.rsh32(.r2, Int32(32 - Layout.HostFilter.bits))),
            .instruction(.ldx(.w, .r3, .r10, exactKeyAddress + Int16(4 * lastWord))),
            .instruction(.be(.r3, 32)),
            .instruction(.add32(.r2, .r3)),
            .instruction(.and32(.r2, Int32(Layout.HostFilter.mask))),
            .instruction(.mov32(.r9, .r2)),
            .instruction(.rsh32(.r2, 6)),
            .instruction(.stx(.w, .r10, .r2, scratch)),
        ]
        body += lookup(hostFilter, keyAt: scratch)
        body.append(.jump(.jeq, .r0, 0, to: noHost))
        body += [
            .instruction(.ldx(.dw, .r4, .r0, 0)),
            .instruction(.and32(.r9, 63)),
            .instruction(.rsh(.r4, .r9)),
        ]
        body.append(.jump(.jset, .r4, 1, to: Label("hostprobe_\(name)")))
        body.append(.ja(to: noHost))
        body.append(.label(Label("hostprobe_\(name)")))
        body += lookup(host, keyAt: exactKey + Int16(Layout.ExactKey.hostKeyOffset))
        body.append(.jump(.jne, .r0, 0, to: found))
        body.append(.label(noHost))
        return body
    }

    /// `r0 = bpf_map_lookup_elem(map, r10 + key)`: the value, or NULL.
    static func lookup(_ map: Map, keyAt key: Int16) -> [Statement] {
        [
            .loadMap(.r1, map), .instruction(.mov(.r2, .r10)), .instruction(.add(.r2, Int32(key))),
            .instruction(.call(.mapLookupElem)),
        ]
    }

    /// `counter += 1` in the per-CPU counters at `register`.
    static func increment(_ register: Register, _ counter: Layout.DestinationCounter) -> [Statement] {
        increment(register, offset: counter.offset)
    }

    /// `*(u64 *)(register + offset) += 1`.
    static func increment(_ register: Register, offset: Int16) -> [Statement] {
        [
            .instruction(.ldx(.dw, .r1, register, offset)),
            .instruction(.add(.r1, 1)),
            .instruction(.stx(.dw, register, .r1, offset)),
        ]
    }

    /// With r0 the matched entry: writes the winner's prefix (the local address masked to the
    /// winner's length, in the 128-bit space), ports and length into the binding key. The
    /// label and protocol come from the destination, at counting time.
    static func bindingKeyFromEntry(ipv6: Bool) -> [Statement] {
        typealias K = Layout.BindingCounterKey
        typealias V = Layout.EntryValueLayout
        let name = ipv6 ? "bk6" : "bk4"
        let maskLow = Label("\(name)_mask_low")
        let zeroHigh = Label("\(name)_zero_high")
        let zeroLow = Label("\(name)_zero_low")
        let store = Label("\(name)_store")
        func at(_ field: Field) -> Int16 { bindingKey + Int16(field.offset) }
        var body: [Statement] = [
            .instruction(.ldx(.b, .r4, .r0, Int16(V.mappedLength.offset))),
            .instruction(.stx(.b, .r10, .r4, at(K.mappedLength))),
            .instruction(.ldx(.h, .r1, .r0, Int16(V.firstPort.offset))),
            .instruction(.stx(.h, .r10, .r1, at(K.firstPort))),
            .instruction(.ldx(.h, .r1, .r0, Int16(V.portCount.offset))),
            .instruction(.stx(.h, .r10, .r1, at(K.portCount))),
        ]
        // The local address as two numbers: r1 the first 64 bits, r2 the last.
        if ipv6 {
            for (word, (register, shifted)) in [(Register.r1, true), (.r3, false), (.r2, true), (.r3, false)]
                .enumerated()
            {
                body += SKLookup.getLocalIPv6(.r6, word: word, into: register)
                body.append(.instruction(.be(register, 32)))
                if shifted { body.append(.instruction(.lsh(register, 32))) }
                if !shifted { body.append(.instruction(.or(word == 1 ? .r1 : .r2, .r3))) }
            }
        } else {
            body.append(.instruction(.mov(.r1, 0)))
            body += SKLookup.getLocalIPv4(.r6, into: .r2)
            body += [
                .instruction(.be(.r2, 32)), .instruction(.mov(.r3, 0xffff)), .instruction(.lsh(.r3, 32)),
                .instruction(.or(.r2, .r3)),
            ]
        }
        // Masked to the winner's length r4 (0...128): a shift by 64 or more is no shift in
        // BPF, so the edges are branches.
        body += [
            .jump(.jge, .r4, 64, to: maskLow),
            .instruction(.mov(.r2, 0)),
            .jump(.jeq, .r4, 0, to: zeroHigh),
            .instruction(.mov(.r5, -1)), .instruction(.mov(.r3, 64)), .instruction(.sub(.r3, .r4)),
            .instruction(.lsh(.r5, .r3)), .instruction(.and(.r1, .r5)), .ja(to: store),
            .label(zeroHigh), .instruction(.mov(.r1, 0)), .ja(to: store),
            .label(maskLow),
            .jump(.jge, .r4, 128, to: store),
            .jump(.jeq, .r4, 64, to: zeroLow),
            .instruction(.mov(.r5, -1)), .instruction(.mov(.r3, 128)), .instruction(.sub(.r3, .r4)),
            .instruction(.lsh(.r5, .r3)), .instruction(.and(.r2, .r5)), .ja(to: store),
            .label(zeroLow), .instruction(.mov(.r2, 0)),
            .label(store),
            .instruction(.stx(.dw, .r10, .r1, at(K.high))),
            .instruction(.stx(.dw, .r10, .r2, at(K.low))),
        ]
        return body
    }

    /// With r7 the destination and the key's prefix written: finds the binding's counters
    /// (adding them at the first connection, or taking the overflow key's when the map is
    /// full), leaves them in r9 and counts the lookup.
    static func countBinding(_ map: Map) -> [Statement] {
        typealias K = Layout.BindingCounterKey
        func at(_ field: Field) -> Int16 { bindingKey + Int16(field.offset) }
        let found = Label("binding_found")
        let skip = Label("uncounted_binding")
        var body: [Statement] = [
            .instruction(.mov32(.r1, .r7)), .instruction(.rsh32(.r1, 2)),
            .instruction(.stx(.w, .r10, .r1, at(K.label))),
            .instruction(.mov32(.r1, .r7)), .instruction(.rsh32(.r1, 1)), .instruction(.and32(.r1, 1)),
            .instruction(.stx(.b, .r10, .r1, at(K.transport))),
            .instruction(.st(.h, .r10, bindingKey + Int16(K.transport.end), 0)),
        ]
        body += lookup(map, keyAt: bindingKey)
        body.append(.jump(.jne, .r0, 0, to: found))
        body += [
            .instruction(.st(.dw, .r10, zeroValue, 0)), .instruction(.st(.dw, .r10, zeroValue + 8, 0)),
            .loadMap(.r1, map), .instruction(.mov(.r2, .r10)), .instruction(.add(.r2, Int32(bindingKey))),
            .instruction(.mov(.r3, .r10)), .instruction(.add(.r3, Int32(zeroValue))),
            .instruction(.mov(.r4, 1)),  // BPF_NOEXIST: a connection on another CPU may have added it
            .instruction(.call(.mapUpdateElem)),
        ]
        body += lookup(map, keyAt: bindingKey)
        body.append(.jump(.jne, .r0, 0, to: found))
        // The map is full: count under the overflow key.
        body += [
            .instruction(.st(.dw, .r10, bindingKey, -1)), .instruction(.st(.dw, .r10, bindingKey + 8, -1)),
            .instruction(.st(.dw, .r10, bindingKey + 16, -1)), .instruction(.st(.w, .r10, bindingKey + 24, -1)),
        ]
        body += lookup(map, keyAt: bindingKey)
        body.append(.jump(.jeq, .r0, 0, to: skip))
        body.append(.label(found))
        body.append(.instruction(.mov(.r9, .r0)))
        body += increment(.r9, offset: Layout.BindingCounter.lookups.offset)
        return body
    }

    /// Wraps statements so they run only for real traffic (ingress interface ≠ 0), not in
    /// test runs; the body may jump to `uncounted_<name>` to leave early.
    static func counting(_ name: String, @ProgramBuilder _ body: () -> [Statement]) -> [Statement] {
        let skip = Label("uncounted_\(name)")
        return [.instruction(.ldx(.w, .r2, .r10, countingSlot)), .jump(.jeq, .r2, 0, to: skip)] + body() + [
            .label(skip)
        ]
    }
}
