import Testing

@testable import BPFAssembly

/// A small deterministic generator so failures reproduce.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

struct RandomTests {
    /// Random valid instructions: a random form with random registers, offsets and immediates.
    @Test func randomValidInstructionsRoundTrip() throws {
        var rng = SplitMix(state: 0x5eed)
        var program: [Instruction] = []
        for _ in 0..<20_000 {
            var instruction = everyForm.randomElement(using: &rng)!
            // Re-randomise each field this form leaves free: keep a new value only if the
            // instruction stays valid.
            func attempt(_ change: (inout Instruction) -> Void) {
                var copy = instruction
                change(&copy)
                if copy.isValid { instruction = copy }
            }
            attempt { $0.dst = Register(rawValue: UInt8.random(in: 0...10, using: &rng)) }
            attempt { $0.src = Register(rawValue: UInt8.random(in: 0...10, using: &rng)) }
            attempt { $0.immediate = Int32.random(in: .min ... .max, using: &rng) }
            attempt { $0.offset = Int16.random(in: .min ... .max, using: &rng) }
            if instruction.isLoadImm64 { instruction.nextImmediate = Int32.random(in: .min ... .max, using: &rng) }
            #expect(instruction.isValid)
            program.append(instruction)
        }
        let bytes = program.encoded()
        #expect(try Instruction.decode(bytes) == program)
        let text = Disassembler().lines(program)
        let back = try TextAssembler.assemble(text.joined(separator: "\n"))
        #expect(back.instructions == program)
    }

    /// Random bytes never trap the decoder, and whatever decodes prints and reassembles.
    @Test func randomBytesNeverCrash() throws {
        var rng = SplitMix(state: 42)
        var decodedCount = 0
        for round in 0..<50_000 {
            // Mostly whole slots, sometimes a ragged tail.
            let length =
                Int.random(in: 0...4, using: &rng) * 8 + (round % 10 == 0 ? Int.random(in: 1...7, using: &rng) : 0)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Bias half the rounds towards known opcodes so decoding gets past the first byte.
            if round % 2 == 0 {
                for start in stride(from: 0, to: bytes.count - 7, by: 8) {
                    bytes[start] = everyForm.randomElement(using: &rng)!.opcode
                }
            }
            let instructions: [Instruction]
            do {
                instructions = try Instruction.decode(bytes)
            } catch {
                #expect(!error.description.isEmpty)
                continue
            }
            decodedCount += instructions.count
            let text = Disassembler().lines(instructions).joined(separator: "\n")
            #expect(try TextAssembler.assemble(text).instructions == instructions)
        }
        #expect(decodedCount > 20)
        // The disassembler never traps on raw field values either.
        for _ in 0..<20_000 {
            let raw = Instruction(
                opcode: UInt8.random(in: 0...255, using: &rng),
                dst: Register(rawValue: UInt8.random(in: 0...15, using: &rng)),
                src: Register(rawValue: UInt8.random(in: 0...15, using: &rng)),
                offset: Int16.random(in: .min ... .max, using: &rng),
                immediate: Int32.random(in: .min ... .max, using: &rng))
            #expect(!Disassembler().text(raw).isEmpty)
        }
    }

    /// Random text never traps the assembler.
    @Test func randomTextNeverCrashes() {
        var rng = SplitMix(state: 7)
        let alphabet = Array("r0123456789w =+-*/()<>&|^skbugotl:#x,[]ifcalex\n")
        for _ in 0..<20_000 {
            let text = String(
                (0..<Int.random(in: 0...30, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
            _ = try? TextAssembler.assemble(text)
        }
    }
}
