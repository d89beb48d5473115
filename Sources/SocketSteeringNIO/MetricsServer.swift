import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Serves Prometheus text over HTTP/1.1 on SwiftNIO, as a swift-service-lifecycle
/// `Service`: `GET` and `HEAD` on `/metrics` (query strings ignored), `405` for other
/// methods, `404` for other paths, `400` (then close) for what is not HTTP.
///
/// Clients cannot hold it up: connections are served concurrently, each must send a complete
/// request within ``Configuration/requestTimeout`` of opening or of its previous response
/// (idle and slow clients are closed), at most ``Configuration/maxConnections`` are open at
/// once (more are closed as they arrive), and a request body over 64 KiB closes the
/// connection. On graceful shutdown (SIGTERM in a `ServiceGroup`) it stops accepting,
/// finishes the requests in flight and returns.
///
/// ```swift
/// let server = MetricsServer(host: "127.0.0.1", port: 9100) {
///     try Dispatcher.open(namespace: .current(), readOnly: true).status(findOwners: false)
///         .prometheusText(version: "1.0")
/// } onListening: { address in print("serving on \(address)") }
/// let group = ServiceGroup(
///     services: [server], gracefulShutdownSignals: [.sigterm], cancellationSignals: [], logger: logger)
/// try await group.run()
/// ```
public struct MetricsServer: Service {
    /// Limits that keep one client from holding up the others.
    public struct Configuration: Sendable {
        /// The time a connection has to send a complete request, from when it opens or got
        /// its previous response.
        public var requestTimeout: TimeAmount = .seconds(5)
        /// Connections open at once; more are closed as they arrive.
        public var maxConnections = 256
        public init() {}
    }

    let host: String
    let port: Int
    let configuration: Configuration
    let render: @Sendable () async throws -> String
    let onListening: @Sendable (String) -> Void
    let logger: Logger

    /// - Parameters:
    ///   - host: the address to listen on (`127.0.0.1`, `::1`, `0.0.0.0`).
    ///   - port: 0 picks a free port; `onListening` is told which.
    ///   - configuration: the limits on clients.
    ///   - logger: where connection errors and failed renders are logged.
    ///   - render: the exposition text, called once per `GET` or `HEAD`; an error is a `500`.
    ///   - onListening: called once with the bound address (`127.0.0.1:9100`, `[::1]:9100`)
    ///     before the first connection is accepted.
    public init(
        host: String, port: Int, configuration: Configuration = .init(), logger: Logger = Logger(label: "metrics"),
        render: @escaping @Sendable () async throws -> String,
        onListening: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.configuration = configuration
        self.render = render
        self.onListening = onListening
        self.logger = logger
    }

    public func run() async throws {
        let timeout = configuration.requestTimeout
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(RequestDeadline(timeout: timeout))
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        guard let local = server.channel.localAddress, let ip = local.ipAddress, let boundPort = local.port else {
            server.channel.close(promise: nil)
            throw MetricsServerError("the server socket has no local address")
        }
        onListening(local.protocol == .inet6 ? "[\(ip)]:\(boundPort)" : "\(ip):\(boundPort)")
        let open = OpenConnections()
        let limit = configuration.maxConnections
        let serverChannel = server.channel
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        if open.count.add(1, ordering: .relaxed).newValue > limit {
                            open.count.subtract(1, ordering: .relaxed)
                            // Closed through the async channel, which must finish its writer.
                            group.addTask { try? await connection.executeThenClose { _, _ in } }
                            continue
                        }
                        group.addTask {
                            defer { open.count.subtract(1, ordering: .relaxed) }
                            // On shutdown, read no further request; one in flight is answered.
                            let channel = connection.channel
                            await withGracefulShutdownHandler {
                                await serve(connection)
                            } onGracefulShutdown: {
                                channel.close(mode: .input, promise: nil)
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            serverChannel.close(promise: nil)
        }
    }

    /// Answers the requests of one connection until it closes, asks to close, or errs.
    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var bodyBytes = 0
                for try await part in inbound {
                    switch part {
                    case .head(let requestHead):
                        head = requestHead
                        bodyBytes = 0
                    case .body(let buffer):
                        bodyBytes += buffer.readableBytes
                        if bodyBytes > 64 * 1024 { return }
                    case .end:
                        guard let request = head else { return }
                        head = nil
                        let response = await respond(to: request)
                        var headers = HTTPHeaders()
                        headers.add(name: "Content-Type", value: response.contentType)
                        headers.add(name: "Content-Length", value: "\(response.body.utf8.count)")
                        if let allow = response.allow { headers.add(name: "Allow", value: allow) }
                        if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
                        try await outbound.write(
                            .head(HTTPResponseHead(version: request.version, status: response.status, headers: headers))
                        )
                        if request.method != .HEAD {
                            try await outbound.write(.body(.byteBuffer(ByteBuffer(string: response.body))))
                        }
                        try await outbound.write(.end(nil))
                        if !request.isKeepAlive { return }
                    }
                }
            }
        } catch {
            logger.debug("metrics connection ended: \(error)")
        }
    }

    private struct Response {
        var status: HTTPResponseStatus
        var body: String
        var contentType = "text/plain; charset=utf-8"
        var allow: String?
    }

    private func respond(to request: HTTPRequestHead) async -> Response {
        let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/metrics" else {
            return Response(status: .notFound, body: "sksteer serves its metrics on /metrics\n")
        }
        guard request.method == .GET || request.method == .HEAD else {
            return Response(status: .methodNotAllowed, body: "only GET and HEAD\n", allow: "GET, HEAD")
        }
        do {
            return Response(
                status: .ok, body: try await render(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        } catch {
            logger.warning("metrics: \(error)")
            return Response(status: .internalServerError, body: "\(error)\n")
        }
    }
}

private final class OpenConnections: Sendable {
    let count = Atomic<Int>(0)
}

/// Why the metrics server could not start.
public struct MetricsServerError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Closes a connection that has not sent a complete request within `timeout` of opening or
/// of its previous response: idle keep-alive clients, slow senders, half requests.
final class RequestDeadline: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) {
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let isEnd: Bool
        if case .end = unwrapOutboundIn(data) { isEnd = true } else { isEnd = false }
        context.write(data, promise: promise)
        if isEnd { arm(context) }
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }
}
