import BPF
import Foundation
import KernelTestSupport
import Testing

@testable import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// How operators run it: `apply --watch` driven by a file (as a ConfigMap volume updates it),
/// systemd socket activation, shell completions.
@Suite(needsRoot)
struct OperationsTests {
    /// A ConfigMap volume as the kubelet writes it: `FILE -> ..data/FILE`, `..data -> ..VERSION`,
    /// and an update swaps `..data` with one rename.
    struct ConfigMapVolume {
        let directory: URL
        var version = 0
        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("sksteer-cm-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        var file: String { directory.appendingPathComponent("bindings").path }

        mutating func publish(_ text: String) throws {
            version += 1
            let versioned = directory.appendingPathComponent("..v\(version)")
            try FileManager.default.createDirectory(at: versioned, withIntermediateDirectories: true)
            try text.write(to: versioned.appendingPathComponent("bindings"), atomically: false, encoding: .utf8)
            let temporary = directory.appendingPathComponent("..data_tmp").path
            #expect(symlink("..v\(version)", temporary) == 0)
            #expect(rename(temporary, directory.appendingPathComponent("..data").path) == 0)
            if version == 1 { #expect(symlink("..data/bindings", file) == 0) }
        }

        /// An edit in place of the file behind the links (no event in the watched directory).
        func editInPlace(_ text: String) throws {
            try text.write(toFile: file, atomically: false, encoding: .utf8)
        }
    }

    /// `apply --watch` applies the file at start and again after each ConfigMap-style swap
    /// and each edit in place; a file that does not parse leaves the rules in force and says
    /// why once; real connections follow; SIGTERM stops it with status 0.
    @Test func applyWatchFollowsTheFile() throws {
        try exclusively {
            let f = try Fixture()
            try f.serve("A", .tcp, .loopback4, 7001, label: "a")
            try f.serve("B", .tcp, .loopback4, 7002, label: "b")
            var volume = try ConfigMapVolume()
            defer { try? FileManager.default.removeItem(at: volume.directory) }
            try volume.publish("a tcp 127.0.0.0/24 80\n")
            guard let executable = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
            let errors = Pipe()
            let (watcher, output) = try spawn(
                in: f.namespace, executable, ["apply", "--watch", volume.file, "--bpffs", f.bpffs.path], errors: errors)
            defer { if watcher.isRunning { kill(watcher.processIdentifier, SIGKILL) } }
            var said = read(output) { $0.contains("applied: 1 added") }
            #expect(said.contains("applied: 1 added, 0 removed, 0 unchanged"), "\(said)")
            #expect(try f.land(.tcp, "127.0.0.9", 80) == "A")

            try volume.publish("b tcp 127.0.0.0/24 80\nb tcp 127.0.0.0/24 443\n")
            said += read(output) { $0.contains("applied: 2 added, 1 removed") }
            #expect(said.contains("applied: 2 added, 1 removed, 0 unchanged"), "\(said)")
            #expect(try f.land(.tcp, "127.0.0.9", 80) == "B")
            #expect(try f.land(.tcp, "127.0.0.9", 443) == "B")

            try volume.publish("b tcp 127.0.0.0/24 eighty\n")
            let complaint = read(errors) { $0.contains("the rules in force stay") }
            #expect(complaint.contains("eighty"), "\(complaint)")
            #expect(complaint.contains("the rules in force stay"))
            #expect(try f.land(.tcp, "127.0.0.9", 443) == "B")

            try volume.editInPlace("a tcp 127.0.0.0/24 443\n")
            said += read(output) { $0.contains("applied: 1 added, 2 removed") }
            #expect(said.contains("applied: 1 added, 2 removed, 0 unchanged"), "\(said)")
            #expect(try f.land(.tcp, "127.0.0.9", 443) == "A")
            #expect(try f.land(.tcp, "127.0.0.9", 80) == "refused")  // unbound: the normal lookup finds nothing

            // The failing content was said once, not once a second.
            kill(watcher.processIdentifier, SIGTERM)
            #expect(exited(watcher), "SIGTERM did not stop apply --watch")
            #expect(watcher.terminationReason == .exit && watcher.terminationStatus == 0)
            let rest = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(!rest.contains("the rules in force stay"), "\(rest)")
            #expect(
                try f.dispatcher(readOnly: true).status(findOwners: false).bindings.map(\.description)
                    == ["tcp 127.0.0.0/24 443 → a"])
        }
    }

    /// On a terminal, `plan` and `apply` show the step they are at on one rewritten line of
    /// standard error and erase it; on a pipe they print only the result.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script"), "needs script: util-linux"))
    func progressOnlyOnATerminal() throws {
        try exclusively {
            let f = try Fixture()
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("sksteer-\(UUID().uuidString)")
            try "web tcp 127.0.0.0/24 80\n".write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            guard let sksteer = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
            // script(1) gives the command a terminal and copies what it writes.
            let (process, output) = try spawn(
                in: f.namespace, URL(fileURLWithPath: "/usr/bin/script"),
                ["-qec", "'\(sksteer.path)' apply '\(file.path)' --bpffs '\(f.bpffs.path)'", "/dev/null"])
            let seen = read(output) { $0.contains("applied:") }
            #expect(exited(process))
            #expect(seen.contains("\r\u{1B}[Ksksteer: read \(file.path)…"), "\(seen)")
            #expect(seen.contains("\r\u{1B}[Ksksteer: build the rule set…"))
            #expect(seen.contains("\r\u{1B}[K+ tcp 127.0.0.0/24 80 → web"), "erased before the result")
            #expect(seen.contains("applied: 1 added, 0 removed, 0 unchanged"))
            let piped = try f.runSksteer(["apply", file.path])
            #expect(piped.status == 0)
            #expect(piped.output == "applied: 0 added, 0 removed, 1 unchanged\n")
            #expect(piped.errors.isEmpty)
        }
    }

    /// `apply --watch -` is refused: there is nothing to watch.
    @Test func applyWatchNeedsAFile() throws {
        try exclusively {
            let f = try Fixture()
            let result = try f.runSksteer(["apply", "--watch", "-"])
            #expect(result.status == 1)
            #expect(result.errors == "sksteer: --watch needs a file, not standard input\n")
        }
    }
    /// The units in `Support/systemd`, with this build's sksteer, pass `systemd-analyze verify`.
    @Test(.enabled(if: systemdAnalyze != nil, "needs systemd-analyze: apt-get install systemd"))
    func theSystemdUnitsVerify() throws {
        guard let sksteer = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
        let units = sourceRoot.appendingPathComponent("Support/systemd")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sksteer-units-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        var names: [String] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: units.path).sorted() {
            let text = try String(contentsOf: units.appendingPathComponent(name), encoding: .utf8)
                .replacingOccurrences(of: "/usr/local/bin/sksteer", with: sksteer.path)
                .replacingOccurrences(of: "/usr/local/bin/example-web-server", with: "/bin/true")
            try text.write(to: scratch.appendingPathComponent(name), atomically: true, encoding: .utf8)
            names.append(scratch.appendingPathComponent(name).path)
        }
        #expect(names.count == 4)
        let (status, said) = try runProcess(systemdAnalyze!, ["verify", "--man=no"] + names)
        #expect(status == 0, "\(said)")
        // What systemd would run: every sksteer command line of the units parses.
        var checked = 0
        for name in names {
            for line in try String(contentsOfFile: name, encoding: .utf8).split(separator: "\n")
            where line.hasPrefix("Exec") && line.contains(sksteer.path) && !line.contains("/bin/sh") {
                let words = line.split(separator: "=", maxSplits: 1)[1].split(separator: " ").map(String.init)
                let help = Process()
                help.executableURL = sksteer
                help.arguments = Array(words.dropFirst()) + ["--help"]
                help.standardOutput = FileHandle.nullDevice
                help.standardError = FileHandle.nullDevice
                try help.run()
                help.waitUntilExit()
                #expect(help.terminationStatus == 0, "\(line)")
                checked += 1
            }
        }
        #expect(checked == 4, "load, apply, reload and apply --watch")
    }

    /// With the real `systemd-socket-activate`, a service that runs `sksteer register web
    /// --name web` as a child and then execs its server (as `example-web.service` does) has its
    /// socket steered to: connections to any address of the bound prefix reach it, and the
    /// socket stays registered because the server, not sksteer, holds it.
    @Test(.enabled(if: socketActivate != nil, "needs systemd-socket-activate: apt-get install systemd"))
    func aSocketActivatedServiceRegistersItsSocket() throws {
        try exclusively {
            let f = try Fixture()
            try f.bind("web", "tcp", "127.0.0.0/24", "80")
            guard let sksteer = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
            let server = """
                import socket
                s = socket.socket(fileno=3)
                while True:
                    c, _ = s.accept()
                    c.sendall(b"web\\n")
                    c.close()
                """
            let errors = Pipe()
            let (activator, _) = try spawn(
                in: f.namespace, URL(fileURLWithPath: socketActivate!),
                [
                    "-l", "127.0.0.1:8080", "--fdname=web", "/bin/sh", "-c",
                    "'\(sksteer.path)' register web --name web --bpffs '\(f.bpffs.path)' && exec python3 -c '\(server)'",
                ], errors: errors)
            defer { if activator.isRunning { kill(activator.processIdentifier, SIGKILL) } }
            let listening = read(errors) { $0.contains("Listening on") }
            #expect(listening.contains("Listening on 127.0.0.1:8080 as 3."), "\(listening)")
            func ask(_ address: String, _ port: UInt16) throws -> String {
                try f.namespace.run { () -> String in
                    let client = try Socket.connected(.tcp, to: IPAddress(address)!, port: port)
                    try client.setTimeout(milliseconds: 5000)
                    return String(decoding: try client.receive(), as: UTF8.self)
                }
            }
            // The first connection starts the service (it registers, then serves).
            #expect(try ask("127.0.0.1", 8080) == "web\n")
            for host in [1, 5, 200] { #expect(try ask("127.0.0.\(host)", 80) == "web\n") }
            let status = try f.dispatcher(readOnly: true).status(findOwners: true)
            let web = status.destinations.first { $0.destination.label == "web" }
            #expect(web?.sockets.count == 1)
            #expect(web?.sockets.first?.owners == [activator.processIdentifier], "the exec'd server holds it")
            #expect(web?.lookups == 3)
        }
    }
}

/// systemd's tools (Debian: `apt-get install systemd`; `.ci/run` installs it).
let systemdAnalyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}
let socketActivate = ["/usr/bin/systemd-socket-activate", "/bin/systemd-socket-activate"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

/// The package's directory, found from this file's path.
let sourceRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Completions, as `Scripts/install.sh` installs them; no root needed.
@Suite struct CompletionTests {
    /// The bash completion script is valid bash and completes the subcommands.
    @Test func bashCompletionIsValidAndNamesTheCommands() throws {
        guard let sksteer = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
        let generate = Process()
        generate.executableURL = sksteer
        generate.arguments = ["--generate-completion-script", "bash"]
        let output = Pipe()
        generate.standardOutput = output
        try generate.run()
        let script = output.fileHandleForReading.readDataToEndOfFile()
        generate.waitUntilExit()
        #expect(generate.terminationStatus == 0)
        let text = String(decoding: script, as: UTF8.self)
        for command in ["apply", "metrics", "register", "unload", "explain"] { #expect(text.contains(command)) }
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/bin/bash")
        check.arguments = ["-n"]
        let input = Pipe()
        check.standardInput = input
        try check.run()
        input.fileHandleForWriting.write(script)
        try input.fileHandleForWriting.close()
        check.waitUntilExit()
        #expect(check.terminationStatus == 0)
    }
}

/// Arguments are typed (protocol, family, address, prefix, ports, endpoint): a bad value is refused before anything
/// is opened, in one line with exit status 1; no root needed.
@Suite struct ArgumentTests {
    func run(_ arguments: [String]) throws -> (status: Int32, errors: String) {
        guard let sksteer = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
        let process = Process()
        process.executableURL = sksteer
        process.arguments = arguments + ["--bpffs", "/nonexistent"]
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, said)
    }

    @Test(arguments: [
        (["explain", "xtcp", "127.0.0.1", "80"], ["'xtcp'", "'tcp'", "'udp'"]),
        (["unregister", "web", "tcp", "ipv5"], ["'ipv5'", "'ipv4'", "'ipv6'"]),
        (["explain", "tcp", "127.0.0.x", "80"], ["'127.0.0.x'"]),
        (["bindings", "sctp"], ["'sctp'", "'any'"]),
        (["register-pid", "1", "web", "tcp", "::g", "80"], ["'::g'"]),
        (["bind", "web", "tcp", "127.0.0.0/33", "80"], ["'127.0.0.0/33'", "not an IPv4 or IPv6 address or prefix"]),
        (["bind", "web", "tcp", "127.0.0.1", "90-80"], ["'90-80'"]),
        (["unbind", "web", "udp", "::1", "70000"], ["'70000'"]),
        (["bindings", "tcp", "10.0.0.0/x"], ["'10.0.0.0/x'"]),
        (["explain", "tcp", "127.0.0.1", "80", "--from", "127.0.0.1"], ["'127.0.0.1'", "not IP:PORT"]),
    ])
    func badValuesAreOneLine(arguments: [String], named: [String]) throws {
        let (status, errors) = try run(arguments)
        #expect(status == 1)
        #expect(errors.split(separator: "\n").count == 1, "\(errors)")
        for word in named { #expect(errors.contains(word), "\(errors)") }
    }

    /// Case does not matter, as in binding files: these reach the dispatcher (and fail
    /// there, as none is loaded at /nonexistent), not the parser.
    @Test func protocolAndFamilyInAnyCase() throws {
        for arguments in [
            ["unregister", "web", "TCP", "IPv6"], ["explain", "Udp", "::1", "53"], ["bindings", "ANY"],
        ] {
            let (status, errors) = try run(arguments)
            #expect(status == 1)
            #expect(!errors.contains("invalid"), "\(arguments): \(errors)")
            #expect(errors.contains("/nonexistent"), "\(arguments): \(errors)")
        }
    }
}
