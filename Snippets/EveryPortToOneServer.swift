// The guide's headline example: every TCP port of 127.0.0.1 to one server, with the
// SK_LOOKUP builder. Run as root:
//   swift build && .build/debug/EveryPortToOneServer
// (WalkthroughTests runs it and checks what it prints.)
import BPF
import BPFAssembly
import SKLookup

#if canImport(Glibc)
    import Glibc
#endif

// snippet.show
let namespace = try NetworkNamespace.makeThrowaway()  // never the machine's own
let server = try namespace.run { try Socket.bound(.tcp, .loopback4, port: 8000) }
let sockets = try SocketMap.create(count: 1)
try sockets.set(0, server)

let mine = Label("mine")
let other = Label("other")
let program = try SKLookupProgram(defaultAction: .pass) {
    SKLookup.checkAddress(.r6, .local, in: IPPrefix("127.0.0.1/32")!, scratch: .r7, goto: mine)
    Statement.ja(to: other)
    mine
    SKLookup.assignAndPass(context: .r6, from: sockets.map, key: 0, missing: other, failed: other)
    other
}.load(name: "every_port")
let link = try program.attach(to: namespace)  // keep it: releasing the link detaches

for port: UInt16 in [1, 22, 31337, 65535] {
    let client = try namespace.run { try Socket.connected(.tcp, to: .loopback4, port: port) }
    let connection = try server.accept()  // every port lands on the one server
    print("port \(port) → \(try connection.localEndpoint())")
    _ = client
}
// snippet.end

// And another address is not taken: the normal lookup refuses 127.0.0.2:22.
let refused: Bool
do {
    _ = try namespace.run { try Socket.connected(.tcp, to: .v4(127, 0, 0, 2), port: 22) }
    refused = false
} catch let error as BPFError {
    refused = error.code == ECONNREFUSED
}
print("127.0.0.2:22 → \(refused ? "refused" : "answered")")
print("link runs program \(try link.info().programID == (try program.info().id) ? "every_port" : "?")")
