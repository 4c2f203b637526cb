public import Logging
import Synchronization
public import RPCCore
public import ShardRankWire
public import ShardRankKernels
public import ShardRankRouting

/// The two-stage pipeline behind `shardrank.v1.Recommender`, as stages (one file each, pure
/// values and functions, tested without sockets): `RetrievalPlan` → the fan-out (this file: the
/// profile and user vector, then lists and search in parallel, then the rows retrieval did not
/// bring) → `CandidateMerge` → `Ranking` → `PostRanking`. Every shard call goes through a
/// `ShardFetcher` (the cluster, or in-process backends in tests), carries the remaining deadline,
/// and counts in the request's coverage report.
///
/// Execution: the coordinator runs thread-per-core. A Recommend runs on the event loop its
/// connection lives on, its shard calls use that loop's own connections (so their answers
/// resume it there), and ranking runs inline (a few µs for a few hundred candidates); the MLP
/// spreads large batches over the kernel `WorkerPool`. Nothing blocks a loop on I/O.
public final class Recommender: Sendable {
    public let fetcher: any ShardFetcher
    public let settings: CoordinatorSettings
    public let model: MLPModel?
    /// Learned rankers by the name a request's `model` gives (`--ranker NAME=FILE`).
    public let rankers: [String: ServedRanker]
    /// The query tower (`--query-tower FILE`): user vectors computed per request from the
    /// session, the recent items, the genres and the country.
    public let tower: QueryTower?
    /// Users' sessions (`RecordEvents`) on this coordinator; nil when `session_users` is 0.
    public let sessions: SessionStore?
    public let pool: WorkerPool
    let logger: Logger
    let observer: (any RecommendObserver)?
    /// Records spans of traced requests (`--trace-sample-rate`); nil: tracing off.
    let tracer: Tracer?
    /// Ranked lists already fetched, per table-set version (see `ListCache`).
    let listCache: ListCache
    /// Item rows already fetched, per table-set version (see `RowCache`).
    let rowCache: RowCache
    /// Users' vectors and profiles already fetched, per table-set version (see `UserCache`).
    let userCache: UserCache
    /// Item attributes already fetched, per table-set version (see `AttributeCache`).
    let attributeCache = AttributeCache()

    /// - Parameter sessions: the session store; nil: one sized by `settings` (none when
    ///   `settings.sessionUsers` is 0).
    public init(fetcher: any ShardFetcher, settings: CoordinatorSettings, model: MLPModel? = nil, rankers: [ServedRanker] = [],
                tower: QueryTower? = nil, sessions: SessionStore? = nil,
                pool: WorkerPool, logger: Logger, observer: (any RecommendObserver)? = nil, tracer: Tracer? = nil) {
        self.fetcher = fetcher
        self.tracer = tracer
        self.settings = settings
        self.model = model
        self.tower = tower
        self.sessions = sessions ?? (settings.sessionUsers > 0 ? SessionStore(settings: settings) : nil)
        self.rankers = Dictionary(rankers.map { ($0.name, $0) }, uniquingKeysWith: { _, last in last })
        self.pool = pool
        self.logger = logger
        self.observer = observer
        self.rowCache = RowCache(capacityBytes: settings.rowCacheBytes)
        self.listCache = ListCache(capacity: settings.listCacheEntries)
        self.userCache = UserCache(capacity: settings.userCacheEntries, capacityBytes: settings.userCacheBytes)
    }

    public convenience init(cluster: ShardCluster, model: MLPModel? = nil, rankers: [ServedRanker] = [], tower: QueryTower? = nil,
                            pool: WorkerPool, logger: Logger, observer: (any RecommendObserver)? = nil, tracer: Tracer? = nil) {
        self.init(fetcher: cluster, settings: cluster.settings, model: model, rankers: rankers, tower: tower, pool: pool, logger: logger,
                  observer: observer, tracer: tracer)
    }

    var shardCount: Int { fetcher.shardCount }

    /// The router of a pinned table set: its shard count and the hash seed its manifest records
    /// (the default seed when the shards report none).
    func router(for pinned: PinnedTableSet) -> ShardRouter {
        ShardRouter(shardCount: shardCount, seed: pinned.hashSeed == 0 ? StableHash.defaultSeed : pinned.hashSeed)
    }

    /// The router new requests use (that of the version they pin).
    public var router: ShardRouter { router(for: fetcher.pinned) }

    /// The caches' hits and misses since start (logs, metrics).
    public var cacheCounts: (users: (hits: Int, misses: Int), lists: (hits: Int, misses: Int), rows: (hits: Int, misses: Int)) {
        (userCache.counts, listCache.counts, rowCache.counts)
    }

    // MARK: - Request plumbing

    /// Per-request state: the deadline, the pinned version, and what went missing. Shards asked
    /// and failed are bitsets (no hashing or allocation per call).
    final class Trace: @unchecked Sendable {
        let start = ContinuousClock.now
        let deadline: ContinuousClock.Instant
        let version: UInt64
        /// Routes ids and keys with the hash seed of the pinned version.
        let router: ShardRouter
        var requestID = ""
        /// Set only for a traced request (tracing on, and sampled or carrying a context).
        var span: RequestSpan?
        private struct State {
            var failed: UInt8 = 0  // bit per `CandidateMerge.sourceOrder` index
            var reasons: [String] = []
            var asked: [UInt64]
            var failedShards: [UInt64]
            var newestVersion: UInt64 = 0
        }
        private let lock: Mutex<State>

        init(deadline: ContinuousClock.Instant, version: UInt64, router: ShardRouter) {
            self.deadline = deadline
            self.version = version
            self.router = router
            let shardCount = router.shardCount
            let words = (max(1, shardCount) + 63) / 64
            lock = Mutex(State(asked: [UInt64](repeating: 0, count: words), failedShards: [UInt64](repeating: 0, count: words)))
        }

        func fail(_ source: Source?, _ reason: String) {
            lock.withLock { s in
                if let source, let bit = CandidateMerge.sourceOrder.firstIndex(of: source) { s.failed |= 1 << bit }
                s.reasons.append(reason)
            }
        }
        /// Every shard a request calls is "asked"; one that failed any call is not "answered".
        func asked(_ shard: Int) { lock.withLock { $0.asked[shard >> 6] |= 1 << UInt64(shard & 63) } }
        func shardFailed(_ shard: Int) { lock.withLock { $0.failedShards[shard >> 6] |= 1 << UInt64(shard & 63) } }
        func answered(_ shard: Int, version: UInt64) { lock.withLock { $0.newestVersion = max($0.newestVersion, version) } }

        /// A stage deadline: `fraction` of the time left, from now.
        func stageDeadline(_ fraction: Double) -> ContinuousClock.Instant {
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero { return deadline }
            return ContinuousClock.now.advanced(by: left * fraction)
        }

        func coverage() -> Coverage {
            lock.withLock { s in
                var asked = 0, answered = 0
                for (a, f) in zip(s.asked, s.failedShards) {
                    asked += a.nonzeroBitCount
                    answered += (a & ~f).nonzeroBitCount
                }
                let failed = s.failed
                return Coverage(shardsAsked: UInt32(asked), shardsAnswered: UInt32(answered),
                                sourcesFailed: CandidateMerge.sourceOrder.indices.filter { failed & (1 << $0) != 0 }.map { CandidateMerge.sourceOrder[$0] },
                                degraded: !s.reasons.isEmpty, degradedReasons: s.reasons)
            }
        }

        /// The version the answer reports: the newest any shard's search answered from (the
        /// pinned one when none did).
        var answerVersion: UInt64 { lock.withLock { $0.newestVersion == 0 ? version : $0.newestVersion } }
    }

    func makeTrace(_ ctx: ServerContext) -> Trace {
        let deadline = ctx.deadline ?? ContinuousClock.now.advanced(by: .microseconds(Int(settings.defaultDeadlineMs * 1000)))
        let pinned = fetcher.pinned
        let t = Trace(deadline: deadline, version: pinned.version, router: router(for: pinned))
        t.requestID = ctx.requestID
        if let tracer { t.span = RequestSpan.begin(tracer, metadata: ctx.metadata, name: String(ctx.path.dropFirst()), start: t.start) }
        return t
    }

    /// Runs an RPC's work (`body`) and, when the request is recorded, writes its spans with the
    /// status it ended with.
    func traced<R>(_ trace: Trace, _ body: () async throws(RPCError) -> R) async throws(RPCError) -> R {
        guard let span = trace.span, span.records else { return try await body() }
        let attributes: [(String, SpanAttribute)] = [("request_id", .string(trace.requestID))]
        do throws(RPCError) {
            let r = try await body()
            span.finish(status: .ok, attributes: attributes)
            return r
        } catch {
            span.finish(status: error.code, attributes: attributes)
            throw error
        }
    }

    static func micros(_ d: Duration) -> UInt64 {
        UInt64(d.clampedMicroseconds)
    }

    // MARK: - The fan-out

    /// A shard call that counts in the request's coverage: the shard is asked, and marked failed
    /// unless it answers (NOT_FOUND — e.g. a table set without that table — is an answer).
    /// `method` names the call in its span when the request is traced.
    func counted<T: Sendable>(_ shard: Int, trace: Trace, _ method: String, _ op: () async throws(RPCError) -> T) async throws(RPCError) -> T {
        if let span = trace.span {
            return try await span.call(shard: shard, method: method) { () async throws(RPCError) in try await countedCall(shard, trace: trace, op) }
        }
        return try await countedCall(shard, trace: trace, op)
    }

    private func countedCall<T: Sendable>(_ shard: Int, trace: Trace, _ op: () async throws(RPCError) -> T) async throws(RPCError) -> T {
        trace.asked(shard)
        do throws(RPCError) {
            return try await op()
        } catch {
            if error.code != .notFound { trace.shardFailed(shard) }
            throw error
        }
    }

    /// The user's vector (nil for an unknown user) — one Lookup on the user's shard.
    func userVector(_ user: UInt64, trace: Trace, deadline: ContinuousClock.Instant) async -> (vector: [Float]?, failed: Bool) {
        let shard = trace.router.shard(ofID: user)
        let req = LookupRequest(table: settings.usersTable, ids: [user], dtype: .f32, version: trace.version)
        do throws(RPCError) {
            let r = try await counted(shard, trace: trace, "Lookup") { () async throws(RPCError) in
                try await fetcher.lookup(req, shard: shard, deadline: deadline, requestID: trace.requestID)
            }
            guard !r.vectors.isEmpty else { return (nil, false) }
            return (r.vectors.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }, false)
        } catch {
            if error.code == .notFound { return (nil, false) }  // no users table: every user is cold
            trace.fail(.search, "user vector: shard \(shard): \(error)")
            return (nil, true)
        }
    }

    /// The user's stored profile (nil: none), and whether the call failed.
    func profile(_ user: UInt64, trace: Trace, deadline: ContinuousClock.Instant) async -> (profile: UserProfile?, failed: Bool) {
        let shard = trace.router.shard(ofID: user)
        let req = ProfilesRequest(table: settings.profilesTable, userIDs: [user], version: trace.version)
        do throws(RPCError) {
            let r = try await counted(shard, trace: trace, "Profiles") { () async throws(RPCError) in
                try await fetcher.profiles(req, shard: shard, deadline: deadline, requestID: trace.requestID)
            }
            return (r.profiles.first, false)
        } catch {
            if error.code == .notFound { return (nil, false) }
            trace.fail(nil, "profile: shard \(shard): \(error)")
            return (nil, true)
        }
    }

    /// The lists of `keys` in `table` the cache holds for the request's version, and the other
    /// keys grouped by the shard that holds them.
    func cachedLists(table: String, keys: [String], limit: Int, trace: Trace) -> (hits: [RankedList], misses: [Int: [String]]) {
        let version = trace.version, router = trace.router
        guard !keys.isEmpty, limit > 0, !listCache.isAbsent(version: version, table: table) else { return ([], [:]) }
        var hits: [RankedList] = []
        var misses: [Int: [String]] = [:]
        for k in keys {
            if let l = listCache.get(version: version, table: table, key: k, limit: limit) {
                if !l.ids.isEmpty { hits.append(l) }
            } else {
                misses[router.shard(ofKey: k), default: []].append(k)
            }
        }
        return (hits, misses)
    }

    /// One Lists call; its answer (from the pinned version) goes into the cache.
    func fetchLists(table: String, keys: [String], limit: Int, shard: Int, source: Source, trace: Trace,
                    deadline: ContinuousClock.Instant) async -> [RankedList] {
        let version = trace.version
        let req = ListsRequest(table: table, keys: keys, limit: UInt32(limit), version: version)
        do throws(RPCError) {
            let r = try await counted(shard, trace: trace, "Lists") { () async throws(RPCError) in
                try await fetcher.lists(req, shard: shard, deadline: deadline, requestID: trace.requestID)
            }
            // Only answers from the pinned version are cached (version 0 = unknown).
            if r.version == version {
                for l in r.lists { listCache.put(version: version, table: table, list: l, limit: limit) }
                for k in r.missingKeys { listCache.put(version: version, table: table, list: RankedList(key: k, ids: [], scores: []), limit: limit) }
            }
            return r.lists
        } catch {
            if error.code == .notFound && error.message.hasPrefix("unknown table") {
                listCache.putAbsent(version: version, table: table)
            } else if error.code != .notFound {
                trace.fail(source, "\(source) lists: shard \(shard): \(error)")
            }
            return []
        }
    }

    /// Lists by key: from the cache, the rest with one call per shard (in parallel).
    func lists(table: String, keys: [String], limit: Int, source: Source, trace: Trace,
               deadline: ContinuousClock.Instant) async -> [RankedList] {
        let (hits, misses) = cachedLists(table: table, keys: keys, limit: limit, trace: trace)
        if misses.isEmpty { return hits }
        return await withTaskGroup(of: [RankedList].self) { group in
            for (shard, ks) in misses {
                group.addTask { await self.fetchLists(table: table, keys: ks, limit: limit, shard: shard, source: source, trace: trace, deadline: deadline) }
            }
            var out = hits
            for await l in group { out += l }
            return out
        }
    }

    /// One shard's Search answer (nil when it failed: flagged in the trace).
    func searchShard(_ req: SearchRequest, shard: Int, trace: Trace, deadline: ContinuousClock.Instant) async -> SearchResponse? {
        do throws(RPCError) {
            let r = try await counted(shard, trace: trace, "Search") { () async throws(RPCError) in
                try await fetcher.search(req, shard: shard, deadline: deadline, requestID: trace.requestID)
            }
            trace.answered(shard, version: r.version)
            return r
        } catch {
            trace.fail(.search, "search: shard \(shard) of \(shardCount) did not answer: \(error)")
            return nil
        }
    }

    /// Round 2 of a Recommend in one flat group of shard calls: the four list sources (those the
    /// cache lacks) and the search on every shard (with the hits' rows). Lists come back per
    /// source: similar, genre, country, popular.
    func retrieve(plan: RetrievalPlan, user: [Float]?, trace: Trace, deadline: ContinuousClock.Instant) async -> (lists: [[RankedList]], search: SearchResult) {
        let version = trace.version
        let specs: [(table: String, source: Source, keys: [String], limit: Int)] = [
            ("similar", .similar, plan.similarPerItem == 0 ? [] : plan.recent.map { String($0) }, plan.similarLimit),
            ("genre_top", .genre, plan.genreBudget == 0 ? [] : plan.genres, plan.genreLimit),
            ("country_top", .country, plan.country.isEmpty || plan.countryBudget == 0 ? [] : [plan.country], plan.countryLimit),
            ("popular", .popular, plan.popularBudget == 0 ? [] : ["all"], plan.popularLimit),
        ]
        var lists = [[RankedList]](repeating: [], count: specs.count)
        var fetches: [(source: Int, shard: Int, keys: [String])] = []
        for (i, spec) in specs.enumerated() {
            let (hits, misses) = cachedLists(table: spec.table, keys: spec.keys, limit: spec.limit, trace: trace)
            lists[i] = hits
            for (shard, ks) in misses { fetches.append((i, shard, ks)) }
        }
        let k = user == nil ? 0 : plan.searchBudget
        if fetches.isEmpty && k == 0 { return (lists, SearchResult()) }
        enum Part: Sendable { case lists(Int, [RankedList]), search(SearchResponse?) }
        let shardK = RetrievalPlan.perShardK(k, shards: shardCount, sigma: settings.searchShardSigma)
        // The whole seen set rides in `exclude_sorted` (its packed bytes, a few kB for thousands
        // of items): every shard excludes it inside the search.
        let req = SearchRequest(table: settings.itemsTable, queries: user ?? [], dim: UInt32(user?.count ?? 0), k: UInt32(shardK),
                                version: version, withRows: true, excludeSorted: plan.seenPacked)
        var parts: [SearchResponse] = []
        await withTaskGroup(of: Part.self) { group in
            for f in fetches {
                let spec = specs[f.source]
                group.addTask {
                    .lists(f.source, await self.fetchLists(table: spec.table, keys: f.keys, limit: spec.limit, shard: f.shard, source: spec.source,
                                                           trace: trace, deadline: deadline))
                }
            }
            if k > 0 {
                for shard in 0 ..< shardCount { group.addTask { .search(await self.searchShard(req, shard: shard, trace: trace, deadline: deadline)) } }
            }
            for await p in group {
                switch p {
                case .lists(let i, let l): lists[i] += l
                case .search(let r): if let r { parts.append(r) }
                }
            }
        }
        return (lists, Self.mergeSearch(parts, k: k))
    }

    /// What a Search fan-out found: the k best hits over every shard, and (with rows) where
    /// each hit's row is in the shards' answers.
    struct SearchResult: Sendable {
        var items: [ScoredID] = []
        /// The k best hits whose row came back: (id, answer, hit index), grouped by answer.
        var rows: [(id: UInt64, part: Int, index: Int)] = []
        var parts: [SearchResponse] = []
    }

    /// Inner-product search of `query` on every shard for the exact global top k (`Similar`'s
    /// fallback), k-way merged; `exclude` pushed down.
    func search(query: [Float], k: Int, exclude: [UInt64], trace: Trace, deadline: ContinuousClock.Instant) async -> SearchResult {
        guard k > 0 else { return SearchResult() }
        let req = SearchRequest(table: settings.itemsTable, queries: query, dim: UInt32(query.count), k: UInt32(k), excludeIDs: exclude,
                                version: trace.version)
        let parts = await withTaskGroup(of: SearchResponse?.self) { group in
            for shard in 0 ..< shardCount { group.addTask { await self.searchShard(req, shard: shard, trace: trace, deadline: deadline) } }
            var out: [SearchResponse] = []
            for await r in group { if let r { out.append(r) } }
            return out
        }
        return Self.mergeSearch(parts, k: k)
    }

    /// The k best hits of the shards' answers (best first, ties to the lower id), and where the
    /// rows of those that came with one are.
    static func mergeSearch(_ parts: [SearchResponse], k: Int) -> SearchResult {
        var result = SearchResult(parts: parts)
        guard k > 0 else { return result }
        if let merged = kWayMerge(parts, k: k) { return merged }
        // A shard answer out of order: every shard's hits in one flat list, then the k best of it.
        var ids: [UInt64] = [], scores: [Float] = [], from: [(part: Int32, index: Int32, row: Bool)] = []
        let total = parts.reduce(0) { $0 + ($1.results.first?.ids.count ?? 0) }
        ids.reserveCapacity(total); scores.reserveCapacity(total); from.reserveCapacity(total)
        for (p, r) in parts.enumerated() {
            guard let hits = r.results.first else { continue }
            let n = min(hits.ids.count, hits.scores.count)
            let hasRows = r.dim > 0 && hits.vectors.count == hits.ids.count * Int(r.dim) * r.dtype.elementSize
            ids.append(contentsOf: hits.ids.prefix(n))
            scores.append(contentsOf: hits.scores.prefix(n))
            for i in 0 ..< n { from.append((Int32(p), Int32(i), hasRows)) }
        }
        let order = scores.withUnsafeBufferPointer { s in
            ids.withUnsafeBufferPointer { i in RankOrder.order(count: i.count, limit: k, score: { s[$0] }, id: { i[$0] }) }
        }
        result.items.reserveCapacity(order.count)
        for j in order { result.items.append(ScoredID(id: ids[j], score: scores[j])) }
        // The rows, answer by answer (as `assemble` reads them).
        var taken = [Bool](repeating: false, count: ids.count)
        for j in order where from[j].row { taken[j] = true }
        for j in 0 ..< ids.count where taken[j] { result.rows.append((ids[j], Int(from[j].part), Int(from[j].index))) }
        return result
    }

    /// `mergeSearch` when every answer is best first (a shard's contract): the kernels' k-way
    /// merge (`TopK.mergePositions`) over the answers' buffers; nil as soon as an answer is found
    /// out of order.
    static func kWayMerge(_ parts: [SearchResponse], k: Int) -> SearchResult? {
        guard parts.count <= 64 else { return nil }
        let hits = parts.map { $0.results.first ?? SearchHits() }
        let counts = hits.map { min($0.ids.count, $0.scores.count) }
        let hasRows = zip(parts, hits).map { r, h in r.dim > 0 && h.vectors.count == h.ids.count * Int(r.dim) * r.dtype.elementSize }
        return withBuffers(hits) { ids, scores -> SearchResult? in
            guard let order = TopK.mergePositions(counts: counts, k: k, item: { ScoredID(id: ids[$0][$1], score: scores[$0][$1]) }) else {
                return nil
            }
            var result = SearchResult(parts: parts)
            result.items.reserveCapacity(order.count)
            // A merge takes a prefix of each answer: `taken[p]` hits of answer p.
            var taken = [Int](repeating: 0, count: parts.count)
            for (p, i) in order {
                result.items.append(ScoredID(id: ids[p][i], score: scores[p][i]))
                taken[p] += 1
            }
            // The rows, answer by answer (as `assemble` reads them).
            result.rows.reserveCapacity(order.count)
            for p in 0 ..< parts.count where hasRows[p] { for i in 0 ..< taken[p] { result.rows.append((ids[p][i], p, i)) } }
            return result
        }
    }

    /// Calls `body` with the id and score buffers of every answer's hits, each opened with
    /// `withUnsafeBufferPointer` around the call (one nested scope per answer), so no pointer
    /// outlives the access that made it.
    static func withBuffers<R>(_ hits: [SearchHits], _ body: ([UnsafeBufferPointer<UInt64>], [UnsafeBufferPointer<Float>]) -> R) -> R {
        var ids: [UnsafeBufferPointer<UInt64>] = [], scores: [UnsafeBufferPointer<Float>] = []
        ids.reserveCapacity(hits.count); scores.reserveCapacity(hits.count)
        func open(_ p: Int) -> R {
            if p == hits.count { return body(ids, scores) }
            return hits[p].ids.withUnsafeBufferPointer { i in
                hits[p].scores.withUnsafeBufferPointer { s in
                    ids.append(i); scores.append(s)
                    return open(p + 1)
                }
            }
        }
        return open(0)
    }

    /// The vectors of `ids` as one f32 matrix, in `ids` order: rows that came with `search` are
    /// decoded from its answers, rows in the row cache copied, the others fetched with one
    /// Lookup per shard. Ids whose shard failed or that no shard holds are dropped (the returned
    /// ids say which remain).
    func assemble(_ ids: [UInt64], search: SearchResult = SearchResult(), dim wanted: Int?, trace: Trace,
                  deadline: ContinuousClock.Instant) async -> (ids: [UInt64], rows: CandidateRows) {
        let version = trace.version
        let position = IDIndex(capacity: ids.count)
        for (i, id) in ids.enumerated() { position.insert(id, i) }
        // The width is known up front from the user vector, a search answer or the cache.
        var rows: CandidateRows?
        if let dim = wanted ?? search.parts.first(where: { $0.dim > 0 }).map({ Int($0.dim) }) ?? rowCache.dimension(version: version) {
            rows = CandidateRows(count: ids.count, dim: dim)
        }
        if let rows {
            // Search rows: each answer's buffers opened once, its rows decoded straight into the
            // matrix (`search.rows` lists them answer by answer).
            var at = 0
            let wanted = search.rows
            while at < wanted.count {
                let p = wanted[at].part
                var end = at + 1
                while end < wanted.count && wanted[end].part == p { end += 1 }
                let part = search.parts[p]
                if Int(part.dim) == rows.dim, let hits = part.results.first {
                    let dtype = part.dtype
                    hits.vectors.withUnsafeBytes { v in
                        hits.scales.withUnsafeBufferPointer { scales in
                            for w in wanted[at ..< end] {
                                guard let row = position.get(w.id) else { continue }
                                rows.set(row: row, from: v, source: w.index, dtype: dtype,
                                         scale: dtype == .int8 && w.index < scales.count ? scales[w.index] : 1)
                            }
                        }
                    }
                }
                at = end
            }
            rowCache.copy(version: version, ids: ids, into: rows)
        }
        // The rest: one Lookup per shard.
        var byShard: [Int: [UInt64]] = [:]
        for (i, id) in ids.enumerated() where rows?.filled[i] != true && position.get(id) == i {
            byShard[trace.router.shard(ofID: id), default: []].append(id)
        }
        let table = settings.itemsTable
        let looked = await perShard(byShard) { shard, list -> (ids: [UInt64], response: LookupResponse)? in
            let req = LookupRequest(table: table, ids: list, version: version)
            do throws(RPCError) {
                let r = try await self.counted(shard, trace: trace, "Lookup") { () async throws(RPCError) in
                    try await self.fetcher.lookup(req, shard: shard, deadline: deadline, requestID: trace.requestID)
                }
                return (list, r)
            } catch {
                trace.fail(nil, "gather: shard \(shard): \(error) (\(list.count) candidates dropped)")
                return nil
            }
        }
        if rows == nil, let d = looked.first(where: { $0.response.dim > 0 }).map({ Int($0.response.dim) }) {
            rows = CandidateRows(count: ids.count, dim: d)
        }
        guard let rows else { return ([], CandidateRows(count: 0, dim: 1)) }
        let dim = rows.dim
        // Lookup rows: the found ones, in request order; remembered for later requests.
        var fetched: [Int] = []
        for (list, r) in looked where Int(r.dim) == dim {
            let missing = r.missingIDs.isEmpty ? [] : Set(r.missingIDs)
            r.vectors.withUnsafeBytes { v in
                r.scales.withUnsafeBytes { s in
                    var k = 0
                    for id in list where !missing.contains(id) {
                        defer { k += 1 }
                        guard let row = position.get(id), (k + 1) * dim * r.dtype.elementSize <= v.count else { continue }
                        let scale = r.dtype == .int8 && (k + 1) * 4 <= s.count
                            ? Float(bitPattern: UInt32(littleEndian: s.loadUnaligned(fromByteOffset: k * 4, as: UInt32.self))) : 1
                        rows.set(row: row, from: v, source: k, dtype: r.dtype, scale: scale)
                        fetched.append(row)
                    }
                }
            }
        }
        if !fetched.isEmpty && looked.allSatisfy({ $0.response.version == version }) {
            rowCache.insert(version: version, ids: ids, rows: fetched, from: rows)
        }
        // Repeated ids share the first occurrence's row.
        if position.count < ids.count {
            for (i, id) in ids.enumerated() where !rows.filled[i] {
                if let first = position.get(id), first != i, rows.filled[first] { rows.copyRow(first, to: i) }
            }
        }
        if rows.filled.allSatisfy({ $0 }) { return (ids, rows) }
        let keep = (0 ..< ids.count).filter { rows.filled[$0] }
        return (keep.map { ids[$0] }, rows.compacted(keep))
    }

    /// Runs `call` for every shard of `byShard` concurrently; the answers that are not nil.
    func perShard<T: Sendable>(_ byShard: [Int: [UInt64]], _ call: @escaping @Sendable (Int, [UInt64]) async -> T?) async -> [T] {
        if byShard.isEmpty { return [] }
        return await withTaskGroup(of: T?.self) { group in
            for (shard, list) in byShard { group.addTask { await call(shard, list) } }
            var out: [T] = []
            for await r in group { if let r { out.append(r) } }
            return out
        }
    }

    /// Attributes of `ids` (one call per shard); items without attributes, or on a shard that
    /// failed (flagged degraded), are absent.
    func itemAttributes(_ ids: [UInt64], trace: Trace, deadline: ContinuousClock.Instant) async -> (items: [UInt64: ItemAttributes], genres: [String]) {
        let cached = attributeCache.get(version: trace.version, ids: ids)
        if cached.missing.isEmpty && !cached.genres.isEmpty { return (cached.found, cached.genres) }
        var byShard: [Int: [UInt64]] = [:]
        for id in cached.missing { byShard[trace.router.shard(ofID: id), default: []].append(id) }
        let table = settings.attributesTable, version = trace.version
        let vocabulary = Mutex<[String]>([])
        let parts = await perShard(byShard) { shard, list -> [(UInt64, ItemAttributes)]? in
            let req = AttributesRequest(table: table, itemIDs: list, version: version)
            do throws(RPCError) {
                let r = try await self.counted(shard, trace: trace, "Attributes") { () async throws(RPCError) in
                    try await self.fetcher.attributes(req, shard: shard, deadline: deadline, requestID: trace.requestID)
                }
                if !r.genres.isEmpty { vocabulary.withLock { if $0.isEmpty { $0 = r.genres } } }
                return (0 ..< r.itemIDs.count).map { i in
                    (r.itemIDs[i], ItemAttributes(genresMask: i < r.genreMasks.count ? r.genreMasks[i] : 0,
                                                  timestamp: i < r.timestamps.count ? r.timestamps[i] : 0,
                                                  popularity: i < r.popularity.count ? r.popularity[i] : 0))
                }
            } catch {
                trace.fail(nil, "attributes: shard \(shard): \(error) (genre cap and freshness boost not applied to its items)")
                return nil
            }
        }
        var fetched: [UInt64: ItemAttributes] = [:]
        fetched.reserveCapacity(cached.missing.count)
        for l in parts { for (id, a) in l { fetched[id] = a } }
        let genres = vocabulary.withLock { $0.isEmpty ? cached.genres : $0 }
        attributeCache.put(version: trace.version, fetched, genres: genres)
        var m = cached.found
        m.merge(fetched) { _, new in new }
        return (m, genres)
    }
}

/// Sees every Recommend answer (metrics: per-stage latency, degraded and cold-start shares).
public protocol RecommendObserver: Sendable {
    func answered(_ response: RecommendResponse)
}
