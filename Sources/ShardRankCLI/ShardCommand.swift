import NIOPosix
import ArgumentParser
import CShardRankSystem
import Dispatch
import Logging
import RPCCore
import RPCTransport
import ShardRankWire
import ShardServer
import ShardRankKernels
import ShardRankTables
import ShardRankAdmin
import Prometheus
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `shardrank shard`: serves one shard over gRPC until SIGTERM/SIGINT, then shuts down gracefully.
struct ShardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shard",
        abstract: "Serve one shard of a table set (or the synthetic table) over gRPC.")

    @Option(help: "Serve the synthetic table 'items' of ROWSxDIM (e.g. 100000x64) instead of a table set.")
    var synthetic: String?

    @Option(help: "Table-set root directory.")
    var tables: String?

    @Option(help: "This shard's index (0-based).")
    var shard: Int = 0

    @Option(help: "Number of shards, as a check: the table set's manifest knows it (default: the manifest's; 1 with --synthetic). A different number is refused.")
    var of: Int?

    @Option(help: "Seconds between checks for a newer table-set version (0: only on SIGHUP).")
    var reloadSeconds: Double = 5

    @Flag(help: "Answer ids that hash to another shard as missing instead of INVALID_ARGUMENT.")
    var allowForeignIds = false

    @Flag(inversion: .prefixedNo, help: "Lock the served table files in memory (mlock), so no Lookup waits on a page fault; a table that cannot be locked is served unlocked with a warning.")
    var lockTables = true

    @Option(name: .customLong("ann-shadow-every"), help: "Re-run every N-th approximate Search query exactly, off the request path, to export its recall@k (shardrank_ann_recall); 0 turns it off.")
    var annShadowEvery: Int = 1000

    @Option(name: .customLong("ann-min-rows"), help: "Slices with fewer rows are always searched exactly.")
    var annMinRows: Int = 10_000

    @Option(name: .customLong("ann-max-excluded-share"), help: "A Search whose exclusions cover more of the slice than this share is answered exactly.")
    var annMaxExcludedShare: Double = 0.25

    @OptionGroup var server: ServerOptions

    func validate() throws {
        if synthetic == nil && tables == nil { throw ValidationError("give --synthetic ROWSxDIM or --tables ROOT") }
        if synthetic != nil && tables != nil { throw ValidationError("--synthetic and --tables are exclusive") }
        if let s = synthetic { _ = try parseShape(s) }
        if let of, of < 1 { throw ValidationError("--of must be ≥ 1 (got \(of))") }
        if shard < 0 { throw ValidationError("--shard must be ≥ 0 (got \(shard))") }
        if let of, shard >= of { throw ValidationError("--shard must be in 0..<\(of) (got \(shard))") }
        if synthetic != nil, let of, of != 1 { throw ValidationError("--synthetic serves one shard: --of must be 1 or left out (got \(of))") }
        if annShadowEvery < 0 { throw ValidationError("--ann-shadow-every must be >= 0") }
        if annMinRows < 0 { throw ValidationError("--ann-min-rows must be >= 0") }
        if !(annMaxExcludedShare >= 0 && annMaxExcludedShare <= 1) { throw ValidationError("--ann-max-excluded-share must be in 0...1") }
    }

    /// The shard's table-data methods: with mutual TLS only the coordinator role may call them
    /// (Info and health stay open to any certificate the CA signed).
    static let coordinatorOnlyPaths: Set<String> = [ShardMethods.lookup.path, ShardMethods.search.path, ShardMethods.lists.path,
                                                     ShardMethods.profiles.path, ShardMethods.attributes.path, ShardMethods.ids.path]

    func run() async throws {
        let logger = makeLogger("shardrank.shard", level: server.logLevel)
        // Before anything is loaded: a cleartext listener off loopback, or unusable TLS files, exit 2.
        let tls = try server.tls.serverSource(host: server.host, requireClientCertificate: true, logger: logger)
        let authorizer: (any CallAuthorizer)? = tls?.requiresClientCertificate == true
            ? RoleAuthorizer(role: PeerRole.coordinator, paths: Self.coordinatorOnlyPaths) : nil
        let backend: any ShardBackend
        var hangup: (any DispatchSourceSignal)?
        if let s = synthetic {
            let (rows, dim) = try parseShape(s)
            backend = SyntheticBackend(table: SyntheticTable(rows: rows, dim: dim))
        } else {
            // No spin-waiting in servers: several server processes usually share the cores (a
            // spinning pool thread takes CPU another process needs); see docs/kernels.md.
            let pool = WorkerPool(threadCount: server.workers ?? WorkerPool.defaultThreadCount, spinMicroseconds: 0)
            let of = try shardCount(root: tables!, logger: logger)
            let tb: TableSetBackend
            do {
                var ann = ANNServing()
                ann.shadowEvery = annShadowEvery
                ann.minRows = annMinRows
                ann.maxExcludedShare = annMaxExcludedShare
                tb = try TableSetBackend(root: tables!, shard: shard, of: of, pool: pool, allowForeignIDs: allowForeignIds,
                                         lockTables: lockTables, annServing: ann, logger: logger)
            } catch {
                logger.error("cannot serve \(tables!): \(error)")
                throw ExitCode(2)
            }
            if reloadSeconds > 0 { tb.startPolling(every: .milliseconds(Int(reloadSeconds * 1000))) }
            hangup = onSIGHUP { tb.reloadSoon(); reloadTLS(tls, logger: logger) }
            backend = tb
        }
        if hangup == nil, tls != nil { hangup = onSIGHUP { reloadTLS(tls, logger: logger) } }
        let health = HealthService(services: ["shardrank.v1.Shard"])
        // With tracing on, every Shard handler makes a server span (docs/operations.md, "Tracing").
        let shardService: any RPCService = server.tracer(service: "shard-\(shard)").map { $0.traced(ShardService(backend: backend),
            attributes: [("shardrank.shard", .int(Int64(shard)))]) } ?? ShardService(backend: backend)
        let served: [any RPCService] = [health, shardService]
        let router = Router(services: served + ReflectionService.both(serving: served))
        let metrics = ServerMetrics(bootstrapSwiftMetrics: true)
        let version = metrics.registry.gauge(name: "shardrank_table_set_version", help: "Table-set version answering new requests")
        let mapped = metrics.registry.gauge(name: "shardrank_mapped_bytes", help: "Bytes of table files mapped")
        let reloads = metrics.registry.gauge(name: "shardrank_reloads_total", help: "Table-set versions switched to since start")
        let rejected = metrics.registry.gauge(name: "shardrank_reload_rejections_total", help: "Table-set versions rejected since start")
        let tableBackend = backend as? TableSetBackend
        // Recall of approximate Search measured by the sampled shadow exact searches, per table.
        let recallGauges = Mutex<[String: (recall: Prometheus.Gauge, queries: Prometheus.Gauge, skipped: Prometheus.Gauge)]>([:])
        metrics.addCollector { _ in
            if let monitor = tableBackend?.recallMonitor {
                for (table, r) in monitor.snapshot {
                    let g = recallGauges.withLock { gs in
                        if let g = gs[table] { return g }
                        let g = (recall: metrics.registry.gauge(name: "shardrank_ann_recall", labels: [("table", table)],
                                                                help: "recall@k of approximate Search against exact, over sampled queries since start"),
                                 queries: metrics.registry.gauge(name: "shardrank_ann_recall_queries", labels: [("table", table)],
                                                                 help: "Approximate Search queries re-run exactly to measure recall"),
                                 skipped: metrics.registry.gauge(name: "shardrank_ann_recall_skipped", labels: [("table", table)],
                                                                 help: "Sampled queries skipped because a shadow search was still running"))
                        gs[table] = g
                        return g
                    }
                    g.recall.set(to: r.recall)
                    g.queries.set(to: Double(r.queries))
                    g.skipped.set(to: Double(r.skipped))
                }
            }
            let info = backend.info()
            version.set(to: Double(info.version))
            mapped.set(to: Double(info.mappedBytes))
            reloads.set(to: Double(tableBackend?.reloadCount ?? 0))
            rejected.set(to: Double(tableBackend?.rejectionCount ?? 0))
        }
        try await serve(router: router, health: health, options: server, logger: logger, what: "shard", metrics: metrics,
                        tls: tls, authorizer: authorizer)
        hangup?.cancel()
    }
}

extension ShardCommand {
    /// The shard count of the table set's newest version (its manifest's), checked against `--of`
    /// when given: a disagreement exits 2 naming both, a `--shard` beyond the count is a usage error.
    func shardCount(root: String, logger: Logger) throws -> Int {
        let catalog = TableSetCatalog(root: root)
        let count: Int, path: String
        do {
            guard let newest = try catalog.newestVersion() else {
                throw TableError(.notFound, "no complete table-set version under \(root) (expected \(root)/v<N>/manifest.json)")
            }
            path = catalog.manifestPath(of: newest)
            count = try catalog.manifest(of: newest).shardCount
        } catch {
            logger.error("cannot serve \(root): \(error)")
            throw ExitCode(2)
        }
        if let of, of != count {
            logger.error("--of \(of) disagrees with the table set: \(path) has \(count) shard\(count == 1 ? "" : "s") (leave --of out to take the manifest's)")
            throw ExitCode(2)
        }
        guard shard < count else {
            throw ValidationError("--shard \(shard) is not a shard of \(root): its \(count) shard\(count == 1 ? " is 0" : "s are 0...\(count - 1)")")
        }
        return count
    }
}

/// The synthetic table is materialised (rows × dim × 4 bytes): at most this many bytes (16 GiB).
let maxSyntheticBytes = 16 << 30

func parseShape(_ s: String) throws -> (Int, Int) {
    let parts = s.lowercased().split(separator: "x")
    guard parts.count == 2, let r = Int(parts[0]), let d = Int(parts[1]), r > 0, d > 0, d <= 65536, r <= 100_000_000 else {
        throw ValidationError("--synthetic must be ROWSxDIM with positive integers (e.g. 100000x64), got '\(s)'")
    }
    guard r * d * 4 <= maxSyntheticBytes else {
        throw ValidationError("--synthetic \(s) would take \(r * d * 4) bytes of memory: at most \(maxSyntheticBytes) (16 GiB)")
    }
    return (r, d)
}

/// Options every server process shares.
struct ServerOptions: ParsableArguments {
    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free port (printed on stdout).")
    var port: Int = 0

    @Option(help: "Event-loop threads (default: one per core).")
    var eventLoops: Int?

    @Option(help: "Worker threads for heavy handlers (default: one per core).")
    var workers: Int?

    @Option(help: "Largest request message in bytes.")
    var maxMessageBytes: Int = 4 << 20

    @Option(help: "Largest request header list in bytes.")
    var maxHeaderListBytes: Int = 8 << 10

    @Option(help: "Concurrent streams per connection.")
    var maxConcurrentStreams: UInt32 = 256

    @Option(help: "Handlers in flight per process; beyond it calls fail RESOURCE_EXHAUSTED.")
    var maxInFlight: Int = 4096

    @Option(help: "Seconds a graceful shutdown waits for in-flight calls.")
    var drainSeconds: Double = 10

    @Option(help: "Seconds a connection may stay without streams before the server closes it (0: never).")
    var maxConnectionIdleSeconds: Double = 300

    @Option(help: "Seconds a connection may stay unwritable (its peer reading nothing while answers wait) before the server closes it (0: never).")
    var writeTimeoutSeconds: Double = 30

    @Option(help: "Seconds a finished answer may send nothing (its peer grants no flow-control window) before its stream is reset and the answer freed (0: only the call's grpc-timeout).")
    var streamSendTimeoutSeconds: Double = 30

    @Option(help: "Bytes of unsent answers one connection may hold; an answer beyond it fails RESOURCE_EXHAUSTED.")
    var maxConnectionQueuedBytes: Int = 64 << 20

    @Option(help: "Bytes of unsent answers all connections together may hold; an answer beyond it fails RESOURCE_EXHAUSTED.")
    var maxQueuedBytes: Int = 1 << 30

    @Option(help: "Bytes of unfinished requests one connection may make the server buffer; the stream that would pass it fails RESOURCE_EXHAUSTED.")
    var maxConnectionRequestBytes: Int = 32 << 20

    @Option(help: "Bytes of unfinished requests all connections together may make the server buffer; the stream that would pass it fails RESOURCE_EXHAUSTED.")
    var maxRequestBytes: Int = 1 << 30

    @Option(help: "Stream resets (RST_STREAM) a client may send at once on a connection before it is sent away (GOAWAY).")
    var resetBurst: UInt64 = 20_000

    @Option(help: "Stream resets a second that refill --reset-burst.")
    var resetRate: UInt64 = 5_000

    @Option(help: "Connections open at once; one beyond it is closed at once (0: no limit).")
    var maxConnections: Int = 10_000

    @Option(help: "Seconds a connection has to send its preface and SETTINGS, and to complete each header block, before it is closed (0: never).")
    var headerTimeoutSeconds: Double = 10

    @Option(help: "Seconds a request stream may receive nothing before its request is complete; then it is answered CANCELLED and reset (0: never).")
    var streamIdleTimeoutSeconds: Double = 30

    @Option(help: "Log level: trace, debug, info, warning, error.")
    var logLevel: String = "info"

    @Option(help: "Share of calls without a sampled traceparent that start a trace (0...1); 0 turns tracing off. With tracing on, calls whose traceparent is sampled are always traced; spans go to stderr as JSON lines.")
    var traceSampleRate: Double = 0

    func validate() throws {
        guard traceSampleRate.isFinite, traceSampleRate >= 0, traceSampleRate <= 1 else {
            throw ValidationError("--trace-sample-rate must be in 0...1 (got \(traceSampleRate))")
        }
    }

    /// The process's tracer (spans to stderr as JSON lines), or nil when tracing is off.
    func tracer(service: String) -> Tracer? {
        traceSampleRate > 0 ? Tracer(sampleRate: traceSampleRate, service: service) : nil
    }

    @Option(help: "Serve Prometheus metrics (/metrics) and /healthz over HTTP on this port (0 picks one); off when not given.")
    var adminPort: Int?

    @OptionGroup var tls: ServerTLSOptions

    func configuration() -> ServerConfiguration {
        var c = ServerConfiguration()
        c.host = host
        c.port = port
        if let e = eventLoops { c.eventLoopThreads = max(1, e) }
        if let w = workers { c.workerThreads = max(1, w) }
        c.maxMessageLength = maxMessageBytes
        c.http2.maxHeaderListBytes = maxHeaderListBytes
        c.http2.maxConcurrentStreams = maxConcurrentStreams
        c.maxInFlightHandlers = maxInFlight
        c.drainTimeout = .milliseconds(Int(drainSeconds * 1000))
        c.maxConnectionIdle = maxConnectionIdleSeconds > 0 ? .milliseconds(Int(maxConnectionIdleSeconds * 1000)) : nil
        c.writeTimeout = writeTimeoutSeconds > 0 ? .milliseconds(Int(writeTimeoutSeconds * 1000)) : nil
        c.streamSendTimeout = streamSendTimeoutSeconds > 0 ? .milliseconds(Int(streamSendTimeoutSeconds * 1000)) : nil
        c.maxConnectionQueuedBytes = max(1, maxConnectionQueuedBytes)
        c.maxQueuedBytes = max(1, maxQueuedBytes)
        c.maxConnectionRequestBytes = max(1, maxConnectionRequestBytes)
        c.maxRequestBytes = max(1, maxRequestBytes)
        c.http2.resetBurst = max(1, resetBurst)
        c.http2.resetRate = resetRate
        c.maxConnections = maxConnections > 0 ? maxConnections : nil
        c.headerTimeout = headerTimeoutSeconds > 0 ? .milliseconds(Int(headerTimeoutSeconds * 1000)) : nil
        c.streamIdleTimeout = streamIdleTimeoutSeconds > 0 ? .milliseconds(Int(streamIdleTimeoutSeconds * 1000)) : nil
        return c
    }
}

func makeLogger(_ label: String, level: String) -> Logger {
    var l = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
    l.logLevel = Logger.Level(rawValue: level) ?? .info
    return l
}

/// Starts `router` on a server (and the admin endpoint when asked), prints the bound address,
/// waits for SIGTERM/SIGINT, then: health → NOT_SERVING, end health watches, GOAWAY, drain, exit.
func serve(router: Router, health: HealthService, options: ServerOptions, logger: Logger, what: String,
           metrics: ServerMetrics = ServerMetrics(), group: MultiThreadedEventLoopGroup? = nil,
           frontDoor: ((RPCServer) -> any HTTPFrontDoor)? = nil,
           tls: TLSContextSource? = nil, authorizer: (any CallAuthorizer)? = nil,
           beforeDrain: @Sendable () -> Void = {}) async throws {
    // Response buffers (64 KiB-4 MiB) come and go at a high rate: keep glibc from serving them
    // with fresh mmap/munmap pairs (a page fault per 4 KiB on every response, ~10 % of server
    // CPU in perf) by raising the mmap threshold and keeping freed memory for reuse.
    CShardRankSystem_tune_malloc()
    var config = options.configuration()
    config.observer = metrics
    config.tls = tls
    config.authorizer = authorizer
    let server = RPCServer(configuration: config, router: router, logger: logger, group: group)
    // The transport's own bounds (docs/operations.md, "Security"), read at each scrape.
    let openConnections = metrics.registry.gauge(name: "shardrank_connections_open", help: "gRPC connections open now")
    let refusedConnections = metrics.registry.gauge(name: "shardrank_connections_refused_total",
                                                    help: "gRPC connections refused at the connection cap since start")
    let queuedBytes = metrics.registry.gauge(name: "shardrank_queued_bytes", help: "Answer bytes queued for sending, all connections")
    let requestBytes = metrics.registry.gauge(name: "shardrank_request_bytes",
                                              help: "Bytes of requests not yet complete buffered, all connections")
    metrics.addCollector { _ in
        openConnections.set(to: Double(server.openConnections))
        refusedConnections.set(to: Double(server.refusedConnections))
        queuedBytes.set(to: Double(server.queuedBytes))
        requestBytes.set(to: Double(server.requestBytes))
    }
    let port: Int
    do { port = try await server.listen() } catch {
        logger.error("\(error)")
        throw ExitCode(3)
    }
    var admin: AdminServer?
    if let adminPort = options.adminPort {
        do {
            admin = try await AdminServer(host: options.host, port: adminPort, metrics: metrics, frontDoor: frontDoor?(server), group: server.group)
        } catch {
            logger.error("cannot listen for admin HTTP on \(options.host):\(adminPort): \(error)")
            _ = await server.shutdownGracefully()
            throw ExitCode(3)
        }
        printFlushed("shardrank \(what): admin listening on \(options.host):\(admin!.port)")
    }
    printFlushed("shardrank \(what): listening on \(options.host):\(port)\(tls == nil ? "" : tls!.requiresClientCertificate ? " (TLS, client certificates required)" : " (TLS)")")
    let sig = await waitForTerminationSignal()
    logger.info("\(sig): health NOT_SERVING, draining in-flight calls")
    beforeDrain()
    health.setAllNotServing()
    try? await Task.sleep(for: .milliseconds(100))
    health.finishWatchers()
    await admin?.close()
    let drained = await server.shutdownGracefully()
    logger.info(drained ? "drained; exiting" : "drain timed out; exiting")
}

/// Reloads the TLS certificates (SIGHUP): new connections use them, open ones keep theirs; a
/// file that cannot be used keeps the old certificates (logged).
func reloadTLS(_ source: TLSContextSource?, logger: Logger) {
    guard let source else { return }
    do {
        try source.reload()
        logger.info("SIGHUP: TLS certificates reloaded from \(source.files.certificate ?? "-"); new connections use them")
    } catch {
        logger.error("SIGHUP: TLS reload failed, keeping the old certificates: \(error)")
    }
}
