/// Bounds-checked reads of little- or big-endian integers from a byte buffer. Every read that
/// would leave the buffer throws; nothing here traps on any input.
struct ByteReader {
    let bytes: [UInt8]
    let bigEndian: Bool

    init(_ bytes: [UInt8], bigEndian: Bool) {
        self.bytes = bytes
        self.bigEndian = bigEndian
    }

    func check(_ offset: Int, _ count: Int, _ what: @autoclosure () -> String) throws(ObjectError) {
        guard offset >= 0, count >= 0, offset <= bytes.count, count <= bytes.count - offset else {
            throw ObjectError(
                .truncated, "\(what()) at byte \(offset) (\(count) bytes) is past the end (\(bytes.count))")
        }
    }

    func u8(_ offset: Int, _ what: @autoclosure () -> String) throws(ObjectError) -> UInt8 {
        try check(offset, 1, what())
        return bytes[offset]
    }

    func u16(_ offset: Int, _ what: @autoclosure () -> String) throws(ObjectError) -> UInt16 {
        UInt16(truncatingIfNeeded: try integer(offset, 2, what()))
    }

    func u32(_ offset: Int, _ what: @autoclosure () -> String) throws(ObjectError) -> UInt32 {
        UInt32(truncatingIfNeeded: try integer(offset, 4, what()))
    }

    func u64(_ offset: Int, _ what: @autoclosure () -> String) throws(ObjectError) -> UInt64 {
        try integer(offset, 8, what())
    }

    /// A 64-bit size or offset that must fit an `Int` to be used as one.
    func size(_ offset: Int, _ what: @autoclosure () -> String) throws(ObjectError) -> Int {
        let value = try u64(offset, what())
        guard value <= UInt64(Int32.max) else {
            throw ObjectError(.malformed, "\(what()) is \(value), beyond any object this loader reads")
        }
        return Int(value)
    }

    private func integer(_ offset: Int, _ count: Int, _ what: @autoclosure () -> String) throws(ObjectError) -> UInt64 {
        try check(offset, count, what())
        var value: UInt64 = 0
        if bigEndian {
            for i in 0..<count { value = value << 8 | UInt64(bytes[offset + i]) }
        } else {
            for i in (0..<count).reversed() { value = value << 8 | UInt64(bytes[offset + i]) }
        }
        return value
    }

    func slice(_ offset: Int, _ count: Int, _ what: @autoclosure () -> String) throws(ObjectError) -> [UInt8] {
        try check(offset, count, what())
        return Array(bytes[offset..<offset + count])
    }

    /// A NUL-terminated string starting at `offset`.
    func cString(_ offset: Int, _ what: @autoclosure () -> String) throws(ObjectError) -> String {
        try check(offset, 0, what())
        guard let end = bytes[offset...].firstIndex(of: 0) else {
            throw ObjectError(.malformed, "\(what()) at byte \(offset) has no terminating NUL")
        }
        return String(decoding: bytes[offset..<end], as: UTF8.self)
    }
}

/// Appends integers in a chosen byte order (for the BTF handed to the kernel).
struct ByteWriter {
    var bytes: [UInt8] = []
    let bigEndian: Bool

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { append(UInt64(value), 2) }
    mutating func u32(_ value: UInt32) { append(UInt64(value), 4) }

    private mutating func append(_ value: UInt64, _ count: Int) {
        for i in 0..<count {
            let shift = bigEndian ? (count - 1 - i) * 8 : i * 8
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }
}
