public import Logging
import Synchronization
import RPCCore
public import ShardRankWire
public import ShardRankKernels
public import ShardRankTables
import ShardRankClient

/// The two-stage pipeline behind `shardrank.v1.Recommender`: parallel retrieval sources →
/// merge & dedupe → filter → gather → rank → post-rank → top-k, every sub-call carrying the
/// remaining deadline, and a coverage report whenever anything was missing.
public final class Recommender: Sendable {
    public let cluster: ShardCluster
    public let settings: CoordinatorSettings
    public let router: ShardRouter
    public let model: MLPModel?
    public let pool: WorkerPool
    let logger: Logger
    let observer: (any RecommendObserver)?
    /// Ranked lists already fetched, per table-set version (see `ListCache`).
    let listCache = ListCache()
    /// Item rows already fetched, per table-set version (see `RowCache`).
    let rowCache: RowCache

    /// Bits of the merged candidates' source mask, in this order.
    static let sourceOrder: [Source] = [.similar, .genre, .country, .popular, .search, .caller]

    public init(cluster: ShardCluster, model: MLPModel? = nil, pool: WorkerPool, logger: Logger, observer: (any RecommendObserver)? = nil) {
        self.observer = observer
        self.cluster = cluster
        self.settings = cluster.settings
        self.router = ShardRouter(shardCount: cluster.shardCount)
        self.rowCache = RowCache(capacityBytes: cluster.settings.rowCacheBytes)
        self.model = model
        self.pool = pool
        self.logger = logger
    }

    // MARK: - Request plumbing

    /// Per-request state: the deadline, the pinned version, and what went missing.
    final class Trace: @unchecked Sendable {
        let start = ContinuousClock.now
        let deadline: ContinuousClock.Instant
        let version: UInt64
        var requestID = ""
        private let lock = Mutex<(failed: Set<Source>, reasons: [String], asked: Set<Int>, failedShards: Set<Int>, versions: Set<UInt64>)>(([], [], [], [], []))

        init(deadline: ContinuousClock.Instant, version: UInt64) { self.deadline = deadline; self.version = version }

        func fail(_ source: Source?, _ reason: String) {
            lock.withLock { s in
                if let source { s.failed.insert(source) }
                s.reasons.append(reason)
            }
        }
        /// Every shard a request calls is "asked"; one that failed any call is not "answered".
        func asked(_ shard: Int) { lock.withLock { _ = $0.asked.insert(shard) } }
        func shardFailed(_ shard: Int) { lock.withLock { _ = $0.failedShards.insert(shard) } }
        func answered(_ shard: Int, version: UInt64) { lock.withLock { _ = $0.versions.insert(version) } }

        /// A stage deadline: `fraction` of the time left, from now.
        func stageDeadline(_ fraction: Double) -> ContinuousClock.Instant {
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero { return deadline }
            return ContinuousClock.now.advanced(by: left * fraction)
        }

        func coverage(shardCount: Int) -> Coverage {
            lock.withLock { s in
                Coverage(shardsAsked: UInt32(s.asked.count), shardsAnswered: UInt32(s.asked.subtracting(s.failedShards).count),
                         sourcesFailed: Recommender.sourceOrder.filter { s.failed.contains($0) },
                         degraded: !s.reasons.isEmpty, degradedReasons: s.reasons)
            }
        }

        var answeredVersions: Set<UInt64> { lock.withLock { $0.versions } }
        var searchFailures: Int { lock.withLock { $0.failedShards.count } }
    }

    func makeTrace(_ ctx: ServerContext) -> Trace {
        let deadline = ctx.deadline ?? ContinuousClock.now.advanced(by: .microseconds(Int(settings.defaultDeadlineMs * 1000)))
        let t = Trace(deadline: deadline, version: cluster.pinnedVersion)
        t.requestID = ctx.requestID
        return t
    }

    static func micros(_ d: Duration) -> UInt64 {
        UInt64(max(0, d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000))
    }

    // MARK: - Building blocks

    /// A shard call that counts in the request's coverage: the shard is asked, and marked failed
    /// unless it answers (NOT_FOUND — e.g. a table set without that table — is an answer).
    func shardCall<T: Sendable>(_ shard: Int, trace: Trace, deadline: ContinuousClock.Instant,
                                _ op: @escaping @Sendable (ShardClient, Duration) async throws(RPCError) -> T) async throws(RPCError) -> T {
        trace.asked(shard)
        do throws(RPCError) {
            return try await cluster.call(shard: shard, deadline: deadline, requestID: trace.requestID, op)
        } catch {
            if error.code != .notFound { trace.shardFailed(shard) }
            throw error
        }
    }

    /// The user's vector (nil for an unknown user) — one Lookup on the user's shard.
    func userVector(_ user: UInt64, trace: Trace, deadline: ContinuousClock.Instant) async -> (vector: [Float]?, failed: Bool) {
        let shard = router.shard(ofID: user)
        let table = settings.usersTable, version = trace.version
        do throws(RPCError) {
            let r = try await shardCall(shard, trace: trace, deadline: deadline) { c, t throws(RPCError) in
                try await c.lookup(LookupRequest(table: table, ids: [user], dtype: .f32, version: version), timeout: t)
            }
            guard !r.vectors.isEmpty else { return (nil, false) }
            return (r.vectors.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }, false)
        } catch {
            if error.code == .notFound { return (nil, false) }  // no users table: every user is cold
            trace.fail(.search, "user vector: shard \(shard): \(error)")
            return (nil, true)
        }
    }

    func profile(_ user: UInt64, trace: Trace, deadline: ContinuousClock.Instant) async -> UserProfile? {
        let shard = router.shard(ofID: user)
        let table = settings.profilesTable, version = trace.version
        do throws(RPCError) {
            let r = try await shardCall(shard, trace: trace, deadline: deadline) { c, t throws(RPCError) in
                try await c.profiles(ProfilesRequest(table: table, userIDs: [user], version: version), timeout: t)
            }
            return r.profiles.first
        } catch {
            if error.code != .notFound { trace.fail(nil, "profile: shard \(shard): \(error)") }
            return nil
        }
    }

    /// Lists by key, each key fetched from its shard (one call per shard), except keys whose
    /// list for the request's version is already in `listCache` (a table set never changes
    /// after it is published, so a list of version v is the same for every request pinned to v).
    func lists(table: String, keys: [String], limit: Int, source: Source, trace: Trace,
               deadline: ContinuousClock.Instant) async -> [RankedList] {
        guard !keys.isEmpty, limit > 0 else { return [] }
        let version = trace.version
        var cached: [RankedList] = []
        var byShard: [Int: [String]] = [:]
        for k in keys {
            if let l = listCache.get(version: version, table: table, key: k, limit: limit) {
                if !l.ids.isEmpty { cached.append(l) }
            } else {
                byShard[router.shard(ofKey: k), default: []].append(k)
            }
        }
        if byShard.isEmpty { return cached }
        let cache = listCache
        return await withTaskGroup(of: [RankedList].self) { group in
            for (shard, ks) in byShard {
                group.addTask {
                    do throws(RPCError) {
                        let r = try await self.shardCall(shard, trace: trace, deadline: deadline) { c, t throws(RPCError) in
                            try await c.lists(ListsRequest(table: table, keys: ks, limit: UInt32(limit), version: version), timeout: t)
                        }
                        // Only answers from the pinned version are cached (version 0 = unknown).
                        if r.version == version {
                            for l in r.lists { cache.put(version: version, table: table, list: l, limit: limit) }
                            for k in r.missingKeys { cache.put(version: version, table: table, list: RankedList(key: k, ids: [], scores: []), limit: limit) }
                        }
                        return r.lists
                    } catch {
                        if error.code != .notFound { trace.fail(source, "\(source) lists: shard \(shard): \(error)") }
                        return []
                    }
                }
            }
            var out: [RankedList] = cached
            for await l in group { out += l }
            return out
        }
    }

    /// What a Search fan-out found: the k best hits over every shard, and (with rows) where
    /// each hit's row is in the shards' answers.
    struct SearchResult: Sendable {
        var items: [ShardRankKernels.ScoredItem] = []
        /// id → (answer, hit index) for hits whose row came back.
        var rows: [UInt64: (part: Int, index: Int)] = [:]
        var parts: [SearchResponse] = []
    }

    /// Inner-product search of `query` on every shard, k-way merged; `exclude` pushed down. With
    /// `withRows` the shards send the hits' rows too (no second round trip to gather them).
    func search(query: [Float], k: Int, exclude: [UInt64], withRows: Bool = false, trace: Trace,
                deadline: ContinuousClock.Instant) async -> SearchResult {
        guard k > 0 else { return SearchResult() }
        let dim = UInt32(query.count), table = settings.itemsTable, version = trace.version
        let parts = await withTaskGroup(of: SearchResponse?.self) { group in
            for shard in 0 ..< cluster.shardCount {
                trace.asked(shard)
                group.addTask {
                    do throws(RPCError) {
                        let r = try await self.shardCall(shard, trace: trace, deadline: deadline) { c, t throws(RPCError) in
                            try await c.search(SearchRequest(table: table, queries: query, dim: dim, k: UInt32(k), excludeIDs: exclude,
                                                             version: version, withRows: withRows), timeout: t)
                        }
                        trace.answered(shard, version: r.version)
                        return r
                    } catch {
                        trace.fail(.search, "search: shard \(shard) of \(self.cluster.shardCount) did not answer: \(error)")
                        return nil
                    }
                }
            }
            var out: [SearchResponse] = []
            for await r in group { if let r { out.append(r) } }
            return out
        }
        var result = SearchResult(parts: parts)
        var lists: [[ShardRankKernels.ScoredItem]] = []
        for (p, r) in parts.enumerated() {
            guard let hits = r.results.first else { continue }
            lists.append(zip(hits.ids, hits.scores).map { ShardRankKernels.ScoredItem(id: $0, score: $1) })
            if r.dim > 0 && hits.vectors.count == hits.ids.count * Int(r.dim) * r.dtype.elementSize {
                for (i, id) in hits.ids.enumerated() { result.rows[id] = (p, i) }
            }
        }
        result.items = TopK.merge(lists, k: k)
        return result
    }

    /// The vectors of `ids` as one f32 matrix, in `ids` order: rows that came with `search` are
    /// decoded from its answers, the others fetched with one Lookup per shard. Ids whose shard
    /// failed or that no shard holds are dropped (the returned ids say which remain).
    func assemble(_ ids: [UInt64], search: SearchResult = SearchResult(), dim wanted: Int?, trace: Trace,
                  deadline: ContinuousClock.Instant) async -> (ids: [UInt64], rows: CandidateRows) {
        let version = trace.version
        var position: [UInt64: Int] = [:]
        position.reserveCapacity(ids.count)
        for (i, id) in ids.enumerated() where position[id] == nil { position[id] = i }
        // The width is known up front from the user vector, a search answer or the cache.
        var rows: CandidateRows?
        if let dim = wanted ?? search.parts.first(where: { $0.dim > 0 }).map({ Int($0.dim) }) ?? rowCache.dimension(version: version) {
            rows = CandidateRows(count: ids.count, dim: dim)
        }
        // Search rows.
        if let rows {
            for (p, part) in search.parts.enumerated() where Int(part.dim) == rows.dim {
                guard let hits = part.results.first else { continue }
                hits.vectors.withUnsafeBytes { v in
                    for (i, id) in hits.ids.enumerated() {
                        guard let row = position[id], search.rows[id]?.part == p else { continue }
                        rows.set(row: row, from: v, source: i, dtype: part.dtype,
                                 scale: part.dtype == .int8 && i < hits.scales.count ? hits.scales[i] : 1)
                    }
                }
            }
            rowCache.copy(version: version, ids: ids, into: rows)
        }
        // The rest: one Lookup per shard.
        var byShard: [Int: [UInt64]] = [:]
        for (i, id) in ids.enumerated() where rows?.filled[i] != true && position[id] == i {
            byShard[router.shard(ofID: id), default: []].append(id)
        }
        let table = settings.itemsTable
        var looked: [(ids: [UInt64], response: LookupResponse)] = []
        if !byShard.isEmpty { looked = await withTaskGroup(of: (ids: [UInt64], response: LookupResponse)?.self) { group in
            for (shard, list) in byShard {
                group.addTask {
                    do throws(RPCError) {
                        let r = try await self.shardCall(shard, trace: trace, deadline: deadline) { c, t throws(RPCError) in
                            try await c.lookup(LookupRequest(table: table, ids: list, version: version), timeout: t)
                        }
                        return (list, r)
                    } catch {
                        trace.fail(nil, "gather: shard \(shard): \(error) (\(list.count) candidates dropped)")
                        return nil
                    }
                }
            }
            var out: [(ids: [UInt64], response: LookupResponse)] = []
            for await p in group { if let p { out.append(p) } }
            return out
        } }
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
                        guard let row = position[id], (k + 1) * dim * r.dtype.elementSize <= v.count else { continue }
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
                if let first = position[id], first != i, rows.filled[first] { rows.copyRow(first, to: i) }
            }
        }
        if rows.filled.allSatisfy({ $0 }) { return (ids, rows) }
        let keep = (0 ..< ids.count).filter { rows.filled[$0] }
        return (keep.map { ids[$0] }, rows.compacted(keep))
    }

    /// Vectors of `ids` (f32, row-major, in the returned id order; ids whose shard failed or that
    /// no shard holds are dropped).
    func gather(_ ids: [UInt64], dim: Int?, trace: Trace, deadline: ContinuousClock.Instant) async -> (ids: [UInt64], vectors: [Float], dim: Int) {
        let (found, rows) = await assemble(ids, dim: dim, trace: trace, deadline: deadline)
        return (found, Array(UnsafeBufferPointer(start: rows.base, count: found.count * rows.dim)), found.isEmpty ? (dim ?? 0) : rows.dim)
    }

    /// Scores candidates with the chosen model.
    func score(model name: String, user: [Float]?, vectors: [Float], count: Int, dim: Int) throws(RPCError) -> [Float] {
        try vectors.withUnsafeBufferPointer { v throws(RPCError) in
            try score(model: name, user: user, rows: count == 0 ? nil : RowMatrix(f32: v.baseAddress!, count: count, dimension: dim))
        }
    }

    /// Scores the rows of `rows` with the chosen model (none: no candidates).
    func score(model name: String, user: [Float]?, rows: RowMatrix?) throws(RPCError) -> [Float] {
        guard let rows else { return [] }
        let count = rows.count, dim = rows.dimension
        guard count > 0 else { return [] }
        var scores = [Float](repeating: 0, count: count)
        switch name {
        case "", "dot":
            guard let user else { return scores }
            user.withUnsafeBufferPointer { u in
                scores.withUnsafeMutableBufferPointer { s in
                    InnerProducts.dot(query: u.baseAddress!, rows: rows, scores: s.baseAddress!)
                }
            }
        case "mlp":
            guard let model else { throw RPCError(.invalidArgument, "model 'mlp' is not loaded (start the coordinator with --model FILE)") }
            guard model.itemDimension == 0 || model.itemDimension == dim else {
                throw RPCError(.failedPrecondition, "the MLP expects item vectors of dim \(model.itemDimension), the tables have \(dim)")
            }
            guard let user, model.userDimension == 0 || model.userDimension == user.count else {
                // Cold start: no user vector; keep retrieval order.
                return scores
            }
            user.withUnsafeBufferPointer { u in
                scores.withUnsafeMutableBufferPointer { s in
                    model.score(user: u.baseAddress!, items: rows, count: count, scores: s.baseAddress!, pool: pool)
                }
            }
        default:
            throw RPCError(.invalidArgument, "unknown model '\(name)' (known: dot, mlp)")
        }
        return scores
    }
}

/// Sees every Recommend answer (metrics: per-stage latency, degraded and cold-start shares).
public protocol RecommendObserver: Sendable {
    func answered(_ response: RecommendResponse)
}

/// Ranked lists (item → similar, genre → top, country → top, popular) already fetched, keyed by
/// table-set version, table and key. Lists are immutable within a version, so a hit is exactly
/// what the shard would answer; entries of other versions are dropped when a new version shows
/// up, and the cache is cleared when it reaches `capacity` entries. A list fetched with limit L
/// answers requests for at most L items (or any limit when it came back shorter than L: then it
/// is the whole list).
final class ListCache: Sendable {
    struct Key: Hashable { let table: String; let key: String }
    struct Entry { let list: RankedList; let complete: Bool }
    private struct State { var version: UInt64 = 0; var entries: [Key: Entry] = [:]; var hits = 0; var misses = 0 }
    private let state = Mutex<State>(State())
    let capacity: Int

    init(capacity: Int = 20_000) { self.capacity = capacity }

    func get(version: UInt64, table: String, key: String, limit: Int) -> RankedList? {
        guard version != 0 else { return nil }
        return state.withLock { s in
            guard s.version == version, let e = s.entries[Key(table: table, key: key)], e.complete || e.list.ids.count >= limit else {
                s.misses += 1
                return nil
            }
            s.hits += 1
            if e.list.ids.count <= limit { return e.list }
            return RankedList(key: key, ids: Array(e.list.ids.prefix(limit)), scores: Array(e.list.scores.prefix(limit)))
        }
    }

    func put(version: UInt64, table: String, list: RankedList, limit: Int) {
        guard version != 0 else { return }
        state.withLock { s in
            if version > s.version { s.version = version; s.entries.removeAll(keepingCapacity: true) }
            guard version == s.version else { return }
            if s.entries.count >= capacity { s.entries.removeAll(keepingCapacity: true) }
            let k = Key(table: table, key: list.key)
            if let old = s.entries[k], old.complete || old.list.ids.count >= list.ids.count { return }
            s.entries[k] = Entry(list: list, complete: list.ids.count < limit)
        }
    }

    /// Hits and misses so far (for tests and metrics).
    var counts: (hits: Int, misses: Int) { state.withLock { ($0.hits, $0.misses) } }
}
