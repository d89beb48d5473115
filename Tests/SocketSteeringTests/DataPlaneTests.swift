import BPF
import BPFAssembly
import KernelTestSupport
import Testing

@testable import SocketSteering

@Suite(needsRoot)
struct DataPlaneTests {
    @Test func theGeneratedProgramPassesTheVerifier() throws {
        try exclusively {
            let maps = try StateMaps.create(capacity: 1024)
            for counting in [DataPlane.Counting.realTraffic, .everyRun, .never] {
                let assembly = try DataPlane.program(maps.dataPlane(copy: 0), counting: counting)
                let program = try Program.load(assembly, type: .skLookup, name: "sksteer")
                #expect(try program.info().instructionCount > 100, "\(counting)")
            }
        }
    }
}
