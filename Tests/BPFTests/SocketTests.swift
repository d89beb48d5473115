import BPF
import Foundation
import KernelTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(needsRoot)
struct SocketTests {
    /// A socket timeout is reported as EAGAIN after one timeout, not retried (it once took six).
    @Test func aTimeoutIsOneTimeout() throws {
        let namespace = try NetworkNamespace.makeThrowaway()
        try namespace.run {
            let listener = try Socket.bound(.tcp, .loopback4, port: 0)
            try listener.setTimeout(milliseconds: 200)
            let start = ContinuousClock.now
            #expect { try listener.accept() } throws: { ($0 as? BPFError)?.code == EAGAIN }
            let waited = ContinuousClock.now - start
            #expect(waited >= .milliseconds(190) && waited < .milliseconds(600), "accept waited \(waited)")
            let udp = try Socket.bound(.udp, .loopback4, port: 0)
            try udp.setTimeout(milliseconds: 200)
            let again = ContinuousClock.now
            #expect { try udp.receive() } throws: { ($0 as? BPFError)?.code == EAGAIN }
            #expect(ContinuousClock.now - again < .milliseconds(600))
        }
    }

    /// `receiveMessage` names the address each datagram was sent to (IP_PKTINFO,
    /// IPV6_RECVPKTINFO) and, with the original-destination option, its port; a reply sent
    /// `from:` that address reaches a connected client, which a plain reply from the
    /// wildcard socket does not.
    @Test(arguments: [
        (IPAddress.any4, "127.0.0.5", "127.0.0.9", AF_INET), (IPAddress.any6, "fd00::5", "fd00::9", AF_INET6),
    ])
    func repliesFromTheAddressTheClientSentTo(
        wildcard: IPAddress, target: String, clientAddress: String, family: Int32
    ) throws {
        let namespace = try NetworkNamespace.makeThrowaway()
        let address = IPAddress(target)!
        let clientSide = IPAddress(clientAddress)!
        if family == AF_INET6 {
            try namespace.addAddress(address, prefixLength: 128)
            try namespace.addAddress(clientSide, prefixLength: 128)
            usleep(100_000)
        }
        try namespace.run {
            let server = try Socket.unbound(.udp, family: family)
            try server.set(family == AF_INET ? .packetInfo : .receivePacketInfo6, true)
            try server.set(
                family == AF_INET ? .receiveOriginalDestination : .receiveOriginalDestination6, true)
            if family == AF_INET6 { try server.set(.v6Only, true) }
            try server.bind(to: Endpoint(wildcard, 0))
            let port = try server.localEndpoint().port
            try server.setTimeout(milliseconds: 2000)

            // The client sends from another local address, so that the route back to it has
            // a source address of its own, not the one the client sent to.
            let client = try Socket.unbound(.udp, family: family)
            try client.bind(to: Endpoint(clientSide, 0))
            try client.connect(to: Endpoint(address, port))
            try client.setTimeout(milliseconds: 500)
            try client.send(Array("ping".utf8))
            let query = try server.receiveMessage()
            #expect(query.bytes == Array("ping".utf8))
            #expect(query.destination == address)
            #expect(query.originalDestination == Endpoint(address, port))
            #expect(query.from == (try client.localEndpoint()))
            #expect((query.interfaceIndex ?? 0) > 0)

            // A plain reply leaves from the route's source address, not the one asked.
            try server.send(Array("plain".utf8), to: query.from)
            #expect { try client.receive() } throws: { ($0 as? BPFError)?.code == EAGAIN }
            try server.send(Array("pong".utf8), to: query.from, from: query.destination!)
            #expect(try client.receive() == Array("pong".utf8))

            // Without the options there are no control messages to read.
            let bare = try Socket.bound(.udp, family == AF_INET ? .loopback4 : .loopback6, port: 0)
            try bare.setTimeout(milliseconds: 2000)
            let sender = try Socket.bound(.udp, family == AF_INET ? .loopback4 : .loopback6, port: 0)
            try sender.send(Array("x".utf8), to: try bare.localEndpoint())
            let plain = try bare.receiveMessage()
            #expect(plain.destination == nil && plain.originalDestination == nil && plain.interfaceIndex == nil)
            #expect(plain.from == (try sender.localEndpoint()))
        }
    }
}
