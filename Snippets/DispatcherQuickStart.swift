// The dispatcher from Swift: load it in a throwaway namespace, register a server's socket,
// bind a /24 on port 80 to it, and connect. Run as root:
//   swift build && .build/debug/DispatcherQuickStart
// (ExampleTests runs it and checks what it prints.)
import BPF
import Foundation
import SocketSteering

// snippet.show
let namespace = try NetworkNamespace.makeThrowaway()  // never the machine's own
// A private bpf filesystem for the dispatcher's pinned state.
let bpffs = FileManager.default.temporaryDirectory.appendingPathComponent("sksteer-quickstart-\(getpid())").path
try FileManager.default.createDirectory(atPath: bpffs, withIntermediateDirectories: true)
try BPFFileSystem.mount(at: bpffs)

do {
    let dispatcher = try Dispatcher.load(namespace: namespace, bpffs: bpffs)
    // The server listens on a port of its own; the dispatcher brings it port 80 of a /24.
    let server = try namespace.run { try Socket.bound(.tcp, .loopback4, port: 0) }
    try dispatcher.register(server, label: "web")
    try dispatcher.bind(Binding(label: "web", protocol: "tcp", prefix: "127.0.0.0/24", ports: "80"))

    let client = try namespace.run { try Socket.connected(.tcp, to: IPAddress("127.0.0.9")!, port: 80) }
    let connection = try server.accept()
    print("127.0.0.9:80 reached the server, as \(try connection.localEndpoint())")
    print(try dispatcher.explain(.tcp, IPAddress("127.0.0.9")!, 80).outcome)
    _ = client
}
_ = try Dispatcher.unload(namespace: namespace, bpffs: bpffs)
try BPFFileSystem.unmount(at: bpffs)
try FileManager.default.removeItem(atPath: bpffs)
// snippet.end
