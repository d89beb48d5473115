import BPF
import BPFAssembly
import BPFObject
import Foundation
import KernelTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Objects compiled from C (`Tests/CPrograms`) loaded with ``LoadedObject``, attached in
/// throwaway namespaces and checked with real connections; and compared with what bpftool
/// (libbpf) makes of the same objects.
@Suite(needsRoot, CPrograms.available) struct ObjectLoaderTests {
    func load(_ name: String, flags: [String] = [], options: LoadedObject.Options = .init()) throws -> LoadedObject {
        let path = try CPrograms.compile(name, flags: flags)
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        return try LoadedObject.load(contentsOf: path, options: options)
    }

    func ask(_ namespace: NetworkNamespace, _ transport: Socket.Transport, _ port: UInt16) throws -> String {
        try namespace.run {
            do {
                return try NameServer.ask(transport, Endpoint(.loopback4, port), timeoutMilliseconds: 500)
            } catch let error as BPFError {
                if error.code == ECONNREFUSED { return "refused" }
                if error.code == EAGAIN { return "unanswered" }
                throw error
            }
        }
    }

    /// The guide's examples, written in C: every port to one server, a port filter, TCP only,
    /// and the builder's "only 443".
    @Test func guideExamplesInC() throws {
        try exclusively {
            let loaded = try load("guide")
            #expect(loaded.programs.keys.sorted() == ["custom_filter", "every_port", "port_filter", "tcp_only"])
            for program in loaded.programs.values { #expect(program.type == .skLookup) }
            do {
                let namespace = try NetworkNamespace.makeThrowaway()
                let server = try NameServer(
                    name: "server", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 8000) })
                try SocketMap(loaded.maps["server"]!).set(0, server.socket)
                let link = try Link.attach(loaded.programs["every_port"]!, to: namespace)
                for port: UInt16 in [1, 22, 31337, 65535] { #expect(try ask(namespace, .tcp, port) == "server") }
                _ = link
            }
            do {
                let namespace = try NetworkNamespace.makeThrowaway()
                let web = try NameServer(
                    name: "web", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 8080) })
                let other = try NameServer(
                    name: "other", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 9090) })
                let link = try Link.attach(loaded.programs["port_filter"]!, to: namespace)
                #expect(try ask(namespace, .tcp, 8080) == "web")
                #expect(try ask(namespace, .tcp, 9090) == "refused")
                try link.detach()
                #expect(try ask(namespace, .tcp, 9090) == "other")
                _ = (web, other)
            }
            do {
                let namespace = try NetworkNamespace.makeThrowaway()
                let tcp = try NameServer(
                    name: "tcp", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 5353) })
                let udp = try NameServer(
                    name: "udp", socket: namespace.run { try Socket.bound(.udp, .loopback4, port: 5353) })
                #expect(try ask(namespace, .udp, 5353) == "udp")
                let link = try Link.attach(loaded.programs["tcp_only"]!, to: namespace)
                #expect(try ask(namespace, .tcp, 5353) == "tcp")
                #expect(try ask(namespace, .udp, 5353) == "unanswered")
                _ = (link, tcp, udp)
            }
            do {
                let namespace = try NetworkNamespace.makeThrowaway()
                let https = try NameServer(
                    name: "https", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 443) })
                let http = try NameServer(
                    name: "http", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 80) })
                let link = try Link.attach(loaded.programs["custom_filter"]!, to: namespace)
                #expect(try ask(namespace, .tcp, 443) == "https")
                #expect(try ask(namespace, .tcp, 80) == "refused")
                _ = (link, https, http)
            }
        }
    }

    /// A map handed in replaces the object's own; the programs are ordinary programs: test
    /// runs and pins work on them.
    @Test func aMapHandedInAndOrdinaryPrograms() throws {
        try exclusively {
            let mine = try Map.create(type: .sockMap, keySize: 4, valueSize: 8, maxEntries: 1, name: "mine")
            let loaded = try load("guide", options: .init(replacing: ["server": mine]))
            #expect(loaded.maps["server"] === mine)
            #expect(try loaded.programs["every_port"]!.info().mapIDs == [mine.info().id])
            let filter = loaded.programs["port_filter"]!
            // A 72-byte struct bpf_sk_lookup: family @8, protocol @12, local_ip4 @40, local_port @60.
            func context(port: UInt32) -> [UInt8] {
                var bytes = [UInt8](repeating: 0, count: 72)
                bytes.replaceSubrange(8..<12, with: rawBytes(of: UInt32(2)))
                bytes.replaceSubrange(12..<16, with: rawBytes(of: UInt32(6)))
                bytes.replaceSubrange(40..<44, with: [127, 0, 0, 1])
                bytes.replaceSubrange(60..<64, with: rawBytes(of: port))
                return bytes
            }
            #expect(try filter.testRun(context: context(port: 9090)).returnValue == 0)  // SK_DROP
            #expect(try filter.testRun(context: context(port: 8080)).returnValue == 1)  // SK_PASS
            let mount = try BPFFileSystem.TemporaryMount()
            try loaded.pin(in: mount.path)
            #expect(try Program.openPinned(at: "\(mount.path)/port_filter").info().id == filter.info().id)
            #expect(try Map.openPinned(at: "\(mount.path)/server").info().id == mine.info().id)
        }
    }

    /// `static const` in .rodata (frozen), a port in .data and a counter in .bss, read and
    /// written from user space; BPF-to-BPF calls into .text.
    @Test func globalDataAndCalls() throws {
        try exclusively {
            let loaded = try load("globals")
            #expect(loaded.maps.keys.sorted() == ["globals.bss", "globals.data", "globals.rodata", "sockets"])
            let namespace = try NetworkNamespace.makeThrowaway()
            let server = try NameServer(
                name: "server", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 7000) })
            try SocketMap(loaded.maps["sockets"]!).set(1, server.socket)
            let link = try Link.attach(loaded.programs["steer"]!, to: namespace)
            func steered() throws -> UInt64 { value(UInt64.self, from: try loaded.readGlobal("steered")) }
            #expect(try ask(namespace, .tcp, 1234) == "server")
            #expect(try steered() == 1)
            try loaded.writeGlobal("only_port", rawBytes(of: UInt32(80)))
            #expect(try ask(namespace, .tcp, 1234) == "refused")
            #expect(try ask(namespace, .tcp, 80) == "server")
            #expect(try steered() == 2)
            #expect(try loaded.readGlobal("server_key") == rawBytes(of: UInt32(1)))
            // .rodata is frozen: the verifier may treat it as constant, so nobody may write it.
            #expect(throws: BPFError.self) { try loaded.writeGlobal("server_key", rawBytes(of: UInt32(0))) }
            #expect(try loaded.maps["globals.rodata"]!.info().flags & UInt32(0x80) != 0)
            _ = link
        }
    }

    /// SOCKHASH, LPM trie, hash, array, per-CPU array and array of maps, all on one path.
    @Test func everyMapTypeOnThePath() throws {
        try exclusively {
            let loaded = try load("maptypes")
            let namespace = try NetworkNamespace.makeThrowaway()
            let server = try NameServer(
                name: "server", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 7001) })
            try LPMTrieMap<UInt32>(loaded.maps["prefixes"]!).insert(prefixLength: 32, data: [127, 0, 0, 1], 7)
            try HashMap<UInt32, UInt32>(loaded.maps["slots"]!).update(7, 2)
            // The inner array was put in slot 1 of `tables` by the loader, from `.values`.
            try ArrayMap<UInt32>(loaded.maps["keys"]!).set(2, 99)
            try SocketHash<UInt32>(loaded.maps["sockets"]!).set(99, server.socket)
            let link = try Link.attach(loaded.programs["by_maps"]!, to: namespace)
            #expect(try ask(namespace, .tcp, 4444) == "refused")  // not enabled yet
            try ArrayMap<UInt32>(loaded.maps["enabled"]!).set(0, 1)
            #expect(try ask(namespace, .tcp, 4444) == "server")
            let counted = try PerCPUArrayMap<UInt64>(loaded.maps["lookups"]!).values(at: 0).reduce(0, +)
            #expect(counted == 2)
            _ = link
        }
    }

    @Test func aRejectionNamesTheSourceLine() {
        exclusively {
            #expect {
                try load("rejected")
            } throws: { error in
                guard let error = error as? BPFError, error.kind == .verifierRejected else { return false }
                return error.sourceLine?.hasPrefix("rejected.c:17: ") == true
                    && error.sourceLine?.contains("BAD ACCESS") == true
                    && "\(error)".contains("unchecked") && error.decisiveLine?.contains("map_value_or_null") == true
            }
        }
    }

    /// A map marked LIBBPF_PIN_BY_NAME is created by the first object and reused by the
    /// second; both programs count into it.
    @Test func aPinnedByNameMapIsShared() throws {
        try exclusively {
            let mount = try BPFFileSystem.TemporaryMount()
            let first = try load("shared", flags: ["-DSIDE=1"], options: .init(pinDirectory: mount.path))
            #expect(first.reusedPins.isEmpty)
            try first.pin(in: mount.path)
            let second = try load("shared", flags: ["-DSIDE=2"], options: .init(pinDirectory: mount.path))
            #expect(second.reusedPins == ["shared_counts"])
            let id = try first.maps["shared_counts"]!.info().id
            #expect(try second.maps["shared_counts"]!.info().id == id)
            #expect(try first.programs["count_side1"]!.info().mapIDs == [id])
            #expect(try second.programs["count_side2"]!.info().mapIDs == [id])
            let namespace = try NetworkNamespace.makeThrowaway()
            let links = try [first.programs["count_side1"]!, second.programs["count_side2"]!].map {
                try Link.attach($0, to: namespace)
            }
            #expect(try ask(namespace, .tcp, 9) == "refused")
            let counts = try ArrayMap<UInt64>(Map.openPinned(at: "\(mount.path)/shared_counts"))
            #expect(try counts[1] == 1)
            #expect(try counts[2] == 1)
            _ = links
        }
    }

    /// tubular's own `inet-kern.c` loads as its Go loader loads it: with the key and value
    /// sizes of `destinations` set before creation (0 in its source).
    @Test(
        .enabled(if: Self.tubularFound, "tubular's reference (../shared/reference/tubular) is not beside the package"))
    func tubularLoadsWithMapSizes() throws {
        try exclusively {
            let reference = Self.tubular
            let source = try String(contentsOf: reference.appendingPathComponent("inet-kern.c"), encoding: .utf8)
            let path = try CPrograms.compile(
                "inet-kern", source: source, flags: ["-I\(reference.appendingPathComponent("include").path)"])
            defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
            #expect(throws: BPFError.self) { try LoadedObject.load(contentsOf: path) }
            let loaded = try LoadedObject.load(contentsOf: path, options: .init(mapSizes: ["destinations": (257, 8)]))
            #expect(loaded.programs.keys.sorted() == ["dispatcher"])
            let destinations = try loaded.maps["destinations"]!.info()
            #expect(destinations.keySize == 257 && destinations.valueSize == 8)
            #expect(try loaded.maps["bindings"]!.info().type == .lpmTrie)
            #expect(loaded.programs["dispatcher"]!.type == .skLookup)
        }
    }

    /// The same objects loaded by bpftool (libbpf): the same programs, the same map
    /// definitions and the same number of translated instructions.
    @Test func sameAsBpftoolLoadall() throws {
        try exclusively {
            guard
                let bpftool = ["/usr/sbin/bpftool", "/usr/local/sbin/bpftool"].first(where: {
                    FileManager.default.isExecutableFile(atPath: $0)
                })
            else {
                Issue.record("bpftool is missing: apt-get install bpftool")
                return
            }
            for name in ["guide", "globals", "maptypes"] {
                let path = try CPrograms.compile(name)
                defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
                let ours = try LoadedObject.load(contentsOf: path)
                let mount = try BPFFileSystem.TemporaryMount()
                let object = try ObjectFile.read(path)
                // libbpf 1.1 does not know `sk_lookup/NAME` as a section name: say the type.
                #expect(object.programs.allSatisfy { $0.type.programType == ProgramType.skLookup.rawValue })
                let result = try runProcess(bpftool, ["prog", "loadall", path, "\(mount.path)/p", "type", "sk_lookup"])
                #expect(result.status == 0, "\(result.output)")
                for (function, program) in ours.programs {
                    let theirs = try Program.openPinned(at: "\(mount.path)/p/\(function)").info()
                    let mine = try program.info()
                    #expect(mine.instructionCount == theirs.instructionCount, "\(name) \(function)")
                    #expect(mine.type == theirs.type)
                    func definitions(_ ids: [UInt32]) throws -> Set<String> {
                        Set(
                            try ids.map { id in
                                let info = try Map.open(id: id).info()
                                return
                                    "\(info.name) \(info.type) \(info.keySize) \(info.valueSize) \(info.maxEntries) \(info.flags)"
                            })
                    }
                    #expect(try definitions(mine.mapIDs) == definitions(theirs.mapIDs), "\(name) \(function)")
                }
                let pinned = try FileManager.default.contentsOfDirectory(atPath: "\(mount.path)/p")
                #expect(Set(pinned) == Set(ours.programs.keys))
            }
        }
    }

    /// `../shared/reference/tubular` beside the package, as `sksteer bench` finds it.
    static let tubular = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("../shared/reference/tubular").standardized
    static let tubularFound = FileManager.default.fileExists(atPath: tubular.appendingPathComponent("inet-kern.c").path)
}
