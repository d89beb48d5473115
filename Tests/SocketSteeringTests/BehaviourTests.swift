import BPF
import Foundation
import KernelTestSupport
import SKLookup
import Synchronization
import Testing

@testable import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

@Suite(needsRoot)
struct BehaviourTests {
    /// Several sockets per label: connections spread over all of them; closing one loses
    /// none of the others' traffic; a socket registered twice is a no-op.
    @Test func severalSocketsPerLabel() throws {
        try exclusively {
            let f = try Fixture()
            for index in 0..<4 { try f.serve("s\(index)", .tcp, .loopback4, UInt16(7600 + index), label: "pool") }
            #expect(try f.dispatcher().register(f.servers[0].socket, label: "pool").allSatisfy(\.alreadyRegistered))
            try f.bind("pool", "tcp", "127.0.0.10", "*")
            var seen: [String: Int] = [:]
            for port in UInt16(1000)..<1200 { seen[try f.land(.tcp, "127.0.0.10", port), default: 0] += 1 }
            #expect(Set(seen.keys) == ["s0", "s1", "s2", "s3"], "\(seen)")
            #expect(seen.values.allSatisfy { $0 >= 20 }, "\(seen)")
            // Close s1 (stop it and drop the last reference to its socket): its share moves to
            // the others; nothing is refused.
            f.servers.removeAll { $0.name == "s1" }
            var after: [String: Int] = [:]
            for port in UInt16(1000)..<1200 { after[try f.land(.tcp, "127.0.0.10", port), default: 0] += 1 }
            #expect(Set(after.keys) == ["s0", "s2", "s3"], "\(after)")
            // Connections that went to a live socket before still go to it.
            let status = try f.dispatcher(readOnly: true).status()
            #expect(status.destinations.first { $0.destination.label == "pool" }?.sockets.count == 3)
        }
    }

    /// An SO_REUSEPORT group keeps working: one registered socket, the kernel spreads over the group.
    @Test func reuseportGroupBehindADestination() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("g1", .tcp, .loopback4, 7650, label: "group", reusePort: true)
            try f.serve("g2", .tcp, .loopback4, 7650, reusePort: true)  // same group, not registered
            try f.bind("group", "tcp", "127.0.0.20", "*")
            let seen = Set(try (0..<64).map { _ in try f.land(.tcp, "127.0.0.20", 443) })
            #expect(seen == ["g1", "g2"])
        }
    }

    /// UDP and TCP over IPv6, and IPv4 traffic to a dual-stack socket registered once.
    @Test func ipv6AndDualStack() throws {
        try exclusively {
            let f = try Fixture()
            try f.namespace.addAddress(IPAddress("fd00::53")!)
            try f.serve("dns6", .udp, .loopback6, 7653, label: "dns")
            try f.serve("dual", .tcp, .any6, 7654, label: "web", v6Only: false)
            try f.bind("dns", "udp", "fd00::53", "53")
            try f.bind("web", "tcp", "::1", "80")
            try f.bind("web", "tcp", "127.0.0.1", "80")
            #expect(try f.land(.udp, "fd00::53", 53) == "dns6")
            #expect(try f.land(.tcp, "::1", 80) == "dual")
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "dual")
            let destinations = try f.dispatcher(readOnly: true).status().destinations.filter {
                $0.destination.label == "web"
            }
            #expect(Set(destinations.map(\.destination.ipv6)) == [false, true])
            #expect(destinations.allSatisfy { $0.sockets.count == 1 && $0.lookups == 1 })
        }
    }

    /// unregister empties a destination: its traffic is then refused and counted as misses.
    @Test func unregisterEmptiesADestination() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 7660, label: "web")
            try f.bind("web", "tcp", "127.0.0.1", "80")
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            try f.dispatcher().unregister(label: "web", transport: .tcp, ipv6: false)
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "refused")
            let status = try f.dispatcher(readOnly: true).status()
            #expect(status.destinations.first { $0.destination.label == "web" }?.misses == 1)
            #expect(status.destinations.first { $0.destination.label == "web" }?.sockets.isEmpty == true)
            // The socket is still open and can come back.
            try f.dispatcher().register(f.servers[0].socket, label: "web")
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
        }
    }

    /// The counters count exactly the connections made.
    @Test func metricsCountExactlyWhatWasSent() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 7700, label: "web")
            try f.bind("web", "tcp", "127.0.0.1", "80")
            try f.bind("gone", "tcp", "127.0.0.1", "81")
            for _ in 0..<5 { #expect(try f.land(.tcp, "127.0.0.1", 80) == "web") }
            for _ in 0..<3 { #expect(try f.land(.tcp, "127.0.0.1", 81) == "refused") }
            for _ in 0..<2 { #expect(try f.land(.tcp, "127.0.0.1", 82) == "refused") }
            let status = try f.dispatcher(readOnly: true).status()
            func destination(_ label: String) -> DestinationStatus {
                status.destinations.first { $0.destination.label == label && !$0.destination.ipv6 }!
            }
            let (web, gone) = (destination("web"), destination("gone"))
            #expect((web.lookups, web.misses, web.errors.values.reduce(0, +)) == (5, 0, 0))
            #expect((gone.lookups, gone.misses) == (3, 3))
            #expect(status.noMatch == 2)
            let text = status.prometheusText(version: "test")
            #expect(text.contains(#"sksteer_destination_lookups_total{label="web",family="ipv4",protocol="tcp"} 5"#))
            #expect(text.contains(#"sksteer_destination_misses_total{label="gone",family="ipv4",protocol="tcp"} 3"#))
            #expect(text.contains(#"sksteer_destination_bindings{label="web",family="ipv4",protocol="tcp"} 1"#))
            #expect(text.contains("sksteer_no_match_total 2"))
            #expect(text.contains(#"sksteer_destination_sockets{label="web",family="ipv4",protocol="tcp"} 1"#))
            // A test run (explain) is not counted.
            let explanation = try f.dispatcher(readOnly: true).explain(.tcp, .loopback4, 80)
            #expect(explanation.binding?.label == "web")
            #expect(explanation.destination?.label == "web")
            #expect(
                try f.dispatcher(readOnly: true).status().destinations.first { $0.destination.label == "web" }?.lookups
                    == 5)
            let refused = try f.dispatcher(readOnly: true).explain(.tcp, .loopback4, 81)
            #expect(refused.verdict == "SK_DROP")
            let none = try f.dispatcher(readOnly: true).explain(.udp, .loopback4, 81)
            #expect(none.binding == nil && none.verdict == "SK_PASS" && none.socket == nil)
        }
    }

    /// Upgrade under load: a client connecting in a loop sees no failure across 100 upgrades;
    /// bindings, sockets and counters survive.
    @Test func upgradeUnderLoadDropsNothing() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 7800, label: "web")
            try f.bind("web", "tcp", "127.0.0.1", "80")
            let outcome = try underLoad(f, expecting: ["web"], address: "127.0.0.1", port: 80) {
                for _ in 0..<100 { _ = try Dispatcher.upgrade(namespace: f.namespace, bpffs: f.bpffs.path) }
            }
            #expect(outcome.failures.isEmpty, "\(outcome.failures.prefix(3))")
            #expect(outcome.successes > 50)
            #expect(try f.dispatcher(readOnly: true).bindings() == [binding("web", "tcp", "127.0.0.1", "80")])
            #expect(
                try f.dispatcher(readOnly: true).status().destinations.first { $0.destination.label == "web" }!.lookups
                    >= UInt64(outcome.successes))
        }
    }

    /// State of layout 2 (one map element per group record) is refused until `upgrade`
    /// migrates it to pages, keeping every binding, socket and connection; then changes work.
    @Test func layoutTwoIsMigratedByUpgrade() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 0, label: "web")
            try f.serve("wide", .tcp, .loopback4, 0, label: "wide")
            try f.bind("web", "tcp", "127.0.0.1", "80")
            try f.bind("wide", "tcp", "127.0.0.0/8", "*")
            try f.bind("web", "udp", "::/0", "53")
            // Ten port sets on one prefix: a group of two records.
            for port in 1000..<1010 { try f.bind("web", "tcp", "127.0.0.2", "\(port)") }
            let before = try f.dispatcher(readOnly: true).bindings()
            // Write the groups as layout 2 did, one record per element, over both copies.
            do {
                let d = try f.dispatcher()
                var ids: [String: UInt32] = [:]
                for (id, name) in try d.labelNames() { ids[name] = id }
                for copy in 0..<2 {
                    let old = try Map.create(
                        type: .hash, keySize: GroupRecord.keySize, valueSize: GroupRecord.valueSize,
                        maxEntries: 65536, flags: Map.noPreallocate, name: "sks_groups")
                    for (key, group) in try d.ruleSet(copy: copy).groups {
                        for (page, value) in GroupRecord.encode(group, labels: ids).enumerated() {
                            try old.update(GroupRecord.key(key, page: UInt16(page)), value)
                        }
                    }
                    let path = "\(d.directory)/c\(copy)-groups"
                    unlink(path)
                    try old.pin(at: path)
                }
                var meta = try d.maps.readMeta()
                meta.schema = 2
                try d.maps.writeMeta(meta)
            }
            #expect {
                try f.bind("web", "tcp", "127.0.0.1", "81")
            } throws: { "\($0)".contains("run sksteer upgrade") }
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            let result = try Dispatcher.upgrade(namespace: f.namespace, bpffs: f.bpffs.path)
            #expect(result.migratedFrom == 2)
            let d = try f.dispatcher()
            #expect(try d.maps.readMeta().schema == Layout.schemaVersion)
            for copy in 0..<2 {
                #expect(d.maps.copies[copy].groups.keySize == GroupPages.keySize)
                #expect(Set(try d.bindings(copy: copy)) == Set(before), "copy \(copy)")
            }
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            #expect(try f.land(.tcp, "127.0.0.2", 1009) == "web")
            #expect(try f.land(.tcp, "127.0.0.3", 80) == "wide")
            try d.bind(binding("web", "tcp", "127.0.0.2", "1010"))
            try d.unbind(binding("web", "tcp", "127.0.0.2", "1000"))
            #expect(try f.land(.tcp, "127.0.0.2", 1010) == "web")
            #expect(try f.land(.tcp, "127.0.0.2", 1000) == "wide")
            #expect(try d.bindings().count == before.count)
        }
    }

    /// Host tables start small (a hash map allocates its whole bucket array when it is
    /// created) and grow with their entries: a change that fills one is written to a larger
    /// table holding the same entries, in each copy while it is idle; a whole-set apply sizes
    /// them for its rules, and shrinks them. Real connections land as the bindings say
    /// throughout, on both copies.
    @Test func hostTablesGrowAndShrinkWithTheirEntries() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 0, label: "web")
            try f.serve("web6", .tcp, .loopback6, 0, label: "web")
            let lane = Lane(transport: .tcp, ipv6: false)
            func tables() throws -> [Map] {
                let d = try f.dispatcher(readOnly: true)
                return (0..<2).map { d.maps.copies[$0].tables[lane]![.host]! }
            }
            let initial = CopyMaps.initialHostEntries
            #expect(try tables().map(\.maxEntries) == [initial, initial])
            // The kernel's own account of a table's memory (it was 64 MiB at the old fixed size).
            for table in try tables() {
                let bytes = try table.chargedMemory()
                #expect(bytes > 0 && bytes < 1 << 20, "\(bytes) bytes")
            }
            let addresses = (0..<1500).map { "127.1.\($0 / 250).\($0 % 250 + 1)" }
            let hosts = addresses.map { binding("web", "tcp", $0, "80") }
            try f.dispatcher().apply(adding: Array(hosts[..<1000]), removing: [])
            #expect(try tables().map(\.maxEntries) == [initial, initial])
            let before = try #require(try f.dispatcher(readOnly: true).status(findOwners: false).mapMemoryBytes)
            // 1000 + 500 do not fit in 1024: both copies grow.
            try f.dispatcher().apply(adding: Array(hosts[1000...]), removing: [])
            let grown = CopyMaps.hostEntries(for: initial + 500, capacity: 65536)
            #expect(grown > initial)
            #expect(try tables().map(\.maxEntries) == [grown, grown])
            // status counts the larger bucket arrays (16 bytes a bucket, both copies).
            let after = try #require(try f.dispatcher(readOnly: true).status(findOwners: false).mapMemoryBytes)
            #expect(after - before >= 2 * (grown - initial) * 16, "\(before) → \(after) bytes")
            let shown = try f.runSksteer(["status"])
            #expect(shown.output.contains("MiB of kernel memory"), "\(shown.output)")
            #expect(try tables().map { try $0.keys().count } == [1500, 1500])
            #expect(try f.dispatcher(readOnly: true).bindings().count == 1500)
            for round in 0..<2 {
                for index in [0, 999, 1000, 1499] {
                    #expect(try f.land(.tcp, addresses[index], 80) == "web", "round \(round) #\(index)")
                }
                #expect(try f.land(.tcp, "127.1.7.1", 80) == "refused")
                // Switches to the other copy.
                try f.bind("web", "tcp", "::1", "80")
                #expect(try f.land(.tcp, "::1", 80) == "web6")
                try f.dispatcher().unbind(binding("web", "tcp", "::1", "80"))
            }
            // A whole-set apply (not the incremental path) of two bindings shrinks them again.
            try f.dispatcher().apply([hosts[0], binding("web", "tcp", "::1", "80")], incrementalUpTo: 0)
            #expect(try tables().map(\.maxEntries) == [initial, initial])
            #expect(try tables().map { try $0.keys().count } == [1, 1])
            #expect(try f.land(.tcp, addresses[0], 80) == "web")
            #expect(try f.land(.tcp, addresses[1], 80) == "refused")
            #expect(try f.land(.tcp, "::1", 80) == "web6")
        }
    }

    /// A copy's binding listing (`groups`) has as many buckets as its bindings need: a change
    /// that passes 8 bindings a bucket regroups it (in each copy while it is idle), a
    /// whole-set apply of far fewer bindings regroups it down. The listing, real connections
    /// and the next changes stay right; the table's memory follows its pages.
    @Test func groupTablesFollowTheirBindings() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 0, label: "web")
            func buckets() throws -> [Int] {
                let d = try f.dispatcher(readOnly: true)
                return try (0..<2).map { try d.groupBuckets(copy: $0) }
            }
            func memory() throws -> [Int] {
                let d = try f.dispatcher(readOnly: true)
                return try (0..<2).map { try d.maps.copies[$0].groups.chargedMemory() }
            }
            #expect(try buckets() == [16, 16])
            let addresses = (0..<1000).map { "127.1.\($0 / 250).\($0 % 250 + 1)" }
            let hosts = addresses.map { binding("web", "tcp", $0, "80") }
            try f.dispatcher().apply(adding: Array(hosts[..<100]), removing: [])
            #expect(try buckets() == [16, 16])
            let small = try memory()
            try f.dispatcher().apply(adding: Array(hosts[100...]), removing: [])
            let wanted = GroupPages.bucketCount(bindings: 1000, capacity: 65536)
            #expect(wanted == 128)
            #expect(try buckets() == [wanted, wanted])
            #expect(try Set(f.dispatcher(readOnly: true).bindings()) == Set(hosts))
            // The other copy too: switch to it, and back.
            for round in 0..<2 {
                for index in [0, 99, 100, 999] {
                    #expect(try f.land(.tcp, addresses[index], 80) == "web", "round \(round) #\(index)")
                }
                try f.dispatcher().unbind(hosts[5])
                #expect(try f.land(.tcp, addresses[5], 80) == "refused")
                try f.bind("web", "tcp", addresses[5], "80")
            }
            #expect(try Set(f.dispatcher(readOnly: true).bindings()) == Set(hosts))
            let large = try memory()
            #expect(zip(small, large).allSatisfy { $0 < $1 }, "\(small) → \(large) bytes")
            // A whole-set apply of two bindings regroups both copies down.
            try f.dispatcher().apply([hosts[0], hosts[999]], incrementalUpTo: 0)
            #expect(try buckets() == [16, 16])
            #expect(try Set(f.dispatcher(readOnly: true).bindings()) == [hosts[0], hosts[999]])
            #expect(try memory().allSatisfy { $0 < large.min()! })
            #expect(try f.land(.tcp, addresses[0], 80) == "web")
            #expect(try f.land(.tcp, addresses[1], 80) == "refused")
            try f.bind("web", "tcp", addresses[1], "80")
            #expect(try f.land(.tcp, addresses[1], 80) == "web")
        }
    }

    /// A table's lookup is left out of the program while the table is empty, and a lane with
    /// no entries at all has no code; each comes back with its first entry. The other copy,
    /// brought up to date after a switch, has the same code at the next switch. The listing,
    /// the active copy and the per-binding counters still read right from a program that
    /// reads neither the port flags nor the counters, and real connections land as the rules
    /// say throughout (UDP and IPv6 lanes among them).
    @Test func emptyTablesAreLeftOutOfTheProgram() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 0, label: "web")
            try f.serve("wide", .tcp, .loopback4, 0, label: "wide")
            try f.serve("net", .tcp, .loopback4, 0, label: "net")
            try f.serve("web6", .tcp, .loopback6, 0, label: "web")
            try f.serve("dns", .udp, .loopback4, 0, label: "dns")
            func attachedInstructions() throws -> Int {
                let directory = try f.dispatcher(readOnly: true).directory
                return try Program.openPinned(at: "\(directory)/program").info().instructionCount
            }
            let empty = try attachedInstructions()
            #expect(try f.dispatcher(readOnly: true).status(findOwners: false).bindings.isEmpty)
            #expect(try f.land(.tcp, "127.0.0.3", 80) == "refused")
            // Per-binding counters on, still nothing bound: the program refers to them.
            try f.dispatcher().enableBindingMetrics()
            #expect(try f.dispatcher(readOnly: true).status(findOwners: false).bindingMetrics?.counting == true)
            try f.dispatcher().disableBindingMetrics()
            #expect(try attachedInstructions() == empty)

            // Only an all-ports binding: no port flags, no host or exact lookups.
            try f.bind("wide", "tcp", "127.0.0.0/8", "*")
            let wildOnly = try attachedInstructions()
            #expect(wildOnly > empty)
            #expect(try f.dispatcher(readOnly: true).bindings() == [binding("wide", "tcp", "127.0.0.0/8", "*")])
            #expect(try f.land(.tcp, "127.0.0.3", 81) == "wide")
            // A host binding adds the port flags and the host probe.
            try f.bind("web", "tcp", "127.0.0.1", "80")
            let withHost = try attachedInstructions()
            #expect(withHost > wildOnly)
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            #expect(try f.land(.tcp, "127.0.0.3", 80) == "wide")
            // A prefix on one port adds the exact lookup.
            try f.bind("net", "tcp", "127.0.1.0/24", "82")
            let withExact = try attachedInstructions()
            #expect(withExact > withHost)
            #expect(try f.land(.tcp, "127.0.1.9", 82) == "net")
            #expect(try f.land(.tcp, "127.0.1.9", 83) == "wide")
            // Lanes of their own: IPv6 and UDP.
            try f.bind("web", "tcp", "::1", "80")
            try f.bind("dns", "udp", "127.0.0.0/8", "53")
            let fourLanes = try attachedInstructions()
            #expect(fourLanes > withExact)
            #expect(try f.land(.tcp, "::1", 80) == "web6")
            #expect(try f.land(.udp, "127.0.0.9", 53) == "dns")
            // The next change switches to the copy written after the last switch.
            try f.bind("net", "tcp", "127.0.1.0/24", "84")
            #expect(try attachedInstructions() == fourLanes)
            #expect(try f.land(.tcp, "127.0.1.9", 84) == "net")
            // And back down, table by table.
            for (unbound, instructions) in [
                (binding("dns", "udp", "127.0.0.0/8", "53"), nil),
                (binding("web", "tcp", "::1", "80"), withExact),
                (binding("net", "tcp", "127.0.1.0/24", "82"), nil),
                (binding("net", "tcp", "127.0.1.0/24", "84"), withHost),
                (binding("web", "tcp", "127.0.0.1", "80"), wildOnly),
                (binding("wide", "tcp", "127.0.0.0/8", "*"), empty),
            ] {
                try f.dispatcher().unbind(unbound)
                if let instructions { #expect(try attachedInstructions() == instructions, "\(unbound)") }
            }
            #expect(try f.land(.tcp, "127.0.0.3", 81) == "refused")
            #expect(try f.land(.tcp, "::1", 80) == "refused")
        }
    }

    /// State of layout 3 (host filter bits hashed from the whole address) is refused until
    /// `upgrade` adds the new bits of every host entry to both copies' filters; with only old
    /// bits (here: none), this sksteer's program would not find the host entries.
    @Test func layoutThreeIsMigratedByUpgrade() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 0, label: "web")
            try f.serve("web6", .tcp, .loopback6, 0, label: "web")
            try f.serve("wide", .tcp, .loopback4, 0, label: "wide")
            try f.serve("wide6", .tcp, .loopback6, 0, label: "wide")
            try f.bind("web", "tcp", "127.0.0.1", "80")
            try f.bind("web", "tcp", "::1", "80")
            try f.bind("wide", "tcp", "127.0.0.0/8", "*")
            try f.bind("wide", "tcp", "::/0", "*")
            // Changed once more so that both copies hold the host entries.
            try f.bind("wide", "tcp", "127.0.0.0/8", "81")
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            #expect(try f.land(.tcp, "::1", 80) == "web6")
            do {
                let d = try f.dispatcher()
                let zeros = (0..<UInt32(Layout.HostFilter.words)).map { (rawBytes(of: $0), rawBytes(of: UInt64(0))) }
                for copy in 0..<2 { try d.maps.copies[copy].hostFilter.updateBatch(zeros) }
                var meta = try d.maps.readMeta()
                meta.schema = 3
                try d.maps.writeMeta(meta)
            }
            // The filters say no host entries: the all-ports bindings win.
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "wide")
            #expect(try f.land(.tcp, "::1", 80) == "wide6")
            #expect {
                try f.bind("web", "tcp", "127.0.0.1", "82")
            } throws: { "\($0)".contains("run sksteer upgrade") }
            let result = try Dispatcher.upgrade(namespace: f.namespace, bpffs: f.bpffs.path)
            #expect(result.migratedFrom == 3)
            #expect(try f.dispatcher().maps.readMeta().schema == Layout.schemaVersion)
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            #expect(try f.land(.tcp, "::1", 80) == "web6")
            // The other copy was migrated too: the next change switches to it.
            try f.bind("web", "tcp", "127.0.0.1", "82")
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            #expect(try f.land(.tcp, "::1", 80) == "web6")
            #expect(try f.land(.tcp, "127.0.0.1", 82) == "web")
        }
    }

    /// State of a layout this sksteer cannot migrate (older or newer) is refused with what to
    /// do, and `unload` still removes it.
    @Test func otherLayoutsAreRefusedAndUnloadable() throws {
        try exclusively {
            let f = try Fixture()
            try f.bind("web", "tcp", "127.0.0.1", "80")
            for schema: UInt32 in [1, 99] {
                let dispatcher = try f.dispatcher()
                var meta = try dispatcher.maps.readMeta()
                meta.schema = schema
                try dispatcher.maps.writeMeta(meta)
                _ = consume dispatcher
                #expect {
                    try f.bind("web", "tcp", "127.0.0.1", "81")
                } throws: { "\($0)".contains(schema == 1 ? "cannot be migrated" : "newer sksteer") }
                #expect(throws: (any Error).self) {
                    try Dispatcher.upgrade(namespace: f.namespace, bpffs: f.bpffs.path)
                }
                let fixed = try Map.openPinned(
                    at: "\(try Dispatcher.stateDirectory(bpffs: f.bpffs.path, namespace: f.namespace))/meta")
                var restored = Meta(try fixed.lookup(rawBytes(of: UInt32(0)))!)
                restored.schema = Layout.schemaVersion
                try fixed.update(rawBytes(of: UInt32(0)), restored.bytes)
            }
            let directory = try Dispatcher.stateDirectory(bpffs: f.bpffs.path, namespace: f.namespace)
            var meta = try f.dispatcher().maps.readMeta()
            meta.schema = 99
            try f.dispatcher().maps.writeMeta(meta)
            try Dispatcher.unload(namespace: f.namespace, bpffs: f.bpffs.path)
            #expect(access(directory, F_OK) != 0)
        }
    }

    /// Atomic apply: while applies of 10,000 bindings alternate between two rule sets, every
    /// connection lands as the old set or the new set says, never as a mix would.
    @Test func applyIsAtomicUnderLoad() throws {
        try exclusively {
            let f = try Fixture()
            for name in ["A", "B", "parent"] { try f.serve(name, .tcp, .loopback4, 0, label: name) }
            func set(_ label: String) -> [Binding] {
                [binding("parent", "tcp", "127.0.0.0/16", "*")]
                    + (0..<2_999).map { i in binding(label, "tcp", "127.0.\(i / 250).\(i % 250 + 1)", "80") }
            }
            let (a, b) = (set("A"), set("B"))
            try f.dispatcher().apply(a)
            // 100 applies, each moving 2,999 bindings (over 2,000: the whole-set path), while connections
            // go to /32s across the set: a half-written or empty rule set would send one to
            // "parent" (a /32 whose entry is missing) or refuse it.
            let addresses = stride(from: 0, to: 2_999, by: 299).map { "127.0.\($0 / 250).\($0 % 250 + 1)" }
            let outcome = try underLoad(f, expecting: ["A", "B"], addresses: addresses, port: 80) {
                for round in 0..<100 { try f.dispatcher().apply(round % 2 == 0 ? b : a) }
            }
            #expect(outcome.failures.isEmpty, "\(outcome.failures.prefix(3))")
            #expect(outcome.successes > 100)
            #expect(try f.dispatcher(readOnly: true).bindings().count == 3_000)
        }
    }

    /// kill -9 during apply leaves one whole rule set in force: the old one or the new one.
    @Test func killedApplyLeavesOneWholeRuleSet() throws {
        try exclusively {
            let f = try Fixture()
            for name in ["A", "B"] { try f.serve(name, .tcp, .loopback4, 0, label: name) }
            func set(_ label: String) -> [Binding] {
                (0..<10_000).map { i in binding(label, "tcp", "127.0.\(i / 250).\(i % 250 + 1)", "80") }
            }
            try f.dispatcher().apply(set("A"))
            let file = f.bpffs.path.replacingOccurrences(of: "sksteer-bpffs", with: "sksteer-apply") + ".txt"
            try set("B").map { "\($0.label) tcp \($0.prefix) 80" }.joined(separator: "\n").write(
                toFile: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: file) }
            var outcomes = Set<String>()
            for delay in [5_000, 20_000, 60_000, 150_000, 400_000] as [UInt32] {
                try f.dispatcher().apply(set("A"))
                let (process, _) = try f.sksteer(["apply", file])
                usleep(delay)
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                // Every sampled address answers with the same label, and the listing agrees.
                let samples = try [1, 2_000, 5_000, 9_999].map { i in
                    try f.land(.tcp, "127.0.\(i / 250).\(i % 250 + 1)", 80)
                }
                #expect(Set(samples).count == 1, "delay \(delay)µs: \(samples)")
                let listed = Set(try f.dispatcher(readOnly: true).bindings().map(\.label))
                #expect(listed == Set(samples), "delay \(delay)µs")
                outcomes.insert(samples[0])
            }
            #expect(outcomes.isSubset(of: ["A", "B"]))
        }
    }

    /// Restart: the state survives the tool; a process registers its socket with
    /// register-pid from outside; when it exits, its successor registers with no gap.
    @Test func registerPIDAndRestart() throws {
        try exclusively {
            let f = try Fixture()
            guard sksteerExecutable() != nil else {
                Issue.record("sksteer is not built")
                return
            }
            try f.bind("svc", "tcp", "127.0.0.1", "8443")
            // A service in its own process: python3 serving its name on 127.0.0.1:7950.
            func service(_ name: String, port: Int) throws -> Process {
                let script = """
                    import socket, sys, threading
                    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", \(port))); s.listen(16); print("ready", flush=True)
                    threading.Timer(30, lambda: sys.exit(0)).start()
                    while True:
                        c, _ = s.accept(); c.sendall(b"\(name)"); c.close()
                    """
                let (process, output) = try spawn(
                    in: f.namespace, URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", script])
                _ = output.fileHandleForReading.availableData  // "ready"
                return process
            }
            let first = try service("first", port: 7950)
            defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
            let (register, output) = try f.sksteer([
                "register-pid", "\(first.processIdentifier)", "svc", "tcp", "127.0.0.1", "7950",
            ])
            register.waitUntilExit()
            #expect(register.terminationStatus == 0)
            #expect(
                String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains(
                    "registered"))
            #expect(try f.land(.tcp, "127.0.0.1", 8443) == "first")
            let owners = try f.dispatcher(readOnly: true).status().destinations.first { $0.destination.label == "svc" }?
                .sockets.first?.owners
            #expect(owners?.contains(first.processIdentifier) == true)

            // The successor registers before the first one exits: no gap.
            let second = try service("second", port: 7951)
            defer { if second.isRunning { kill(second.processIdentifier, SIGKILL) } }
            try f.dispatcher().register(
                fromProcess: second.processIdentifier, label: "svc", transport: .tcp, address: .loopback4, port: 7951)
            let both = Set(try (0..<40).map { _ in try f.land(.tcp, "127.0.0.1", 8443) })
            #expect(both == ["first", "second"])
            kill(first.processIdentifier, SIGKILL)
            first.waitUntilExit()
            #expect(Set(try (0..<20).map { _ in try f.land(.tcp, "127.0.0.1", 8443) }) == ["second"])
            // Nothing to register in a process without a matching socket: a clear error.
            #expect {
                try f.dispatcher().register(
                    fromProcess: second.processIdentifier, label: "svc", transport: .udp, address: .loopback4,
                    port: 7951)
            } throws: { "\($0)".contains("no unconnected UDP socket") }
        }
    }
}

struct LoadOutcome {
    var successes = 0
    var failures: [String] = []
}

/// Connects in a loop on another thread while `work` runs; every answer must be in `expecting`.
func underLoad(
    _ f: Fixture, expecting: Set<String>, address: String, port: UInt16, _ work: () throws -> Void
) throws -> LoadOutcome {
    try underLoad(f, expecting: expecting, addresses: [address], port: port, work)
}

/// Connections in a loop, to each of `addresses` in turn, while `work` runs.
func underLoad(
    _ f: Fixture, expecting: Set<String>, addresses: [String], port: UInt16, _ work: () throws -> Void
) throws -> LoadOutcome {
    let done = Atomic<Bool>(false)
    let outcome = Mutex(LoadOutcome())
    let namespace = f.namespace
    let endpoints = addresses.map { Endpoint(IPAddress($0)!, port) }
    let client = try JoinableThread {
        _ = try? namespace.run {
            var next = 0
            while !done.load(ordering: .relaxed) {
                let answer: String
                let endpoint = endpoints[next % endpoints.count]
                next += 1
                do {
                    answer = try NameServer.ask(.tcp, endpoint, timeoutMilliseconds: 1000)
                } catch {
                    answer = "\(error)"
                }
                outcome.withLock {
                    if expecting.contains(answer) { $0.successes += 1 } else { $0.failures.append(answer) }
                }
            }
        }
    }
    defer {
        done.store(true, ordering: .relaxed)
        client.join()
    }
    try work()
    usleep(20_000)
    done.store(true, ordering: .relaxed)
    client.join()
    return outcome.withLock { $0 }
}

@Suite(needsRoot)
struct InterfaceTests {
    /// systemd socket activation: LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID.
    @Test func registersActivatedSockets() throws {
        try exclusively {
            let f = try Fixture()
            let web = try f.serve("web", .tcp, .loopback4, 7960)
            let dns = try f.serve("dns", .udp, .loopback4, 7961)
            // Two consecutive descriptors, as systemd passes them.
            let (first, second) = web.socket.descriptor.withRawValue { a in
                dns.socket.descriptor.withRawValue { b -> (Int32, Int32) in
                    let base = fcntl(a, F_DUPFD, 200)
                    let next = dup2(b, base + 1)
                    return (base, next)
                }
            }
            defer {
                close(first)
                close(second)
            }
            var environment = ["LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:dns", "LISTEN_PID": "\(getpid())"]
            let named = try f.dispatcher().registerActivatedSockets(
                label: "svc", name: "dns", environment: environment, firstDescriptor: first)
            #expect(named.map(\.destination.transport) == [.udp])
            let all = try f.dispatcher().registerActivatedSockets(
                label: "svc", environment: environment, firstDescriptor: first)
            #expect(all.count == 2)
            #expect(all.first { $0.destination.transport == .udp }?.alreadyRegistered == true)
            try f.bind("svc", "tcp", "127.0.0.1", "80")
            try f.bind("svc", "udp", "127.0.0.53", "53")
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            #expect(try f.land(.udp, "127.0.0.53", 53) == "dns")
            environment["LISTEN_PID"] = "1"
            #expect(throws: SteeringError.self) {
                try f.dispatcher().registerActivatedSockets(
                    label: "svc", environment: environment, firstDescriptor: first)
            }
            #expect(throws: SteeringError.self) {
                try f.dispatcher().registerActivatedSockets(label: "svc", environment: [:])
            }
            // A socket-activated service that runs `sksteer register` as a child: LISTEN_PID
            // is the parent's.
            environment["LISTEN_PID"] = "\(getppid())"
            #expect(
                try f.dispatcher().registerActivatedSockets(
                    label: "svc", environment: environment, firstDescriptor: first
                ).count == 2)
            #expect {
                try f.dispatcher().registerActivatedSockets(label: "svc", environment: ["LISTEN_FDS": "abc"])
            } throws: { "\($0)".contains("LISTEN_FDS is 'abc', not a positive number") }
            var pipes: [Int32] = [0, 0]
            #expect(pipe(&pipes) == 0)
            defer { for p in pipes { close(p) } }
            #expect {
                try f.dispatcher().registerActivatedSockets(
                    label: "svc", environment: ["LISTEN_FDS": "1", "LISTEN_FDNAMES": "pipe"], firstDescriptor: pipes[0])
            } throws: { "\($0)".contains("descriptor \(pipes[0]) (pipe) is not a socket") }
        }
    }

    /// On kernels without `ctx->ingress_ifindex` (before 5.17; forced here with
    /// SKSTEER_NO_INGRESS_IFINDEX=1) the dispatcher loads a program that counts every run,
    /// steers and counts real connections as on newer kernels, and `explain` answers from an
    /// uncounted copy, so it counts nothing.
    @Test func withoutIngressIfindexItSteersAndCounts() throws {
        try exclusively {
            let f = try Fixture()
            try Dispatcher.unload(namespace: f.namespace, bpffs: f.bpffs.path)
            let older = ["SKSTEER_NO_INGRESS_IFINDEX": "1"]
            #expect(try f.runSksteer(["load"], environment: older).status == 0)
            #expect(try f.runSksteer(["bind", "A", "tcp", "127.0.0.1", "80"], environment: older).status == 0)
            try f.serve("A", .tcp, .loopback4, 0, label: "A")
            func lookups() throws -> UInt64? {
                try f.dispatcher(readOnly: true).status(findOwners: false).destinations.first {
                    $0.destination == Dispatcher.Destination(label: "A", transport: .tcp, ipv6: false)
                }?.lookups
            }
            // Each SYN runs the program, so a SYN the client had to send again (a slow,
            // emulated machine) is a lookup too: the kernel's own count of those is added.
            let retransmitsBefore = try f.synRetransmits()
            for _ in 0..<3 { #expect(try f.land(.tcp, "127.0.0.1", 80) == "A") }
            let syns = 3 + (try f.synRetransmits() - retransmitsBefore)
            let counted = try lookups()
            #expect(counted == UInt64(syns), "lookups \(String(describing: counted)) for \(syns) SYNs")
            let explained = try f.runSksteer(["explain", "tcp", "127.0.0.1", "80"], environment: older)
            #expect(explained.status == 0 && explained.output.contains("delivered"), "\(explained)")
            let afterExplain = try lookups()
            #expect(
                afterExplain == UInt64(syns), "explain counted: \(String(describing: afterExplain)) for \(syns) SYNs")
            // The attached program counts a test run too: it is the variant that does not read
            // ctx->ingress_ifindex.
            let directory = try f.dispatcher(readOnly: true).directory
            _ = try Program.openPinned(at: "\(directory)/program").testRun(
                Connection(.tcp, to: Endpoint(.loopback4, 80)))
            let afterTestRun = try lookups()
            #expect(
                afterTestRun == UInt64(syns + 1), "after a test run: \(String(describing: afterTestRun)), \(syns) SYNs")
        }
    }

    /// `apply -` and `plan /dev/stdin` read a pipe; a directory is named as such.
    @Test func bindingFilesFromPipes() throws {
        try exclusively {
            let f = try Fixture()
            guard let executable = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
            for (command, file) in [("apply", "-"), ("plan", "/dev/stdin")] {
                let script = "printf 'web tcp 127.0.0.1 80\\n' | \"$0\" \(command) \(file) --bpffs \(f.bpffs.path)"
                let (process, output) = try spawn(
                    in: f.namespace, URL(fileURLWithPath: "/bin/sh"), ["-c", script, executable.path])
                let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                #expect(process.terminationStatus == 0, "\(command) \(file): \(text)")
            }
            #expect(try f.dispatcher(readOnly: true).bindings() == [binding("web", "tcp", "127.0.0.1", "80")])
            let directory = try f.runSksteer(["apply", "/tmp"])
            #expect(directory.status == 1 && directory.errors.contains("/tmp: is a directory"), "\(directory.errors)")
        }
    }

    /// The state directory lets the owning group read, and nobody else in.
    @Test func stateDirectoryPermissions() throws {
        try exclusively {
            let f = try Fixture()
            let directory = try f.dispatcher(readOnly: true).directory
            var info = stat()
            #expect(stat(directory, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o750)
            for name in ["link", "program", "c0-tcp4-exact", "c1-groups", "sockets", "meta"] {
                #expect(stat("\(directory)/\(name)", &info) == 0)
                #expect(info.st_mode & 0o777 == 0o640, "\(name)")
            }
        }
    }

    /// Every bad input gets one line on standard error and exit status 1, and changes nothing.
    @Test func badInputFromTheCommandLine() throws {
        try exclusively {
            let f = try Fixture()
            #expect(try f.runSksteer(["bind", "web", "tcp", "127.0.0.1", "80"]).status == 0)
            let bad: [[String]] = [
                ["bind", "web", "tcp", "127.0.0.300", "80"], ["bind", "web", "tcp", "127.0.0.1", "70000"],
                ["bind", "web", "tcp", "127.0.0.1", "9-3"], ["bind", "web", "icmp", "127.0.0.1", "80"],
                ["bind", "other", "tcp", "127.0.0.1", "80"], ["unbind", "nobody", "tcp", "127.0.0.1", "80"],
                ["unregister", "nobody", "tcp", "ipv4"], ["register-pid", "999999", "web", "tcp", "127.0.0.1", "80"],
                ["explain", "tcp", "not-an-ip", "80"], ["apply", "/nonexistent"],
                ["status", "--netns", "/nonexistent"], ["bind", "web"], ["frobnicate"],
                ["bind", "web", "tcp", "127.0.0.1", "81", "--no-socket", "maybe"],
            ]
            for arguments in bad {
                let result = try f.runSksteer(arguments)
                #expect(result.status == 1, "\(arguments)")
                let lines = result.errors.split(separator: "\n")
                #expect(lines.count == 1 && lines[0].hasPrefix("sksteer: "), "\(arguments): \(result.errors)")
            }
            #expect(try f.dispatcher(readOnly: true).bindings() == [binding("web", "tcp", "127.0.0.1", "80")])
            // Not loaded: a clear line too.
            try Dispatcher.unload(namespace: f.namespace, bpffs: f.bpffs.path)
            let unloaded = try f.runSksteer(["status"])
            #expect(unloaded.status == 1 && unloaded.errors.contains("not loaded"), "\(unloaded.errors)")
            let version = try f.runSksteer(["--version"])
            #expect(version.status == 0 && version.output.hasPrefix("0."), "\(version)")
            let json = try f.runSksteer(["load", "--format", "json"])
            #expect(json.status == 0 && json.output.contains("\"result\" : \"loaded\""), "\(json.output)")
        }
    }
}
