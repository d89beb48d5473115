import BPF
import FoundationEssentials

/// The declarative file of `apply` and `plan`: the whole set of bindings.
///
/// Either JSON, `{"bindings": [{"label": "web", "protocol": "tcp", "prefix": "127.0.0.1",
/// "ports": "80"}]}` (unknown fields are refused), or lines of `LABEL PROTO PREFIX PORTS`,
/// with `#` comments:
///
/// ```
/// # label  protocol  prefix        ports
/// proxy    tcp       127.0.0.0/24  *
/// web      tcp       127.0.0.1     80
/// api      tcp       127.0.0.2     5000-5099
/// ```
public enum BindingFile {
    /// Parses the text of a binding file; errors name the line (or JSON entry). `note` hears
    /// of what is accepted but maybe not meant (a prefix with host bits set), by line.
    public static func parse(
        _ text: String, note: (String) -> Void = { _ in }
    ) throws(SteeringError) -> [Binding] {
        let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }
        if trimmed.first == "{" { return try parseJSON(String(trimmed), note: note) }
        if trimmed.first == "[" {
            throw .invalidInput("a JSON binding file is an object, {\"bindings\": [...]}, not a bare array")
        }
        // Split on bytes, not characters: a file of a million lines parses in a blink.
        var bindings: [Binding] = []
        var firstLine: [Binding.Rule: (line: Int, label: String)] = [:]
        // Room for every line up front: growing a dictionary of a million rules rehashes it
        // twenty times (0.8 s of a 1M-line file).
        let lines = text.utf8.reduce(into: 1) { count, byte in if byte == UInt8(ascii: "\n") { count += 1 } }
        bindings.reserveCapacity(lines)
        firstLine.reserveCapacity(lines)
        var line = 0
        var fields: [String] = []
        var field: [UInt8] = []
        var comment = false
        func endField() {
            if !field.isEmpty { fields.append(String(decoding: field, as: UTF8.self)) }
            field.removeAll(keepingCapacity: true)
        }
        func endLine() throws(SteeringError) {
            endField()
            line += 1
            defer {
                fields.removeAll(keepingCapacity: true)
                comment = false
            }
            if fields.isEmpty { return }
            guard fields.count == 4 || fields.count == 5 else {
                throw .invalidInput(
                    "line \(line): expected LABEL PROTO PREFIX PORTS [drop|pass], found \(fields.count) fields")
            }
            do {
                var (binding, written) = try Binding.parse(
                    label: fields[0], protocol: fields[1], prefix: fields[2], ports: fields[3])
                if fields.count == 5 { binding.noSocket = try Binding.policy(fields[4]) }
                if let text = Binding.hostBitsNote(fields[2], parsed: binding.prefix, written: written) {
                    note("line \(line): \(text)")
                }
                if let earlier = firstLine.updateValue((line, binding.label), forKey: binding.rule) {
                    let rule = "\(binding.transport) \(binding.prefix) \(binding.ports)"
                    guard earlier.label == binding.label else {
                        throw SteeringError.conflict(
                            "\(rule) is bound to '\(earlier.label)' on line \(earlier.line) and to '\(binding.label)'")
                    }
                    note("line \(line): \(rule) → \(binding.label) repeats line \(earlier.line)")
                }
                bindings.append(binding)
            } catch let error as SteeringError {
                if case .conflict = error { throw .conflict("line \(line): \(error)") }
                throw .invalidInput("line \(line): \(error)")
            } catch {
                throw .invalidInput("line \(line): \(error)")
            }
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\n"): try endLine()
            case _ where comment: continue
            case UInt8(ascii: "#"):
                endField()
                comment = true
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"): endField()
            default: field.append(byte)
            }
        }
        try endLine()
        return bindings
    }

    static func parseJSON(_ text: String, note: (String) -> Void = { _ in }) throws(SteeringError) -> [Binding] {
        if let (key, line) = duplicateKey(in: text) {
            throw .invalidInput("line \(line): field \"\(key)\" appears twice in one JSON object")
        }
        do {
            let file = try JSONDecoder().decode(File.self, from: Data(text.utf8))
            for (index, prefix) in file.prefixTexts.enumerated() {
                if let text = Binding.hostBitsNote(prefix) { note("bindings[\(index)]: \(text)") }
            }
            return file.bindings
        } catch let error as SteeringError {
            throw error
        } catch DecodingError.dataCorrupted(let context) {
            throw .invalidInput(
                "not valid JSON: \(context.underlyingError.map { "\($0)" } ?? context.debugDescription)")
        } catch DecodingError.keyNotFound(let key, let context) {
            throw .invalidInput("\(path(context.codingPath)): \"\(key.stringValue)\" is missing")
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            throw .invalidInput("\(path(context.codingPath)): \(context.debugDescription)")
        } catch {
            throw .invalidInput("\(error)")
        }
    }

    /// The first key that appears twice in one JSON object, and its line: JSONDecoder would
    /// silently keep one of them. Strings are compared as written (escapes not decoded).
    static func duplicateKey(in text: String) -> (key: String, line: Int)? {
        var objects: [Set<[UInt8]>?] = []  // nil: an array
        var expectKey = false
        var line = 1
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            let byte = bytes[i]
            switch byte {
            case UInt8(ascii: "\n"): line += 1
            case UInt8(ascii: "{"):
                objects.append([])
                expectKey = true
            case UInt8(ascii: "["):
                objects.append(nil)
                expectKey = false
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if !objects.isEmpty { objects.removeLast() }
                expectKey = false
            case UInt8(ascii: ","): expectKey = objects.last.map { $0 != nil } ?? false
            case UInt8(ascii: "\""):
                var end = i + 1
                while end < bytes.count, bytes[end] != UInt8(ascii: "\"") {
                    end += bytes[end] == UInt8(ascii: "\\") ? 2 : 1
                }
                let string = Array(bytes[(i + 1)..<min(end, bytes.count)])
                if expectKey, let keys = objects.last, var seen = keys {
                    if seen.contains(string) { return (String(decoding: string, as: UTF8.self), line) }
                    seen.insert(string)
                    objects[objects.count - 1] = seen
                    expectKey = false
                }
                i = end
            default: break
            }
            i += 1
        }
        return nil
    }

    static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }.description
    }

    /// `{"bindings": [...]}`, refusing unknown fields at both levels.
    struct File: Decodable {
        var bindings: [Binding]
        /// Each binding's prefix as written.
        var prefixTexts: [String] = []

        struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int?
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let keys = try decoder.container(keyedBy: AnyKey.self)
            for key in keys.allKeys where key.stringValue != "bindings" {
                throw SteeringError.invalidInput(
                    "unknown field \"\(key.stringValue)\" (a binding file has only \"bindings\")")
            }
            var list = try keys.nestedUnkeyedContainer(forKey: AnyKey(stringValue: "bindings"))
            var bindings: [Binding] = []
            var prefixTexts: [String] = []
            while !list.isAtEnd {
                let index = list.currentIndex
                let entry = try list.nestedContainer(keyedBy: AnyKey.self)
                let known = ["label", "protocol", "prefix", "ports", "no_socket"]
                for key in entry.allKeys where !known.contains(key.stringValue) {
                    throw SteeringError.invalidInput("bindings[\(index)]: unknown field \"\(key.stringValue)\"")
                }
                func field(_ name: String) throws -> String {
                    let key = AnyKey(stringValue: name)
                    if name == "ports", let number = try? entry.decode(Int.self, forKey: key) { return "\(number)" }
                    guard let text = try entry.decodeIfPresent(String.self, forKey: key) else {
                        throw SteeringError.invalidInput("bindings[\(index)]: \"\(name)\" is missing")
                    }
                    return text
                }
                do {
                    var binding = try Binding(
                        label: field("label"), protocol: field("protocol"), prefix: field("prefix"),
                        ports: field("ports"))
                    if let policy = try entry.decodeIfPresent(String.self, forKey: AnyKey(stringValue: "no_socket")) {
                        binding.noSocket = try Binding.policy(policy)
                    }
                    bindings.append(binding)
                    prefixTexts.append(try field("prefix"))
                } catch let error as SteeringError {
                    throw SteeringError.invalidInput(
                        error.description.hasPrefix("bindings[") ? error.description : "bindings[\(index)]: \(error)")
                }
            }
            self.bindings = bindings
            self.prefixTexts = prefixTexts
        }
    }
}
