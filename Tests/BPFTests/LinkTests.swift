import BPF
import BPFAssembly
import Foundation
import KernelTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(needsRoot)
struct LinkTests {
    /// Attach, query, inspect, update (plain and conditional), detach, and release, each
    /// checked with a real connection in a throwaway namespace.
    @Test func linkLifecycleSteersRealConnections() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let server = try NameServer(
                name: "web", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 8080) })
            let target = Endpoint(.loopback4, 8080)
            #expect(try namespace.run { try NameServer.ask(.tcp, target) } == "web")

            let drop = try Program.load(TestPrograms.drop, type: .skLookup, name: "drop")
            let pass = try Program.load(TestPrograms.pass, type: .skLookup, name: "pass")
            var link: Link? = try Link.attach(drop, to: namespace)
            #expect(try namespace.run { isRefused(target) })

            let info = try link!.info()
            #expect(info.type == .netns)
            #expect(info.attachType == .skLookup)
            #expect(info.programID == (try drop.info().id))
            #expect(info.namespaceInode == (try namespace.inode()))
            #expect(try Link.programIDs(attachedTo: namespace) == [try drop.info().id])

            try link!.update(to: pass)
            #expect(try namespace.run { try NameServer.ask(.tcp, target) } == "web")
            // Conditional update: the attached program is `pass`, not `drop`, so this fails.
            #expect {
                try link!.update(to: drop, replacing: drop)
            } throws: { ($0 as? BPFError)?.code == EPERM }
            try link!.update(to: drop, replacing: pass)
            #expect(try namespace.run { isRefused(target) })

            try link!.detach()
            #expect(try namespace.run { try NameServer.ask(.tcp, target) } == "web")
            #expect(try Link.programIDs(attachedTo: namespace).isEmpty)

            // Releasing an unpinned link detaches its program.
            link = try Link.attach(drop, to: namespace)
            #expect(try namespace.run { isRefused(target) })
            link = nil
            #expect(try settled({ try Link.programIDs(attachedTo: namespace) }, until: \.isEmpty).isEmpty)
            #expect(try namespace.run { try NameServer.ask(.tcp, target) } == "web")
            server.stop()
        }
    }

    /// The query lists every attached program in run order with attach flags 0, up to the
    /// kernel's 64 per namespace; a 65th attach is refused.
    @Test func queryListsEveryProgramUpToTheKernelsLimit() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let programs = try (0..<64).map { i in
                try Program.load(i % 2 == 0 ? TestPrograms.pass : TestPrograms.drop, type: .skLookup, name: "p\(i)")
            }
            let links = try programs.map { try Link.attach($0, to: namespace) }
            let query = try Link.query(attachedTo: namespace)
            #expect(query.programIDs == (try programs.map { try $0.info().id }))
            #expect(query.attachFlags == 0)
            #expect {
                try Link.attach(programs[0], to: namespace)
            } throws: { ($0 as? BPFError)?.code == E2BIG }
            for link in links { try link.detach() }
            #expect(try Link.query(attachedTo: namespace).programIDs.isEmpty)
        }
    }

    @Test func pinnedObjectsOutliveTheirDescriptors() throws {
        try exclusively {
            let bpffs = try BPFFileSystem.TemporaryMount()
            #expect(BPFFileSystem.isMounted(at: bpffs.path))
            #expect(!BPFFileSystem.isMounted(at: "/tmp"))
            let namespace = try NetworkNamespace.makeThrowaway()
            do {
                let map = try HashMap<UInt32, UInt32>.create(maxEntries: 4, name: "pinned")
                try map.update(7, 70)
                try map.map.pin(at: bpffs.path + "/map")
                let program = try Program.load(TestPrograms.drop, type: .skLookup, name: "pinned_drop")
                try program.pin(at: bpffs.path + "/program")
                let link = try Link.attach(program, to: namespace)
                try link.pin(at: bpffs.path + "/link")
            }
            // Every descriptor is gone; the pins keep map, program and attachment alive.
            #expect(try namespace.run { isRefused(Endpoint(.loopback4, 1)) })
            let map = try HashMap<UInt32, UInt32>(Map.openPinned(at: bpffs.path + "/map"))
            #expect(try map.lookup(7) == 70)
            let readOnly = try Map.openPinned(at: bpffs.path + "/map", readOnly: true)
            #expect(throws: BPFError.self) { try readOnly.update(rawBytes(of: UInt32(1)), rawBytes(of: UInt32(1))) }
            let program = try Program.openPinned(at: bpffs.path + "/program")
            #expect(program.type == .skLookup)
            #expect(program.name == "pinned_drop")
            let link = try Link.openPinned(at: bpffs.path + "/link")
            #expect(try link.info().programID == (try program.info().id))
            // Unpinning the link (and dropping our descriptor) detaches it.
            try BPFFileSystem.unpin(bpffs.path + "/link")
            _ = link
            #expect(try Link.programIDs(attachedTo: namespace).count == 1)  // still held by `link`
            try link.detach()
            #expect(try Link.programIDs(attachedTo: namespace).isEmpty)
            #expect {
                _ = try Map.openPinned(at: bpffs.path + "/nothing")
            } throws: { error in
                let e = error as? BPFError
                return e?.kind == .notFound && e?.hint?.contains("nothing is pinned") == true
            }
            try BPFFileSystem.unpin(bpffs.path + "/map")
            try BPFFileSystem.unpin(bpffs.path + "/program")
        }
    }

    /// 10,000 rounds of load / create / attach / pin / release leave the descriptor count
    /// unchanged and nothing pinned.
    @Test func noDescriptorOrPinLeaks() throws {
        try exclusively {
            let bpffs = try BPFFileSystem.TemporaryMount()
            let namespace = try NetworkNamespace.makeThrowaway()
            // Only BPF objects are counted: other tests running meanwhile open and close files.
            let before = bpfObjectDescriptorCount()
            // A new bpffs may already hold the kernel's preloaded iterators (maps.debug, progs.debug).
            let initial = try FileManager.default.contentsOfDirectory(atPath: bpffs.path)
            for round in 0..<10_000 {
                let map = try Map.create(type: .sockMap, keySize: 4, valueSize: 8, maxEntries: 1)
                let program = try Program.load(TestPrograms.assign(from: map, index: 0), type: .skLookup)
                let link = try Link.attach(program, to: namespace)
                let path = bpffs.path + "/link\(round % 7)"
                try link.pin(at: path)
                try BPFFileSystem.unpin(path)
            }
            #expect(bpfObjectDescriptorCount() == before)
            #expect(try settled({ try Link.programIDs(attachedTo: namespace) }, until: \.isEmpty).isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: bpffs.path) == initial)
        }
    }

    /// A client connecting in a loop sees no failure while the program behind the link is
    /// swapped at least 100 times between two that steer to different servers.
    @Test func linkUpdateUnderLoadLosesNoConnection() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let sockets = try SocketMap.create(count: 2)
            let a = try NameServer(name: "A", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 7001) })
            let b = try NameServer(name: "B", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 7002) })
            try sockets.set(0, a.socket)
            try sockets.set(1, b.socket)
            let toA = try Program.load(TestPrograms.assign(from: sockets.map, index: 0), type: .skLookup)
            let toB = try Program.load(TestPrograms.assign(from: sockets.map, index: 1), type: .skLookup)
            let link = try Link.attach(toA, to: namespace)

            let done = Atomic<Bool>(false)
            let results = Mutex<(ok: Int, failed: [String], names: Set<String>)>((0, [], []))
            let target = Endpoint(IPAddress.v4(127, 0, 0, 9), 9999)  // nothing bound there
            let client = try JoinableThread {
                _ = try? namespace.run {
                    while !done.load(ordering: .relaxed) {
                        do {
                            let name = try NameServer.ask(.tcp, target)
                            results.withLock {
                                $0.ok += 1
                                $0.names.insert(name)
                            }
                        } catch {
                            results.withLock { $0.failed.append(String(describing: error)) }
                        }
                    }
                }
            }
            // At least 100 swaps, and on until the client has made 100 connections across
            // them (a slow machine, such as an emulated one, makes fewer per swap).
            var swap = 0
            let deadline = ContinuousClock.now + .seconds(120)
            while swap < 100 || (results.withLock { $0.ok } < 100 && ContinuousClock.now < deadline) {
                try link.update(to: swap % 2 == 0 ? toB : toA)
                usleep(2_000)
                swap += 1
            }
            done.store(true, ordering: .relaxed)
            client.join()
            let final = results.withLock { $0 }
            #expect(final.failed.isEmpty, "\(final.failed.prefix(3))")
            #expect(final.ok > 100)
            #expect(final.names == ["A", "B"])
        }
    }
}

/// How many of this process's descriptors are BPF objects (`anon_inode:bpf-map`, `-prog`,
/// `-link`, …), from /proc/self/fd.
func bpfObjectDescriptorCount() -> Int {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return names.filter { name in
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)"))?.hasPrefix(
            "anon_inode:bpf") == true
    }.count
}

/// Only a network namespace opens as one: another namespace or a plain file is named as such.
struct NamespaceFileTests {
    @Test func onlyANetworkNamespaceOpens() throws {
        _ = try NetworkNamespace.open(path: "/proc/self/ns/net")
        let mount = #expect(throws: BPFError.self) { try NetworkNamespace.open(path: "/proc/self/ns/mnt") }
        #expect(mount?.hint == "/proc/self/ns/mnt is a mount namespace, not a network namespace")
        let file = #expect(throws: BPFError.self) { try NetworkNamespace.open(path: "/etc/passwd") }
        #expect(file?.hint?.hasPrefix("/etc/passwd is not a namespace file") == true)
    }
}
