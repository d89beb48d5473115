import ArgumentParser
import BPF
import SocketSteering

#if canImport(Glibc)
    import Glibc
#endif

/// A UDP service for a whole prefix on one port, through the dispatcher, that answers each
/// client from the address the client sent to. Its socket is bound to the prefix's first
/// address; a reply sent plainly would leave from that address (or the route's), and a client
/// that connected its UDP socket to, say, `127.0.0.9` would drop it. `IP_PKTINFO` /
/// `IPV6_RECVPKTINFO` name the destination of each datagram, and the reply goes out from it
/// (tubular leaves this to each application). SwiftNIO reads the destination
/// (`AddressedEnvelope.Metadata.packetInfo`) but cannot send from it, so this uses the
/// kernel layer's `Socket`:
///
///     sksteer load
///     swift run UDPFromAddress 127.0.0.0/24 5300
///     echo hi | nc -u -w1 127.0.0.9 5300     # "127.0.0.9 heard: hi"
@main
struct UDPFromAddress: ParsableCommand {
    @Argument(help: "The prefix whose every address this service answers on.") var prefix: String
    @Argument(help: "The UDP port.") var port: UInt16
    @Option(help: "The dispatcher label for this service.") var label = "udp-from-address"
    @Option(help: "The bpf filesystem that holds the dispatcher's state.") var bpffs = "/sys/fs/bpf"

    func run() throws {
        guard let network = IPPrefix(prefix) else { throw ValidationError("'\(prefix)' is not an IP prefix") }
        let ipv4 = network.address.isIPv4
        let socket = try Socket.unbound(.udp, family: network.address.family)
        try socket.set(ipv4 ? .packetInfo : .receivePacketInfo6, true)
        if !ipv4 { try socket.set(.v6Only, true) }
        try socket.bind(to: Endpoint(network.address, port))
        try steer(socket)
        print("answering UDP \(prefix) port \(port) as '\(label)'")
        fflush(nil)  // at once, also when standard output is a pipe
        while true {
            guard let datagram = try? socket.receiveMessage() else { continue }
            let asked = datagram.destination ?? network.address
            let text = String(decoding: datagram.bytes, as: UTF8.self)
            _ = try? socket.send(Array("\(asked) heard: \(text)".utf8), to: datagram.from, from: asked)
        }
    }

    /// Registers the socket for the label and binds the prefix's port to it; the dispatcher
    /// is opened only for this (an open writable one holds its lock).
    func steer(_ socket: Socket) throws {
        let dispatcher = try Dispatcher.open(namespace: .current(), bpffs: bpffs)
        try dispatcher.register(socket, label: label)
        try dispatcher.bind(Binding(label: label, protocol: "udp", prefix: prefix, ports: "\(port)"))
    }
}
