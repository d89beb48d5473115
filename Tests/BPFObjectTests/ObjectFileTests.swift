import BPFAssembly
import BPFObject
import KernelTestSupport
import Testing

/// The object parser, without the kernel: clang's output for the C programs of
/// `Tests/CPrograms` read into programs, maps and global data; both byte orders and every
/// `-mcpu`; every malformed or unsupported input a typed error, never a trap.
@Suite(CPrograms.available) struct ObjectFileTests {
    func object(_ name: String, flags: [String] = [], target: String = "bpf", source: String? = nil) throws
        -> ObjectFile
    {
        try ObjectFile(bytes: try CPrograms.bytes(name, source: source, flags: flags, target: target), name: name)
    }

    /// Where each BPF-to-BPF call of a linked program lands.
    func callTargets(_ program: ObjectProgram) -> [Int] {
        var slot = 0
        var targets: [Int] = []
        for instruction in program.instructions {
            if instruction.opcode == 0x85 && instruction.src.rawValue == 1 {
                targets.append(slot + Int(instruction.immediate) + 1)
            }
            slot += instruction.slotCount
        }
        return targets
    }

    @Test func programsCallsAndGlobalData() throws {
        let object = try object("globals")
        #expect(object.license == "GPL")
        #expect(object.btf != nil)
        #expect(object.programs.map(\.name) == ["steer"])
        let steer = try #require(object.program(named: "steer"))
        #expect(steer.section == "sk_lookup")
        #expect(steer.type.programType == 30 && steer.type.expectedAttachType == 36)
        // The entry first, then the static subprogram and the global one from .text.
        #expect(steer.functions.map(\.name) == ["steer", "wanted", "count_steered"])
        let starts = steer.functions.map(\.slot)
        #expect(Set(callTargets(steer)) == Set(starts.dropFirst()))
        #expect(steer.functionInfo.map(\.slot) == starts.map(UInt32.init))
        #expect(!steer.lineInfo.isEmpty)
        #expect(steer.lineInfo.allSatisfy { $0.slot < UInt32(steer.slotCount) })
        #expect(steer.lineInfo.map(\.slot) == steer.lineInfo.map(\.slot).sorted())
        #expect(steer.lineInfo.allSatisfy { $0.location.hasPrefix("globals.c:\($0.line): ") && $0.line > 0 })
        #expect(steer.sourceLine(atSlot: 0)?.hasPrefix("globals.c:") == true)
        let references = Set(steer.references.map(\.reference))
        #expect(
            references == [
                .map("sockets"), .data(section: ".rodata", offset: 0), .data(section: ".data", offset: 0),
                .data(section: ".bss", offset: 0),
            ])
        for (index, _) in steer.references { #expect(steer.instructions[index].isLoadImm64) }
        #expect(object.dataSections.map(\.name).sorted() == [".bss", ".data", ".rodata"])
        let rodata = try #require(object.dataSections.first { $0.name == ".rodata" })
        #expect(
            rodata.isReadOnly && rodata.initialContents == [1, 0, 0, 0]
                && rodata.mapName(object: "globals") == "globals.rodata")
        #expect(rodata.variables.map(\.name) == ["server_key"])
        let bss = try #require(object.dataSections.first { $0.name == ".bss" })
        #expect(bss.initialContents == nil && !bss.isReadOnly && bss.variables.map(\.name) == ["steered"])
    }

    @Test func mapDefinitionsOfEveryKind() throws {
        let object = try object("maptypes")
        func map(_ name: String) throws -> MapDefinition { try #require(object.map(named: name)) }
        #expect(try map("prefixes").type == 11 && map("prefixes").keySize == 8 && map("prefixes").flags == 1)
        #expect(try map("slots").type == 1 && map("slots").maxEntries == 16)
        #expect(try map("sockets").type == 18 && map("sockets").valueSize == 8)
        #expect(try map("lookups").type == 6 && map("lookups").passesBTF)
        #expect(try !map("sockets").passesBTF)
        let tables = try map("tables")
        #expect(tables.type == 12 && tables.valueSize == 4 && tables.maxEntries == 2)
        #expect(tables.inner.map { [$0.type, $0.keySize, $0.valueSize, $0.maxEntries, $0.flags] } == [2, 4, 4, 4, 0])
        #expect(tables.initialMaps == [1: "keys"])
        let shared = try self.object("shared", flags: ["-DSIDE=1"])
        #expect(shared.map(named: "shared_counts")?.pinning == MapDefinition.pinByName)
        #expect(shared.programs.map(\.name) == ["count_side1"])
        let legacy = try self.object("legacy")
        #expect(legacy.kernelVersion == 0x060100)
        #expect(
            legacy.maps.map {
                [$0.name, "\($0.type)", "\($0.keySize)", "\($0.valueSize)", "\($0.maxEntries)", $0.section]
            }
                == [["legacy_counts", "2", "4", "8", "2", "maps"]])
        #expect(legacy.programs.first?.type.programType == 1 && legacy.programs.first?.references.count == 1)
        let guide = try self.object("guide")
        #expect(guide.programs.map(\.name) == ["every_port", "port_filter", "tcp_only", "custom_filter"])
        #expect(guide.program(named: "custom_filter")?.section == "sk_lookup/custom_filter")
        #expect(guide.program(named: "custom_filter")?.type.programType == 30)
    }

    /// Big-endian objects decode to the same instructions as little-endian ones, for every
    /// instruction set version.
    @Test(arguments: ["v1", "v2", "v3", "v4"]) func bothByteOrdersAndEveryCPU(cpu: String) throws {
        for name in ["globals", "maptypes", "guide"] {
            let little = try object(name, flags: ["-mcpu=\(cpu)"], target: "bpfel")
            let big = try object(name, flags: ["-mcpu=\(cpu)"], target: "bpfeb")
            #expect(!little.isBigEndian && big.isBigEndian && little.isHostByteOrder != big.isHostByteOrder)
            #expect(little.programs.map(\.name) == big.programs.map(\.name))
            for (l, b) in zip(little.programs, big.programs) {
                // guide.c's bpf_htonl(127.0.0.1) is a different constant on each byte order.
                if name != "guide" { #expect(l.instructions == b.instructions, "\(name) \(l.name) -mcpu=\(cpu)") }
                #expect(l.slotCount == b.slotCount)
                #expect(l.references.map(\.instructionIndex) == b.references.map(\.instructionIndex))
                #expect(l.functions.map(\.slot) == b.functions.map(\.slot))
                #expect(l.lineInfo.count == b.lineInfo.count)
            }
            #expect(little.maps == big.maps)
            #expect(little.dataSections.map(\.name) == big.dataSections.map(\.name))
        }
    }

    @Test func unsupportedInputsAreNamed() throws {
        let core = try object("core")
        #expect(core.programs.first?.unsupported?.contains("CO-RE relocations") == true)
        #expect {
            try self.object("unknown")
        } throws: { ($0 as? ObjectError)?.kind == .unknownSection && "\($0)".contains("made_up/section") }
        let extern = """
            #include <linux/bpf.h>
            #include <bpf/bpf_helpers.h>
            extern __u32 LINUX_KERNEL_VERSION __kconfig;
            SEC("sk_lookup") int uses_extern(struct bpf_sk_lookup *ctx) { return LINUX_KERNEL_VERSION > 1 ? SK_PASS : SK_DROP; }
            char _license[] SEC("license") = "GPL";
            """
        #expect {
            try self.object("extern", source: extern)
        } throws: { ($0 as? ObjectError)?.kind == .unsupported && "\($0)".contains("LINUX_KERNEL_VERSION") }
        let staticEntry = """
            #include <linux/bpf.h>
            #include <bpf/bpf_helpers.h>
            SEC("sk_lookup") static int hidden(struct bpf_sk_lookup *ctx) { return SK_PASS; }
            SEC("sk_lookup") int visible(struct bpf_sk_lookup *ctx) { return hidden(ctx); }
            char _license[] SEC("license") = "GPL";
            """
        #expect {
            try self.object("static_entry", source: staticEntry)
        } throws: { "\($0)".contains("static function hidden") }
        let unknownMap = """
            #include <linux/bpf.h>
            #include <bpf/bpf_helpers.h>
            struct { __uint(type, 99); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32); } odd SEC(".maps");
            SEC("sk_lookup") int uses_odd(struct bpf_sk_lookup *ctx) { return SK_PASS; }
            char _license[] SEC("license") = "GPL";
            """
        #expect {
            try self.object("unknown_map", source: unknownMap)
        } throws: { ($0 as? ObjectError)?.kind == .unsupported && "\($0)".contains("map odd has type 99") }
        #expect(throws: ObjectError(.notBPFObject, "the file does not start with the ELF magic (\\x7fELF)")) {
            try ObjectFile(bytes: Array("#!/bin/sh\n".utf8), name: "script")
        }
        // An ELF object of this machine, not of BPF.
        let host = try CPrograms.bytes("host", source: "int f(void) { return 1; }\n", target: "x86_64-linux-gnu")
        #expect { try ObjectFile(bytes: host, name: "host") } throws: {
            ($0 as? ObjectError)?.kind == .notBPFObject && "\($0)".contains("EM_BPF")
        }
    }

    /// Every prefix of an object is refused with a typed error.
    @Test func truncatedObjectsThrow() throws {
        let bytes = try CPrograms.bytes("guide")
        _ = try ObjectFile(bytes: bytes, name: "guide")
        var refused = 0
        for length in 0..<bytes.count {
            do {
                _ = try ObjectFile(bytes: Array(bytes.prefix(length)), name: "guide")
            } catch {
                refused += 1
            }
        }
        #expect(refused == bytes.count)
    }

    /// Random damage (seeded, replayable: the seed is in the test's arguments) either parses or
    /// throws an ObjectError; a trap would end the test process.
    @Test(arguments: [UInt64(1), 2, 3]) func mutatedObjectsNeverTrap(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let originals = try ["globals", "maptypes", "legacy"].map { try CPrograms.bytes($0) }
        var parsed = 0
        var refused = 0
        for _ in 0..<1500 {
            var bytes = originals.randomElement(using: &random)!
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<4, using: &random) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &random)
                case 1: bytes[at] ^= 1 << UInt8.random(in: 0..<8, using: &random)
                case 2:
                    // A 32-bit field set to an extreme.
                    let value = [UInt32.max, 0, 0x7fff_ffff, 0x8000_0000, UInt32(bytes.count)].randomElement(
                        using: &random)!
                    for i in 0..<4 where at + i < bytes.count {
                        bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * i))
                    }
                default:
                    for i in 0..<8 where at + i < bytes.count { bytes[at + i] = 0xff }
                }
            }
            do {
                _ = try ObjectFile(bytes: bytes, name: "mutated")
                parsed += 1
            } catch {
                refused += 1
            }
        }
        #expect(parsed + refused == 1500)
        #expect(refused > 0)
    }
}
