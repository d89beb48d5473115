import BPF
import BPFAssembly
import KernelTestSupport
import Testing

@testable import SocketSteering

@Suite(needsRoot)
struct DataPlaneTests {
    /// Every mix of empty and filled tables (each lane a different one), every counting mode,
    /// with and without per-binding counters: the verifier takes the program. No empty table
    /// is the whole program; all empty leaves only the lane choice and "no binding".
    @Test func theGeneratedProgramPassesTheVerifier() throws {
        try exclusively {
            var maps = try StateMaps.create(capacity: 1024)
            let tables = Table.allCases
            func empty(_ pattern: Int) -> Set<Table> {
                Set(tables.indices.filter { pattern & (1 << $0) != 0 }.map { tables[$0] })
            }
            for metrics in [false, true] {
                maps.bindingMetrics =
                    metrics
                    ? try Map.create(
                        type: .perCPUHash, keySize: Layout.BindingCounterKey.size,
                        valueSize: Layout.BindingCounter.size, maxEntries: 16, name: "sksteer_bmetrics")
                    : nil
                for counting in [DataPlane.Counting.realTraffic, .everyRun, .never] {
                    var instructions: [Int: Int] = [:]
                    for pattern in 0..<8 {
                        var dataPlane = try maps.dataPlane(copy: 0)
                        dataPlane.empty = Dictionary(
                            uniqueKeysWithValues: Lane.allCases.enumerated().map { ($1, empty((pattern + $0) % 8)) })
                        let program = try Program.load(
                            DataPlane.program(dataPlane, counting: counting), type: .skLookup, name: "sksteer")
                        instructions[pattern] = try program.info().instructionCount
                    }
                    var none = try maps.dataPlane(copy: 0)
                    none.empty = [:]
                    let full = try Program.load(
                        DataPlane.program(none, counting: counting), type: .skLookup, name: "sksteer")
                    let all = try maps.dataPlane(copy: 0)  // the maps are empty
                    let least = try Program.load(
                        DataPlane.program(all, counting: counting), type: .skLookup, name: "sksteer")
                    let most = try full.info().instructionCount
                    #expect(most > 100, "\(counting) metrics \(metrics)")
                    let fewest = try least.info().instructionCount
                    #expect(fewest < 50, "\(counting) metrics \(metrics): \(fewest)")
                    #expect(instructions.values.allSatisfy { $0 < most }, "\(counting) \(instructions)")
                }
            }
        }
    }
}
