import BPF
import BPFAssembly
import KernelTestSupport
import SKLookup
import Testing

/// Every `bpf_sk_assign` error, provoked by a real connection or datagram and read back from
/// the map the program writes the helper's result to.
@Suite(needsRoot)
struct AssignErrorTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var traffic: Socket.Transport
        var target: Endpoint
        var expected: AssignError
        var flags: AssignFlags = []
        /// Makes the socket to assign (first) and any it depends on, inside the namespace.
        var sockets: @Sendable () throws -> [Socket]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "established TCP", traffic: .tcp, target: unbound4, expected: .socketNotSupported) {
            let listener = try Socket.bound(.tcp, .loopback4, port: 7400)
            let client = try Socket.connected(.tcp, to: .loopback4, port: 7400)
            return [try listener.accept(), client]  // established while both ends are open
        },
        Case(name: "connected UDP", traffic: .udp, target: unbound4, expected: .socketNotSupported) {
            [try Socket.connected(.udp, to: .loopback4, port: 9)]
        },
        Case(name: "UDP socket for TCP", traffic: .tcp, target: unbound4, expected: .protocolMismatch) {
            [try Socket.bound(.udp, .loopback4, port: 7401)]
        },
        Case(name: "IPv4 socket for IPv6", traffic: .tcp, target: unbound6, expected: .familyMismatch) {
            [try Socket.bound(.tcp, .loopback4, port: 7402)]
        },
        Case(name: "v6-only socket for IPv4", traffic: .tcp, target: unbound4, expected: .familyMismatch) {
            [try Socket.bound(.tcp, .loopback6, port: 7403, v6Only: true)]
        },
        Case(
            name: "unknown flags", traffic: .tcp, target: unbound4, expected: .invalidFlags,
            flags: [AssignFlags(rawValue: 8)]
        ) {
            [try Socket.bound(.tcp, .loopback4, port: 7404)]
        },
    ]

    @Test(arguments: cases)
    func assignErrors(_ c: Case) throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let held = try namespace.run(c.sockets)
            let sockets = try SocketMap.create(count: 1)
            try sockets.set(0, held[0])
            let errors = try ArrayMap<Int64>.create(count: 1)
            let program = try recordingAssign(sockets, key: 0, flags: c.flags, errors: errors).load(name: "record")
            let link = try program.attach(to: namespace)
            // The program passes without a selection after a failed assign: normal lookup, nothing there.
            if c.traffic == .tcp {
                #expect(try namespace.run { isRefused(c.target) })
            } else {
                #expect(try namespace.run { isUnanswered(c.target) })
            }
            let recorded = try eventually { try errors[0] == 0 ? nil : errors[0] }
            #expect(recorded == -Int64(c.expected.rawValue))
            #expect(recorded.flatMap(AssignError.init(returnValue:)) == c.expected)
            // The test run sees the same failure.
            try errors.set(0, 0)
            let result = try program.testRun(Connection(c.traffic, to: c.target))
            #expect(result.selectedCookie == nil)
            #expect(try errors[0] == -Int64(c.expected.rawValue))
            _ = (link, held)
        }
    }

    @Test func everyAssignErrorExplainsItself() {
        for error in AssignError.allCases { #expect(error.description.contains("bpf_sk_assign")) }
        #expect(AssignError(returnValue: 0) == nil)
        #expect(AssignError(returnValue: -17) == .alreadySelected)
    }
}
