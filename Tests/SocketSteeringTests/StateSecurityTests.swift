import BPF
import Foundation
import KernelTestSupport
import Testing

@testable import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// setpriv (util-linux), to act as an unprivileged user.
let setprivExecutable = ["/usr/bin/setpriv", "/bin/setpriv"].first { FileManager.default.isExecutableFile(atPath: $0) }

/// What an unprivileged user can do to the dispatcher's state, and what root's commands do
/// with what such a user planted: on a bpffs mounted with mode 1777 (as `mount -t bpf bpf
/// DIR` gives), a planted symbolic link or directory is never followed or used, `load` and
/// `unload` remove it, and the dispatcher of the namespace it pointed at is unaffected; on a
/// bpffs with mode 0700 (what sksteer recommends and creates) nothing can be planted.
@Suite(needsRoot, .enabled(if: setprivExecutable != nil, "needs setpriv: apt-get install util-linux"))
struct StateSecurityTests {
    /// Runs `arguments` as user and group nobody (65534), without supplementary groups.
    static func asNobody(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: setprivExecutable!)
        process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "--"] + arguments
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// The victim: a dispatcher in namespace D with `A tcp 127.0.0.1 80`, and A's server.
    struct Victim {
        let namespace: NetworkNamespace
        let server: NameServer
        let bpffs: String

        init(bpffs: String) throws {
            self.bpffs = bpffs
            namespace = try NetworkNamespace.makeThrowaway()
            let dispatcher = try Dispatcher.load(namespace: namespace, bpffs: bpffs)
            let socket = try namespace.run { try Socket.bound(.tcp, .loopback4, port: 0) }
            server = try NameServer(name: "A", socket: socket)
            try dispatcher.register(socket, label: "A")
            try dispatcher.bind(binding("A", "tcp", "127.0.0.1", "80"))
        }

        /// D still steers as before: its rules are listed, its link is attached, and a real
        /// connection lands on A.
        func isUnaffected() throws -> Bool {
            let bindings = try Dispatcher.open(namespace: namespace, bpffs: bpffs, readOnly: true).bindings()
            let inode = try namespace.inode()
            let links = try LinkInfo.all().filter { $0.namespaceInode == inode }.count
            let landed = try namespace.run {
                try NameServer.ask(.tcp, Endpoint(.loopback4, 80), timeoutMilliseconds: 500)
            }
            return bindings == [binding("A", "tcp", "127.0.0.1", "80")] && links == 1 && landed == "A"
        }

        func unload() { _ = try? Dispatcher.unload(namespace: namespace, bpffs: bpffs) }
    }

    /// A world-writable bpffs, the victim D in it, and the attacker's namespace P with the
    /// names of both state directories.
    final class Scene {
        let mount: BPFFileSystem.TemporaryMount
        let victim: Victim
        let attacker: NetworkNamespace
        let theirs: String
        let victims: String

        init() throws {
            mount = try BPFFileSystem.TemporaryMount(mode: 0o1777)
            victim = try Victim(bpffs: mount.path)
            attacker = try NetworkNamespace.makeThrowaway()
            theirs = try Dispatcher.stateDirectory(bpffs: mount.path, namespace: attacker)
            victims = try Dispatcher.stateDirectory(bpffs: mount.path, namespace: victim.namespace)
        }
    }

    @Test func aPlantedSymbolicLinkIsNeverFollowed() throws {
        try exclusively {
            let scene = try Scene()
            let (mount, victim, attacker, theirs, victims) = (
                scene.mount, scene.victim, scene.attacker, scene.theirs, scene.victims
            )
            defer { withExtendedLifetime(scene) { victim.unload() } }
            // nobody points the state of namespace P at D's state.
            #expect(try Self.asNobody(["/bin/ln", "-s", victims, theirs]) == 0)
            // Root's commands in P refuse it, and say how to remove it.
            #expect {
                try Dispatcher.open(namespace: attacker, bpffs: mount.path)
            } throws: { "\($0)".contains("not a state of ours") && "\($0)".contains("sksteer unload") }
            #expect(try victim.isUnaffected())
            // unload in P removes the link itself, and nothing of D.
            #expect(try Dispatcher.unload(namespace: attacker, bpffs: mount.path) == [theirs])
            var info = stat()
            #expect(lstat(theirs, &info) != 0)
            #expect(try victim.isUnaffected())
            // Planted again, then root loads P: P gets a state of its own.
            #expect(try Self.asNobody(["/bin/ln", "-s", victims, theirs]) == 0)
            // (The dispatcher is released before unload, which waits for its lock.)
            defer { _ = try? Dispatcher.unload(namespace: attacker, bpffs: mount.path) }
            try Dispatcher.load(namespace: attacker, bpffs: mount.path).bind(binding("B", "tcp", "127.0.0.1", "80"))
            #expect(lstat(theirs, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR && info.st_uid == 0)
            #expect(try victim.isUnaffected())
        }
    }

    @Test func aPlantedDirectoryIsRemovedNotUsed() throws {
        try exclusively {
            let scene = try Scene()
            let (mount, victim, attacker, theirs, victims) = (
                scene.mount, scene.victim, scene.attacker, scene.theirs, scene.victims
            )
            defer { withExtendedLifetime(scene) { victim.unload() } }
            // nobody makes P's state directory, with links into D's state inside.
            #expect(try Self.asNobody(["/bin/mkdir", "-m", "0755", theirs]) == 0)
            for name in ["link", "program", "meta", "sockets"] {
                #expect(try Self.asNobody(["/bin/ln", "-s", "\(victims)/\(name)", "\(theirs)/\(name)"]) == 0)
            }
            // nobody cannot write into D's state (root's, mode 0750).
            #expect(try Self.asNobody(["/bin/mkdir", "\(victims)/x"]) != 0)
            #expect {
                try Dispatcher.open(namespace: attacker, bpffs: mount.path, readOnly: true)
            } throws: { "\($0)".contains("belongs to user 65534") }
            // unload in P removes the planted directory and its links, and detaches nothing.
            #expect(
                try Dispatcher.unload(namespace: attacker, bpffs: mount.path).sorted() == [
                    "link", "meta", "program", "sockets",
                ])
            #expect(try victim.isUnaffected())
            // Planted again, then root loads P: it is replaced by a state of P's own.
            #expect(try Self.asNobody(["/bin/mkdir", "-m", "0755", theirs]) == 0)
            #expect(try Self.asNobody(["/bin/ln", "-s", "\(victims)/link", "\(theirs)/link"]) == 0)
            _ = try Dispatcher.load(namespace: attacker, bpffs: mount.path)
            defer { _ = try? Dispatcher.unload(namespace: attacker, bpffs: mount.path) }
            var info = stat()
            #expect(lstat("\(theirs)/link", &info) == 0 && info.st_mode & S_IFMT == S_IFREG && info.st_uid == 0)
            #expect(try victim.isUnaffected())
        }
    }

    /// On a bpffs with mode 0700 an unprivileged user cannot plant anything at all.
    @Test func aPrivateMountLetsNobodyPlant() throws {
        try exclusively {
            let mount = try BPFFileSystem.TemporaryMount()
            #expect(BPFFileSystem.mode(at: mount.path).map { $0 & 0o777 } == 0o700)
            #expect(!BPFFileSystem.isWorldWritable(at: mount.path))
            let victim = try Victim(bpffs: mount.path)
            defer { victim.unload() }
            let attacker = try NetworkNamespace.makeThrowaway()
            let theirs = try Dispatcher.stateDirectory(bpffs: mount.path, namespace: attacker)
            #expect(try Self.asNobody(["/bin/mkdir", theirs]) != 0)
            #expect(try Self.asNobody(["/bin/ln", "-s", "/tmp", theirs]) != 0)
            #expect(try victim.isUnaffected())
        }
    }

    /// `load --mount` in a mount namespace of its own (as under `ip netns exec`) would mount a
    /// bpffs that is gone when the command exits: it refuses and says what to do instead.
    @Test func loadMountRefusesAPrivateMountNamespace() throws {
        try exclusively {
            let f = try Fixture()
            guard let executable = sksteerExecutable() else { throw SteeringError.notLoaded("sksteer is not built") }
            var template = Array("/tmp/sksteer-mountpoint-XXXXXX".utf8CString)
            let directory = String(cString: try #require(mkdtemp(&template)))
            defer { rmdir(directory) }
            let errors = Pipe()
            let (process, output) = try spawn(
                in: f.namespace, URL(fileURLWithPath: "/usr/bin/unshare"),
                ["-m", "--propagation", "slave", executable.path, "load", "--mount", "--bpffs", directory],
                errors: errors)
            _ = output.fileHandleForReading.readDataToEndOfFile()
            let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 1)
            #expect(message.contains("mount namespace of its own") && message.contains("mode=0700"), "\(message)")
            #expect(!BPFFileSystem.isMounted(at: directory))
            // In the host's mount namespace it mounts, with mode 0700, and loads.
            let (loading, _) = try spawn(in: f.namespace, executable, ["load", "--mount", "--bpffs", directory])
            loading.waitUntilExit()
            defer {
                if let (unloading, _) = try? spawn(in: f.namespace, executable, ["unload", "--bpffs", directory]) {
                    unloading.waitUntilExit()
                }
                try? BPFFileSystem.unmount(at: directory)
            }
            let loaded = (status: loading.terminationStatus, errors: "")
            #expect(loaded.status == 0, "\(loaded.errors)")
            #expect(BPFFileSystem.isMounted(at: directory))
            #expect(BPFFileSystem.mode(at: directory).map { $0 & 0o777 } == 0o700)
        }
    }
}
