import BPF
import BPFAssembly
import Dispatch
import KernelTestSupport
import Synchronization
import SystemPackage
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(needsRoot)
struct MapTests {
    /// Keys and values of the wrong size are refused before the kernel reads past them.
    /// A typed map refuses a key or value type with padding, whose bytes Swift leaves undefined.
    @Test func paddedTypesAreRefused() throws {
        try exclusively {
            let map = try Map.create(type: .hash, keySize: 8, valueSize: 8, maxEntries: 4)
            #expect { try HashMap<Padded, UInt64>(map) } throws: {
                ($0 as? BPFError)?.hint?.contains("3 padding bytes") == true
            }
            #expect(throws: BPFError.self) { try HashMap<UInt64, Padded>(map) }
            let typed = try HashMap<Packed, UInt64>(map)
            try typed.update(Packed(low: 1, high: 2), 3)
            #expect(try typed.lookup(Packed(low: 1, high: 2)) == 3)
        }
    }

    /// A socket map takes any socket descriptor (a swift-system `FileDescriptor`'s, say) and
    /// leaves it the caller's; one the kernel would refuse is named in the error.
    @Test func socketMapsTakeDescriptorsOfOtherCode() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let sockets = try SocketMap.create(count: 2)
            let listening = try namespace.run { try Socket.bound(.tcp, .loopback4, port: 8200) }
            let idle = try Socket.unbound(.tcp, family: AF_INET)
            let connectedUDP = try namespace.run { try Socket.bound(.udp, .loopback4, port: 8202) }
            try namespace.run { try connectedUDP.connect(to: Endpoint(.loopback4, 8201)) }
            let borrowed = FileDescriptor(rawValue: listening.descriptor.withRawValue { $0 })
            try sockets.set(0, descriptor: borrowed.rawValue)
            #expect(try sockets.cookie(at: 0) == listening.cookie())
            #expect(fcntl(borrowed.rawValue, F_GETFD) >= 0)
            let notListening = #expect(throws: BPFError.self) {
                try sockets.set(1, descriptor: idle.descriptor.withRawValue { $0 })
            }
            let idleNumber = idle.descriptor.withRawValue { $0 }
            #expect(
                notListening?.hint?.hasPrefix("descriptor \(idleNumber) is a TCP socket that is not listening") == true)
            let connected = #expect(throws: BPFError.self) {
                try sockets.set(1, descriptor: connectedUDP.descriptor.withRawValue { $0 })
            }
            #expect(connected?.hint?.contains("connected UDP socket") == true)
            let closed = #expect(throws: BPFError.self) { try sockets.set(1, descriptor: 9999) }
            #expect(closed?.errno == .badFileDescriptor)
            #expect(try Socket(duplicating: borrowed).cookie() == listening.cookie())
        }
    }

    @Test func sizesAreChecked() throws {
        try exclusively {
            let map = try Map.create(type: .hash, keySize: 4, valueSize: 64, maxEntries: 4)
            #expect { try map.update(rawBytes(of: UInt32(1)), [1]) } throws: {
                ($0 as? BPFError)?.hint?.contains("64") == true
            }
            #expect(throws: BPFError.self) { try map.update([1, 2], [UInt8](repeating: 0, count: 64)) }
            #expect(throws: BPFError.self) {
                try map.updateBatch([(rawBytes(of: UInt32(1)), [UInt8](repeating: 0, count: 63))])
            }
            #expect(throws: BPFError.self) {
                try map.updateBatch(keys: [0, 0, 0, 0], values: [UInt8](repeating: 0, count: 65))
            }
            try map.updateBatch(keys: rawBytes(of: UInt32(7)), values: [UInt8](repeating: 3, count: 64))
            #expect(try map.lookup(rawBytes(of: UInt32(7))) == [UInt8](repeating: 3, count: 64))
            // A per-CPU value is one (rounded up to 8 bytes) for each possible CPU.
            let perCPU = try Map.create(type: .perCPUArray, keySize: 4, valueSize: 4, maxEntries: 1)
            #expect(throws: BPFError.self) { try perCPU.update(rawBytes(of: UInt32(0)), [0, 0, 0, 0]) }
            try perCPU.update(rawBytes(of: UInt32(0)), [UInt8](repeating: 1, count: perCPU.lookupValueSize))
        }
    }

    /// A kernel object never holds descriptor 0 (which several bpf() fields read as "none").
    @Test func descriptorZeroIsMovedAway() throws {
        try exclusively {
            let saved = dup(0)
            defer {
                dup2(saved, 0)
                close(saved)
            }
            close(0)
            let map = try Map.create(type: .array, keySize: 4, valueSize: 8, maxEntries: 1)
            #expect(map.descriptor.withRawValue { $0 } > 0)
            try map.update(rawBytes(of: UInt32(0)), rawBytes(of: UInt64(5)))
            #expect(try map.lookup(rawBytes(of: UInt32(0))) == rawBytes(of: UInt64(5)))
        }
    }

    /// `isEmpty()` follows a trie's and a hash's contents; an array is never empty.
    @Test func emptinessOfTriesHashesAndArrays() throws {
        try exclusively {
            let trie = try Map.create(
                type: .lpmTrie, keySize: 8, valueSize: 4, maxEntries: 16, flags: Map.noPreallocate, name: "t")
            let hash = try Map.create(type: .hash, keySize: 4, valueSize: 4, maxEntries: 16, name: "h")
            let key = rawBytes(of: UInt32(24)) + [10, 1, 2, 0]
            for (map, key) in [(trie, key), (hash, rawBytes(of: UInt32(7)))] {
                #expect(try map.isEmpty())
                try map.update(key, rawBytes(of: UInt32(1)))
                #expect(try !map.isEmpty())
                #expect(try map.delete(key))
                #expect(try map.isEmpty())
            }
            let array = try Map.create(type: .array, keySize: 4, valueSize: 4, maxEntries: 4, name: "a")
            #expect(try !array.isEmpty())
        }
    }

    /// A hash is charged for its bucket array by `max_entries`, whatever it holds (and, on
    /// kernels before 6.4, estimated from the same sizes).
    @Test func chargedMemoryFollowsAHashsSize() throws {
        try exclusively {
            let small = try Map.create(
                type: .hash, keySize: 4, valueSize: 8, maxEntries: 1024, flags: Map.noPreallocate, name: "small")
            let large = try Map.create(
                type: .hash, keySize: 4, valueSize: 8, maxEntries: 1 << 20, flags: Map.noPreallocate, name: "large")
            let smallBytes = try small.chargedMemory()
            let largeBytes = try large.chargedMemory()
            #expect(smallBytes > 0 && smallBytes < 1 << 20, "\(smallBytes)")
            #expect(largeBytes >= 16 << 20, "\(largeBytes)")
        }
    }

    @Test func hashMapOperationsAndUpdateModes() throws {
        try exclusively {
            let map = try HashMap<UInt32, UInt64>.create(maxEntries: 16, name: "h")
            #expect(try map.lookup(1) == nil)
            try map.update(1, 100)
            try map.update(2, 200, mode: .onlyNew)
            #expect(try map.lookup(1) == 100)
            #expect(throws: BPFError.self) { try map.update(1, 5, mode: .onlyNew) }
            #expect(throws: BPFError.self) { try map.update(9, 5, mode: .onlyExisting) }
            try map.update(1, 101, mode: .onlyExisting)
            #expect(try map.lookup(1) == 101)
            #expect(try Set(map.keys()) == [1, 2])
            #expect(try map.delete(2))
            #expect(try !map.delete(2))
            // Batch update and batch read.
            try map.map.updateBatch((10..<14).map { (rawBytes(of: UInt32($0)), rawBytes(of: UInt64($0 * 2))) })
            let entries = try map.map.entries()
            #expect(entries.count == 5)
            #expect(
                entries.contains { value(UInt32.self, from: $0.key) == 13 && value(UInt64.self, from: $0.value) == 26 })
            // Full: the 17th entry does not fit.
            for i in UInt32(20)..<UInt32(31) { try map.update(i, 0) }
            #expect {
                try map.update(99, 0)
            } throws: { ($0 as? BPFError)?.kind == .noSpace }
            // A key of the wrong size is refused before any syscall.
            #expect {
                _ = try map.map.lookup([1, 2])
            } throws: { ($0 as? BPFError)?.kind == .invalidArgument }
        }
    }

    @Test func arrayAndPerCPUArray() throws {
        try exclusively {
            let array = try ArrayMap<UInt64>.create(count: 4)
            #expect(try array[3] == 0)
            try array.set(3, 7)
            #expect(try array[3] == 7)
            #expect(throws: BPFError.self) { _ = try array[4] }

            let counters = try PerCPUArrayMap<UInt64>.create(count: 2)
            try counters.set(1, everyCPU: 5)
            let values = try counters.values(at: 1)
            #expect(values.count == possibleCPUCount)
            #expect(values.allSatisfy { $0 == 5 })
        }
    }

    @Test func lpmTrieFindsTheLongestPrefix() throws {
        try exclusively {
            let trie = try LPMTrieMap<UInt32>.create(dataSize: 4, maxEntries: 16)
            try trie.insert(prefixLength: 8, data: [127, 0, 0, 0], 8)
            try trie.insert(prefixLength: 24, data: [127, 0, 0, 0], 24)
            #expect(try trie.longestMatch([127, 0, 0, 9]) == 24)
            #expect(try trie.longestMatch([127, 9, 0, 1]) == 8)
            #expect(try trie.longestMatch([10, 0, 0, 1]) == nil)
            #expect(try trie.prefixes().count == 2)
            #expect(try trie.remove(prefixLength: 24, data: [127, 0, 0, 0]))
            #expect(try trie.longestMatch([127, 0, 0, 9]) == 8)
        }
    }

    @Test func socketMapAndHashHoldSocketsByCookieUntilTheyClose() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let sockets = try SocketMap.create(count: 4)
            let hash = try SocketHash<UInt64>.create(maxEntries: 4)
            var listener: Socket? = try namespace.run { try Socket.bound(.tcp, .loopback4, port: 0) }
            let udp = try namespace.run { try Socket.bound(.udp, .loopback4, port: 0) }
            try sockets.set(0, listener!)
            try sockets.set(1, udp)
            try hash.set(42, listener!)
            #expect(try sockets.cookie(at: 0) == listener!.cookie())
            #expect(try sockets.cookie(at: 1) == udp.cookie())
            #expect(try hash.cookie(for: 42) == listener!.cookie())
            #expect(try sockets.cookie(at: 2) == nil)
            // SOCKMAP takes established TCP sockets too (it is sk_assign that refuses them).
            let port = try listener!.localEndpoint().port
            let client = try namespace.run { try Socket.connected(.tcp, to: .loopback4, port: port) }
            try sockets.set(3, client)
            #expect(try sockets.cookie(at: 3) == client.cookie())
            // The map does not keep a socket alive: closing it removes the entries.
            listener = nil
            _ = client
            #expect(try sockets.cookie(at: 0) == nil)
            #expect(try hash.cookie(for: 42) == nil)
            #expect(try sockets.remove(1))
        }
    }

    /// Map handles are Sendable: concurrent threads update and read one map safely.
    @Test func concurrentThreadsShareAMap() throws {
        try exclusively {
            let map = try HashMap<UInt32, UInt64>.create(maxEntries: 4096, name: "shared")
            let failures = Mutex(0)
            DispatchQueue.concurrentPerform(iterations: 8) { task in
                for i in 0..<256 {
                    let key = UInt32(task * 256 + i)
                    do {
                        try map.update(key, UInt64(key) * 3)
                        if try map.lookup(key) != UInt64(key) * 3 { failures.withLock { $0 += 1 } }
                    } catch {
                        failures.withLock { $0 += 1 }
                    }
                }
            }
            #expect(failures.withLock { $0 } == 0)
            #expect(try map.keys().count == 2048)
            #expect(try map.lookup(2047) == 6141)
        }
    }
}

/// 1 + 3 padding + 4 bytes.
struct Padded: BitwiseCopyable {
    var flag: UInt8
    var count: UInt32
}

/// Two 4-byte fields: no padding.
struct Packed: BitwiseCopyable, Equatable {
    var low: UInt32
    var high: UInt32
}

/// Padding is found without the kernel.
struct PaddingTests {
    @Test func paddingIsCountedDownToTheLeafFields() {
        struct Nested: BitwiseCopyable {
            var pair: (UInt16, UInt8)  // 1 byte of padding inside the tuple
            var wide: UInt32
        }
        #expect(paddingBytes(of: Padded.self) == 3)
        #expect(paddingBytes(of: Packed.self) == 0)
        #expect(paddingBytes(of: Nested.self) == 1)
        #expect(paddingBytes(of: UInt64.self) == 0)
        #expect(paddingBytes(of: (UInt32, UInt32, UInt16, UInt16).self) == 0)
        #expect(paddingBytes(of: SIMD4<UInt8>.self) == 0)
    }
}
