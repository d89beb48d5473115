import BPF
import KernelTestSupport
import Testing

@testable import SocketSteering

/// The binding model, parsing and rule compilation, without the kernel.
struct BindingTests {
    @Test func parsingAndItsErrors() throws {
        #expect(try PortSet(parsing: "80") == .single(80))
        #expect(try PortSet(parsing: "8000-8999") == PortSet(8000, 8999))
        #expect(try PortSet(parsing: "*") == .all)
        for bad in ["70000", "9-3", "", "a", "1-2-3", "0", "-5", "0-0"] {
            #expect(throws: SteeringError.self, "\(bad)") { try PortSet(parsing: bad) }
        }
        #expect(PortSet(0, 0) == nil)
        #expect(throws: SteeringError.self) {
            try RuleSet([Binding(label: "x", transport: .tcp, prefix: IPPrefix("127.0.0.1")!, ports: .single(0))])
        }
        // Every set that can be made reads back from its text (bind, export and apply agree).
        var generator = SeededGenerator(seed: 0)
        for (lower, upper) in [(0, 1023), (0, 65535), (1, 1), (65535, 65535)]
            + (0..<1000).map({ _ in
                let a = UInt16.random(in: 0...65535, using: &generator)
                return (Int(a), Int(UInt16.random(in: a...65535, using: &generator)))
            })
        {
            guard let set = PortSet(UInt16(lower), UInt16(upper)) else {
                #expect(lower == 0 && upper == 0)
                continue
            }
            #expect(try PortSet(parsing: set.description) == set, "\(lower)-\(upper)")
        }
        let b = try Binding(label: "web", protocol: "TCP", prefix: "10.1.2.3/8", ports: "80")
        #expect(b.prefix.description == "10.0.0.0/8")
        #expect(b.description == "tcp 10.0.0.0/8 80 → web")
        #expect(throws: SteeringError.self) {
            try Binding(label: "x", protocol: "tcp", prefix: "::ffff:1.2.3.4", ports: "1")
        }
        #expect(throws: SteeringError.self) {
            try Binding(label: "x", protocol: "tcp", prefix: "1.2.3.4/33", ports: "1")
        }
        #expect(throws: SteeringError.self) {
            try Binding(label: String(repeating: "x", count: 64), protocol: "tcp", prefix: "::1", ports: "1")
        }
    }

    /// The README's precedence example.
    @Test func readmePrecedenceExample() {
        let bindings = [
            binding("proxy", "tcp", "127.0.0.0/24", "*"), binding("api", "tcp", "127.0.0.0/24", "5000-5999"),
            binding("admin", "tcp", "127.0.0.0/24", "5050"), binding("web", "tcp", "127.0.0.1", "*"),
        ]
        func winner(_ address: String, _ port: UInt16) -> String? {
            bindings.winner(for: .tcp, IPAddress(address)!, port)?.label
        }
        #expect(winner("127.0.0.9", 5050) == "admin")
        #expect(winner("127.0.0.9", 5051) == "api")
        #expect(winner("127.0.0.9", 80) == "proxy")
        #expect(winner("127.0.0.1", 5050) == "web")
        #expect(winner("127.0.1.1", 80) == nil)
        #expect(bindings.winner(for: .udp, IPAddress("127.0.0.9")!, 80) == nil)
    }

    @Test func bindingFiles() throws {
        let lines = try BindingFile.parse("# comment\nproxy tcp 127.0.0.0/24 *\n\nweb tcp 127.0.0.1 80  # inline\n")
        #expect(lines == [binding("proxy", "tcp", "127.0.0.0/24", "*"), binding("web", "tcp", "127.0.0.1", "80")])
        let json = try BindingFile.parse(
            #"{"bindings": [{"label": "web", "protocol": "tcp", "prefix": "127.0.0.1", "ports": 80}]}"#)
        #expect(json == [binding("web", "tcp", "127.0.0.1", "80")])
        func message(_ text: String) -> String {
            do {
                _ = try BindingFile.parse(text)
                return ""
            } catch { return error.description }
        }
        #expect(message("web tcp 127.0.0.1").contains("line 1"))
        #expect(message("ok tcp 1.2.3.4 1\nweb tcp 127.0.0.1 99999").contains("line 2: port 99999"))
        #expect(message(#"{"bindings": [], "extra": 1}"#).contains("unknown field \"extra\""))
        #expect(
            message(#"{"bindings": [{"label": "a", "protocol": "tcp", "prefix": "::1", "ports": "1", "x": 2}]}"#)
                .contains("bindings[0]: unknown field"))
        #expect(
            message(#"{"bindings": [{"label": "a", "protocol": "tcp", "ports": "1"}]}"#).contains(
                "\"prefix\" is missing"))
        #expect(message(#"{"bindings": [{"#).contains("not valid JSON"))
        // JSONDecoder would keep one of two equal keys without a word.
        #expect(
            message("{\"bindings\": [\n{\"label\": \"a\", \"label\": \"b\", \"protocol\": \"tcp\"}]}")
                == "line 2: field \"label\" appears twice in one JSON object")
        #expect(message(#"[{"label": "a"}]"#).contains("not a bare array"))
        // Two labels for one rule name both lines; the same binding twice is only a note.
        #expect(
            message("a tcp 127.0.0.0/24 80\n\nb tcp 127.0.0.0/24 80\n")
                == "line 3: tcp 127.0.0.0/24 80 is bound to 'a' on line 1 and to 'b'")
        var notes: [String] = []
        let repeated = try BindingFile.parse("a tcp 127.0.0.1/24 80\na tcp 127.0.0.0/24 80\n") { notes.append($0) }
        #expect(repeated.count == 2)
        #expect(
            notes == [
                "line 1: 127.0.0.1/24 has host bits set; it binds 127.0.0.0/24",
                "line 2: tcp 127.0.0.0/24 80 → a repeats line 1",
            ])
        notes = []
        _ = try BindingFile.parse(
            #"{"bindings": [{"label": "a", "protocol": "TCP", "prefix": "2001:db8::1/32", "ports": "*"}]}"#
        ) { notes.append($0) }
        #expect(notes == ["bindings[0]: 2001:db8::1/32 has host bits set; it binds 2001:db8::/32"])
        #expect(Binding.hostBitsNote("10.0.0.0/8") == nil)
        #expect(Binding.hostBitsNote("10.0.0.1") == nil)
    }
}
