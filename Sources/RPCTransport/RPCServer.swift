public import NIOCore
public import NIOPosix
import NIOSSL
public import Logging
public import RPCCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A gRPC server: SwiftNIO event loops (one per core) accept HTTP/2 with prior knowledge, in
/// cleartext or (with `configuration.tls`) inside TLS negotiated with ALPN `h2`; each connection
/// hosts one nghttp2 server session (`ServerConnectionHandler`).
///
/// Lifecycle: `start()` binds and returns; `shutdownGracefully()` sends GOAWAY on every
/// connection, stops accepting, waits for in-flight calls up to `drainTimeout`, then closes
/// everything. Thread-safe.
public final class RPCServer: Sendable {
    public let configuration: ServerConfiguration
    public let group: MultiThreadedEventLoopGroup
    private let pool: NIOThreadPool
    private let router: Router
    private let observers: MethodObservers?
    private let logger: Logger
    private let state = ServerState()
    private let channel = Mutex<(any Channel)?>(nil)
    private let ownsGroup: Bool
    private let poolStarted = Atomic<Bool>(false)
    private let poolExecutor: ThreadPoolTaskExecutor
    /// The group's event loops as task executors (async handlers placed `.inline` run on them).
    public let loopExecutors: EventLoopExecutors
    /// Connections served at once: `maxConnections`, lowered to what the process's file
    /// descriptor limit leaves room for. nil: no limit.
    public let connectionCap: Int?

    /// The connections a process with `fdLimit` file descriptors can hold: all but an eighth (at
    /// least 64) kept for everything else (event loops, table files, outgoing channels, the
    /// admin port). Past the descriptor limit `accept` fails (EMFILE) and new connections wait
    /// in the backlog while the accept loop retries; a cap below it closes them at once instead.
    static func connectionCap(configured: Int?, fdLimit: Int?) -> Int? {
        guard let fdLimit, fdLimit > 0 else { return configured }
        let room = max(1, fdLimit - max(64, fdLimit / 8))
        return min(configured ?? .max, room)
    }

    /// The soft RLIMIT_NOFILE, or nil when unlimited or unknown.
    static var fileDescriptorLimit: Int? {
        #if canImport(Glibc)
        var r = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r) == 0, r.rlim_cur != rlim_t.max else { return nil }
        return Int(clamping: r.rlim_cur)
        #else
        return nil
        #endif
    }

    /// - Parameter group: event loops to use; by default the server creates its own
    ///   (`configuration.eventLoopThreads`) and shuts them down at the end.
    public init(configuration: ServerConfiguration, router: Router, logger: Logger = Logger(label: "shardrank.rpc"),
                group: MultiThreadedEventLoopGroup? = nil) {
        self.configuration = configuration
        self.router = router
        self.observers = configuration.observer.map { MethodObservers($0, router: router) }
        self.logger = logger
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: configuration.eventLoopThreads)
        self.ownsGroup = group == nil
        self.pool = NIOThreadPool(numberOfThreads: max(1, configuration.workerThreads))
        self.poolExecutor = ThreadPoolTaskExecutor(pool)
        self.loopExecutors = EventLoopExecutors(group: self.group)
        let fdLimit = Self.fileDescriptorLimit
        self.connectionCap = Self.connectionCap(configured: configuration.maxConnections, fdLimit: fdLimit)
        if let cap = connectionCap, cap < configuration.maxConnections ?? .max {
            logger.info("serving at most \(cap) connections: the file descriptor limit is \(fdLimit ?? 0) (raise it with ulimit -n for more)")
        }
    }

    /// Binds and starts serving.
    /// - Returns: the bound port (the real one when `configuration.port` is 0).
    /// - Throws: when the address cannot be bound (port taken: the error names it).
    @discardableResult
    public func start() throws -> Int {
        do {
            return try bind(makeBootstrap()).wait()
        } catch {
            throw RPCServerError("cannot listen on \(configuration.host):\(configuration.port): \(error)")
        }
    }

    /// `start()` without blocking the calling thread: for async code that may run on an event
    /// loop (when NIO's event loops are Swift Concurrency's global executor, blocking one on a
    /// future is a precondition failure).
    @discardableResult
    public func listen() async throws -> Int {
        do {
            return try await bind(makeBootstrap()).get()
        } catch {
            throw RPCServerError("cannot listen on \(configuration.host):\(configuration.port): \(error)")
        }
    }

    private func bind(_ bootstrap: ServerBootstrap) -> EventLoopFuture<Int> {
        let configuration = self.configuration
        return bootstrap.bind(host: configuration.host, port: configuration.port).map { ch in
            self.channel.withLock { $0 = ch }
            return ch.localAddress?.port ?? configuration.port
        }
    }

    private func makeBootstrap() -> ServerBootstrap {
        if !poolStarted.exchange(true, ordering: .relaxed) { pool.start() }
        let router = self.router, observers = self.observers, config = self.configuration, state = self.state, pool = self.pool
        let logger = self.logger, poolExecutor = self.poolExecutor, loopExecutors = self.loopExecutors
        let connectionCap = self.connectionCap
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            // Responses are often larger than NIO's default 64 KiB high-water mark: with it, every
            // 64 KiB Lookup answer would flip the channel unwritable and pause reading (stop-and-go).
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
            .childChannelInitializer { channel in
                let open = state.liveConnections.wrappingAdd(1, ordering: .relaxed).newValue
                channel.closeFuture.whenComplete { _ in state.liveConnections.wrappingSubtract(1, ordering: .relaxed) }
                if let cap = connectionCap, open > cap {
                    // Refused before anything is read or allocated for it (no session, no handler).
                    if state.refusedConnections.wrappingAdd(1, ordering: .relaxed).newValue % 1000 == 1 {
                        logger.warning("refusing connections: \(cap) open (--max-connections, or the file descriptor limit); \(state.refusedConnections.load(ordering: .relaxed)) refused so far")
                    }
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    // TLS first: the HTTP/2 session sees only decrypted bytes. Each connection
                    // takes the context current when it is accepted (a reload changes new ones).
                    if let tls = config.tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
                    }
                    let handler = try ServerConnectionHandler(router: router, observers: observers, config: config, state: state, pool: pool,
                                                              poolExecutor: poolExecutor, loopExecutors: loopExecutors, logger: logger)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        return bootstrap
    }

    /// A connection handler serving this server's router with its configuration and worker
    /// pool, for a channel the caller made and drives itself: the in-process RPC benchmark puts
    /// it on an `EmbeddedChannel` (the whole server path, bytes in to bytes out, without sockets).
    public func makeConnectionHandler() throws -> any ChannelHandler {
        if !poolStarted.exchange(true, ordering: .relaxed) { pool.start() }
        return try ServerConnectionHandler(router: router, observers: observers, config: configuration, state: state, pool: pool,
                                           poolExecutor: poolExecutor, loopExecutors: nil, logger: logger)
    }

    /// The bound port, once started.
    public var port: Int? { channel.withLock { $0?.localAddress?.port } }

    /// Calls currently running a handler (unary, process-wide).
    public var inFlightHandlers: Int { state.inFlightHandlers.load(ordering: .relaxed) }
    /// Streams open on all connections.
    public var openStreams: Int { state.openStreams.load(ordering: .relaxed) }
    /// Calls answered RESOURCE_EXHAUSTED because too many were in flight.
    public var overloadRejections: Int { state.rejectedOverload.load(ordering: .relaxed) }
    /// Calls whose handler was started.
    public var acceptedCalls: Int { state.acceptedCalls.load(ordering: .relaxed) }
    /// Connections open now, and those closed at once because `maxConnections` were open.
    public var openConnections: Int { state.liveConnections.load(ordering: .relaxed) }
    public var refusedConnections: Int { state.refusedConnections.load(ordering: .relaxed) }
    /// Bytes of unsent answers held by all connections.
    public var queuedBytes: Int { state.queuedBytes.load(ordering: .relaxed) }
    /// Bytes of requests not yet complete buffered by all connections (`maxRequestBytes`).
    public var requestBytes: Int { state.requestBytes.load(ordering: .relaxed) }

    /// Graceful shutdown: stop accepting, GOAWAY every connection, wait for open streams to end
    /// (at most `drainTimeout`), close the rest, stop the worker pool and the event loops.
    /// - Returns: true when every call drained in time.
    @discardableResult
    public func shutdownGracefully() async -> Bool {
        state.shuttingDown.store(true, ordering: .relaxed)
        let ch = channel.withLock { c -> (any Channel)? in let x = c; c = nil; return x }
        try? await ch?.close()
        for ref in state.connections.withLock({ Array($0.values) }) { ref.shutdown() }
        let deadline = ContinuousClock.now.advanced(by: configuration.drainTimeout)
        var drained = true
        while state.openStreams.load(ordering: .relaxed) > 0 || !state.connections.withLock({ $0.isEmpty }) {
            if ContinuousClock.now >= deadline {
                drained = state.openStreams.load(ordering: .relaxed) == 0
                logger.warning("drain timeout: closing \(state.connections.withLock { $0.count }) connections with \(state.openStreams.load(ordering: .relaxed)) open streams")
                break
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
        for ref in state.connections.withLock({ Array($0.values) }) { ref.close() }
        try? await Task.sleep(for: .milliseconds(20))
        try? await pool.shutdownGracefully()
        if ownsGroup { try? await group.shutdownGracefully() }
        return drained
    }
}

public struct RPCServerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}

extension RPCServer {
    /// Runs one unary call of `path` as if it had arrived over HTTP/2, for another front door
    /// of the same service (the coordinator's JSON endpoint): the same router and handler, with
    /// its placement; the same in-flight limit (`maxInFlightHandlers`, else RESOURCE_EXHAUSTED)
    /// and message size limit; the same deadline handling (`timeout` cancels the call like
    /// `grpc-timeout` does); the same per-method metrics.
    /// - Parameter loop: where `.inline` work runs (the front door's connection loop, one of
    ///   this server's loops).
    public func invokeUnary(path: String, request: [UInt8], metadata: Metadata = Metadata(), timeout: Duration?, peer: String,
                            on loop: any EventLoop) async -> Result<FramedMessage, RPCError> {
        let method: RPCMethod
        do throws(RPCError) { method = try router.method(for: path) } catch {
            observers?.unknown.callFinished(status: error.code, duration: .zero)
            return .failure(error)
        }
        let observer = observers?.byIndex[method.index]
        let start = ContinuousClock.now
        observer?.callStarted()
        let result = await run(method, request: request, metadata: metadata, timeout: timeout, peer: peer, loop: loop)
        let code: RPCStatusCode = switch result {
        case .success: .ok
        case .failure(let e): e.code
        }
        observer?.callFinished(status: code, duration: start.duration(to: .now))
        return result
    }

    private func run(_ method: RPCMethod, request: [UInt8], metadata: Metadata, timeout: Duration?, peer: String,
                     loop: any EventLoop) async -> Result<FramedMessage, RPCError> {
        guard request.count <= configuration.maxMessageLength else {
            return .failure(RPCError(.resourceExhausted, "request of \(request.count) bytes exceeds the limit of \(configuration.maxMessageLength)"))
        }
        if case .serverStreaming = method.handler {
            return .failure(RPCError(.unimplemented, "\(method.path) is a streaming method: call it over gRPC"))
        }
        if method.streamsRequests {
            return .failure(RPCError(.unimplemented, "\(method.path) is a streaming method: call it over gRPC"))
        }
        // The same authorization as over HTTP/2 (this door has no client certificate).
        if let authorizer = configuration.authorizer, let denied = authorizer.authorize(path: method.path, metadata: metadata, peer: .anonymous) {
            return .failure(denied)
        }
        guard state.tryAcquireHandler(limit: configuration.maxInFlightHandlers) else {
            return .failure(RPCError(.resourceExhausted, "server overloaded: \(configuration.maxInFlightHandlers) calls in flight"))
        }
        defer { state.releaseHandler() }
        let ctx = ServerContext(path: method.path, metadata: metadata, deadline: timeout.map { .now + $0 }, peer: peer)
        var timer: Scheduled<Void>?
        if let timeout {
            let ns = timeout.clampedNanoseconds
            let ms = timeout.millisecondsValue
            timer = loop.scheduleTask(in: .nanoseconds(ns)) {
                ctx.cancel(RPCError(.deadlineExceeded, "deadline of \(ms) ms exceeded"))
            }
        }
        defer { timer?.cancel() }
        let result: Result<FramedMessage, RPCError>
        switch method.handler {
        case .unary(let handler):
            let pool = self.pool
            result = await withCheckedContinuation { (k: CheckedContinuation<Result<FramedMessage, RPCError>, Never>) in
                let work: @Sendable () -> Void = {
                    do throws(RPCError) { k.resume(returning: .success(try handler(request, ctx))) } catch { k.resume(returning: .failure(error)) }
                }
                if method.placement == .inline { loop.execute(work) } else { pool.submit { _ in work() } }
            }
        case .asyncUnary(let handler):
            var executor: any TaskExecutor = poolExecutor
            if method.placement == .inline, let e = loopExecutors.executor(for: loop) { executor = e }
            let task = Task(executorPreference: executor) { () async -> Result<FramedMessage, RPCError> in
                do throws(RPCError) { return .success(try await handler(request, ctx)) } catch { return .failure(error) }
            }
            ctx.whenCancelled { task.cancel() }
            result = await task.value
        case .deferredUnary(let handler):
            result = await withCheckedContinuation { (k: CheckedContinuation<Result<FramedMessage, RPCError>, Never>) in
                let once = Atomic<Bool>(false)
                loop.execute {
                    handler(request, ctx) { r in
                        if !once.exchange(true, ordering: .acquiringAndReleasing) { k.resume(returning: r) }
                    }
                }
            }
        case .serverStreaming, .streamMessages:
            result = .failure(RPCError(.unimplemented, "\(method.path) is a streaming method"))
        }
        // A deadline that passed wins over a late answer, as on the HTTP/2 path.
        var final = result
        if ctx.isCancelled, case .success = result { final = .failure(ctx.cancellationError ?? .cancelled()) }
        switch final {
        case .success: ctx.finished(.ok)
        case .failure(let e): ctx.finished(e.code)
        }
        return final
    }
}
