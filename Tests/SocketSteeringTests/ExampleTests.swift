import BPF
import Foundation
import KernelTestSupport
import Testing

@testable import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// The examples in `Examples/`, run as their READMEs say, in a throwaway namespace with a
/// loaded dispatcher, and checked with real connections.
@Suite(needsRoot)
struct ExampleTests {
    /// Starts an example in the namespace and waits for its first line on standard output.
    func start(_ f: Fixture, _ name: String, _ arguments: [String]) throws -> (Process, String) {
        guard let executable = builtExecutable(name) else { throw SteeringError.notLoaded("\(name) is not built") }
        let errors = Pipe()
        let (process, output) = try spawn(
            in: f.namespace, executable, arguments + ["--bpffs", f.bpffs.path], errors: errors)
        let text = read(output) { $0.contains("\n") }
        if !process.isRunning || !text.contains("\n") {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw SteeringError.invalidInput("\(name) exited: \(said)")
        }
        return (process, text.split(separator: "\n").first.map(String.init) ?? "")
    }

    /// Runs a DocC snippet (`Snippets/NAME.swift`, which swift build compiles) to its end
    /// and returns what it printed.
    func runSnippet(_ name: String) throws -> String {
        guard let executable = builtExecutable(name) else { throw SteeringError.notLoaded("\(name) is not built") }
        let process = Process()
        process.executableURL = executable
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = read(output, for: 30) { _ in false }
        #expect(exited(process, within: 30), "\(name) did not finish: \(text)")
        #expect(process.terminationStatus == 0, "\(name): \(text)")
        return text
    }

    /// The snippets of the DocC articles do what the articles say they print.
    @Test func theDocumentationSnippetsRun() throws {
        try exclusively {
            let quickStart = try runSnippet("DispatcherQuickStart")
            #expect(quickStart.contains("127.0.0.9:80 reached the server, as 127.0.0.9:80"), "\(quickStart)")
            #expect(quickStart.contains("delivered to socket sk:0x") && quickStart.contains("of web ipv4 tcp, slot 0"))
            // EveryPortToOneServer is the README walkthrough: WalkthroughTests runs it.
        }
    }

    /// EveryPortServer: one SwiftNIO server answers on every TCP port of 127.0.0.1, and
    /// says which port each client chose; other addresses are untouched.
    @Test func theNIOServerAnswersOnEveryPortOfItsAddress() throws {
        try exclusively {
            let f = try Fixture()
            let (server, line) = try start(f, "EveryPortServer", ["127.0.0.1", "--label", "every"])
            defer { kill(server.processIdentifier, SIGKILL) }
            #expect(line == "serving every TCP port of 127.0.0.1 as 'every'")
            let ports: [UInt16] =
                [1, 22, 80, 443, 8080, 40000, 65535] + (0..<20).map { _ in UInt16.random(in: 1...65535) }
            for port in ports {
                let greeting = try f.namespace.run { () -> String in
                    let client = try Socket.connected(.tcp, to: .loopback4, port: port)
                    var bytes: [UInt8] = []
                    while true {
                        let chunk = try client.receive()
                        if chunk.isEmpty { break }
                        bytes += chunk
                    }
                    return String(decoding: bytes, as: UTF8.self)
                }
                #expect(greeting == "hello from port \(port)\n")
            }
            #expect(try f.land(.tcp, "127.0.0.2", 80) == "refused")
            let status = try f.dispatcher(readOnly: true).status(findOwners: true)
            #expect(status.bindings.map(\.description) == ["tcp 127.0.0.1/32 * → every"])
            #expect(
                status.destinations.first { $0.destination.label == "every" }?.sockets.first?.owners
                    == [server.processIdentifier])
            #expect(status.destinations.first { $0.destination.label == "every" }?.lookups == UInt64(ports.count))
        }
    }

    /// UDPFromAddress: datagrams to any address of 127.0.0.0/24 on one port reach the one
    /// socket, and each reply comes from the address the client sent to, so a connected
    /// client socket takes it.
    @Test func theUDPServiceAnswersFromTheAddressTheClientSentTo() throws {
        try exclusively {
            let f = try Fixture()
            let (service, line) = try start(f, "UDPFromAddress", ["127.0.0.0/24", "5300", "--label", "dns"])
            defer { kill(service.processIdentifier, SIGKILL) }
            #expect(line == "answering UDP 127.0.0.0/24 port 5300 as 'dns'")
            for host in [1, 9, 77, 255] {
                let target = IPAddress("127.0.0.\(host)")!
                let reply = try f.namespace.run { () -> String in
                    let client = try Socket.unbound(.udp, family: target.family)
                    try client.bind(to: Endpoint(IPAddress("127.0.1.1")!, 0))
                    try client.connect(to: Endpoint(target, 5300))
                    try client.setTimeout(milliseconds: 2000)
                    try client.send(Array("hi \(host)".utf8))
                    return String(decoding: try client.receive(), as: UTF8.self)
                }
                #expect(reply == "127.0.0.\(host) heard: hi \(host)")
            }
            // Outside the prefix, or on another port, the dispatcher does not steer.
            #expect(try f.land(.udp, "127.0.1.9", 5300) == "unanswered")
            #expect(try f.land(.udp, "127.0.0.9", 5301) == "unanswered")
        }
    }
}
