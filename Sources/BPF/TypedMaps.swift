#if canImport(Glibc)
    import Glibc
#endif

/// The raw bytes of a plain value (its memory layout, padding included: the typed maps refuse
/// types with padding, see ``paddingBytes(of:)``).
@inlinable
public func rawBytes<T: BitwiseCopyable>(of value: T) -> [UInt8] {
    withUnsafeBytes(of: value) { Array($0) }
}

/// A plain value from its raw bytes.
@inlinable
public func value<T: BitwiseCopyable>(_ type: T.Type = T.self, from bytes: some Collection<UInt8>) -> T {
    // Arrays and their slices are read in place; other collections are copied first.
    if let loaded = bytes.withContiguousStorageIfAvailable({ UnsafeRawBufferPointer($0).loadUnaligned(as: T.self) }) {
        return loaded
    }
    return Array(bytes).withUnsafeBytes { $0.loadUnaligned(as: T.self) }
}

/// How many bytes of `T`'s memory layout belong to no stored field: padding, whose contents
/// Swift leaves undefined. Found by reflecting a zeroed value down to its leaf fields.
///
/// ```swift
/// struct Padded { var flag: UInt8; var count: UInt32 }   // 3 bytes of padding after `flag`
/// paddingBytes(of: Padded.self)   // 3
/// paddingBytes(of: UInt64.self)   // 0
/// ```
public func paddingBytes<T: BitwiseCopyable>(of type: T.Type) -> Int {
    func leafBytes(_ value: Any) -> Int {
        let mirror = Mirror(reflecting: value)
        if mirror.children.isEmpty {
            func size<V>(_: V) -> Int { MemoryLayout<V>.size }
            return _openExistential(value, do: size)
        }
        return mirror.children.reduce(0) { $0 + leafBytes($1.value) }
    }
    let zero = value(T.self, from: [UInt8](repeating: 0, count: MemoryLayout<T>.size))
    return max(0, MemoryLayout<T>.size - leafBytes(zero))
}

/// Refuses a key or value type with padding: its bytes would carry uninitialised memory into
/// the kernel, so equal keys could differ and values would leak whatever the padding held.
func requireNoPadding<T: BitwiseCopyable>(_ type: T.Type, _ role: String, _ what: String) throws(BPFError) {
    let padding = paddingBytes(of: type)
    guard padding == 0 else {
        throw BPFError(
            operation: "use \(T.self) as the \(role) type of \(what)", code: EINVAL, kind: .invalidArgument,
            hint:
                "\(T.self) has \(padding) padding byte\(padding == 1 ? "" : "s") in its \(MemoryLayout<T>.size);"
                + " order or widen its fields so every byte is a field (or use raw bytes with Map)")
    }
}

func requireSizes(_ map: Map, key: Int, value: Int, _ what: String) throws(BPFError) {
    guard map.keySize == key, map.valueSize == value else {
        throw BPFError(
            operation: "use \(map) as \(what)", code: EINVAL, kind: .invalidArgument,
            hint: "it has \(map.keySize)-byte keys and \(map.valueSize)-byte values; \(what) needs \(key) and \(value)")
    }
}

/// A `BPF_MAP_TYPE_HASH` with typed keys and values.
public struct HashMap<Key: BitwiseCopyable, Value: BitwiseCopyable>: Sendable {
    /// The underlying untyped map.
    public let map: Map

    /// Wraps an existing map, checking the key and value sizes.
    public init(_ map: Map) throws(BPFError) {
        try requireNoPadding(Key.self, "key", "HashMap")
        try requireNoPadding(Value.self, "value", "HashMap")
        try requireSizes(map, key: MemoryLayout<Key>.size, value: MemoryLayout<Value>.size, "HashMap")
        self.map = map
    }

    /// Creates a hash map.
    public static func create(maxEntries: Int, name: String = "", flags: UInt32 = 0) throws(BPFError) -> Self {
        try Self(
            Map.create(
                type: .hash, keySize: MemoryLayout<Key>.size, valueSize: MemoryLayout<Value>.size,
                maxEntries: maxEntries, flags: flags, name: name))
    }

    /// The value for `key`, or `nil` if there is none (`BPF_MAP_LOOKUP_ELEM`).
    public func lookup(_ key: Key) throws(BPFError) -> Value? {
        try map.lookup(rawBytes(of: key)).map { value(Value.self, from: $0) }
    }
    /// Sets `key` to `newValue` (`BPF_MAP_UPDATE_ELEM`).
    public func update(_ key: Key, _ newValue: Value, mode: Map.UpdateMode = .any) throws(BPFError) {
        try map.update(rawBytes(of: key), rawBytes(of: newValue), mode: mode)
    }
    /// Removes `key`; returns whether it was there (`BPF_MAP_DELETE_ELEM`).
    @discardableResult
    public func delete(_ key: Key) throws(BPFError) -> Bool { try map.delete(rawBytes(of: key)) }
    /// Every key, in the kernel's iteration order (`BPF_MAP_GET_NEXT_KEY`).
    public func keys() throws(BPFError) -> [Key] { try map.keys().map { value(Key.self, from: $0) } }
}

/// A `BPF_MAP_TYPE_ARRAY`: `maxEntries` values indexed from 0, all present (zeroed) from the start.
public struct ArrayMap<Value: BitwiseCopyable>: Sendable {
    /// The underlying untyped map.
    public let map: Map

    /// Wraps an existing map, checking for 4-byte keys and `Value`-sized values.
    public init(_ map: Map) throws(BPFError) {
        try requireNoPadding(Value.self, "value", "ArrayMap")
        try requireSizes(map, key: 4, value: MemoryLayout<Value>.size, "ArrayMap")
        self.map = map
    }

    /// Creates an array map of `count` entries (`BPF_MAP_CREATE`).
    public static func create(count: Int, name: String = "") throws(BPFError) -> Self {
        try Self(
            Map.create(type: .array, keySize: 4, valueSize: MemoryLayout<Value>.size, maxEntries: count, name: name))
    }

    /// The value at `index`; throws ``BPFError/Kind/notFound`` if `index` is out of range.
    public subscript(index: UInt32) -> Value {
        get throws(BPFError) {
            guard let bytes = try map.lookup(rawBytes(of: index)) else {
                throw BPFError(
                    operation: "read index \(index) of \(map)", code: ENOENT, hint: "the index is out of range")
            }
            return value(Value.self, from: bytes)
        }
    }

    /// Sets the value at `index` (`BPF_MAP_UPDATE_ELEM`).
    public func set(_ index: UInt32, _ newValue: Value) throws(BPFError) {
        try map.update(rawBytes(of: index), rawBytes(of: newValue))
    }
}

/// A `BPF_MAP_TYPE_PERCPU_ARRAY`: each index has one value per possible CPU.
public struct PerCPUArrayMap<Value: BitwiseCopyable>: Sendable {
    /// The underlying untyped map.
    public let map: Map

    /// Wraps an existing map, checking for 4-byte keys and `Value`-sized values.
    public init(_ map: Map) throws(BPFError) {
        try requireNoPadding(Value.self, "value", "PerCPUArrayMap")
        try requireSizes(map, key: 4, value: MemoryLayout<Value>.size, "PerCPUArrayMap")
        self.map = map
    }

    /// Creates a per-CPU array map of `count` entries (`BPF_MAP_CREATE`).
    public static func create(count: Int, name: String = "") throws(BPFError) -> Self {
        try Self(
            Map.create(
                type: .perCPUArray, keySize: 4, valueSize: MemoryLayout<Value>.size, maxEntries: count, name: name))
    }

    private var stride: Int { (MemoryLayout<Value>.size + 7) / 8 * 8 }

    /// Every CPU's value at `index`, in CPU order.
    public func values(at index: UInt32) throws(BPFError) -> [Value] {
        guard let bytes = try map.lookup(rawBytes(of: index)) else {
            throw BPFError(operation: "read index \(index) of \(map)", code: ENOENT, hint: "the index is out of range")
        }
        return (0..<possibleCPUCount).map { cpu in
            value(Value.self, from: bytes[(cpu * stride)..<(cpu * stride + MemoryLayout<Value>.size)])
        }
    }

    /// Sets `index` to `newValue` on every CPU.
    public func set(_ index: UInt32, everyCPU newValue: Value) throws(BPFError) {
        var bytes = [UInt8](repeating: 0, count: stride * possibleCPUCount)
        let one = rawBytes(of: newValue)
        for cpu in 0..<possibleCPUCount {
            bytes.replaceSubrange((cpu * stride)..<(cpu * stride + one.count), with: one)
        }
        try map.update(rawBytes(of: index), bytes)
    }
}

/// A `BPF_MAP_TYPE_LPM_TRIE`: keys are a prefix length in bits and `dataSize` bytes of data;
/// a lookup with a full-length key finds the longest stored prefix that covers it.
public struct LPMTrieMap<Value: BitwiseCopyable>: Sendable {
    /// The underlying untyped map.
    public let map: Map
    /// Bytes of data after the 4-byte prefix length.
    public var dataSize: Int { map.keySize - 4 }

    /// Wraps an existing map, checking that it is an LPM trie with `Value`-sized values.
    public init(_ map: Map) throws(BPFError) {
        try requireNoPadding(Value.self, "value", "LPMTrieMap")
        guard map.type == .lpmTrie, map.valueSize == MemoryLayout<Value>.size else {
            throw BPFError(
                operation: "use \(map) as LPMTrieMap", code: EINVAL, kind: .invalidArgument,
                hint: "it must be an lpm_trie with \(MemoryLayout<Value>.size)-byte values")
        }
        self.map = map
    }

    /// Creates a trie for `dataSize`-byte keys (4 for IPv4, 16 for IPv6); entries are
    /// allocated on demand, as the kernel requires.
    public static func create(dataSize: Int, maxEntries: Int, name: String = "") throws(BPFError) -> Self {
        try Self(
            Map.create(
                type: .lpmTrie, keySize: 4 + dataSize, valueSize: MemoryLayout<Value>.size, maxEntries: maxEntries,
                flags: Map.noPreallocate, name: name))
    }

    private func key(_ prefixLength: Int, _ data: [UInt8]) throws(BPFError) -> [UInt8] {
        guard data.count == dataSize, (0...dataSize * 8).contains(prefixLength) else {
            throw BPFError(
                operation: "build a key for \(map)", code: EINVAL, kind: .invalidArgument,
                hint: "keys need \(dataSize) bytes of data and a prefix length of 0…\(dataSize * 8)")
        }
        return rawBytes(of: UInt32(prefixLength)) + data
    }

    /// Stores `newValue` for the prefix of `prefixLength` bits of `data` (`BPF_MAP_UPDATE_ELEM`).
    public func insert(prefixLength: Int, data: [UInt8], _ newValue: Value) throws(BPFError) {
        try map.update(key(prefixLength, data), rawBytes(of: newValue))
    }
    /// The value of the longest prefix covering `data` (looked up with the full length).
    public func longestMatch(_ data: [UInt8]) throws(BPFError) -> Value? {
        try map.lookup(key(dataSize * 8, data)).map { value(Value.self, from: $0) }
    }
    /// Removes the exact prefix; returns whether it was there (`BPF_MAP_DELETE_ELEM`).
    @discardableResult
    public func remove(prefixLength: Int, data: [UInt8]) throws(BPFError) -> Bool {
        try map.delete(key(prefixLength, data))
    }
    /// Every stored (prefix length, data) pair.
    public func prefixes() throws(BPFError) -> [(prefixLength: Int, data: [UInt8])] {
        try map.keys().map { (Int(value(UInt32.self, from: $0.prefix(4))), Array($0.dropFirst(4))) }
    }
}

/// A `BPF_MAP_TYPE_SOCKMAP`: sockets by index. Reading an entry gives the socket's cookie.
/// The map does not keep a socket open: an entry disappears when its socket is closed.
public struct SocketMap: Sendable {
    /// The underlying untyped map.
    public let map: Map

    /// Wraps an existing map, checking that it is a SOCKMAP with 4-byte keys and 8-byte values.
    public init(_ map: Map) throws(BPFError) {
        guard map.type == .sockMap, map.keySize == 4, map.valueSize == 8 else {
            throw BPFError(
                operation: "use \(map) as SocketMap", code: EINVAL, kind: .invalidArgument,
                hint: "it must be a sockmap with 4-byte keys and 8-byte values")
        }
        self.map = map
    }

    /// Creates a SOCKMAP with 8-byte values, so lookups return the socket cookie.
    public static func create(count: Int, name: String = "") throws(BPFError) -> Self {
        try Self(Map.create(type: .sockMap, keySize: 4, valueSize: 8, maxEntries: count, name: name))
    }

    /// Puts `socket` at `index` (a listening TCP or an unconnected UDP socket).
    public func set(_ index: UInt32, _ socket: Socket, mode: Map.UpdateMode = .any) throws(BPFError) {
        try map.update(rawBytes(of: index), rawBytes(of: UInt64(socket.descriptor.rawValue)), mode: mode)
    }
    /// The cookie of the socket at `index`, or `nil`.
    public func cookie(at index: UInt32) throws(BPFError) -> UInt64? {
        try map.lookup(rawBytes(of: index)).map { value(UInt64.self, from: $0) }
    }
    /// Removes the socket at `index`; returns whether there was one.
    @discardableResult
    public func remove(_ index: UInt32) throws(BPFError) -> Bool { try map.delete(rawBytes(of: index)) }
}

/// A `BPF_MAP_TYPE_REUSEPORT_SOCKARRAY`: the sockets of an `SO_REUSEPORT` group by index,
/// from which an SK_REUSEPORT program picks one with `bpf_sk_select_reuseport`. Reading an
/// entry gives the socket's cookie; an entry disappears when its socket is closed. A socket
/// that is in a SOCKMAP or SOCKHASH cannot also be put here (`EBUSY`).
public struct ReuseportSocketArray: Sendable {
    /// The underlying untyped map.
    public let map: Map

    /// Wraps an existing map, checking that it is a REUSEPORT_SOCKARRAY with 4-byte keys and 8-byte values.
    public init(_ map: Map) throws(BPFError) {
        guard map.type == .reuseportSocketArray, map.keySize == 4, map.valueSize == 8 else {
            throw BPFError(
                operation: "use \(map) as ReuseportSocketArray", code: EINVAL, kind: .invalidArgument,
                hint: "it must be a reuseport_sockarray with 4-byte keys and 8-byte values")
        }
        self.map = map
    }

    /// Creates a REUSEPORT_SOCKARRAY with 8-byte values, so lookups return the socket cookie.
    public static func create(count: Int, name: String = "") throws(BPFError) -> Self {
        try Self(Map.create(type: .reuseportSocketArray, keySize: 4, valueSize: 8, maxEntries: count, name: name))
    }

    /// Puts `socket` at `index`. It must have `SO_REUSEPORT` set and be bound (TCP: listening),
    /// and every socket of the array must belong to the same group.
    public func set(_ index: UInt32, _ socket: Socket, mode: Map.UpdateMode = .any) throws(BPFError) {
        do {
            try map.update(rawBytes(of: index), rawBytes(of: UInt64(socket.descriptor.rawValue)), mode: mode)
        } catch  where error.code == EINVAL || error.code == EBUSY {
            var error = error
            error.hint =
                error.code == EBUSY
                ? "the socket is in a SOCKMAP or SOCKHASH, and a socket cannot be in both kinds of map"
                : "the socket must have SO_REUSEPORT, be bound (TCP: listening) and be in the same group as the others"
            throw error
        }
    }
    /// The cookie of the socket at `index`, or `nil`.
    public func cookie(at index: UInt32) throws(BPFError) -> UInt64? {
        try map.lookup(rawBytes(of: index)).map { value(UInt64.self, from: $0) }
    }
    /// Removes the socket at `index`; returns whether there was one.
    @discardableResult
    public func remove(_ index: UInt32) throws(BPFError) -> Bool { try map.delete(rawBytes(of: index)) }
}

/// A `BPF_MAP_TYPE_SOCKHASH`: sockets by a key of any plain type.
public struct SocketHash<Key: BitwiseCopyable>: Sendable {
    /// The underlying untyped map.
    public let map: Map

    /// Wraps an existing map, checking that it is a SOCKHASH with `Key`-sized keys and 8-byte values.
    public init(_ map: Map) throws(BPFError) {
        try requireNoPadding(Key.self, "key", "SocketHash")
        guard map.type == .sockHash, map.keySize == MemoryLayout<Key>.size, map.valueSize == 8 else {
            throw BPFError(
                operation: "use \(map) as SocketHash", code: EINVAL, kind: .invalidArgument,
                hint: "it must be a sockhash with \(MemoryLayout<Key>.size)-byte keys and 8-byte values")
        }
        self.map = map
    }

    /// Creates a SOCKHASH with 8-byte values, so lookups return the socket cookie.
    public static func create(maxEntries: Int, name: String = "") throws(BPFError) -> Self {
        try Self(
            Map.create(
                type: .sockHash, keySize: MemoryLayout<Key>.size, valueSize: 8, maxEntries: maxEntries, name: name))
    }

    /// Puts `socket` at `key` (a listening TCP or an unconnected UDP socket).
    public func set(_ key: Key, _ socket: Socket, mode: Map.UpdateMode = .any) throws(BPFError) {
        try map.update(rawBytes(of: key), rawBytes(of: UInt64(socket.descriptor.rawValue)), mode: mode)
    }
    /// The cookie of the socket at `key`, or `nil`.
    public func cookie(for key: Key) throws(BPFError) -> UInt64? {
        try map.lookup(rawBytes(of: key)).map { value(UInt64.self, from: $0) }
    }
    /// Removes the socket at `key`; returns whether there was one.
    @discardableResult
    public func remove(_ key: Key) throws(BPFError) -> Bool { try map.delete(rawBytes(of: key)) }
    /// Every key, in the kernel's iteration order.
    public func keys() throws(BPFError) -> [Key] { try map.keys().map { value(Key.self, from: $0) } }
}
