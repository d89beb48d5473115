import Testing

@testable import BPFAssembly

struct AssemblyTests {
    @Test func labelsResolveCountingLoadImm64AsTwoSlots() throws {
        let done = Label("done")
        let program = try assemble {
            Statement.jump(.jeq, .r1, 0, to: done)  // slot 0
            Instruction.ldImm64(.r0, 1 as UInt64)  // slots 1–2
            Instruction.mov(.r0, 2)  // slot 3
            done  // slot 4
            Instruction.exit()
        }
        #expect(program.instructions[0].offset == 3)
        #expect(program.labelSlots[done] == 4)
        #expect(program.instructionIndex(atSlot: 4) == 3)
        #expect(program.instructionIndex(atSlot: 2) == nil)
        #expect(program.nearestLabel(atOrBefore: 4)?.label == done)
    }

    @Test func backwardJumpsGotolCallsAndFunctionAddresses() throws {
        let top = Label("top")
        let far = Label("far")
        let function = Label("function")
        let program = try assemble {
            top
            Instruction.mov(.r0, 0)
            Statement.call(function)
            Statement.loadFunction(.r2, function)
            Statement.gotol(to: far)
            Statement.ja(to: top)
            far
            Instruction.exit()
            function
            Instruction.exit()
        }
        let insns = program.instructions
        #expect(insns[1] == .callLocal(offset: 5))  // slot 1 → slot 7
        #expect(insns[2].immediate == 4)  // slot 2 → 7
        #expect(insns[3] == .gotol(offset: 1))  // slot 4 → 6
        #expect(insns[4] == .ja(offset: -6))  // slot 5 → 0
    }

    @Test func builderEvaluatesSwiftControlFlow() throws {
        let ports: [Int32] = [80, 443, 8080]
        let allow = Label("allow")
        let strict = true
        let program = try assemble {
            Instruction.ldx(.w, .r2, .r1, 60)
            for port in ports {
                Statement.jump(.jeq, .r2, port, to: allow)
            }
            if strict {
                Instruction.mov(.r0, 0)
            } else {
                Instruction.mov(.r0, 1)
            }
            Instruction.exit()
            allow
            [Instruction.mov(.r0, 1), .exit()]
        }
        #expect(program.instructions.count == 1 + 3 + 2 + 2)
        #expect(program.instructions[1].offset == 4)  // slot 1 → slot 6
        #expect(program.instructions[3].offset == 2)
        #expect(program.instructions[4] == .mov(.r0, 0))
    }

    @Test func arrayAPIForGeneratedCode() throws {
        let statements: [Statement] = (0..<3).map { .instruction(.mov(.r0, Int32($0))) } + [.instruction(.exit())]
        #expect(try assemble(statements).instructions.last == .exit())
    }

    @Test func labelErrorsNameLabelAndInstruction() {
        let missing = Label("missing")
        #expect {
            _ = try assemble([.instruction(.mov(.r0, 0)), .ja(to: missing)])
        } throws: { error in
            let e = error as? AssemblyError
            return e?.reason == .undefinedLabel && e?.instructionIndex == 1
                && e?.description.contains("missing") == true
        }
        let twice = Label("twice")
        #expect {
            _ = try assemble([.label(twice), .instruction(.exit()), .label(twice), .instruction(.exit())])
        } throws: { error in
            (error as? AssemblyError)?.reason == .duplicateLabel(firstSlot: 0)
        }
        let far = Label("far")
        var statements: [Statement] = [.ja(to: far)]
        statements += Array(repeating: .instruction(.mov(.r0, 0)), count: 40_000)
        statements += [.label(far), .instruction(.exit())]
        #expect {
            _ = try assemble(statements)
        } throws: { error in
            (error as? AssemblyError)?.reason == .offsetOutOfRange(offset: 40_000)
        }
        // gotol reaches it.
        statements[0] = .gotol(to: far)
        #expect(throws: Never.self) { _ = try assemble(statements) }
    }

    @Test func symbolicListingUsesLabelsAndHelperNames() throws {
        let instructions: [Instruction] = [
            .jump(.jeq, .r1, 0, offset: 1), .call(.skAssign), .callLocal(offset: 1), .exit(), .exit(),
        ]
        let listing = Disassembler.symbolic(for: instructions).listing(instructions)
        #expect(listing.contains("if r1 == 0x0 goto LBB2"))
        #expect(listing.contains("call bpf_sk_assign"))
        #expect(listing.contains("call LBB4"))
        #expect(listing.contains("LBB4:\n"))
        #expect(try TextAssembler.assemble(listing).instructions == instructions)
    }
}
