import ArgumentParser
import BPF
import BPFAssembly
import BPFObject
import Foundation
import SocketSteering

@main
struct SKSteer: AsyncParsableCommand {
    /// As ArgumentParser's, except that a usage error is one line on standard error and exit
    /// status 1, like every other bad input (help and --version print as usual).
    static func main() async {
        // A parent may have left SIGTERM and SIGINT blocked (threads of a test runner or of
        // dispatch do); `metrics --listen` and `apply --watch` stop on them.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGTERM)
        sigaddset(&stopSignals, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &stopSignals, nil)
        do {
            var command = try parseAsRoot()
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "bad arguments"
                FileHandle.standardError.write(Data("sksteer: \(message) (see sksteer --help)\n".utf8))
                Foundation.exit(1)
            }
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "sksteer",
        abstract: "Programmable socket lookup (BPF SK_LOOKUP) for Linux.",
        version: sksteerVersion,
        subcommands: [
            DemoCommand.self, Load.self, Unload.self, Upgrade.self, Version.self, Bind.self, Unbind.self,
            Bindings.self, Plan.self, Apply.self, Register.self, RegisterPID.self, Unregister.self, Status.self,
            Explain.self, Metrics.self, BindingMetricsCommand.self, BenchCommand.self, Doctor.self, Prog.self,
            LinkCommand.self, Disasm.self,
            Asm.self,
        ]
    )
}

/// A failure reported as one line on standard error, with a non-zero exit.
struct ToolError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Reads a whole file, a pipe, `/dev/stdin`, or standard input for `-`.
func readFile(_ path: String) throws -> Data {
    if path == "-" { return FileHandle.standardInput.readDataToEndOfFile() }
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
        throw ToolError("\(path): is a directory, not a binding file")
    }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ToolError("\(path): cannot read: \(String(cString: strerror(errno)))") }
    return FileHandle(fileDescriptor: fd, closeOnDealloc: true).readDataToEndOfFile()
}

/// One line on stderr about something accepted that may not be what was meant.
func warn(_ message: String) {
    FileHandle.standardError.write(Data("sksteer: warning: \(message)\n".utf8))
}

/// Runs a command body, turning every error of ours into one line on stderr and exit status 1:
/// the one place the command line reports errors.
func reporting(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error where error is ToolError || error is BPFError || error is SteeringError || error is ObjectError {
        FileHandle.standardError.write(Data("sksteer: \(error)\n".utf8))
        throw ExitCode.failure
    }
}

/// The step a long command is at, on one line of standard error that is rewritten as it goes
/// and erased at the end; only when standard error is a terminal.
final class TerminalProgress {
    private let enabled: Bool
    private var shown = false

    init(unless verbose: Bool = false) { enabled = !verbose && isatty(STDERR_FILENO) == 1 }

    func show(_ step: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[Ksksteer: \(step)…".utf8))
        shown = true
    }

    func clear() {
        guard shown else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        shown = false
    }
}
