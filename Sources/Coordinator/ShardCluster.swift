public import Logging
public import NIOCore
import NIOPosix
import Synchronization
public import RPCCore
public import RPCTransport
import ShardRankClient
import ShardRankWire

/// One replica of one shard: its channel, load and health.
final class Replica: Sendable {
    let shard: Int
    let address: String
    let channel: RPCChannel
    let client: ShardClient
    /// Calls in flight (least-outstanding choice).
    let outstanding = Atomic<Int>(0)
    let state = Mutex(State())

    struct State {
        var serving = true
        var consecutiveFailures = 0
        var ejectedUntil: ContinuousClock.Instant?
        var ejections = 0
        /// Recent latencies in ms (ring buffer) for the hedge delay.
        var latencies: [Double] = []
        var next = 0
        var version: UInt64 = 0
        /// The hash seed the replica reported with `version` (0: not reported).
        var hashSeed: UInt64 = 0
    }

    init(shard: Int, address: String, group: any EventLoopGroup, tls: TLSContextSource? = nil) throws(RPCError) {
        self.shard = shard
        self.address = address
        var config = ClientConfiguration()
        config.tls = tls
        config.connections = 2
        config.loopAffinity = true
        config.initialBackoff = .milliseconds(50)
        config.maxBackoff = .milliseconds(1000)
        channel = try RPCChannel(target: address, group: group, configuration: config)
        client = ShardClient(channel: channel)
    }

    func isUsable(at now: ContinuousClock.Instant) -> Bool {
        state.withLock { s in s.serving && (s.ejectedUntil.map { now >= $0 } ?? true) }
    }

    /// The hedge delay: the given quantile of recent latencies (at least `minimum`).
    func hedgeDelay(quantile: Double, minimum: Double) -> Duration {
        let ms = state.withLock { s -> Double in
            guard s.latencies.count >= 8 else { return 10 }
            let sorted = s.latencies.sorted()
            return sorted[min(sorted.count - 1, Int(Double(sorted.count) * quantile))]
        }
        return .microseconds(Int(max(ms, minimum) * 1000))
    }

    func recordSuccess(ms: Double) {
        state.withLock { s in
            s.consecutiveFailures = 0
            if s.latencies.count < 128 { s.latencies.append(ms) } else { s.latencies[s.next] = ms; s.next = (s.next + 1) % 128 }
        }
    }

    /// Counts a transport-level failure; returns true when the replica was ejected by it.
    func recordFailure(ejectAfter: Int, ejection: Double) -> Bool {
        state.withLock { s in
            s.consecutiveFailures += 1
            guard s.consecutiveFailures >= ejectAfter, s.ejectedUntil == nil else { return false }
            let ms = min(10_000, ejection * Double(1 << min(s.ejections, 4)))
            s.ejectedUntil = ContinuousClock.now.advanced(by: .milliseconds(Int(ms)))
            s.ejections += 1
            return true
        }
    }
}

/// The coordinator's view of the shard servers: replicas per shard, chosen by least outstanding
/// requests among the healthy ones; hedging to a second replica after an adaptive delay, with the
/// loser cancelled; ejection of replicas that keep failing, re-admitted after a health check; and
/// the table-set version every replica holds (for pinning).
public final class ShardCluster: Sendable {
    public let shardCount: Int
    let replicas: [[Replica]]
    let settings: CoordinatorSettings
    let logger: Logger
    private let healthTask = Mutex<Task<Void, Never>?>(nil)
    /// Health checks run on one of the cluster's event loops (not the cooperative pool, which
    /// CPU-heavy work in the process may hold: a late check would mark live replicas down).
    private let healthExecutor: EventLoopTaskExecutor
    let hedges = Atomic<Int>(0)
    let ejections = Atomic<Int>(0)
    let calls = Atomic<Int>(0)
    /// Tracing is on in this process: shard calls forward the traced request's context (read
    /// from `OutgoingTraceContext`). False: that task-local is never read.
    let propagatesTrace: Bool

    /// - Parameter tls: TLS (and the coordinator's client certificate) for every shard connection; nil: cleartext.
    public init(topology: Topology, group: any EventLoopGroup, logger: Logger, propagatesTrace: Bool = false,
                tls: TLSContextSource? = nil) throws(RPCError) {
        self.propagatesTrace = propagatesTrace
        healthExecutor = EventLoopTaskExecutor(group.next())
        shardCount = topology.shardCount
        settings = topology.settings
        self.logger = logger
        var r: [[Replica]] = []
        for (i, list) in topology.shards.enumerated() {
            var l: [Replica] = []
            for a in list { l.append(try Replica(shard: i, address: a, group: group, tls: tls)) }
            r.append(l)
        }
        replicas = r
    }

    /// Starts health checks (and version reads) every `healthIntervalMs`.
    public func startHealthChecks() {
        let interval = settings.healthIntervalMs
        let task = Task(executorPreference: healthExecutor) { [weak self] in
            var tick = 0
            while !Task.isCancelled {
                guard let self else { return }
                await self.checkAll(readVersions: tick % 4 == 0)
                tick += 1
                try? await Task.sleep(for: .milliseconds(Int(interval)))
            }
        }
        healthTask.withLock { $0?.cancel(); $0 = task }
    }

    /// One round of health checks, concurrently over every replica.
    public func checkAll(readVersions: Bool = true) async {
        await withTaskGroup(of: Void.self) { group in
            for r in replicas.joined() {
                group.addTask {
                    let serving: Bool
                    do {
                        serving = try await HealthClient(channel: r.channel).check(timeout: .milliseconds(200)) == .serving
                    } catch {
                        serving = false
                    }
                    var version: (number: UInt64, seed: UInt64)?
                    if serving && readVersions, let info = try? await r.client.info(timeout: .milliseconds(200)) {
                        version = (info.version, info.hashSeed)
                    }
                    r.state.withLock { s in
                        s.serving = serving
                        if let version { s.version = version.number; s.hashSeed = version.seed }
                        if serving, let until = s.ejectedUntil, ContinuousClock.now >= until {
                            s.ejectedUntil = nil
                            s.consecutiveFailures = 0
                        }
                        if serving && s.ejectedUntil == nil { s.ejections = 0 }
                    }
                }
            }
        }
    }

    public func stop() async {
        healthTask.withLock { $0?.cancel() }
        for r in replicas.joined() { await r.channel.close() }
    }

    /// Whether the coordinator can answer completely: a table-set version is pinned and every
    /// shard has a replica whose last health check said SERVING. Drives the coordinator's own
    /// health status (readiness); requests are served either way (degraded and flagged).
    public var readiness: (ready: Bool, reason: String) {
        if pinnedVersion == 0 { return (false, "no table-set version known yet (no shard has answered Info)") }
        let down = replicas.indices.filter { s in !replicas[s].contains { r in r.state.withLock { $0.serving } } }
        if !down.isEmpty { return (false, "no SERVING replica for shard(s) \(down.map(String.init).joined(separator: ", "))") }
        return (true, "")
    }

    /// The version to pin: the lowest version any serving replica reports (every shard holds it,
    /// the newer ones as their previous version during a rollout); 0 when unknown. With it, the
    /// hash seed a replica reported for that version (every file of a version records the
    /// manifest's seed; 0 when none did).
    public var pinned: PinnedTableSet {
        var v: UInt64 = .max, seed: UInt64 = 0
        for r in replicas.joined() {
            let (serving, version, hashSeed) = r.state.withLock { ($0.serving, $0.version, $0.hashSeed) }
            guard serving && version > 0 else { continue }
            if version < v { v = version; seed = hashSeed } else if version == v && seed == 0 { seed = hashSeed }
        }
        return v == .max ? PinnedTableSet(version: 0, hashSeed: 0) : PinnedTableSet(version: v, hashSeed: seed)
    }

    /// The version to pin (see `pinned`).
    public var pinnedVersion: UInt64 { pinned.version }

    /// The least-loaded usable replica not in `excluding`; with `lastResort`, an ejected or
    /// unknown one when no usable replica is left (a retry after a transport failure).
    private func pick(shard: Int, excluding: Set<String>, lastResort: Bool = true) -> Replica? {
        let now = ContinuousClock.now
        let candidates = replicas[shard].filter { !excluding.contains($0.address) }
        let usable = candidates.filter { $0.isUsable(at: now) }
        if let best = usable.min(by: { $0.outstanding.load(ordering: .relaxed) < $1.outstanding.load(ordering: .relaxed) }) {
            return best
        }
        guard lastResort else { return nil }
        // Nothing healthy: an ejected replica that still answers health checks, then any other
        // replica, rather than failing without trying (ejection is a heuristic).
        return candidates.first { r in r.state.withLock { $0.serving } } ?? candidates.first
    }

    /// Calls shard `shard` before `deadline`: on the least-loaded healthy replica, hedged to a
    /// second one after the first's recent p95 latency, retried at once on another replica after
    /// a transport failure; the loser is cancelled (its stream reset).
    /// - Throws: the last error when every attempt failed, DEADLINE_EXCEEDED when time ran out,
    ///   UNAVAILABLE when the shard has no usable replica.
    func call<T: Sendable>(shard: Int, deadline: ContinuousClock.Instant, requestID: String = "",
                           _ op: @escaping @Sendable (ShardClient, Duration) async throws(RPCError) -> T) async throws(RPCError) -> T {
        // A shard none of whose replicas is SERVING (health checks) and un-ejected gets no traffic:
        // the caller degrades at once instead of waiting out its deadline on a dead replica.
        guard let first = pick(shard: shard, excluding: [], lastResort: false) else {
            throw RPCError(.unavailable, "shard \(shard): no healthy replica")
        }
        calls.wrappingAdd(1, ordering: .relaxed)
        let deadline = min(deadline, ContinuousClock.now.advanced(by: .microseconds(Int(settings.maxShardCallMs * 1000))))
        let settings = self.settings
        let logger = self.logger
        let traceContext = propagatesTrace ? OutgoingTraceContext.current : nil
        @Sendable func attempt(_ r: Replica) async -> Result<T, RPCError> {
            let remaining = ContinuousClock.now.duration(to: deadline)
            if remaining <= .zero { return .failure(RPCError(.deadlineExceeded, "shard \(shard): no time left")) }
            r.outstanding.wrappingAdd(1, ordering: .relaxed)
            defer { r.outstanding.wrappingSubtract(1, ordering: .relaxed) }
            let t0 = ContinuousClock.now
            do throws(RPCError) {
                let client = traceContext.map { r.client.forwarding(requestID: requestID, traceParent: $0.traceParent, traceState: $0.traceState) }
                    ?? r.client.forwarding(requestID: requestID)
                let v = try await op(client, remaining)
                let d = ContinuousClock.now - t0
                r.recordSuccess(ms: d.millisecondsValue)
                return .success(v)
            } catch {
                if error.code == .unavailable || (error.code == .deadlineExceeded && !Task.isCancelled) {
                    if r.recordFailure(ejectAfter: settings.ejectAfterFailures, ejection: settings.ejectionMs) {
                        self.ejections.wrappingAdd(1, ordering: .relaxed)
                        logger.warning("ejecting replica \(r.address) of shard \(shard) after repeated failures: \(error)")
                    }
                }
                return .failure(error)
            }
        }
        let started = AddressSet(first.address)
        let result: Result<T, RPCError> = await withTaskGroup(of: HedgeOutcome<T>.self) { group in
            group.addTask { .done(await attempt(first), first.address) }
            let hasSecond = replicas[shard].count > 1
            if hasSecond {
                let delay = first.hedgeDelay(quantile: settings.hedgeQuantile, minimum: settings.minHedgeDelayMs)
                group.addTask {
                    try? await Task.sleep(for: delay)
                    if Task.isCancelled { return .skipped }
                    let tried = started.withLock { $0 }
                    guard let second = self.pick(shard: shard, excluding: tried, lastResort: false) else { return .skipped }
                    started.withLock { _ = $0.insert(second.address) }
                    self.hedges.wrappingAdd(1, ordering: .relaxed)
                    return .done(await attempt(second), second.address)
                }
            }
            var lastError = RPCError(.unavailable, "shard \(shard): no replica answered")
            var running = hasSecond ? 2 : 1
            while running > 0, let outcome = await group.next() {
                running -= 1
                switch outcome {
                case .skipped:
                    continue
                case .done(.success(let v), _):
                    group.cancelAll()
                    return .success(v)
                case .done(.failure(let e), _):
                    lastError = e
                    // An application error (NOT_FOUND, INVALID_ARGUMENT, ...) is the shard's answer:
                    // another replica would say the same.
                    guard e.code == .unavailable || e.code == .deadlineExceeded || e.code == .resourceExhausted else {
                        group.cancelAll()
                        return .failure(e)
                    }
                    // Retry a transport failure elsewhere at once.
                    guard e.code == .unavailable else { continue }
                    let tried = started.withLock { $0 }
                    if let other = self.pick(shard: shard, excluding: tried), ContinuousClock.now < deadline {
                        started.withLock { _ = $0.insert(other.address) }
                        running += 1
                        group.addTask { .done(await attempt(other), other.address) }
                    }
                }
            }
            return .failure(lastError)
        }
        return try result.get()
    }

    /// Replica states for Info/debugging: (shard, address, serving, ejected, outstanding, version).
    public var replicaStates: [(shard: Int, address: String, serving: Bool, ejected: Bool, outstanding: Int, version: UInt64)] {
        let now = ContinuousClock.now
        return replicas.joined().map { r in
            let s = r.state.withLock { $0 }
            return (r.shard, r.address, s.serving, s.ejectedUntil.map { now < $0 } ?? false, r.outstanding.load(ordering: .relaxed), s.version)
        }
    }

    public var hedgeCount: Int { hedges.load(ordering: .relaxed) }
    /// Shard calls made since start (a hedge or retry of one counts once).
    public var callCount: Int { calls.load(ordering: .relaxed) }
    public var ejectionCount: Int { ejections.load(ordering: .relaxed) }
}

enum HedgeOutcome<T: Sendable>: Sendable {
    case done(Result<T, RPCError>, String)
    case skipped
}

/// The replicas one call has tried (shared by its hedge tasks).
final class AddressSet: Sendable {
    private let set: Mutex<Set<String>>
    init(_ first: String) { set = Mutex([first]) }
    func withLock<R: Sendable>(_ body: (inout Set<String>) -> R) -> R { set.withLock { body(&$0) } }
}
