import BPF
import Foundation
import KernelTestSupport
import SocketSteering
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `sksteer prog load` and `sksteer prog show` on objects compiled from C, run as their own
/// processes inside throwaway namespaces.
@Suite(needsRoot, CPrograms.available) struct ObjectCommandTests {
    func run(_ arguments: [String], in namespace: NetworkNamespace) throws -> (
        status: Int32, output: String, errors: String
    ) {
        try runSksteer(arguments, in: namespace)
    }

    func attached(_ namespace: NetworkNamespace) throws -> [UInt32] {
        try Link.programIDs(attachedTo: namespace)
    }

    /// Whether nothing is attached, allowing the kernel 2 s to release the links of unpins
    /// and of exited processes.
    func nothingAttached(_ namespace: NetworkNamespace) throws -> Bool {
        try settled({ try attached(namespace) }, until: \.isEmpty).isEmpty
    }

    /// Load, pin, attach in the order given; the pinned map takes a socket afterwards and
    /// connections land on it.
    @Test func loadPinsAndAttaches() throws {
        try exclusively {
            let object = try CPrograms.compile("guide")
            defer { try? FileManager.default.removeItem(atPath: (object as NSString).deletingLastPathComponent) }
            let mount = try BPFFileSystem.TemporaryMount()
            let namespace = try NetworkNamespace.makeThrowaway()
            let directory = "\(mount.path)/guide"
            let loaded = try run(
                [
                    "prog", "load", object, "--pin", directory, "--netns", "/proc/self/ns/net", "--attach", "tcp_only",
                    "--attach", "every_port",
                ], in: namespace)
            #expect(loaded.status == 0, "\(loaded.errors)")
            #expect(loaded.output.contains("loaded 4 programs and 1 map of guide"))
            let pins = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
            #expect(
                pins == [
                    "custom_filter", "every_port", "link-every_port", "link-tcp_only", "port_filter", "server",
                    "tcp_only",
                ])
            // Attached in the order given.
            let order = try [
                Program.openPinned(at: "\(directory)/tcp_only").info().id,
                Program.openPinned(at: "\(directory)/every_port").info().id,
            ]
            #expect(try attached(namespace) == order)
            let server = try NameServer(
                name: "server", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 8000) })
            try SocketMap(Map.openPinned(at: "\(directory)/server")).set(0, server.socket)
            for port: UInt16 in [1, 443, 65535] {
                #expect(try namespace.run { try NameServer.ask(.tcp, Endpoint(.loopback4, port)) } == "server")
            }
            // Removing the link pins detaches.
            for link in ["link-every_port", "link-tcp_only"] { try BPFFileSystem.unpin("\(directory)/\(link)") }
            #expect(try nothingAttached(namespace))
        }
    }

    /// A rejected program: one line naming the program, the verifier's reason and the C source
    /// line; nothing pinned, nothing attached, the directory not left behind.
    @Test func aFailedLoadLeavesNothing() throws {
        try exclusively {
            let rejected = try CPrograms.compile("rejected")
            let guide = try CPrograms.compile("guide")
            defer {
                for path in [rejected, guide] {
                    try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
                }
            }
            let mount = try BPFFileSystem.TemporaryMount()
            let namespace = try NetworkNamespace.makeThrowaway()
            let result = try run(
                [
                    "prog", "load", rejected, "--pin", "\(mount.path)/bad", "--netns", "/proc/self/ns/net", "--attach",
                    "unchecked",
                ],
                in: namespace)
            #expect(result.status == 1)
            let lines = result.errors.split(separator: "\n")
            #expect(lines.count == 1, "\(result.errors)")
            #expect(
                result.errors.contains("program unchecked") && result.errors.contains("rejected.c:17")
                    && result.errors.contains("map_value_or_null"), "\(result.errors)")
            #expect(!FileManager.default.fileExists(atPath: "\(mount.path)/bad"))
            #expect(try nothingAttached(namespace))
            // A pin that cannot be made (a name taken in an existing directory): the pins made
            // before it are removed and nothing stays attached.
            let directory = "\(mount.path)/taken"
            #expect(mkdir(directory, 0o700) == 0)
            try Map.create(type: .array, keySize: 4, valueSize: 4, maxEntries: 1).pin(at: "\(directory)/tcp_only")
            let taken = try run(
                ["prog", "load", guide, "--pin", directory, "--netns", "/proc/self/ns/net", "--attach", "every_port"],
                in: namespace)
            #expect(taken.status == 1 && taken.errors.contains("tcp_only"), "\(taken.errors)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["tcp_only"])
            #expect(try nothingAttached(namespace))
            // Usage errors.
            let noNamespace = try run(
                ["prog", "load", guide, "--pin", "\(mount.path)/x", "--attach", "every_port"], in: namespace)
            #expect(noNamespace.status != 0 && noNamespace.errors.contains("--attach needs --netns"))
            let unknown = try run(
                [
                    "prog", "load", guide, "--pin", "\(mount.path)/x", "--netns", "/proc/self/ns/net", "--attach",
                    "nothing",
                ],
                in: namespace)
            #expect(unknown.status == 1 && unknown.errors.contains("has no program nothing"), "\(unknown.errors)")
            let notBPFFS = try run(["prog", "load", guide, "--pin", "/tmp/sksteer-not-bpffs"], in: namespace)
            #expect(notBPFFS.status == 1 && notBPFFS.errors.contains("not on a bpf filesystem"), "\(notBPFFS.errors)")
            let notObject = try run(["prog", "show", "/etc/hostname"], in: namespace)
            #expect(notObject.status == 1 && notObject.errors.contains("not a BPF object"), "\(notObject.errors)")
        }
    }

    /// Global data is pinned as OBJECT_rodata (bpffs refuses dots); a by-name map pinned by one
    /// object is reused by the next one loaded into the same directory.
    @Test func globalDataAndSharedPins() throws {
        try exclusively {
            let globals = try CPrograms.compile("globals")
            let first = try CPrograms.compile("shared", flags: ["-DSIDE=1"])
            let second = try CPrograms.compile("shared", flags: ["-DSIDE=2"])
            defer {
                for path in [globals, first, second] {
                    try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
                }
            }
            let mount = try BPFFileSystem.TemporaryMount()
            let namespace = try NetworkNamespace.makeThrowaway()
            let loaded = try run(["prog", "load", globals, "--pin", "\(mount.path)/g"], in: namespace)
            #expect(loaded.status == 0, "\(loaded.errors)")
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: "\(mount.path)/g").sorted()
                    == ["globals_bss", "globals_data", "globals_rodata", "sockets", "steer"])
            #expect(
                try Map.openPinned(at: "\(mount.path)/g/globals_rodata").lookup(rawBytes(of: UInt32(0))) == [
                    1, 0, 0, 0,
                ])
            let directory = "\(mount.path)/shared"
            #expect(try run(["prog", "load", first, "--pin", directory], in: namespace).status == 0)
            let again = try run(["prog", "load", second, "--pin", directory], in: namespace)
            #expect(again.status == 0, "\(again.errors)")
            let id = try Map.openPinned(at: "\(directory)/shared_counts").info().id
            #expect(try Program.openPinned(at: "\(directory)/count_side1").info().mapIDs == [id])
            #expect(try Program.openPinned(at: "\(directory)/count_side2").info().mapIDs == [id])
        }
    }

    /// The README's `prog load` walkthrough, run as written (with the built sksteer for
    /// `swift run sksteer`); the listing it shows is the one the README's comment promises.
    @Test func theReadmeWalkthroughRuns() throws {
        try exclusively {
            guard let block = try readmeBlock("prog-load-walkthrough"), let executable = sksteerExecutable() else {
                Issue.record("the README has no prog-load walkthrough, or sksteer is not built")
                return
            }
            let script = block.replacingOccurrences(of: "swift run sksteer", with: "\"$SKSTEER\"")
            defer {
                // Whatever happened, nothing stays.
                _ = try? runProcess(
                    "/bin/sh", ["-c", "umount /tmp/objects 2>/dev/null; ip netns del objects-demo 2>/dev/null; true"])
            }
            let (status, text) = try runProcess(
                "/bin/sh", ["-e", "-c", script], environment: ["SKSTEER": executable.path],
                directory: packageDirectory)
            #expect(status == 0, "\(text)")
            let listing = "custom_filter every_port link-port_filter port_filter server tcp_only"
            #expect(script.contains("# \(listing)"))
            #expect(text.contains(listing.replacingOccurrences(of: " ", with: "\n")), "\(text)")
            #expect(text.contains("loaded 4 programs and 1 map of guide"))
            #expect(!FileManager.default.fileExists(atPath: "/run/netns/objects-demo"))
        }
    }

    /// `prog show`: programs, sections, maps and their definitions, without loading; JSON too.
    @Test func showWithoutLoading() throws {
        let object = try CPrograms.compile("maptypes")
        defer { try? FileManager.default.removeItem(atPath: (object as NSString).deletingLastPathComponent) }
        let namespace = try NetworkNamespace.makeThrowaway()
        let text = try run(["prog", "show", object], in: namespace)
        #expect(text.status == 0 && text.output.contains("by_maps") && text.output.contains("array_of_maps"))
        let json = try run(["prog", "show", object, "--format", "json"], in: namespace)
        #expect(json.status == 0)
        let report = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
        let programs = report?["programs"] as? [[String: Any]]
        #expect(programs?.map { $0["name"] as? String } == ["by_maps"])
        #expect(programs?.first?["type"] as? String == "sk_lookup")
        let maps = report?["maps"] as? [[String: Any]] ?? []
        let tables = maps.first { $0["name"] as? String == "tables" }
        #expect(tables?["type"] as? String == "array_of_maps")
        #expect(tables?["initialMaps"] as? [String: String] == ["1": "keys"])
        #expect(
            Set(maps.compactMap { $0["type"] as? String }).isSuperset(of: [
                "lpm_trie", "sockhash", "percpu_array", "hash",
            ]))
    }
}
