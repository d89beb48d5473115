import BPF
import Foundation
import KernelTestSupport
import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// A throwaway namespace with a private bpffs and a loaded dispatcher, plus named servers.
final class Fixture {
    let namespace: NetworkNamespace
    let bpffs: BPFFileSystem.TemporaryMount
    var servers: [NameServer] = []

    init(maxBindings: Int = 65536) throws {
        namespace = try NetworkNamespace.makeThrowaway()
        bpffs = try BPFFileSystem.TemporaryMount()
        _ = try Dispatcher.load(namespace: namespace, bpffs: bpffs.path, maxBindings: maxBindings)
    }

    /// Opens the dispatcher (a new invocation, as the CLI does).
    func dispatcher(readOnly: Bool = false) throws -> Dispatcher {
        try Dispatcher.open(namespace: namespace, bpffs: bpffs.path, readOnly: readOnly)
    }

    /// Starts a server named `name` on `address:port` and registers it for `label`.
    @discardableResult
    func serve(
        _ name: String, _ transport: Socket.Transport, _ address: IPAddress, _ port: UInt16, label: String? = nil,
        v6Only: Bool = true, reusePort: Bool = false
    ) throws -> NameServer {
        let socket = try namespace.run {
            try Socket.bound(transport, address, port: port, reusePort: reusePort, v6Only: v6Only)
        }
        let server = try NameServer(name: name, socket: socket)
        servers.append(server)
        if let label { try dispatcher().register(socket, label: label) }
        return server
    }

    func bind(_ label: String, _ proto: String, _ prefix: String, _ ports: String) throws {
        try dispatcher().bind(Binding(label: label, protocol: proto, prefix: prefix, ports: ports))
    }

    /// Where a connection lands: the server's name, "refused", or "unanswered" (UDP).
    func land(_ transport: Socket.Transport, _ address: String, _ port: UInt16) throws -> String {
        let endpoint = Endpoint(IPAddress(address)!, port)
        return try namespace.run { () -> String in
            do {
                return try NameServer.ask(transport, endpoint, timeoutMilliseconds: 500)
            } catch let error as BPFError {
                if error.code == ECONNREFUSED { return "refused" }
                if error.code == EAGAIN { return "unanswered" }
                return "\(error)"
            }
        }
    }

    /// The namespace's count of SYNs sent again (`TcpExt: TCPSynRetrans` of
    /// `/proc/thread-self/net/netstat`, read from a thread inside it).
    func synRetransmits() throws -> Int {
        try namespace.run { () throws -> Int in
            let text = try String(contentsOfFile: "/proc/thread-self/net/netstat", encoding: .utf8)
            let lines = text.split(separator: "\n").filter { $0.hasPrefix("TcpExt:") }
            guard lines.count == 2 else { throw SteeringError.notLoaded("no TcpExt lines in netstat") }
            let names = lines[0].split(separator: " ")
            let values = lines[1].split(separator: " ")
            guard let index = names.firstIndex(of: "TCPSynRetrans"), index < values.count,
                let count = Int(values[index])
            else { throw SteeringError.notLoaded("no TCPSynRetrans in netstat") }
            return count
        }
    }

    deinit {
        for server in servers { server.stop() }
        _ = try? Dispatcher.unload(namespace: namespace, bpffs: bpffs.path)
    }
}

func binding(_ label: String, _ proto: String, _ prefix: String, _ ports: String) -> Binding {
    try! Binding(label: label, protocol: proto, prefix: prefix, ports: ports)
}

/// The sksteer executable built beside the tests.
func sksteerExecutable() -> URL? { builtExecutable("sksteer") }

/// Starts a process inside the namespace (a child inherits the namespace of the thread
/// that starts it). Its standard output is returned as a pipe.
func spawn(
    in namespace: NetworkNamespace, _ executable: URL, _ arguments: [String], errors: Pipe? = nil,
    environment: [String: String] = [:]
) throws -> (Process, Pipe) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = errors ?? FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    try namespace.run { try process.run() }
    return (process, output)
}

extension Fixture {
    /// `sksteer ARGS --bpffs … ` run as its own process inside the namespace.
    func sksteer(_ arguments: [String]) throws -> (Process, Pipe) {
        guard let executable = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
        return try spawn(in: namespace, executable, arguments + ["--bpffs", bpffs.path])
    }
}

extension Fixture {
    /// Runs sksteer to completion: exit status, standard output and standard error.
    func runSksteer(_ arguments: [String], environment: [String: String] = [:]) throws -> (
        status: Int32, output: String, errors: String
    ) {
        try SocketSteeringTests.runSksteer(
            arguments + ["--bpffs", bpffs.path], in: namespace, environment: environment)
    }
}

/// Runs sksteer to completion inside `namespace`: exit status, standard output and standard error.
func runSksteer(
    _ arguments: [String], in namespace: NetworkNamespace, environment: [String: String] = [:]
) throws -> (status: Int32, output: String, errors: String) {
    guard let executable = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
    let errors = Pipe()
    let (process, output) = try spawn(in: namespace, executable, arguments, errors: errors, environment: environment)
    let out = output.fileHandleForReading.readDataToEndOfFile()
    let err = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

/// What `pipe` has delivered by the time `done` holds or `seconds` pass: reads only what
/// poll(2) says is ready, so a silent writer cannot hang the test.
func read(_ pipe: Pipe, for seconds: Int = 20, until done: (String) -> Bool) -> String {
    var text = ""
    let fd = pipe.fileHandleForReading.fileDescriptor
    let deadline = ContinuousClock.now + .seconds(seconds)
    var buffer = [UInt8](repeating: 0, count: 4096)
    while !done(text), ContinuousClock.now < deadline {
        var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&ready, 1, 100) > 0 else { continue }
        let count = Glibc.read(fd, &buffer, buffer.count)
        if count <= 0 { break }
        text += String(decoding: buffer.prefix(count), as: UTF8.self)
    }
    return text
}

/// Waits at most `seconds` for `process` to exit, then kills it: whether it exited by itself.
func exited(_ process: Process, within seconds: Int = 10) -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while process.isRunning, ContinuousClock.now < deadline { usleep(20_000) }
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        return false
    }
    return true
}

/// The package's directory (where README.md is).
let packageDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// The shell block of the README marked `<!-- NAME -->` (up to `<!-- end -->`), as written.
func readmeBlock(_ name: String) throws -> String? {
    let readme = try String(contentsOf: packageDirectory.appendingPathComponent("README.md"), encoding: .utf8)
    guard let start = readme.range(of: "<!-- \(name) -->\n```sh\n"),
        let end = readme.range(of: "```\n<!-- end -->", range: start.upperBound..<readme.endIndex)
    else { return nil }
    return String(readme[start.upperBound..<end.lowerBound])
}
