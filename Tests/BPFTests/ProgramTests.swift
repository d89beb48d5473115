import BPF
import BPFAssembly
import KernelTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(needsRoot)
struct ProgramTests {
    @Test func loadsSKLookupWithItsAttachTypeAndReportsInfo() throws {
        try exclusively {
            let program = try Program.load(TestPrograms.pass, type: .skLookup, name: "pass-through!")
            let info = try program.info()
            #expect(info.type == .skLookup)
            #expect(info.name == "passthrough")
            #expect(info.instructionCount == 2)
            #expect(info.tag.count == 16)
            #expect(info.id > 0)
            let translated = try program.translatedInstructions()
            #expect(translated.last == .exit())
            #expect(translated.first == .mov(.r0, 1))
        }
    }

    @Test func verifierRejectionNamesTheInstructionAndLabel() throws {
        try exclusively {
            let check = Label("check")
            let program = try assemble {
                Instruction.mov(.r0, 0)
                check
                Instruction.mov(.r0, 1)
                Instruction.ldx(.w, .r0, .r2, 0)  // r2 was never written
                Instruction.exit()
            }
            do {
                _ = try Program.load(program, type: .skLookup, name: "bad")
                Issue.record("the verifier accepted a read through an uninitialised register")
            } catch let error as BPFError {
                #expect(error.kind == .verifierRejected)
                #expect(error.failingInstruction == 2)
                #expect(error.failingLabel == "check+1")
                #expect(error.decisiveLine == "R2 !read_ok")
                #expect(error.description.contains("instruction 2 (check+1): R2 !read_ok"))
                #expect(error.verifierLog?.contains("processed") == true)
            }
        }
    }

    @Test func testRunReturnsVerdictAndDuration() throws {
        try exclusively {
            let program = try Program.load(TestPrograms.drop, type: .skLookup)
            var context = [UInt8](repeating: 0, count: 72)
            context.replaceSubrange(8..<12, with: rawBytes(of: UInt32(AF_INET)))
            context.replaceSubrange(12..<16, with: rawBytes(of: UInt32(IPPROTO_TCP)))
            let result = try program.testRun(context: context, repeat: 1000)
            #expect(result.returnValue == 0)
            #expect(result.context.count == 72)
        }
    }

    @Test func anUnknownProgramTypeSaysTheKernelIsTooOld() {
        exclusively {
            #expect {
                _ = try Program.load(TestPrograms.pass, type: ProgramType(rawValue: 999))
            } throws: { error in
                let e = error as? BPFError
                return e?.code == EINVAL && e?.hint?.contains("too old") == true
            }
        }
    }

    @Test func aMapNamedButNotGivenIsAClearError() throws {
        let program = try assemble {
            Statement.loadMap(.r1, MapReference(name: "sockets"))
            Instruction.mov(.r0, 1)
            Instruction.exit()
        }
        #expect {
            _ = try Program.load(program, type: .skLookup)
        } throws: { error in
            (error as? BPFError)?.hint?.contains("names map \"sockets\"") == true
        }
    }

    @Test func probesFindEverySKLookupFeatureHere() {
        let report = exclusively { FeatureReport.probe() }
        for probe in report.probes { #expect(probe.available, "\(probe.name): \(probe.detail ?? "")") }
        #expect(report.skLookupUsable)
        #expect(report.capabilities.contains("cap_bpf") || report.capabilities.contains("cap_sys_admin"))
        #expect(!report.kernelRelease.isEmpty)
    }
}
