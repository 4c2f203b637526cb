public import NIOCore
public import NIOPosix
public import Logging
public import RPCCore
import Synchronization

/// A gRPC server: SwiftNIO event loops (one per core) accept cleartext HTTP/2 with prior
/// knowledge; each connection hosts one nghttp2 server session (`ServerConnectionHandler`).
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
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            // Responses are often larger than NIO's default 64 KiB high-water mark: with it, every
            // 64 KiB Lookup answer would flip the channel unwritable and pause reading (stop-and-go).
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
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
