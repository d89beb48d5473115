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
}
