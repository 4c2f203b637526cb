import NIOCore
import NIOPosix
public import RPCCore
import RPCTransport
import ShardRankClient
import ShardRankWire
import Synchronization

/// One measured request, for `--latency-log` (an independent check of the percentiles).
public struct LatencyRecord: Sendable {
    public var operation: LoadOperation
    /// Intended send time, µs after the start of the measured phase.
    public var intendedMicros: Int64
    public var latencyNanos: UInt64
    public var status: RPCStatusCode
}

/// The load driver, modelled on h2load: a worker per thread, each with its own event loop and its
/// own connections; a warm-up phase whose requests are not counted, then a measured phase; the run
/// stops by itself at `warmup + duration` plus at most one request timeout to drain what is in flight
/// (open loop: two, when the driver is so far behind that overdue sends are failed unsent).
///
/// A request belongs to the phase of its *intended* send time. Open loop: request i of a worker is
/// due at its schedule's time and its latency runs from then, however late it actually left (the
/// largest lag is reported). Closed loop: each of `concurrency` tasks sends, waits, and sends again.
public enum LoadDriver {
    /// Runs one load test. `progress` gets a one-line status once a second (nil: silent).
    /// - Throws: `LoadTestError` for a bad configuration or a target that cannot be reached or
    ///   lacks the table; failed requests during the run are counted, not thrown.
    public static func run(_ config: LoadTestConfiguration,
                           progress: (@Sendable (String) -> Void)? = nil) async throws(LoadTestError) -> LoadResult {
        try config.validate()
        let shape = try await resolveShape(config)
        return await execute(config, shape: shape, progress: progress)
    }

    /// Learns the query dimension and the id spaces from the target (see `probe`); every target
    /// is reached (several: coordinators, each must be SERVING), the first is asked for `Info`.
    static func resolveShape(_ c: LoadTestConfiguration) async throws(LoadTestError) -> RequestShape {
        var shape: RequestShape?
        for (i, target) in c.targets.enumerated() {
            let s = try await resolveShape(c, target: target, askInfo: i == 0)
            if i == 0 { shape = s }
        }
        return shape!
    }

    static func resolveShape(_ c: LoadTestConfiguration, target: String, askInfo: Bool = true) async throws(LoadTestError) -> RequestShape? {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var cc = c.clientConfiguration()
        cc.connections = 1
        let channel: RPCChannel
        do { channel = try RPCChannel(target: target, group: group, configuration: cc) } catch {
            try? await group.shutdownGracefully()
            throw LoadTestError("--target: \(error.message)")
        }
        let result: Result<RequestShape?, LoadTestError>
        // On the channel's own event loop: a busy cooperative pool cannot stall the probe past
        // its deadline between connecting and sending.
        let executor = EventLoopTaskExecutor(group.next())
        result = await withTaskExecutorPreference(executor) { () async -> Result<RequestShape?, LoadTestError> in
            do throws(LoadTestError) { return .success(try await probe(c, target: target, channel, askInfo: askInfo)) } catch { return .failure(error) }
        }
        await channel.close()
        try? await group.shutdownGracefully()
        return try result.get()
    }

    /// Paging a shard's ids reads at most this many (a larger slice: `--ids-from` or `--id-space`).
    static let maxShardIDs = 100_000_000

    /// A shard: `Info` (the table exists, its dim; Search needs an embedding table) and, for
    /// Lookups without `--ids-from`/`--id-space`, the ids the shard holds of the table — all of
    /// `min_id...max_id` when that range has exactly `rows` ids (a dense single slice, e.g. a
    /// synthetic shard), else read with `Ids`, in row order. A coordinator: gRPC health (SERVING),
    /// then (the first target, when `--user-space` or the item ids are not given) its `Info`: the id
    /// ranges of its users and items tables.
    private static func probe(_ c: LoadTestConfiguration, target: String, _ channel: RPCChannel,
                              askInfo: Bool) async throws(LoadTestError) -> RequestShape? {
        let explicitItems: IDSpace? = if let ids = c.ids {
            IDSpace(ids: ids, source: "\(ids.count) ids from --ids-from (the first is the hottest)")
        } else if let n = c.idSpace {
            IDSpace(first: c.mix.targetsShard ? 0 : 1, count: n, source: "\(c.mix.targetsShard ? 0 : 1)...\((c.mix.targetsShard ? 0 : 1) + n - 1) (--id-space \(n))")
        } else { nil }
        if c.mix.targetsShard {
            let client = ShardClient(channel: channel)
            let info: InfoResponse
            do { info = try await client.info(timeout: .seconds(5)) } catch {
                throw LoadTestError("cannot get Info from shard \(target): \(error)")
            }
            guard let t = info.tables.first(where: { $0.name == c.table }) else {
                throw LoadTestError("--table '\(c.table)' is not served by \(target) (it has: \(info.tables.map(\.name).joined(separator: ", ")))")
            }
            if c.mix.contains(.search), t.kind != .embedding {
                throw LoadTestError("--table '\(c.table)' is a \(t.kind) table: Search needs an embedding table")
            }
            if c.mix.contains(.lookup), t.kind != .embedding {
                throw LoadTestError("--table '\(c.table)' is a \(t.kind) table: Lookup needs an embedding table")
            }
            let dim = c.dim ?? Int(t.dim)
            let unused = IDSpace(first: 0, count: 1, source: "not used")
            guard c.mix.contains(.lookup) else { return RequestShape(configuration: c, dim: dim, items: explicitItems ?? unused, users: unused) }
            if let explicitItems { return RequestShape(configuration: c, dim: dim, items: explicitItems, users: unused) }
            let whose = "table '\(c.table)' on shard \(info.shard) of \(info.shardCount) (\(target))"
            guard t.rows > 0 else { throw LoadTestError("--table '\(c.table)' holds no rows on shard \(info.shard) of \(info.shardCount) (\(target)): nothing to look up") }
            if t.maxID >= t.minID, t.maxID - t.minID == t.rows - 1, t.rows <= UInt64(Int.max) {
                // `rows` distinct ids in a range of `rows` ids: exactly that range.
                return RequestShape(configuration: c, dim: dim, items: IDSpace(first: t.minID, count: Int(t.rows),
                                    source: "\(t.minID)...\(t.maxID): all \(t.rows) ids of \(whose)"), users: unused)
            }
            do {
                let (ids, _) = try await client.allIDs(table: c.table, version: info.version, maxIDs: maxShardIDs, timeout: .seconds(30))
                guard !ids.isEmpty else { throw LoadTestError("--table '\(c.table)' holds no rows on \(target): nothing to look up") }
                return RequestShape(configuration: c, dim: dim, items: IDSpace(ids: ids, source: "the \(ids.count) ids of \(whose), in row order (read with Ids)"),
                                    users: unused)
            } catch let e as LoadTestError {
                throw e
            } catch let e as RPCError where e.code == .unimplemented {
                throw LoadTestError("shard \(target) does not list its ids (Ids is UNIMPLEMENTED: an older shard): give --ids-from FILE or --id-space N")
            } catch {
                throw LoadTestError("cannot read the ids of \(whose): \(error)")
            }
        }
        do {
            let s = try await HealthClient(channel: channel).check(timeout: .seconds(5))
            guard s == .serving else { throw LoadTestError("coordinator \(target) is not SERVING (\(s))") }
        } catch let e as LoadTestError { throw e } catch {
            throw LoadTestError("cannot reach coordinator \(target): \(error)")
        }
        guard askInfo else { return nil }
        let dim = c.dim ?? 0
        let needUsers = c.users == nil && [.recommend, .rank, .record].contains { c.mix.contains($0) }
        let needItems = explicitItems == nil && [.rank, .similar, .record].contains { c.mix.contains($0) }
        var users = IDSpace(first: 1, count: c.users ?? 1, source: c.users.map { "1...\($0) (--user-space \($0))" } ?? "not used")
        var items = explicitItems ?? IDSpace(first: 1, count: 1, source: "not used")
        guard needUsers || needItems else { return RequestShape(configuration: c, dim: dim, items: items, users: users) }
        let info: InfoResponse
        do { info = try await RecommenderClient(channel: channel).info(timeout: .seconds(10)) } catch {
            let flags = [needUsers ? "--user-space N" : nil, needItems ? "--id-space N or --ids-from FILE" : nil].compactMap { $0 }.joined(separator: " and ")
            if error.code == .unimplemented {
                throw LoadTestError("coordinator \(target) does not answer Info (an older coordinator): give \(flags)")
            }
            throw LoadTestError("cannot get Info from coordinator \(target) (for the id ranges of its tables): \(error); or give \(flags)")
        }
        func space(_ table: String, what: String, flag: String) throws(LoadTestError) -> IDSpace {
            guard let t = info.tables.first(where: { $0.name == table }), t.kind != .list else {
                throw LoadTestError("coordinator \(target) reports no \(what) table '\(table)' (tables: \(info.tables.map(\.name).joined(separator: ", "))): give \(flag)")
            }
            guard t.rows > 0, t.maxID >= t.minID else {
                throw LoadTestError("the \(what) table '\(table)' behind coordinator \(target) holds no rows: give \(flag)")
            }
            let span = t.maxID - t.minID
            let count = span >= UInt64(Int.max) ? Int.max : Int(span) + 1
            let gaps = UInt64(count) == t.rows ? "" : ", so some ids of the range have no row"
            return IDSpace(first: t.minID, count: count,
                           source: "\(t.minID)...\(t.maxID) of table '\(table)' (\(t.rows) rows over \(info.shardCount) shard\(info.shardCount == 1 ? "" : "s")\(gaps); from the coordinator's Info)")
        }
        if needUsers { users = try space(info.usersTable, what: "users", flag: "--user-space N") }
        if needItems { items = try space(info.itemsTable, what: "items", flag: "--id-space N or --ids-from FILE") }
        return RequestShape(configuration: c, dim: dim, items: items, users: users)
    }

    /// Runs the configured phases against an already resolved shape.
    public static func execute(_ config: LoadTestConfiguration, shape: RequestShape,
                               progress: (@Sendable (String) -> Void)?) async -> LoadResult {
        let clock = ContinuousClock()
        let workers = (0 ..< config.threads).map { w in
            Worker(index: w, configuration: config, connections: config.connections / config.threads + (w < config.connections % config.threads ? 1 : 0))
        }
        let origin = clock.now.advanced(by: .milliseconds(20))
        let timeline = Timeline(origin: origin, measureStart: origin.advanced(by: config.warmup),
                                end: origin.advanced(by: config.warmup + config.duration))

        let reporter: Task<Void, Never>? = progress.map { sink in
            Task(executorPreference: workers[0].executor) {
                var tick = 1
                var cumulative = PhaseStats()
                while !Task.isCancelled {
                    do { try await Task.sleep(until: origin.advanced(by: .seconds(tick)), clock: .continuous) } catch { break }
                    var interval = IntervalStats()
                    for w in workers { interval.merge(w.takeInterval()) }
                    // The second just ended counts as measured when it began at or after the warm-up.
                    let measuring = origin.advanced(by: .seconds(tick - 1)) >= timeline.measureStart
                    if measuring { cumulative = PhaseStats(); for w in workers { cumulative.merge(w.peekMeasured()) } }
                    let inFlight = workers.reduce(0) { $0 + $1.inFlight.load(ordering: .relaxed) }
                    sink(progressLine(second: tick, measuring: measuring, interval: interval, inFlight: inFlight,
                                      measuredP99: measuring ? cumulative.latency.summary.p99Ms : nil))
                    tick += 1
                }
            }
        }

        await withTaskGroup(of: Void.self) { group in
            for w in workers {
                // Each worker's tasks run on its own event loop, where its connections live: the
                // calls start and complete on that thread, and the driver needs nothing from the
                // cooperative pool (which other work in the process may be holding).
                group.addTask(executorPreference: w.executor) {
                    switch config.mode {
                    case .closed(let concurrency):
                        let share = concurrency / config.threads + (w.index < concurrency % config.threads ? 1 : 0)
                        await runClosed(w, tasks: share, shape: shape, config: config, timeline: timeline)
                    case .open(let rate, let arrivals):
                        await runOpen(w, rate: rate, arrivals: arrivals, shape: shape, config: config, timeline: timeline)
                    }
                }
            }
        }
        reporter?.cancel()
        _ = await reporter?.value

        var total = PhaseStats()
        var log: [LatencyRecord] = []
        for w in workers {
            let (s, l) = w.finish()
            total.merge(s)
            log += l
        }
        for w in workers { await w.close() }
        log.sort { $0.intendedMicros < $1.intendedMicros }
        return LoadResult(report: LoadReport(configuration: config, shape: shape, stats: total), stats: total, latencyLog: log)
    }

    static func progressLine(second: Int, measuring: Bool, interval: IntervalStats, inFlight: Int, measuredP99: Double?) -> String {
        let s = interval.latency.summary
        var line = "[\(pad(String(second), 4))s \(measuring ? "measure" : "warm-up")] \(pad(String(interval.completed), 7)) req/s"
        line += "  errors \(interval.errors)"
        line += "  p50 \(fmt(s.p50Ms)) ms  p99 \(fmt(s.p99Ms)) ms  max \(fmt(s.maxMs)) ms  in-flight \(inFlight)"
        if let measuredP99 { line += "  (measured p99 so far \(fmt(measuredP99)) ms)" }
        return line
    }

    static func runClosed(_ w: Worker, tasks: Int, shape: RequestShape, config: LoadTestConfiguration, timeline: Timeline) async {
        let caller = Caller(channels: w.channels, ring: w.ring, timeout: config.timeout, dim: shape.dim)
        await withDiscardingTaskGroup { group in
            for j in 0 ..< tasks {
                let seed = Xoshiro256.derive(config.seed, w.index << 20 | j)
                group.addTask {
                    var gen = RequestGenerator(shape: shape, seed: seed)
                    while true {
                        let req = gen.next()
                        let start = ContinuousClock.now
                        if start >= timeline.end { break }
                        let measured = start >= timeline.measureStart
                        if measured { w.noteSent(req.operation, lagNanos: 0) }
                        w.inFlight.wrappingAdd(1, ordering: .relaxed)
                        let out = await caller.call(req)
                        let done = ContinuousClock.now
                        w.inFlight.wrappingSubtract(1, ordering: .relaxed)
                        w.record(req.operation, intended: start, done: done, outcome: out, timeline: timeline, measured: measured)
                    }
                }
            }
        }
    }

    static func runOpen(_ w: Worker, rate: Double, arrivals: Arrivals, shape: RequestShape, config: LoadTestConfiguration,
                        timeline: Timeline) async {
        let caller = Caller(channels: w.channels, ring: w.ring, timeout: config.timeout, dim: shape.dim)
        let perWorker = rate / Double(config.threads)
        // Stagger constant-rate workers so their sends interleave instead of colliding.
        var schedule = ArrivalSchedule(rate: perWorker, arrivals: arrivals, seed: Xoshiro256.derive(config.seed, w.index),
                                       phase: Double(w.index) / rate)
        let maxInFlight = max(1, config.maxInFlight / config.threads)
        var gen = RequestGenerator(shape: shape, seed: Xoshiro256.derive(config.seed ^ 0xA5A5, w.index))
        let giveUp = timeline.end.advanced(by: config.timeout)
        await withDiscardingTaskGroup { group in
            while true {
                let intended = timeline.origin.advanced(by: .seconds(double: schedule.next()))
                if intended >= timeline.end { break }
                if intended > ContinuousClock.now {
                    try? await Task.sleep(until: intended, tolerance: .microseconds(50), clock: .continuous)
                }
                while w.inFlight.load(ordering: .relaxed) >= maxInFlight && ContinuousClock.now < giveUp {
                    try? await Task.sleep(for: .microseconds(200))
                }
                let req = gen.next()
                let measured = intended >= timeline.measureStart
                let now = ContinuousClock.now
                if now >= giveUp {
                    // So far behind that the request could not finish within its deadline even if
                    // sent now: it fails as DEADLINE_EXCEEDED, charged from its intended time, and
                    // the run still ends by `end + 2 × timeout`.
                    if measured { w.noteSent(req.operation, lagNanos: (now - intended).nanoseconds) }
                    w.record(req.operation, intended: intended, done: now, outcome: .failed(.deadlineExceeded), timeline: timeline,
                             measured: measured)
                    continue
                }
                if measured { w.noteSent(req.operation, lagNanos: (now - intended).nanoseconds) }
                w.inFlight.wrappingAdd(1, ordering: .relaxed)
                group.addTask {
                    let out = await caller.call(req)
                    let done = ContinuousClock.now
                    w.inFlight.wrappingSubtract(1, ordering: .relaxed)
                    w.record(req.operation, intended: intended, done: done, outcome: out, timeline: timeline, measured: measured)
                }
            }
        }
    }
}

/// The result of one run: the report (what `--json` prints), the merged stats and, when asked
/// for, one record per measured request.
public struct LoadResult: Sendable {
    public var report: LoadReport
    public var stats: PhaseStats
    public var latencyLog: [LatencyRecord]
}

struct Timeline: Sendable {
    let origin: ContinuousClock.Instant
    let measureStart: ContinuousClock.Instant
    let end: ContinuousClock.Instant
}

/// Counters of the last second, for the progress line.
struct IntervalStats: Sendable {
    var latency = LatencyHistogram()
    var completed = 0
    var errors = 0
    mutating func merge(_ o: IntervalStats) { latency.merge(o.latency); completed += o.completed; errors += o.errors }
}

/// One worker: an event loop thread, its channel (connections), and what it measured.
/// `record` and `noteSent` are called from any task; the state is behind a mutex.
final class Worker: Sendable {
    let index: Int
    let group: MultiThreadedEventLoopGroup
    /// One channel per target (several: coordinators, users routed over them by `ring`).
    let channels: [RPCChannel]
    let ring: CoordinatorRing?
    let inFlight = Atomic<Int>(0)
    private let keepLog: Bool
    private let state = Mutex<(measured: PhaseStats, interval: IntervalStats, log: [LatencyRecord])>((PhaseStats(), IntervalStats(), []))

    /// The worker's event loop as a task executor (its tasks run there).
    let executor: EventLoopTaskExecutor

    init(index: Int, configuration: LoadTestConfiguration, connections: Int) {
        self.index = index
        keepLog = configuration.keepLatencyLog
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        executor = EventLoopTaskExecutor(group.next())
        var cc = configuration.clientConfiguration()
        cc.connections = connections
        // The targets were validated and reached in resolveShape.
        let targets = configuration.targets
        let g = group
        channels = targets.map { try! RPCChannel(target: $0, group: g, configuration: cc) }
        ring = targets.count > 1 ? CoordinatorRing(targets) : nil
    }

    func noteSent(_ op: LoadOperation, lagNanos: UInt64) {
        state.withLock { $0.measured.noteSent(op, lagNanos: lagNanos) }
    }

    func record(_ op: LoadOperation, intended: ContinuousClock.Instant, done: ContinuousClock.Instant, outcome: Outcome,
                timeline: Timeline, measured: Bool) {
        let latency = (done - intended).nanoseconds
        state.withLock { s in
            s.interval.latency.record(nanoseconds: latency)
            s.interval.completed += 1
            if case .failed = outcome { s.interval.errors += 1 }
            guard measured else { return }
            s.measured.record(op, latencyNanos: latency, outcome: outcome)
            if keepLog {
                let status: RPCStatusCode = if case .failed(let c) = outcome { c } else { .ok }
                s.log.append(LatencyRecord(operation: op, intendedMicros: Int64((intended - timeline.measureStart).nanoseconds / 1000),
                                           latencyNanos: latency, status: status))
            }
        }
    }

    func takeInterval() -> IntervalStats {
        state.withLock { s in let i = s.interval; s.interval = IntervalStats(); return i }
    }

    func peekMeasured() -> PhaseStats { state.withLock { $0.measured } }

    func finish() -> (PhaseStats, [LatencyRecord]) {
        state.withLock { s in let r = (s.measured, s.log); s.log = []; return r }
    }

    func close() async {
        for c in channels { await c.close() }
        try? await group.shutdownGracefully()
    }
}

/// Sends one planned request and classifies the answer.
struct Caller: Sendable {
    let channels: [RPCChannel]
    let ring: CoordinatorRing?
    let timeout: Duration
    let dim: Int

    /// The channel to the coordinator that holds `user`'s session (the only one when one).
    @inline(__always) func channel(user: UInt64) -> RPCChannel { ring.map { channels[$0.index(of: user)] } ?? channels[0] }

    func call(_ r: PlannedRequest) async -> Outcome {
        let channel: RPCChannel
        switch r {
        case .recommend(let q): channel = self.channel(user: q.userID)
        case .rank(let q): channel = self.channel(user: q.userID)
        case .similar(let q): channel = self.channel(user: q.itemID)  // no user: spread by the item
        case .record(let q): channel = self.channel(user: q.userID)
        default: channel = channels[0]
        }
        do throws(RPCError) {
            switch r {
            case .lookup(let q):
                // Checked in place, not decoded: the driver must not spend more CPU per answer
                // than the server it measures (three 64 KiB copies per 256-id f32 answer did).
                let resp = try await ShardClient(channel: channel).lookupSummary(q, timeout: timeout)
                return .ok(vectors: resp.rows, degraded: false, timings: nil)
            case .search(let q):
                _ = try await ShardClient(channel: channel).search(q, timeout: timeout)
                return .ok(vectors: 0, degraded: false, timings: nil)
            case .recommend(let q):
                let resp = try await RecommenderClient(channel: channel).recommend(q, timeout: timeout)
                let t = resp.timings.map { [$0.retrieveMicros, $0.filterMicros, $0.gatherMicros, $0.rankMicros, $0.postRankMicros, $0.totalMicros] }
                return .ok(vectors: 0, degraded: resp.coverage?.degraded ?? false, timings: t, coldStart: resp.coldStart)
            case .rank(let q):
                let resp = try await RecommenderClient(channel: channel).rank(q, timeout: timeout)
                return .ok(vectors: 0, degraded: resp.coverage?.degraded ?? false, timings: nil)
            case .similar(let q):
                let resp = try await RecommenderClient(channel: channel).similar(q, timeout: timeout)
                return .ok(vectors: 0, degraded: resp.coverage?.degraded ?? false, timings: nil)
            case .record(let q):
                _ = try await RecommenderClient(channel: channel).recordEvents(q, timeout: timeout)
                return .ok(vectors: 0, degraded: false, timings: nil)
            case .recordBatch(let q):
                _ = try await RecommenderClient(channel: channel).recordEventsBatch(q, timeout: timeout)
                return .ok(vectors: 0, degraded: false, timings: nil)
            }
        } catch {
            return .failed(error.code)
        }
    }
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

func fmt(_ x: Double) -> String {
    let r = (x * 1000).rounded() / 1000
    var s = String(r)
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < 3 { s += String(repeating: "0", count: 3 - decimals) }
    }
    return s
}
