import Dispatch
import ArgumentParser
import Synchronization
import Coordinator
import Logging
import NIOPosix
import RPCCore
import RPCTransport
import ShardRankKernels
import ShardRankWire
import ShardRankAdmin
import Prometheus

/// `shardrank coordinator`: serves `shardrank.v1.Recommender` over the shards of a topology.
struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Serve Recommend/Rank/Similar over the shards named in a topology file.")

    @Option(help: "Topology file (JSON: tables, shards[replicas], coordinators; see docs/operations.md).")
    var topology: String

    @Option(name: .customLong("mlp"), help: ArgumentHelp("MLP weights (.safetensors) served as model 'mlp'; its JSON config is --mlp-config or FILE with .json.", valueName: "file"))
    var model: String?

    @Option(name: .customLong("mlp-config"), help: ArgumentHelp("MLP config JSON (default: the --mlp path with its extension replaced by .json).", valueName: "file"))
    var modelConfig: String?

    @Option(name: .customLong("ranker"), help: ArgumentHelp(
        "A learned ranker served as model NAME: NAME=FILE, FILE a LightGBM text model (scripts/train-ranker; docs/ranking.md). Repeatable.",
        valueName: "NAME=FILE"))
    var rankerSpecs: [String] = []

    @Option(help: "Query tower weights (.safetensors, scripts/train-query-tower): user vectors computed per request from the session, recent items, genres and country (docs/ranking.md). Its JSON config is --query-tower-config or FILE with .json.")
    var queryTower: String?

    @Option(help: "Query tower config JSON (default: the --query-tower path with its extension replaced by .json).")
    var queryTowerConfig: String?

    @Option(help: "Require bearer tokens from clients: lines 'TOKEN SCOPE[,SCOPE]' (scopes: recommend, events, *); reloaded on SIGHUP.")
    var tokenFile: String?

    @OptionGroup var server: ServerOptions

    /// The scope each client method needs with --token-file (health needs none).
    static let tokenScopes: [String: String] = [
        RecommenderMethods.recommend.path: "recommend", RecommenderMethods.rank.path: "recommend",
        RecommenderMethods.similar.path: "recommend", RecommenderMethods.info.path: "recommend",
        RecommenderMethods.recordEvents.path: "events", RecommenderMethods.recordEventsBatch.path: "events",
    ]

    func run() async throws {
        let logger = makeLogger("shardrank.coordinator", level: server.logLevel)
        // Before anything is loaded: a cleartext listener off loopback, unusable TLS files or
        // an unusable token file exit 2. The coordinator's clients authenticate with tokens;
        // its certificate (the coordinator role) is also what it presents to the shards.
        let tls = try server.tls.serverSource(host: server.host, requireClientCertificate: false, logger: logger)
        let shardTLS: TLSContextSource?
        do { shardTLS = tls == nil ? nil : try TLSContextSource(files: server.tls.files, side: .client) } catch {
            logger.error("\(error)")
            throw ExitCode(2)
        }
        let tokens: TokenAuthorizer?
        do { tokens = try tokenFile.map { try TokenAuthorizer(path: $0, scopeOfPath: Self.tokenScopes, readFile: { try readTextFile($0) }) } } catch {
            logger.error("\(error)")
            throw ExitCode(2)
        }
        if let tokens { logger.info("bearer tokens required: \(tokens.tokenCount) token(s) from \(tokens.path)") }
        let hangup: (any DispatchSourceSignal)? = tls == nil && tokens == nil ? nil : onSIGHUP {
            reloadTLS(tls, logger: logger)
            reloadTLS(shardTLS, logger: logger)
            if let tokens {
                do { try tokens.reload(); logger.info("SIGHUP: \(tokens.tokenCount) token(s) reloaded from \(tokens.path)") } catch {
                    logger.error("SIGHUP: token reload failed, keeping the old tokens: \(error)")
                }
            }
        }
        defer { hangup?.cancel() }
        let topo: Topology
        do { topo = try Topology.load(path: topology) } catch {
            logger.error("\(error)")
            throw ExitCode(2)
        }
        var mlp: MLPModel?
        if let model {
            let config = modelConfig ?? (model.hasSuffix(".safetensors") ? String(model.dropLast(".safetensors".count)) + ".json" : model + ".json")
            do { mlp = try MLPModel(weightsPath: model, configPath: config) } catch {
                logger.error("cannot load model \(model) (config \(config)): \(error)")
                throw ExitCode(2)
            }
            if mlp!.denseDimension > 0 || mlp!.attributeCount > 0 {
                logger.error("model \(model) needs dense or attribute features, which the coordinator does not provide yet")
                throw ExitCode(2)
            }
        }
        var tower: QueryTower?
        if let queryTower {
            let config = queryTowerConfig
                ?? (queryTower.hasSuffix(".safetensors") ? String(queryTower.dropLast(".safetensors".count)) + ".json" : queryTower + ".json")
            do { tower = try QueryTower(weightsPath: queryTower, configPath: config) } catch {
                logger.error("cannot load the query tower \(queryTower) (config \(config)): \(error)")
                throw ExitCode(2)
            }
            guard tower!.config.itemsTable == topo.settings.itemsTable else {
                logger.error("the query tower \(queryTower) reads table '\(tower!.config.itemsTable)'; this coordinator serves '\(topo.settings.itemsTable)'")
                throw ExitCode(2)
            }
            let c = tower!.config
            logger.info("query tower loaded from \(queryTower): dim \(c.dim), \(c.recent) recent items, hidden \(c.hidden), \(c.genres.count) genres, \(c.countries.count) countries")
        }
        var rankers: [ServedRanker] = []
        for spec in rankerSpecs {
            guard let eq = spec.firstIndex(of: "="), eq != spec.startIndex, spec.index(after: eq) != spec.endIndex else {
                logger.error("--ranker \(spec): expected NAME=FILE")
                throw ExitCode(64)
            }
            let name = String(spec[..<eq]), path = String(spec[spec.index(after: eq)...])
            guard !["", "dot", "mlp"].contains(name) else {
                logger.error("--ranker \(spec): '\(name)' is a built-in model name; choose another")
                throw ExitCode(64)
            }
            do {
                rankers.append(try ServedRanker(name: name, model: try TreeEnsemble(path: path)))
                logger.info("ranker '\(name)' loaded from \(path)")
            } catch {
                logger.error("cannot load ranker '\(name)' from \(path): \(error)")
                throw ExitCode(2)
            }
        }
        // Thread-per-core: one event-loop group serves the clients and calls the shards; a
        // Recommend runs on the loop its connection lives on, and so do its shard calls.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: server.configuration().eventLoopThreads)
        let cluster: ShardCluster
        let tracer = server.tracer(service: "coordinator")
        do { cluster = try ShardCluster(topology: topo, group: group, logger: logger, propagatesTrace: tracer != nil, tls: shardTLS) } catch {
            logger.error("\(error)")
            throw ExitCode(2)
        }
        await cluster.checkAll()
        cluster.startHealthChecks()
        // No spin-waiting in servers: several server processes usually share the cores (a
        // spinning pool thread takes CPU another process needs); see docs/kernels.md.
        let pool = WorkerPool(threadCount: server.workers ?? WorkerPool.defaultThreadCount, spinMicroseconds: 0)
        let metrics = ServerMetrics(bootstrapSwiftMetrics: true)
        let recommender = Recommender(cluster: cluster, model: mlp, rankers: rankers, tower: tower, pool: pool, logger: logger,
                                      observer: RecommendMetrics(metrics: metrics), tracer: tracer)
        if let sessions = recommender.sessions {
            logger.info("sessions: \(sessions.eventsPerUser) events per user, \(sessions.users) users (at most \(sessions.maxBytes >> 20) MiB), ttl \(sessions.ttlSeconds) s")
        }
        let pinned = metrics.registry.gauge(name: "shardrank_pinned_version", help: "Table-set version the coordinator pins")
        let hedges = metrics.registry.gauge(name: "shardrank_hedges_total", help: "Hedged shard calls since start")
        let ejections = metrics.registry.gauge(name: "shardrank_ejections_total", help: "Replica ejections since start")
        let servingReplicas = metrics.registry.gauge(name: "shardrank_replicas_serving", help: "Replicas that are SERVING and not ejected")
        let shardCalls = metrics.registry.gauge(name: "shardrank_shard_calls_total", help: "Shard calls made since start")
        let sessionUsers = metrics.registry.gauge(name: "shardrank_session_users", help: "Users with a session on this coordinator")
        let sessionEvents = metrics.registry.gauge(name: "shardrank_session_events", help: "Session events held on this coordinator")
        let sessionEvictions = metrics.registry.gauge(name: "shardrank_session_evictions_total",
                                                      help: "Sessions evicted for room (least recently updated first) since start")
        metrics.addCollector { _ in
            pinned.set(to: Double(cluster.pinnedVersion))
            hedges.set(to: Double(cluster.hedgeCount))
            ejections.set(to: Double(cluster.ejectionCount))
            servingReplicas.set(to: Double(cluster.replicaStates.filter { $0.serving && !$0.ejected }.count))
            shardCalls.set(to: Double(cluster.callCount))
            if let u = recommender.sessions?.usage {
                sessionUsers.set(to: Double(u.users))
                sessionEvents.set(to: Double(u.events))
                sessionEvictions.set(to: Double(u.evictions))
            }
        }
        let health = HealthService(services: ["shardrank.v1.Recommender"])
        // Readiness: SERVING only while the coordinator can answer completely (a version pinned,
        // every shard reachable); re-evaluated after every round of health checks.
        let draining = Atomic<Bool>(false)
        if !cluster.readiness.ready {
            for name in ["", "shardrank.v1.Recommender"] { health.set(.notServing, for: name) }
        }
        let readinessTask = Task {
            var last: Bool?
            while !Task.isCancelled {
                let (ready, reason) = cluster.readiness
                if !draining.load(ordering: .relaxed) {
                    for name in ["", "shardrank.v1.Recommender"] { health.set(ready ? .serving : .notServing, for: name) }
                    if ready != last { logger.info(ready ? "ready: SERVING" : "not ready (NOT_SERVING): \(reason)") }
                }
                last = ready
                try? await Task.sleep(for: .milliseconds(Int(topo.settings.healthIntervalMs)))
            }
        }
        let served: [any RPCService] = [health, RecommenderService(recommender: recommender)]
        let router = Router(services: served + ReflectionService.both(serving: served))
        logger.info("coordinator over \(topo.shardCount) shards (\(topo.shards.map(\.count).reduce(0, +)) replicas), pinned version \(cluster.pinnedVersion)")
        // The admin port also answers the JSON API (docs/api.md, "JSON over HTTP").
        try await serve(router: router, health: health, options: server, logger: logger, what: "coordinator", metrics: metrics, group: group,
                        frontDoor: { JSONGateway(server: $0) }, tls: tls, authorizer: tokens, beforeDrain: { draining.store(true, ordering: .relaxed); readinessTask.cancel() })
        let users = recommender.cacheCounts
        logger.info("made \(cluster.callCount) shard calls; caches: users \(users.users), lists \(users.lists), rows \(users.rows) (hits/misses)")
        await cluster.stop()
    }
}

/// Per-stage latency histograms and degraded / cold-start counters of Recommend.
struct RecommendMetrics: RecommendObserver {
    let stages: [(KeyPath<StageTimings, UInt64> & Sendable, DurationHistogram)]
    let degraded: Prometheus.Counter
    let coldStart: Prometheus.Counter
    let answered: Prometheus.Counter
    /// Indexed by `UserVectorSource.rawValue`.
    let userVector: [Prometheus.Counter]

    init(metrics: ServerMetrics) {
        let r = metrics.registry
        func h(_ stage: String) -> DurationHistogram {
            r.durationHistogram(name: "shardrank_recommend_stage_seconds", labels: [("stage", stage)], buckets: ServerMetrics.latencyBuckets,
                                    help: "Recommend latency by pipeline stage")
        }
        stages = [(\.retrieveMicros, h("retrieve")), (\.filterMicros, h("filter")), (\.gatherMicros, h("gather")),
                  (\.rankMicros, h("rank")), (\.postRankMicros, h("post_rank")), (\.totalMicros, h("total"))]
        degraded = r.counter(name: "shardrank_recommend_degraded_total", help: "Recommend answers flagged degraded")
        coldStart = r.counter(name: "shardrank_recommend_cold_start_total", help: "Recommend answers for users without vector or profile")
        answered = r.counter(name: "shardrank_recommend_answers_total", help: "Recommend answers")
        userVector = UserVectorSource.allCases.map {
            r.counter(name: "shardrank_recommend_user_vector_total", labels: [("source", $0.description)],
                      help: "Recommend answers by the user vector they used (stored, tower, none = cold start)")
        }
    }

    func answered(_ response: RecommendResponse) {
        answered.increment()
        if response.coverage?.degraded == true { degraded.increment() }
        if response.coldStart { coldStart.increment() }
        userVector[Int(response.userVectorSource.rawValue)].increment()
        if let t = response.timings {
            for (kp, hist) in stages { hist.record(.microseconds(Int64(t[keyPath: kp]))) }
        }
    }
}
