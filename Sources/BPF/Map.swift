import BPFAssembly
import CBPF

#if canImport(Glibc)
    import Glibc
#endif

/// A BPF map. Operations are single `bpf(2)` calls, safe from concurrent tasks.
///
/// Keys and values are raw bytes here; ``HashMap``, ``ArrayMap``, ``PerCPUArrayMap``,
/// ``LPMTrieMap``, ``SocketMap`` and ``SocketHash`` wrap this with types.
public final class Map: Sendable, CustomStringConvertible {
    /// The map's descriptor, which keeps the map alive.
    public let descriptor: OwnedFileDescriptor
    /// The map type.
    public let type: MapType
    /// The key size in bytes.
    public let keySize: Int
    /// The value size in bytes (per CPU, for per-CPU maps).
    public let valueSize: Int
    /// The maximum number of entries.
    public let maxEntries: Int
    /// The `map_flags` the map was created with, e.g. ``noPreallocate``.
    public let flags: UInt32
    /// The map's name as the kernel stores it (sanitized and truncated).
    public let name: String

    init(
        descriptor: OwnedFileDescriptor, type: MapType, keySize: Int, valueSize: Int, maxEntries: Int, flags: UInt32,
        name: String
    ) {
        self.descriptor = descriptor
        self.type = type
        self.keySize = keySize
        self.valueSize = valueSize
        self.maxEntries = maxEntries
        self.flags = flags
        self.name = name
    }

    /// `BPF_F_NO_PREALLOC`: allocate entries on demand (required for LPM tries).
    public static let noPreallocate: UInt32 = UInt32(BPF_F_NO_PREALLOC)
    /// `BPF_F_RDONLY` for ``openPinned(at:readOnly:)``.
    static let readOnlyFlag: UInt32 = UInt32(BPF_F_RDONLY)

    /// Creates a map (`BPF_MAP_CREATE`).
    public static func create(
        type: MapType, keySize: Int, valueSize: Int, maxEntries: Int, flags: UInt32 = 0, name: String = "",
        innerMap: Map? = nil
    ) throws(BPFError) -> Map {
        try create(
            type: type, keySize: keySize, valueSize: valueSize, maxEntries: maxEntries, flags: flags, name: name,
            innerMap: innerMap, btf: nil)
    }

    /// Creates a map with the BTF types of its key and value (`btf_fd`, `btf_key_type_id`,
    /// `btf_value_type_id`). If the kernel refuses the BTF, the map is created without it, as
    /// libbpf does.
    static func create(
        type: MapType, keySize: Int, valueSize: Int, maxEntries: Int, flags: UInt32 = 0, name: String = "",
        innerMap: Map? = nil, btf: (OwnedFileDescriptor, UInt32, UInt32)?
    ) throws(BPFError) -> Map {
        let kernelName = Program.sanitizedName(name)
        let refused =
            "the kernel refused key size \(keySize), value size \(valueSize), \(maxEntries) entries or flags \(flags)"
            + " for a \(type) map"
        func create(withBTF: Bool) throws(BPFError) -> Int {
            try kernelCall("BPF_MAP_CREATE of \(type) map \"\(kernelName)\"", hints: [EINVAL: refused]) {
                cbpf_map_create_btf(
                    type.rawValue, UInt32(keySize), UInt32(valueSize), UInt32(maxEntries), flags, kernelName,
                    innerMap?.descriptor.rawValue ?? -1, withBTF ? btf?.0.rawValue ?? -1 : -1, btf?.1 ?? 0, btf?.2 ?? 0)
            }
        }
        let fd: Int
        if btf != nil, let first = try? create(withBTF: true) {
            fd = first
        } else {
            fd = try create(withBTF: false)
        }
        return Map(
            descriptor: OwnedFileDescriptor(adopting: Int32(fd)), type: type, keySize: keySize, valueSize: valueSize,
            maxEntries: maxEntries, flags: flags, name: kernelName)
    }

    /// Opens a map pinned in a bpf filesystem (`BPF_OBJ_GET`), optionally read-only.
    public static func openPinned(at path: String, readOnly: Bool = false) throws(BPFError) -> Map {
        let fd = try kernelCall("open pinned map \(path)", hints: pinHints(path)) {
            cbpf_obj_get(path, readOnly ? readOnlyFlag : 0)
        }
        return try Map(adopting: OwnedFileDescriptor(adopting: Int32(fd)))
    }

    /// Opens a map by id (`BPF_MAP_GET_FD_BY_ID`).
    public static func open(id: UInt32) throws(BPFError) -> Map {
        let fd = try kernelCall("open map id \(id)") { cbpf_fd_by_id(Int32(BPF_MAP_GET_FD_BY_ID.rawValue), id, 0) }
        return try Map(adopting: OwnedFileDescriptor(adopting: Int32(fd)))
    }

    convenience init(adopting descriptor: OwnedFileDescriptor) throws(BPFError) {
        let info = try MapInfo(descriptor: descriptor)
        self.init(
            descriptor: descriptor, type: info.type, keySize: info.keySize, valueSize: info.valueSize,
            maxEntries: info.maxEntries, flags: info.flags, name: info.name)
    }

    /// Pins the map at `path` in a bpf filesystem (`BPF_OBJ_PIN`).
    public func pin(at path: String) throws(BPFError) {
        try kernelCall("pin map at \(path)", hints: pinHints(path)) { cbpf_obj_pin(descriptor.rawValue, path) }
    }

    /// What the kernel knows of the map.
    public func info() throws(BPFError) -> MapInfo { try MapInfo(descriptor: descriptor) }

    /// The bytes of kernel memory the map is charged for: the `memlock:` line of its
    /// `/proc/self/fdinfo` entry. Since Linux 6.4 this is the map's own account of what it
    /// has allocated (a hash's bucket array and its elements, a trie's nodes); before, an
    /// estimate from its sizes (`max_entries` × key and value size).
    ///
    /// ```swift
    /// let map = try Map.create(type: .hash, keySize: 4, valueSize: 8, maxEntries: 1024)
    /// print(try map.chargedMemory())  // a few KiB
    /// ```
    public func chargedMemory() throws(BPFError) -> Int {
        let path = descriptor.withRawValue { "/proc/self/fdinfo/\($0)" }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BPFError(operation: "open \(path)", code: errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw BPFError(operation: "read \(path)", code: errno) }
            if count == 0 { break }
            bytes += buffer[..<count]
        }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("memlock:") {
            if let value = Int(line.dropFirst("memlock:".count).drop { $0 == " " || $0 == "\t" }) { return value }
        }
        throw BPFError(
            operation: "read \(path)", code: ENODATA, kind: .notSupported, hint: "the kernel shows no memlock line")
    }

    /// A reference for `Statement.loadMap`, resolved to this map's descriptor at load time.
    public var reference: MapReference { MapReference(name: name, object: self) }

    /// The size of the value buffer a lookup fills: per-CPU maps return one 8-byte-aligned
    /// value per possible CPU.
    public var lookupValueSize: Int {
        type.isPerCPU ? ((valueSize + 7) / 8 * 8) * possibleCPUCount : valueSize
    }

    /// How an update treats an existing entry.
    public enum UpdateMode: UInt64, Sendable {
        /// Create or replace (`BPF_ANY`).
        case any = 0
        /// Only create (`BPF_NOEXIST`); an existing key fails with ``BPFError/Kind/alreadyExists``.
        case onlyNew = 1
        /// Only replace (`BPF_EXIST`); a missing key fails with ``BPFError/Kind/notFound``.
        case onlyExisting = 2
    }

    private func check(_ key: [UInt8], _ what: String) throws(BPFError) {
        guard key.count == keySize else {
            throw BPFError(
                operation: "\(what) in map \"\(name)\"", code: EINVAL, kind: .invalidArgument,
                hint: "the key has \(key.count) bytes; this map's keys have \(keySize)")
        }
    }

    /// The kernel reads exactly ``lookupValueSize`` bytes of an update's value (one value per
    /// possible CPU for per-CPU maps): anything else would store bytes from beyond the buffer.
    private func checkValue(_ count: Int, _ what: String) throws(BPFError) {
        guard count == lookupValueSize else {
            throw BPFError(
                operation: "\(what) in map \"\(name)\"", code: EINVAL, kind: .invalidArgument,
                hint: "the value has \(count) bytes; this map's values have \(lookupValueSize)"
                    + (type.isPerCPU ? " (\(valueSize) rounded up to 8, for each of \(possibleCPUCount) CPUs)" : ""))
        }
    }

    /// The value for `key`, or `nil` if there is none (`BPF_MAP_LOOKUP_ELEM`).
    public func lookup(_ key: [UInt8]) throws(BPFError) -> [UInt8]? {
        try check(key, "lookup")
        var value = [UInt8](repeating: 0, count: lookupValueSize)
        let result = key.withUnsafeBytes { k in
            value.withUnsafeMutableBytes { v in cbpf_map_lookup(descriptor.rawValue, k.baseAddress, v.baseAddress, 0) }
        }
        if result == -Int(ENOENT) { return nil }
        if result < 0 { throw BPFError(operation: "lookup in map \"\(name)\"", code: Int32(-result)) }
        return value
    }

    /// Sets `key` to `value` (`BPF_MAP_UPDATE_ELEM`). For SOCKMAP and SOCKHASH the value is a
    /// socket descriptor; see ``SocketMap``.
    /// The value must have ``lookupValueSize`` bytes; a key or value of another size throws.
    public func update(_ key: [UInt8], _ value: [UInt8], mode: UpdateMode = .any) throws(BPFError) {
        try check(key, "update")
        try checkValue(value.count, "update")
        let hints: [Int32: String] = [
            EEXIST: "the key already exists (update mode onlyNew)",
            ENOENT: "the key does not exist (update mode onlyExisting)",
            E2BIG: "the map is full (\(maxEntries) entries)",
        ]
        try kernelCall("update map \"\(name)\"", hints: hints) {
            key.withUnsafeBytes { k in
                value.withUnsafeBytes { v in
                    cbpf_map_update(descriptor.rawValue, k.baseAddress, v.baseAddress, mode.rawValue)
                }
            }
        }
    }

    /// Removes `key`; returns whether it was there (`BPF_MAP_DELETE_ELEM`).
    @discardableResult
    public func delete(_ key: [UInt8]) throws(BPFError) -> Bool {
        try check(key, "delete")
        let result = key.withUnsafeBytes { cbpf_map_delete(descriptor.rawValue, $0.baseAddress) }
        if result == -Int(ENOENT) { return false }
        if result < 0 { throw BPFError(operation: "delete from map \"\(name)\"", code: Int32(-result)) }
        return true
    }

    /// Whether the map has no keys: one `BPF_MAP_GET_NEXT_KEY` from no key. (Arrays are
    /// never empty.)
    public func isEmpty() throws(BPFError) -> Bool {
        var next = [UInt8](repeating: 0, count: keySize)
        let result = next.withUnsafeMutableBytes { cbpf_map_next_key(descriptor.rawValue, nil, $0.baseAddress) }
        if result == -Int(ENOENT) { return true }
        if result < 0 { throw BPFError(operation: "iterate map \"\(name)\"", code: Int32(-result)) }
        return false
    }

    /// Every key, in the kernel's iteration order (`BPF_MAP_GET_NEXT_KEY`).
    public func keys() throws(BPFError) -> [[UInt8]] {
        var keys: [[UInt8]] = []
        var current: [UInt8]? = nil
        while true {
            var next = [UInt8](repeating: 0, count: keySize)
            let result = next.withUnsafeMutableBytes { n in
                if let current {
                    return current.withUnsafeBytes { c in
                        cbpf_map_next_key(descriptor.rawValue, c.baseAddress, n.baseAddress)
                    }
                }
                return cbpf_map_next_key(descriptor.rawValue, nil, n.baseAddress)
            }
            if result == -Int(ENOENT) { return keys }
            if result < 0 { throw BPFError(operation: "iterate map \"\(name)\"", code: Int32(-result)) }
            keys.append(next)
            current = next
        }
    }

    /// Updates many entries in one call (`BPF_MAP_UPDATE_BATCH`, Linux 5.6+). Falls back to
    /// one update per entry where the kernel lacks batch operations for this map type.
    public func updateBatch(_ entries: [(key: [UInt8], value: [UInt8])], mode: UpdateMode = .any) throws(BPFError) {
        guard !entries.isEmpty else { return }
        var keys: [UInt8] = []
        var values: [UInt8] = []
        keys.reserveCapacity(entries.count * keySize)
        values.reserveCapacity(entries.count * lookupValueSize)
        for (key, value) in entries {
            try check(key, "batch update")
            try checkValue(value.count, "batch update")
            keys += key
            values += value
        }
        try updateBatch(keys: keys, values: values, mode: mode)
    }

    /// Updates many entries given as contiguous buffers: `keys` holds n keys of ``keySize``
    /// bytes, `values` n values of ``lookupValueSize`` bytes, in the same order. The form for
    /// large batches, without an array per entry.
    public func updateBatch(keys: [UInt8], values: [UInt8], mode: UpdateMode = .any) throws(BPFError) {
        guard !keys.isEmpty || !values.isEmpty else { return }
        let n = keys.count / keySize
        guard keys.count == n * keySize, values.count == n * lookupValueSize else {
            throw BPFError(
                operation: "batch update in map \"\(name)\"", code: EINVAL, kind: .invalidArgument,
                hint:
                    "\(keys.count) key bytes and \(values.count) value bytes are not n keys of \(keySize) and n values"
                    + " of \(lookupValueSize)")
        }
        // At most 2^20 entries per call, so no single call holds the map's lock for long.
        let chunk = 1 << 20
        var first = 0
        while first < n {
            let last = min(n, first + chunk)
            var count = UInt32(last - first)
            let result = keys.withUnsafeBytes { k in
                values.withUnsafeBytes { v in
                    cbpf_map_batch(
                        Int32(BPF_MAP_UPDATE_BATCH.rawValue), descriptor.rawValue, nil, nil,
                        UnsafeMutableRawPointer(mutating: k.baseAddress! + first * keySize),
                        UnsafeMutableRawPointer(mutating: v.baseAddress! + first * lookupValueSize), &count,
                        mode.rawValue,
                        0)
                }
            }
            if result == -Int(EINVAL) || result == -Int(kernelNotSupported) || result == -Int(EOPNOTSUPP) {
                // No batch operations for this map type (or this kernel): one update per entry.
                for i in (first + Int(count))..<last {
                    try update(
                        Array(keys[i * keySize..<(i + 1) * keySize]),
                        Array(values[i * lookupValueSize..<(i + 1) * lookupValueSize]), mode: mode)
                }
            } else if result < 0 {
                throw BPFError(operation: "batch update of map \"\(name)\"", code: Int32(-result))
            }
            first = last
        }
    }

    /// Reads every entry in as few calls as the kernel allows (`BPF_MAP_LOOKUP_BATCH`), falling
    /// back to iteration where the map type has no batch lookup.
    public func entries() throws(BPFError) -> [(key: [UInt8], value: [UInt8])] {
        let chunk = max(1, min(maxEntries, 4096))
        var result: [(key: [UInt8], value: [UInt8])] = []
        var token = [UInt8](repeating: 0, count: max(keySize, 8))
        var first = true
        while true {
            var keys = [UInt8](repeating: 0, count: chunk * keySize)
            var values = [UInt8](repeating: 0, count: chunk * lookupValueSize)
            var count = UInt32(chunk)
            var outToken = [UInt8](repeating: 0, count: token.count)
            let code = keys.withUnsafeMutableBytes { k in
                values.withUnsafeMutableBytes { v in
                    token.withUnsafeMutableBytes { inT in
                        outToken.withUnsafeMutableBytes { outT in
                            cbpf_map_batch(
                                Int32(BPF_MAP_LOOKUP_BATCH.rawValue), descriptor.rawValue,
                                first ? nil : inT.baseAddress,
                                outT.baseAddress, k.baseAddress, v.baseAddress, &count, 0, 0)
                        }
                    }
                }
            }
            if code < 0 && code != -Int(ENOENT) {
                if first && (code == -Int(EINVAL) || code == -Int(kernelNotSupported) || code == -Int(EOPNOTSUPP)) {
                    var all: [(key: [UInt8], value: [UInt8])] = []
                    for key in try self.keys() {
                        if let value = try lookup(key) { all.append((key, value)) }
                    }
                    return all
                }
                throw BPFError(operation: "batch lookup of map \"\(name)\"", code: Int32(-code))
            }
            for i in 0..<Int(count) {
                result.append(
                    (
                        Array(keys[i * keySize..<(i + 1) * keySize]),
                        Array(values[i * lookupValueSize..<(i + 1) * lookupValueSize])
                    ))
            }
            if code == -Int(ENOENT) { return result }
            token = outToken
            first = false
        }
    }

    /// `TYPE map "NAME"`, e.g. `array map "sksteer_meta"`.
    public var description: String { "\(type) map \"\(name)\"" }
}

/// Facts about a map, from `BPF_OBJ_GET_INFO_BY_FD`.
public struct MapInfo: Sendable, Hashable {
    /// The kernel's id for the map.
    public var id: UInt32
    /// The map type.
    public var type: MapType
    /// The map's name, as the kernel stores it.
    public var name: String
    /// The key size in bytes.
    public var keySize: Int
    /// The value size in bytes.
    public var valueSize: Int
    /// The maximum number of entries.
    public var maxEntries: Int
    /// The `map_flags` the map was created with.
    public var flags: UInt32

    init(descriptor: OwnedFileDescriptor) throws(BPFError) {
        var info = bpf_map_info()
        try objectInfo(descriptor, "read map info", &info)
        id = info.id
        type = MapType(rawValue: info.type)
        name = withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        keySize = Int(info.key_size)
        valueSize = Int(info.value_size)
        maxEntries = Int(info.max_entries)
        flags = info.map_flags
    }
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`), the count of values a
/// per-CPU map lookup returns.
public let possibleCPUCount: Int = {
    guard let file = fopen("/sys/devices/system/cpu/possible", "r") else {
        return Int(sysconf(Int32(_SC_NPROCESSORS_CONF)))
    }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 256)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return 1 }
    let text = String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var count = 0
    for range in text.split(separator: ",") {
        let bounds = range.split(separator: "-").compactMap { Int($0) }
        count += bounds.count == 2 ? bounds[1] - bounds[0] + 1 : 1
    }
    return max(count, 1)
}()

extension Statement {
    /// `dst = map` for a map object; the loader puts in its descriptor.
    public static func loadMap(_ dst: Register, _ map: Map) -> Statement { .loadMap(dst, map.reference) }
}

extension Map {
    /// Puts `inner` at `index` of a map-in-map (`ARRAY_OF_MAPS` or `HASH_OF_MAPS` with 4-byte
    /// keys). The swap is atomic: programs see the old inner map or the new one.
    public func setInnerMap(_ inner: Map, at index: UInt32) throws(BPFError) {
        try update(rawBytes(of: index), rawBytes(of: UInt32(bitPattern: inner.descriptor.rawValue)))
    }

    /// The inner map at `index` of a map-in-map (a lookup from user space yields its id).
    public func innerMap(at index: UInt32) throws(BPFError) -> Map? {
        guard let bytes = try lookup(rawBytes(of: index)) else { return nil }
        return try Map.open(id: value(UInt32.self, from: bytes.prefix(4)))
    }
}
