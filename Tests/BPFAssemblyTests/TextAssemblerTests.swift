import Testing

@testable import BPFAssembly

struct TextAssemblerTests {
    @Test func readsTheGuidePortFilter() throws {
        let program = try TextAssembler.assemble(
            """
                r6 = r1                       # prologue
                w7 = *(u32 *)(r6 + 60)        // local_port
                if w7 == 8080 goto pass
                r0 = 0
                exit
            pass:
                r0 = 1
                exit
            """)
        #expect(
            program.instructions == [
                .mov(.r6, .r1), .ldx(.w, .r7, .r6, 60), .jump32(.jeq, .r7, 8080, offset: 2), .mov(.r0, 0), .exit(),
                .mov(.r0, 1), .exit(),
            ])
    }

    @Test func acceptsDecimalHexSignsAndBothRegisterNamesForLoads() throws {
        let a = try TextAssembler.assemble("r1 = *(u32 *)(r2 - 0x10)\nr1 += -5\nr2 = 0xffffffff\nr3 = 4294967296 ll")
        let b = try TextAssembler.assemble("w1 = *(u32 *)(r2 - 16)\nr1 += -0x5\nr2 = -1\nr3 = 0x100000000 ll")
        #expect(a.instructions == b.instructions)
    }

    @Test func errorsCarryLineAndColumn() {
        func failure(_ text: String) -> TextAssemblyError? {
            do {
                _ = try TextAssembler.assemble(text)
                return nil
            } catch { return error }
        }
        #expect(failure("exit\nr11 = 1")?.line == 2)
        #expect(failure("r1 = *(u32 *)(r2 + 70000)")?.column == 20)
        #expect(failure("r1 = *(u32 *)(r2 + 70000)")?.message.contains("16 bits") == true)
        #expect(failure("frobnicate r1")?.message.contains("unknown instruction") == true)
        #expect(failure("  r1 @ 3")?.column == 6)
        #expect(failure("goto nowhere")?.message.contains("nowhere") == true)
        #expect(failure("r1 = 1 2")?.message.contains("unexpected '2'") == true)
        #expect(failure("if r1 == w2 goto +1")?.line == 1)
        #expect(failure("w1 = 5 ll")?.message.contains("64-bit") == true)
    }

    @Test func helperNamesAndAnnotations() throws {
        let program = try TextAssembler.assemble(
            "call bpf_sk_assign\ncall 0x7c\ncall -0x1 # bpf2bpf\ncall 0x2a # kfunc\ncall 5 # other comment")
        #expect(
            program.instructions == [
                .call(.skAssign), .call(.skAssign), .callLocal(offset: -1), .callKfunc(btfID: 42),
                .call(HelperFunction(rawValue: 5)),
            ])
    }
}
