import BPF
import KernelTestSupport
import Testing

/// The README walkthrough, "send every port of 127.0.0.1 to one server", kept true: its code
/// is the DocC snippet `Snippets/EveryPortToOneServer.swift`, which swift build compiles and
/// this test runs.
@Suite(needsRoot)
struct WalkthroughTests {
    @Test func everyPortOfOneAddressToOneServer() throws {
        try exclusively {
            guard let snippet = builtExecutable("EveryPortToOneServer") else {
                Issue.record("the snippet EveryPortToOneServer is not built: swift build")
                return
            }
            let (status, output) = try runProcess(snippet.path, [])
            #expect(status == 0, "\(output)")
            for port in [1, 22, 31337, 65535] {
                #expect(output.contains("port \(port) → 127.0.0.1:\(port)\n"), "\(output)")
            }
            #expect(output.contains("127.0.0.2:22 → refused"), "\(output)")
            #expect(output.contains("link runs program every_port"), "\(output)")
        }
    }
}
