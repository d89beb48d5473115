import BPF
import BPFAssembly
import KernelTestSupport
import SKLookup
import Testing

/// The guide's three complete examples, loaded, attached in a throwaway namespace and
/// checked with real connections.
@Suite(needsRoot)
struct GuideTests {
    /// The doc comments' examples of `SKLookup` and `SKLookupProgram`, as written, load and
    /// do what they say (a body that ended in its own return once left the default action
    /// unreachable, which the verifier rejects).
    @Test func theDocExamplesLoad() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let web = try NameServer(
                name: "web", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 8080) })
            let other = try NameServer(
                name: "other", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 9090) })
            let pass = Label("pass")
            let program = try SKLookupProgram(defaultAction: .pass) {
                SKLookup.getLocalPort(.r6, into: .r7)
                SKLookup.checkPort(.r7, .single(8080), goto: pass)
                SKLookup.drop()
                pass  // falls through to the default action: every instruction is reachable
            }
            var link = try program.load(name: "doc_example").attach(to: namespace)
            #expect(try namespace.run { try NameServer.ask(.tcp, Endpoint(.loopback4, 8080)) } == "web")
            #expect(try namespace.run { isRefused(Endpoint(.loopback4, 9090)) })
            try link.detach()
            let https = try SKLookupProgram(contextRegister: .r6, defaultAction: .drop) {
                SKLookup.getLocalPort(.r6, into: .r7)
                Instruction.jump(.jne, .r7, 443, offset: 2)
                Instruction.mov(.r0, 1)
                Instruction.exit()
            }
            link = try https.load(name: "https_only").attach(to: namespace)
            #expect(try namespace.run { isRefused(Endpoint(.loopback4, 8080)) })
            _ = (web, other, link)
        }
    }

    @Test func portFilterLets8080ThroughAndDropsTheRest() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let web = try NameServer(
                name: "web", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 8080) })
            let other = try NameServer(
                name: "other", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 9090) })
            // (sk-lookup-prologue :r6) (sk-lookup-get-local-port :r6 :r7) (jmp-imm :jeq :r7 8080 2)
            // (sk-lookup-drop) (sk-lookup-pass)
            let portFilter = try assemble {
                SKLookup.prologue(.r6)
                SKLookup.getLocalPort(.r6, into: .r7)
                Instruction.jump(.jeq, .r7, 8080, offset: 2)
                SKLookup.drop()
                SKLookup.pass()
            }
            let link = try loadSKLookup(portFilter, name: "port_filter").attach(to: namespace)
            #expect(try namespace.run { try NameServer.ask(.tcp, Endpoint(.loopback4, 8080)) } == "web")
            #expect(try namespace.run { isRefused(Endpoint(.loopback4, 9090)) })
            try link.detach()
            #expect(try namespace.run { try NameServer.ask(.tcp, Endpoint(.loopback4, 9090)) } == "other")
            _ = (web, other)
        }
    }

    @Test func tcpOnlyDropsUDP() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let tcp = try NameServer(
                name: "tcp", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 5353) })
            let udp = try NameServer(
                name: "udp", socket: namespace.run { try Socket.bound(.udp, .loopback4, port: 5353) })
            let target = Endpoint(.loopback4, 5353)
            #expect(try namespace.run { try NameServer.ask(.udp, target) } == "udp")
            // (sk-lookup-check-protocol :r6 :r7 :tcp 2) (sk-lookup-drop) (sk-lookup-pass)
            let tcpOnly = try assemble {
                SKLookup.prologue(.r6)
                SKLookup.checkProtocol(.r6, .tcp, scratch: .r7, skip: 2)
                SKLookup.drop()
                SKLookup.pass()
            }
            let link = try loadSKLookup(tcpOnly, name: "tcp_only").attach(to: namespace)
            #expect(try namespace.run { try NameServer.ask(.tcp, target) } == "tcp")
            #expect(try namespace.run { isUnanswered(target) })
            _ = (link, tcp, udp)
        }
    }

    @Test func builderLets443Through() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let https = try NameServer(
                name: "https", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 443) })
            let http = try NameServer(
                name: "http", socket: namespace.run { try Socket.bound(.tcp, .loopback4, port: 80) })
            // (build-sk-lookup-program {:ctx-reg :r6 :body [...] :default-action :drop})
            let customFilter = try SKLookupProgram(contextRegister: .r6, defaultAction: .drop) {
                SKLookup.getLocalPort(.r6, into: .r7)
                Instruction.jump(.jne, .r7, 443, offset: 2)
                Instruction.mov(.r0, 1)
                Instruction.exit()
            }
            let link = try customFilter.load(name: "custom_filter").attach(to: namespace)
            #expect(try namespace.run { try NameServer.ask(.tcp, Endpoint(.loopback4, 443)) } == "https")
            #expect(try namespace.run { isRefused(Endpoint(.loopback4, 80)) })
            _ = (link, https, http)
        }
    }

    @Test func helpersTheKernelDoesNotOfferAreReportedBeforeLoading() {
        #expect {
            _ = try SKLookupProgram {
                Instruction.mov(.r1, .r6)
                Instruction.call(.skLookupTcp)
            }
        } throws: { error in
            guard case .unavailableHelper(let index, let reason)? = error as? SKLookupError else { return false }
            return index == 2 && reason.contains("SOCKMAP")
        }
        // And the kernel does reject it, so the early report tells the truth.
        guard isPrivileged else { return }
        exclusively {
            let raw = Assembly([
                .mov(.r2, 0), .mov(.r3, 0), .mov(.r4, 0), .mov(.r5, 0), .call(.skLookupTcp), .mov(.r0, 1), .exit(),
            ])
            #expect {
                _ = try Program.load(raw, type: .skLookup)
            } throws: { ($0 as? BPFError)?.kind == .verifierRejected }
        }
    }
}
