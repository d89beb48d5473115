import ArgumentParser
import BPF
import NIOCore
import NIOPosix
import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// Every TCP port of one address, answered by one SwiftNIO server through the dispatcher:
/// the guide's headline use, done by the service itself. Run it where `sksteer load` has run,
/// with CAP_BPF and CAP_NET_ADMIN (as sksteer):
///
///     sksteer load
///     swift run EveryPortServer 127.0.0.1
///     nc 127.0.0.1 8080     # or any other port: "hello from port 8080"
///
/// It registers its listening socket for `--label` and binds every TCP port of the address
/// to that label; the binding stays when it exits (`sksteer unbind` removes it), and the
/// socket leaves the dispatcher when the process closes it.
@main
struct EveryPortServer: AsyncParsableCommand {
    @Argument(help: "The address whose every TCP port this server takes.") var address: String
    @Option(help: "The dispatcher label for this server.") var label = "every-port"
    @Option(help: "The bpf filesystem that holds the dispatcher's state.") var bpffs = "/sys/fs/bpf"

    func run() async throws {
        guard let ip = IPAddress(address) else { throw ValidationError("'\(address)' is not an IP address") }
        // 1. A listening socket on one (any free) port of the address.
        let socket = try Socket.bound(.tcp, ip, port: 0)
        // 2. Registered for the label, and every port of the address bound to it. The
        //    dispatcher is opened only for this: an open writable one holds its lock.
        try steer(socket)
        // 3. SwiftNIO serves the socket through its own duplicate of the descriptor.
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(Greeter()) }
            }
            .withBoundSocket(socket.duplicatedDescriptor()).get()
        print("serving every TCP port of \(address) as '\(label)'")
        fflush(nil)  // at once, also when standard output is a pipe
        try await server.closeFuture.get()
    }

    func steer(_ socket: Socket) throws {
        let dispatcher = try Dispatcher.open(namespace: .current(), bpffs: bpffs)
        try dispatcher.register(socket, label: label)
        try dispatcher.bind(Binding(label: label, protocol: "tcp", prefix: address, ports: "*"))
    }
}

/// Tells each client the port it connected to (the accepted socket's local address is the
/// one the client chose), then closes.
final class Greeter: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        let greeting = "hello from port \(channel.localAddress?.port ?? 0)\n"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: greeting))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
