import BPF
import Foundation
import KernelTestSupport
import Testing

@testable import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// What each command needs, shown by running it as root holding only some capabilities
/// (setpriv limits the bounding set, so the command gets exactly those): CAP_BPF and
/// CAP_NET_ADMIN run every command but `register-pid`, which takes a descriptor from another
/// process and so needs CAP_SYS_PTRACE over it; neither capability alone loads anything, and
/// CAP_BPF alone reads.
/// CAP_SYS_ADMIN is never needed (the state opens its objects by pin, never by id).
@Suite(needsRoot, .enabled(if: setprivExecutable != nil, "needs setpriv: apt-get install util-linux"))
struct LeastPrivilegeTests {
    /// Runs sksteer in the fixture's namespace with only `capabilities` (e.g. `["bpf", "net_admin"]`).
    func run(_ f: Fixture, _ capabilities: [String], _ arguments: [String]) throws -> (status: Int32, errors: String) {
        guard let executable = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
        let errors = Pipe()
        let bounding = "-all" + capabilities.map { ",+\($0)" }.joined()
        let (process, output) = try spawn(
            in: f.namespace, URL(fileURLWithPath: setprivExecutable!),
            ["--inh-caps=-all", "--bounding-set=\(bounding)", "--", executable.path]
                + arguments + ["--bpffs", f.bpffs.path], errors: errors)
        _ = output.fileHandleForReading.readDataToEndOfFile()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    @Test func whatEachCommandNeeds() throws {
        try exclusively {
            let f = try Fixture()
            _ = try Dispatcher.unload(namespace: f.namespace, bpffs: f.bpffs.path)
            let least = ["bpf", "net_admin"]
            // Neither capability alone creates the state, and a refusal says what is missing.
            for alone in [["bpf"], ["net_admin"]] {
                let refused = try run(f, alone, ["load"])
                #expect(refused.status == 1 && refused.errors.contains("CAP_BPF and CAP_NET_ADMIN"), "\(refused)")
                #expect(try run(f, least, ["unload"]).status == 0)
            }
            for command in [
                ["load"], ["bind", "web", "tcp", "127.0.0.1", "80"], ["bindings"], ["status"],
                ["explain", "tcp", "127.0.0.1", "80"], ["metrics"], ["unbind", "web", "tcp", "127.0.0.1", "80"],
            ] {
                let outcome = try run(f, least, command)
                #expect(outcome.status == 0, "\(command): \(outcome.errors)")
            }
            // Reading takes CAP_BPF alone (and, on Linux 6.18 here, no capability at all: the
            // pins' file permissions decide).
            for command in [["status"], ["bindings"], ["metrics"]] {
                #expect(try run(f, ["bpf"], command).status == 0, "\(command)")
            }
            // register-pid takes a descriptor of this (more privileged) test process.
            let socket = try f.namespace.run { try Socket.bound(.tcp, .loopback4, port: 7990) }
            let registerPID = ["register-pid", "\(getpid())", "web", "tcp", "127.0.0.1", "7990"]
            let withoutPtrace = try run(f, least, registerPID)
            #expect(withoutPtrace.status == 1 && withoutPtrace.errors.contains("CAP_SYS_PTRACE"), "\(withoutPtrace)")
            let withPtrace = try run(f, least + ["sys_ptrace"], registerPID)
            #expect(withPtrace.status == 0, "\(withPtrace.errors)")
            #expect(try f.dispatcher(readOnly: true).status().destinations.contains { $0.destination.label == "web" })
            #expect(try run(f, least, ["unload"]).status == 0)
            _ = socket
        }
    }
}
