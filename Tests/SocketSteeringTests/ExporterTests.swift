import BPF
import Foundation
import KernelTestSupport
import Testing

@testable import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// promtool, Prometheus' own checker (Debian: `apt-get install prometheus`; `.ci/run` installs it).
let promtoolExecutable = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

/// Python with the official client's parser (`pip install prometheus_client`; `.ci/run` installs it).
let pythonWithPrometheusClient: String? = {
    for python in ["/usr/bin/env"] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["python3", "-c", "import prometheus_client.parser"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { continue }
        process.waitUntilExit()
        if process.terminationStatus == 0 { return python }
    }
    return nil
}()

/// `sksteer metrics --listen`: the exporter on SwiftNIO, under the clients the internet sends.
@Suite(needsRoot)
struct ExporterTests {
    /// A running exporter: its process and the address it printed.
    struct Exporter {
        var process: Process
        var port: UInt16
        var printed: String
        var errors: Pipe
        /// All it wrote to standard error up to the line that names the address, and maybe a little after.
        var seen: String
    }

    /// Starts `sksteer metrics --listen ADDRESS` in the namespace and waits for the line that
    /// names the bound address.
    func startExporter(_ f: Fixture, listen: String, more: [String] = []) throws -> Exporter {
        let errors = Pipe()
        guard let executable = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
        let (process, _) = try spawn(
            in: f.namespace, executable, ["metrics", "--listen", listen, "--bpffs", f.bpffs.path] + more, errors: errors
        )
        let text = read(errors) { $0.contains("/metrics\n") }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("serving metrics on http://") }),
            let portText = line.split(separator: ":").last?.split(separator: "/").first,
            let port = UInt16(portText)
        else {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            throw SteeringError.invalidInput("the exporter did not say where it listens: \(text)")
        }
        return Exporter(process: process, port: port, printed: String(line), errors: errors, seen: text)
    }

    /// Sends `request` and reads until the server closes (or 3 s pass): the whole response.
    func exchange(_ f: Fixture, port: UInt16, _ request: String, address: IPAddress = .loopback4) throws -> String {
        try f.namespace.run { () -> String in
            let client = try Socket.connected(.tcp, to: address, port: port)
            try client.setTimeout(milliseconds: 3000)
            _ = try client.send(Array(request.utf8))
            var response: [UInt8] = []
            while true {
                let chunk = try client.receive()
                if chunk.isEmpty { break }
                response += chunk
            }
            return String(decoding: response, as: UTF8.self)
        }
    }

    func scrape(_ f: Fixture, port: UInt16, _ target: String = "/metrics", method: String = "GET") throws -> String {
        try exchange(f, port: port, "\(method) \(target) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    }

    /// Methods, paths, query strings, HEAD, the real port for `:0`, and a clean stop on SIGTERM.
    @Test func answersAsHTTPSays() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 7970, label: "web")
            try f.bind("web", "tcp", "127.0.0.1", "80")
            #expect(try f.land(.tcp, "127.0.0.1", 80) == "web")
            let exporter = try startExporter(f, listen: "127.0.0.1:0")
            defer { if exporter.process.isRunning { kill(exporter.process.processIdentifier, SIGKILL) } }
            #expect(exporter.port != 0)
            #expect(exporter.printed == "serving metrics on http://127.0.0.1:\(exporter.port)/metrics")

            let metrics = try scrape(f, port: exporter.port)
            #expect(metrics.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(metrics.contains(#"sksteer_destination_lookups_total{label="web",family="ipv4",protocol="tcp"} 1"#))
            #expect(try scrape(f, port: exporter.port, "/metrics?name[]=x&y=1").hasPrefix("HTTP/1.1 200 OK\r\n"))

            let head = try scrape(f, port: exporter.port, method: "HEAD")
            #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(head.hasSuffix("\r\n\r\n"), "HEAD has no body")
            let body = metrics.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            #expect(head.lowercased().contains("content-length: \(body.utf8.count)\r\n"))

            for method in ["POST", "DELETE", "PUT"] {
                let refused = try scrape(f, port: exporter.port, method: method)
                #expect(refused.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"), "\(method)")
                #expect(refused.contains("Allow: GET, HEAD\r\n"))
            }
            #expect(try scrape(f, port: exporter.port, "/").hasPrefix("HTTP/1.1 404 Not Found\r\n"))
            #expect(try scrape(f, port: exporter.port, "/metricsX").hasPrefix("HTTP/1.1 404 Not Found\r\n"))
            #expect(try exchange(f, port: exporter.port, "\u{16}\u{03}\u{01}hello\r\n\r\n").hasPrefix("HTTP/1.1 400"))

            // Two requests on one keep-alive connection.
            let twice = try exchange(
                f, port: exporter.port,
                "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(twice.components(separatedBy: "HTTP/1.1 200 OK\r\n").count == 3)

            let stopping = ContinuousClock.now
            kill(exporter.process.processIdentifier, SIGTERM)
            #expect(exited(exporter.process), "SIGTERM did not stop the exporter")
            #expect(exporter.process.terminationReason == .exit && exporter.process.terminationStatus == 0)
            #expect(ContinuousClock.now - stopping < .seconds(3))
        }
    }

    /// At most 256 connections at once: of 300 idle ones, the 44 beyond the bound are closed
    /// as they arrive (the request deadline is 30 s here, so it closes none).
    @Test func holdsAtMost256Connections() throws {
        try exclusively {
            let f = try Fixture()
            let exporter = try startExporter(f, listen: "127.0.0.1:0", more: ["--request-timeout", "30"])
            defer { if exporter.process.isRunning { kill(exporter.process.processIdentifier, SIGKILL) } }
            let closed = try f.namespace.run { () -> Int in
                var held: [Socket] = []
                // In batches, so that the accept queue (backlog 256) never overflows.
                for index in 0..<300 {
                    held.append(try Socket.connected(.tcp, to: .loopback4, port: exporter.port))
                    if index % 50 == 49 { usleep(100_000) }
                }
                usleep(1_000_000)
                var closed = 0
                for socket in held {
                    try socket.setTimeout(milliseconds: 10)
                    if let bytes = try? socket.receive(), bytes.isEmpty { closed += 1 }
                }
                return closed
            }
            #expect(closed == 44)
            kill(exporter.process.processIdentifier, SIGTERM)
            #expect(exited(exporter.process), "SIGTERM did not stop the exporter")
            #expect(exporter.process.terminationStatus == 0)
        }
    }

    /// An exporter on an address a binding covers would lose its scrapes to the binding's
    /// label: it says so, naming the binding.
    @Test func warnsWhenABindingTakesItsAddress() throws {
        try exclusively {
            let f = try Fixture()
            try f.bind("proxy", "tcp", "127.0.0.0/24", "*")
            let exporter = try startExporter(f, listen: "127.0.0.1:0")
            defer { if exporter.process.isRunning { kill(exporter.process.processIdentifier, SIGKILL) } }
            kill(exporter.process.processIdentifier, SIGTERM)
            #expect(exited(exporter.process), "SIGTERM did not stop the exporter")
            let said =
                exporter.seen
                + String(decoding: exporter.errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(
                said.contains(
                    "warning: 127.0.0.1:\(exporter.port) is covered by the binding tcp 127.0.0.0/24 * → proxy:"
                        + " connections to it go to 'proxy', not to this exporter"), "\(said)")
        }
    }

    /// 150 hostile connections (idle, half a request, not HTTP) held open: every scrape is
    /// still answered within 1 s, and the idle ones are closed by the server (5 s deadline).
    @Test func scrapesAreAnsweredUnderAFloodOfIdleAndMalformedClients() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 7970, label: "web")
            try f.bind("web", "tcp", "127.0.0.0/24", "*")
            let exporter = try startExporter(f, listen: "[::1]:0")
            defer { if exporter.process.isRunning { kill(exporter.process.processIdentifier, SIGKILL) } }
            #expect(exporter.printed == "serving metrics on http://[::1]:\(exporter.port)/metrics")
            let hostile = try f.namespace.run { () -> [Socket] in
                var held: [Socket] = []
                for index in 0..<150 {
                    let socket = try Socket.connected(.tcp, to: .loopback6, port: exporter.port)
                    switch index % 3 {
                    case 1: _ = try socket.send(Array("GET /metr".utf8))
                    case 2: _ = try socket.send(Array("GET /metrics HTTP/1.1\r\nX-Slow: ".utf8))
                    default: break
                    }
                    held.append(socket)
                }
                return held
            }
            let started = ContinuousClock.now
            for _ in 0..<10 {
                let begun = ContinuousClock.now
                let response = try exchange(
                    f, port: exporter.port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    address: .loopback6)
                let took = ContinuousClock.now - begun
                #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
                #expect(took < .seconds(1), "a scrape took \(took) under the flood")
            }
            // The server closes what sent no complete request: recv sees the end of stream.
            let closed = try f.namespace.run { () -> Int in
                var closed = 0
                for socket in hostile {
                    try socket.setTimeout(milliseconds: 9000)
                    if let bytes = try? socket.receive(),
                        bytes.isEmpty
                            || String(decoding: bytes, as: UTF8.self)
                                .hasPrefix("HTTP/1.1 4")
                    {
                        closed += 1
                    }
                }
                return closed
            }
            #expect(closed == hostile.count)
            #expect(ContinuousClock.now - started < .seconds(12))
            kill(exporter.process.processIdentifier, SIGTERM)
            #expect(exited(exporter.process), "SIGTERM did not stop the exporter")
            #expect(exporter.process.terminationStatus == 0)
        }
    }

    /// The exposition, with traffic and several destinations, passes `promtool check metrics`
    /// and the official Python client's parser, and its counters never go down.
    @Test(.enabled(if: promtoolExecutable != nil, "needs promtool: apt-get install prometheus"))
    func expositionPassesPrometheusOwnCheckers() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("web", .tcp, .loopback4, 7970, label: "web")
            try f.serve("dns", .udp, .loopback4, 7953, label: "dns.v1:a/b")
            try f.bind("web", "tcp", "127.0.0.0/24", "80-90")
            try f.bind("dns.v1:a/b", "udp", "127.0.0.0/24", "53")
            try f.bind("gone", "tcp", "127.0.0.0/24", "443")
            for port: UInt16 in 80...85 { #expect(try f.land(.tcp, "127.0.0.\(port)", port) == "web") }
            #expect(try f.land(.udp, "127.0.0.9", 53) == "dns")
            #expect(try f.land(.tcp, "127.0.0.1", 443) == "refused")
            let first = try f.dispatcher(readOnly: true).status(findOwners: false).prometheusText(version: "test")

            let promtool = try feed(promtoolExecutable!, ["check", "metrics"], first)
            let said = promtool.output + promtool.errors
            #expect(promtool.status == 0, "promtool: \(said)")
            #expect(said.isEmpty, "promtool's lint: \(said)")

            if pythonWithPrometheusClient != nil {
                let parsed = try parseWithPythonClient(first)
                #expect(parsed["sksteer_destination_lookups_total|dns.v1:a/b|ipv4|udp"] == 1)
                #expect(parsed["sksteer_destination_lookups_total|web|ipv4|tcp"] == 6)
                #expect(parsed["sksteer_destination_misses_total|gone|ipv4|tcp"] == 1)
                #expect(parsed["sksteer_destination_has_socket|gone|ipv4|tcp"] == 0)
                #expect(parsed["sksteer_destination_bindings|web|ipv4|tcp"] == 1)
                #expect((parsed["sksteer_map_memory_bytes|||"] ?? 0) > 0)
                // More traffic: no counter goes down, the ones traffic reached go up.
                for port: UInt16 in 86...90 { #expect(try f.land(.tcp, "127.0.0.1", port) == "web") }
                let later = try parseWithPythonClient(
                    try f.dispatcher(readOnly: true).status(findOwners: false).prometheusText(version: "test"))
                for (key, value) in parsed where key.contains("_total") { #expect(later[key, default: -1] >= value) }
                #expect(later["sksteer_destination_lookups_total|web|ipv4|tcp"] == 11)
            }
        }
    }

    /// Samples by "name|label|family|protocol" as the official client parses them.
    func parseWithPythonClient(_ text: String) throws -> [String: Double] {
        let script = """
            import sys
            from prometheus_client.parser import text_string_to_metric_families
            for family in text_string_to_metric_families(sys.stdin.read()):
                for s in family.samples:
                    if 'reason' in s.labels: continue
                    key = "|".join([s.name] + [s.labels.get(k, "") for k in ("label", "family", "protocol")])
                    print(key.replace("\\n", " ") + "\\t" + repr(s.value))
            """
        let parser = try feed("/usr/bin/env", ["python3", "-c", script], text)
        #expect(parser.status == 0, "prometheus_client: \(parser.errors)")
        var samples: [String: Double] = [:]
        for line in parser.output.split(separator: "\n") {
            let parts = line.split(separator: "\t")
            if parts.count == 2, let value = Double(parts[1]) { samples[String(parts[0])] = value }
        }
        return samples
    }

    /// Runs a program with `input` on its standard input: its status, output and errors.
    func feed(_ executable: String, _ arguments: [String], _ input: String) throws -> (
        status: Int32, output: String, errors: String
    ) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let (stdin, stdout, stderr) = (Pipe(), Pipe(), Pipe())
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let output = String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errors = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output, errors)
    }
}
