import BPF
import Foundation
import SKLookup
import SocketSteering
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

extension Bench {
    /// Accepts connections and reads datagrams on every socket of a workload, on one thread.
    final class Drain: Sendable {
        final class State: Sendable {
            let stop = Atomic<Bool>(false)
        }
        let state = State()
        let thread: JoinableThread

        init(_ sockets: [Socket]) throws {
            for socket in sockets { try socket.setTimeout(milliseconds: 20) }
            let state = self.state
            thread = try JoinableThread {
                var descriptors = sockets.map { socket in
                    socket.descriptor.withRawValue { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                }
                while !state.stop.load(ordering: .relaxed) {
                    guard poll(&descriptors, nfds_t(descriptors.count), 20) > 0 else { continue }
                    for index in descriptors.indices where descriptors[index].revents != 0 {
                        descriptors[index].revents = 0
                        if sockets[index].transport == .tcp {
                            _ = try? sockets[index].accept()
                        } else {
                            _ = try? sockets[index].receive(maximum: 64)
                        }
                    }
                }
            }
        }

        func finish() {
            state.stop.store(true, ordering: .relaxed)
            thread.join()
        }
    }

    /// AnyIP: every IPv4 address and 2000::/3 are local in the namespace (which has only `lo`).
    static func addRoutes(_ namespace: NetworkNamespace) throws {
        let net = namespace.descriptor.withRawValue { "--net=/proc/\(getpid())/fd/\($0)" }
        for arguments in [
            ["route", "add", "local", "0.0.0.0/1", "dev", "lo"], ["route", "add", "local", "128.0.0.0/1", "dev", "lo"],
            ["-6", "route", "add", "local", "2000::/3", "dev", "lo"],
        ] {
            try runTool(Tools.nsenter, [net, Tools.ip] + arguments)
        }
    }

    /// Opens a TCP connection to (or sends a datagram to) every target, from inside the namespace.
    static func send(_ targets: [Probe], in namespace: NetworkNamespace) throws {
        try namespace.run {
            let udp4 = try Socket.bound(.udp, .any4, port: 0)
            let udp6 = try Socket.bound(.udp, .any6, port: 0, v6Only: true)
            let payload = [UInt8](repeating: 7, count: 16)
            for target in targets {
                if target.transport == .tcp {
                    // A miss is refused at once; a hit is accepted by the drain.
                    if let client = try? Socket.connected(
                        .tcp, to: target.address, port: target.port, timeoutMilliseconds: 1000)
                    {
                        try? client.resetOnClose()
                    }
                } else {
                    _ = try? (target.address.isIPv4 ? udp4 : udp6).send(payload, to: target.endpoint)
                }
            }
        }
    }

    /// Real traffic, through one attached program at a time: the dispatcher's link is switched
    /// between sksteer's attached program and tubular's (`BPF_LINK_UPDATE`), and the kernel's
    /// `run_time_ns` and `run_cnt` of the program in place are read before and after each batch.
    static func measureTraffic(_ setup: Setup, _ options: Options, into results: inout Results, say: (String) -> Void)
        throws
    {
        try addRoutes(setup.namespace)
        let link = try Link.openPinned(at: setup.dispatcher.directory + "/link")
        let attached = try Program.openPinned(at: setup.dispatcher.directory + "/program")
        let drain = try Drain(Array(setup.sockets.values))
        defer { drain.finish() }
        defer { try? link.update(to: attached) }
        let statistics = try BPFStatistics.enableRunTime()
        defer { withExtendedLifetime(statistics) {} }
        for (kind, probes) in setup.workload.probes {
            let targets = (0..<options.trafficPerKind).map { probes[$0 % probes.count] }
            var time: [Bool: UInt64] = [false: 0, true: 0]
            var runs: [Bool: UInt64] = [false: 0, true: 0]
            for round in 0..<options.trafficRounds {
                for isTubular in round % 2 == 0 ? [false, true] : [true, false] {
                    let program = isTubular ? setup.tubular.program : attached
                    try link.update(to: program)
                    results.mostAttachedAtOnce = max(
                        results.mostAttachedAtOnce, try Link.programIDs(attachedTo: setup.namespace).count)
                    let before = try program.info()
                    try send(targets, in: setup.namespace)
                    let after = try program.info()
                    time[isTubular]! += after.runTimeNanoseconds &- before.runTimeNanoseconds
                    runs[isTubular]! += after.runCount &- before.runCount
                }
            }
            try link.update(to: attached)
            func perRun(_ isTubular: Bool) -> Double {
                runs[isTubular]! == 0 ? 0 : Double(time[isTubular]!) / Double(runs[isTubular]!)
            }
            let row = TrafficRow(
                workload: setup.workload.name, kind: kind,
                traffic: probes[0].transport == .tcp ? "tcp connections" : "udp datagrams",
                sent: targets.count * options.trafficRounds, sksteerRuns: runs[false]!,
                sksteerNanoseconds: perRun(false), tubularRuns: runs[true]!, tubularNanoseconds: perRun(true),
                ratio: ratio(perRun(false), perRun(true)))
            results.traffic.append(row)
            say(
                "    traffic \(kind): sksteer \(fmt(row.sksteerNanoseconds)) ns/run (\(row.sksteerRuns) runs),"
                    + " tubular \(fmt(row.tubularNanoseconds)) ns/run (\(row.tubularRuns) runs)")
        }
    }
}
