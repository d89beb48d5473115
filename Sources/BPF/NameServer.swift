import CBPF
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A tiny server that answers with its own name: every TCP connection it accepts gets the
/// name and is closed; every UDP datagram gets the name back. Tests and demos use it to see
/// which socket a connection really reached.
package final class NameServer: Sendable {
    /// The name it answers with.
    package let name: String
    /// The socket it serves on.
    package let socket: Socket
    private let state: State
    private let thread: JoinableThread

    /// What the serving thread shares with its owner; the thread holds no reference to the
    /// server, so releasing the server stops it.
    private final class State: Sendable {
        let stopping = Atomic<Bool>(false)
        let count = Atomic<Int>(0)
    }

    /// Starts serving on `socket` (a listening TCP or a bound UDP socket) on a thread of its own.
    package init(name: String, socket: Socket) throws(BPFError) {
        self.name = name
        self.socket = socket
        let state = State()
        self.state = state
        try socket.setTimeout(milliseconds: 50)
        thread = try JoinableThread { Self.serve(name: name, socket: socket, state: state) }
    }

    /// How many connections or datagrams it has answered.
    package var answered: Int { state.count.load(ordering: .relaxed) }

    private static func serve(name: String, socket: Socket, state: State) {
        let reply = Array(name.utf8)
        while !state.stopping.load(ordering: .relaxed) {
            switch socket.transport {
            case .tcp:
                guard let connection = try? socket.accept() else { continue }
                _ = try? connection.send(reply)
                state.count.add(1, ordering: .relaxed)
            case .udp:
                guard let (_, from) = try? socket.receiveFrom() else { continue }
                _ = try? socket.send(reply, to: from)
                state.count.add(1, ordering: .relaxed)
            }
        }
    }

    /// Stops serving and waits for the thread to end. Called on release too.
    package func stop() {
        state.stopping.store(true, ordering: .relaxed)
        thread.join()
    }

    deinit { stop() }

    /// Connects (TCP) or sends a datagram (UDP) to `endpoint` and returns the name that
    /// answered. Call it inside the namespace of the server (``NetworkNamespace/run(_:)``).
    ///
    /// The UDP client is unconnected, so it accepts the reply from whatever address the
    /// server answers from (a steered server answers from its own bound address).
    package static func ask(
        _ transport: Socket.Transport, _ endpoint: Endpoint, timeoutMilliseconds: UInt32 = 2000
    ) throws(BPFError) -> String {
        switch transport {
        case .tcp:
            let client = try Socket.connected(
                .tcp, to: endpoint.address, port: endpoint.port, timeoutMilliseconds: timeoutMilliseconds)
            return String(decoding: try client.receive(), as: UTF8.self)
        case .udp:
            let client = try Socket.bound(.udp, endpoint.address.isIPv4 ? .any4 : .any6, port: 0, v6Only: false)
            try client.setTimeout(milliseconds: timeoutMilliseconds)
            try client.send(Array("?".utf8), to: endpoint)
            return String(decoding: try client.receiveFrom().bytes, as: UTF8.self)
        }
    }
}

private final class ThreadStart {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

/// A POSIX thread that runs a closure and can be joined: for work that must happen on a
/// thread of its own (entering a network namespace moves only the calling thread) and for
/// small servers and clients.
package final class JoinableThread: Sendable {
    private let handle: pthread_t
    private let joined = Mutex(false)

    /// Starts the thread.
    package init(_ body: @escaping @Sendable () -> Void) throws(BPFError) {
        let unmanaged = Unmanaged.passRetained(ThreadStart(body))
        var thread = pthread_t()
        let started = pthread_create(
            &thread, nil,
            { raw in
                Unmanaged<ThreadStart>.fromOpaque(raw!).takeRetainedValue().run()
                return nil
            }, unmanaged.toOpaque())
        guard started == 0 else {
            unmanaged.release()
            throw BPFError(operation: "start a thread", code: started)
        }
        handle = thread
    }

    /// Waits for the thread to end (once; later calls return at once).
    package func join() {
        let first = joined.withLock { done in
            defer { done = true }
            return !done
        }
        if first { pthread_join(handle, nil) }
    }
}
