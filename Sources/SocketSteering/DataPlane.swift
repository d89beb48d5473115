import BPF
import BPFAssembly
import SKLookup

/// The maps the dispatcher program uses.
struct DataPlaneMaps: Sendable {
    /// `ARRAY` [1] → u32: the slot (0 or 1) of the rule set in use.
    var active: Map
    /// `ARRAY_OF_MAPS` [2] of host-binding hashes.
    var hosts: Map
    /// `ARRAY` of u64: per slot and protocol, a bit for each port some host binding uses.
    var hostPorts: Map
    /// `ARRAY_OF_MAPS` [2] of rule tries.
    var rules: Map
    /// `SOCKMAP`: destination × ``Layout/socketsPerDestination`` slots.
    var sockets: Map
    /// `ARRAY` destination → u32: slots in use (the high-water mark).
    var socketCounts: Map
    /// `PERCPU_ARRAY` destination → ``Layout/DestinationCounter``.
    var destinationMetrics: Map
    /// `ARRAY` binding id → ``Layout/BindingCounter`` (atomically added).
    var bindingMetrics: Map
    /// `PERCPU_ARRAY` [1] → ``Layout/GlobalCounter``.
    var globalMetrics: Map
}

/// Generates the dispatcher's SK_LOOKUP program with the DSL (no C).
enum DataPlane {
    // Stack layout (offsets from r10).
    static let prefixKey: Int16 = -24  // 24 bytes
    static let portKey: Int16 = -48  // 24 bytes
    static let scratchKey: Int16 = -52  // u32
    static let destinationSlot: Int16 = -56  // u32
    static let bindingSlot: Int16 = -60  // u32
    static let hashSlot: Int16 = -64  // u32
    static let countSlot: Int16 = -68  // u32
    static let countingSlot: Int16 = -72  // u32: ingress ifindex; 0 in test runs, which are not counted
    static let generationSlot: Int16 = -76  // u32: the active slot
    static let hostKey: Int16 = -96  // 20 bytes

    static let ebpfAFInet6: Int32 = 10
    static let ipprotoUDP: Int32 = 17

    /// - Parameter countTestRuns: count test runs like real traffic (for benchmarks, which
    ///   measure the program through the kernel's test run and must pay for the counters).
    static func program(_ maps: DataPlaneMaps, countTestRuns: Bool = false) throws -> Assembly {
        let ctx = Register.r6
        let trie = Register.r7
        let nomatch = Label("nomatch")
        let found = Label("found")
        let miss = Label("miss")
        let assign = Label("assign")
        let passVerdict = Label("pass")
        let drop = Label("drop")
        let notLoaded = Label("not_loaded")
        let hostIPv4 = Label("host_ipv4")
        let hostKeyed = Label("host_keyed")
        let noHosts = Label("no_hosts")
        let hashed = Label("hashed")

        return try assemble {
            Instruction.mov(ctx, .r1)
            // Zero the three keys (the other slots are written before they are read).
            for offset in stride(from: hostKey, to: hostKey + 24, by: 8) { Instruction.st(.dw, .r10, offset, 0) }
            for offset in stride(from: portKey, to: 0, by: 8) { Instruction.st(.dw, .r10, offset, 0) }
            // Real traffic has an ingress interface; test runs have none and are not counted
            // (unless this program is built to count them, for benchmarks).
            if countTestRuns {
                Instruction.st(.w, .r10, countingSlot, 1)
            } else {
                SKLookup.load(.ingressInterface, from: ctx, into: .r2)
                Instruction.stx(.w, .r10, .r2, countingSlot)
            }
            // The active rule set: its slot, then its host hash and its trie.
            Instruction.st(.w, .r10, scratchKey, 0)
            lookup(maps.active, keyAt: scratchKey)
            Statement.jump(.jeq, .r0, 0, to: notLoaded)
            Instruction.ldx(.w, .r2, .r0, 0)
            Instruction.stx(.w, .r10, .r2, generationSlot)
            lookup(maps.rules, keyAt: generationSlot)
            Statement.jump(.jeq, .r0, 0, to: notLoaded)
            Instruction.mov(trie, .r0)

            // Host key: [protocol, 0] + local port + local address (IPv4 mapped into IPv6).
            SKLookup.getProtocol(ctx, into: .r2)
            Instruction.stx(.b, .r10, .r2, hostKey)
            SKLookup.getLocalPort(ctx, into: .r2)
            Instruction.stx(.h, .r10, .r2, hostKey + 2)
            SKLookup.getFamily(ctx, into: .r2)
            Statement.jump(.jne, .r2, ebpfAFInet6, to: hostIPv4)
            for word in 0..<4 {
                SKLookup.getLocalIPv6(ctx, word: word, into: .r3)
                Instruction.stx(.w, .r10, .r3, hostKey + 4 + Int16(4 * word))
            }
            Statement.ja(to: hostKeyed)
            hostIPv4
            Instruction.st(.w, .r10, hostKey + 12, Int32(bitPattern: value(UInt32.self, from: [0, 0, 0xff, 0xff])))
            SKLookup.getLocalIPv4(ctx, into: .r3)
            Instruction.stx(.w, .r10, .r3, hostKey + 16)
            hostKeyed
            // Only ports some host binding uses are looked up in the host hash.
            Instruction.ldx(.w, .r2, .r10, generationSlot)
            Instruction.mul32(.r2, 2048)
            SKLookup.getProtocol(ctx, into: .r3)
            Instruction.jump(.jne, .r3, ipprotoUDP, offset: 1)
            Instruction.add32(.r2, 1024)
            SKLookup.getLocalPort(ctx, into: .r3)
            Instruction.rsh32(.r3, 6)
            Instruction.add32(.r2, .r3)
            Instruction.stx(.w, .r10, .r2, hashSlot)
            lookup(maps.hostPorts, keyAt: hashSlot)
            Statement.jump(.jeq, .r0, 0, to: noHosts)
            Instruction.ldx(.dw, .r4, .r0, 0)
            SKLookup.getLocalPort(ctx, into: .r3)
            Instruction.and(.r3, 63)
            Instruction.rsh(.r4, .r3)
            Instruction.and(.r4, 1)
            Statement.jump(.jeq, .r4, 0, to: noHosts)
            // A host binding is the most specific there is: a hit ends the search.
            lookup(maps.hosts, keyAt: generationSlot)
            Statement.jump(.jeq, .r0, 0, to: noHosts)
            lookup(inMapAt: .r0, keyAt: hostKey)
            Statement.jump(.jne, .r0, 0, to: found)
            noHosts

            // Prefix key: [0, protocol, 0, 0] + the address already in the host key.
            Instruction.st(.w, .r10, prefixKey, Int32(Layout.fullPrefixLength))
            Instruction.ldx(.b, .r2, .r10, hostKey)
            Instruction.stx(.b, .r10, .r2, prefixKey + 5)
            for word in Int16(0)..<4 {
                Instruction.ldx(.w, .r3, .r10, hostKey + 4 + 4 * word)
                Instruction.stx(.w, .r10, .r3, prefixKey + 8 + 4 * word)
            }
            // Port key: [1, 0, 0, 0] + ruleset + big-endian port.
            Instruction.st(.w, .r10, portKey, Int32(Layout.fullPortLength))
            Instruction.st(.b, .r10, portKey + 4, Int32(Layout.portKind))
            SKLookup.getLocalPort(ctx, into: .r3)
            Instruction.be(.r3, 16)
            Instruction.stx(.h, .r10, .r3, portKey + 12)

            // Longest prefix first; if its rule set lacks the port, the next shorter prefix.
            for _ in 0..<Layout.maxNesting {
                lookup(inMapAt: trie, keyAt: prefixKey)
                Statement.jump(.jeq, .r0, 0, to: nomatch)
                Instruction.ldx(.w, .r2, .r0, 0)
                Instruction.stx(.w, .r10, .r2, portKey + 8)
                Instruction.ldx(.w, .r3, .r0, 4)
                Instruction.sub(.r3, 1)
                Instruction.stx(.w, .r10, .r3, prefixKey)
                lookup(inMapAt: trie, keyAt: portKey)
                Statement.jump(.jne, .r0, 0, to: found)
                Instruction.ldx(.w, .r3, .r10, prefixKey)
                Statement.jump(.jlt, .r3, 32, to: nomatch)
            }
            Statement.ja(to: nomatch)

            found
            Instruction.ldx(.w, .r8, .r0, 0)  // label
            Instruction.ldx(.w, .r9, .r0, 4)  // binding
            Instruction.stx(.w, .r10, .r9, bindingSlot)
            Instruction.lsh(.r8, 2)
            SKLookup.getProtocol(ctx, into: .r2)
            Instruction.jump(.jne, .r2, ipprotoUDP, offset: 1)
            Instruction.add(.r8, 2)
            SKLookup.getFamily(ctx, into: .r2)
            Instruction.jump(.jne, .r2, ebpfAFInet6, offset: 1)
            Instruction.add(.r8, 1)
            Instruction.stx(.w, .r10, .r8, destinationSlot)
            counting("found") {
                bindingCounter(maps, .lookups)
                let countedFamily = Label("counted_family")
                SKLookup.getFamily(ctx, into: .r2)
                Statement.jump(.jne, .r2, ebpfAFInet6, to: countedFamily)
                bindingCounter(maps, .lookupsIPv6)
                countedFamily
            }

            // How many socket slots the destination uses.
            lookup(maps.socketCounts, keyAt: destinationSlot)
            Statement.jump(.jeq, .r0, 0, to: miss)
            Instruction.ldx(.w, .r2, .r0, 0)
            Statement.jump(.jeq, .r2, 0, to: miss)
            Instruction.jump(.jle, .r2, Int32(Layout.socketsPerDestination), offset: 1)
            Instruction.mov(.r2, Int32(Layout.socketsPerDestination))
            Instruction.stx(.w, .r10, .r2, countSlot)
            // One socket slot in use (the common case): no hash needed.
            Statement.jump(.jne, .r2, 1, to: hashed)
            Instruction.ldx(.w, .r4, .r10, destinationSlot)
            Instruction.mul32(.r4, Int32(Layout.socketsPerDestination))
            Instruction.stx(.w, .r10, .r4, scratchKey)
            lookup(maps.sockets, keyAt: scratchKey)
            Statement.jump(.jne, .r0, 0, to: assign)
            Statement.ja(to: miss)
            hashed
            // A hash of the remote address and port picks the first slot to try.
            SKLookup.getRemoteIPv4(ctx, into: .r3)
            for word in 0..<4 {
                SKLookup.getRemoteIPv6(ctx, word: word, into: .r4)
                Instruction.xor(.r3, .r4)
            }
            SKLookup.getRemotePort(ctx, into: .r4)
            Instruction.xor(.r3, .r4)
            // Fibonacci hashing: the top half of the 32-bit product mixes every input bit.
            Instruction.mul32(.r3, Int32(bitPattern: 0x9e37_79b1))
            Instruction.rsh32(.r3, 16)
            Instruction.mod32(.r3, .r2)
            Instruction.stx(.w, .r10, .r3, hashSlot)
            // Try each slot in use from there; closed sockets have left their slots empty.
            for attempt in 0..<Int32(Layout.socketsPerDestination) {
                Instruction.ldx(.w, .r2, .r10, countSlot)
                Statement.jump(.jle, .r2, attempt, to: miss)
                Instruction.ldx(.w, .r3, .r10, hashSlot)
                Instruction.add32(.r3, attempt)
                Instruction.mod32(.r3, .r2)
                Instruction.ldx(.w, .r4, .r10, destinationSlot)
                Instruction.mul32(.r4, Int32(Layout.socketsPerDestination))
                Instruction.add32(.r4, .r3)
                Instruction.stx(.w, .r10, .r4, scratchKey)
                lookup(maps.sockets, keyAt: scratchKey)
                Statement.jump(.jne, .r0, 0, to: assign)
            }
            Statement.ja(to: miss)

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
            Instruction.mov(.r8, .r0)
            Instruction.mov(.r1, .r9)
            Instruction.call(.skRelease)
            Statement.jump(.jeq, .r8, 0, to: passVerdict)
            counting("error") {
                bindingCounter(maps, .errors)
                let other = Label("error_other")
                let counted = Label("error_counted")
                for (code, counter) in [
                    (AssignError.alreadySelected, Layout.DestinationCounter.errorExists),
                    (.socketNotSupported, .errorSocketState), (.protocolMismatch, .errorProtocol),
                    (.familyMismatch, .errorFamily),
                ] {
                    let next = Label("error_not_\(code.rawValue)")
                    Statement.jump(.jne, .r8, -code.rawValue, to: next)
                    destinationCounter(maps, counter)
                    Statement.ja(to: counted)
                    next
                }
                other
                destinationCounter(maps, .errorOther)
                counted
            }
            drop
            SKLookup.drop()

            passVerdict
            SKLookup.pass()

            // A binding matched but no socket is there: refuse, so the traffic does not reach
            // some other socket bound to the address.
            miss
            counting("miss") {
                bindingCounter(maps, .misses)
                destinationCounter(maps, .misses)
            }
            SKLookup.drop()

            // No binding: the kernel's normal lookup goes on.
            nomatch
            counting("nomatch") {
                Instruction.st(.w, .r10, scratchKey, 0)
                lookup(maps.globalMetrics, keyAt: scratchKey)
                Instruction.jump(.jeq, .r0, 0, offset: 3)
                Instruction.ldx(.dw, .r1, .r0, 0)
                Instruction.add(.r1, 1)
                Instruction.stx(.dw, .r0, .r1, 0)
            }
            notLoaded
            SKLookup.pass()
        }
    }

    /// `r0 = bpf_map_lookup_elem(map, r10 + key)`: the value, or NULL.
    private static func lookup(_ map: Map, keyAt key: Int16) -> [Statement] {
        [
            .loadMap(.r1, map), .instruction(.mov(.r2, .r10)), .instruction(.add(.r2, Int32(key))),
            .instruction(.call(.mapLookupElem)),
        ]
    }

    /// `r0 = bpf_map_lookup_elem(register, r10 + key)`, for an inner map found by a lookup.
    private static func lookup(inMapAt register: Register, keyAt key: Int16) -> [Statement] {
        [
            .instruction(.mov(.r1, register)), .instruction(.mov(.r2, .r10)), .instruction(.add(.r2, Int32(key))),
            .instruction(.call(.mapLookupElem)),
        ]
    }

    /// Wraps statements so they run only for real traffic (ingress interface ≠ 0), not in test runs.
    private static func counting(_ name: String, @ProgramBuilder _ body: () -> [Statement]) -> [Statement] {
        let skip = Label("uncounted_\(name)")
        return [.instruction(.ldx(.w, .r2, .r10, countingSlot)), .jump(.jeq, .r2, 0, to: skip)] + body() + [
            .label(skip)
        ]
    }

    /// `binding_metrics[binding].counter += 1`, atomically (the array is shared by all CPUs).
    private static func bindingCounter(_ maps: DataPlaneMaps, _ counter: Layout.BindingCounter) -> [Statement] {
        lookup(maps.bindingMetrics, keyAt: bindingSlot) + [
            .instruction(.jump(.jeq, .r0, 0, offset: 2)),
            .instruction(.mov(.r1, 1)),
            .instruction(.atomic(.dw, .add, .r0, .r1, Int16(counter.rawValue * 8))),
        ]
    }

    /// `destination_metrics[destination].counter += 1` on this CPU.
    private static func destinationCounter(_ maps: DataPlaneMaps, _ counter: Layout.DestinationCounter) -> [Statement] {
        let offset = Int16(counter.rawValue * 8)
        return lookup(maps.destinationMetrics, keyAt: destinationSlot) + [
            .instruction(.jump(.jeq, .r0, 0, offset: 3)),
            .instruction(.ldx(.dw, .r1, .r0, offset)),
            .instruction(.add(.r1, 1)),
            .instruction(.stx(.dw, .r0, .r1, offset)),
        ]
    }
}
