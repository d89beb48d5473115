import BPFAssembly
import Testing

/// The README's first example, verbatim, so it stays true.
struct ReadmeTests {
    @Test func firstProgram() throws {
        let pass = Label("pass")
        let portFilter = try assemble {
            Instruction.mov(.r6, .r1)  // prologue: keep the context
            Instruction.ldx(.w, .r7, .r6, 60)  // r7 = ctx->local_port
            Statement.jump(.jeq, .r7, 8080, to: pass)
            Instruction.mov(.r0, 0)  // SK_DROP
            Instruction.exit()
            pass
            Instruction.mov(.r0, 1)  // SK_PASS
            Instruction.exit()
        }
        let text = Disassembler().lines(portFilter.instructions)
        #expect(
            text == [
                "r6 = r1", "w7 = *(u32 *)(r6 + 0x3c)", "if r7 == 0x1f90 goto +0x2", "r0 = 0x0", "exit", "r0 = 0x1",
                "exit",
            ])
    }
}
