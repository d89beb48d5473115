import BPF
import BPFAssembly
import SKLookup

#if canImport(Glibc)
    import Glibc
#endif

/// Whether a UDP datagram to `endpoint` goes unanswered.
func isUnanswered(_ endpoint: Endpoint) -> Bool {
    (try? NameServer.ask(.udp, endpoint, timeoutMilliseconds: 300)) == nil
}

/// An address on lo where nothing is bound; SK_LOOKUP steers traffic from it.
let unbound4 = Endpoint(IPAddress.v4(127, 0, 0, 5), 4242)
let unbound6 = Endpoint(IPAddress.loopback6, 4242)

/// A program that assigns `sockets[key]` with `flags` and passes; if the assignment fails it
/// writes the helper's result to `errors[0]` and passes without a selection; an empty slot
/// passes too.
func recordingAssign(
    _ sockets: SocketMap, key: Int32, flags: AssignFlags = [], errors: ArrayMap<Int64>
) throws -> SKLookupProgram {
    let failed = Label("failed")
    let done = Label("done")
    return try SKLookupProgram(defaultAction: .pass) {
        SKLookup.assignAndPass(context: .r6, from: sockets.map, key: key, flags: flags, missing: done, failed: failed)
        failed
        Instruction.st(.w, .r10, -8, 0)
        Statement.loadMap(.r1, errors.map)
        Instruction.mov(.r2, .r10)
        Instruction.add(.r2, -8)
        Instruction.call(.mapLookupElem)
        Statement.jump(.jeq, .r0, 0, to: done)
        Instruction.stx(.dw, .r0, .r8, 0)
        done
    }
}

/// A program that assigns `sockets[key]` and passes, or drops when that fails. With `ports`,
/// only traffic to those local ports is steered; the rest passes to the normal lookup (UDP
/// replies to a client would otherwise be steered back to the server too).
func steer(_ sockets: SocketMap, key: Int32, flags: AssignFlags = [], ports: SKLookup.PortMatch? = nil) throws
    -> Program
{
    let drop = Label("drop")
    let steer = Label("steer")
    let other = Label("other")
    return try SKLookupProgram(defaultAction: .drop) {
        if let ports {
            SKLookup.getLocalPort(.r6, into: .r7)
            SKLookup.checkPort(.r7, ports, goto: steer)
            Statement.ja(to: other)
        }
        steer
        SKLookup.assignAndPass(context: .r6, from: sockets.map, key: key, flags: flags, missing: drop, failed: drop)
        if ports != nil {
            other
            SKLookup.pass()
        }
        drop
    }.load(name: "steer\(key)")
}

/// Polls `body` until it returns non-nil or a second has passed.
func eventually<T>(_ body: () throws -> T?) rethrows -> T? {
    for _ in 0..<100 {
        if let value = try body() { return value }
        usleep(10_000)
    }
    return nil
}
