import ShardRankRouting
import Dispatch
public import Logging
import Synchronization
public import RPCCore
public import ShardRankWire
import ShardRankTables
public import ShardRankKernels

/// Serves shard `shard` of `shardCount` of the newest complete table-set version under `root`,
/// with hot reload.
///
/// Versions: requests read one immutable `LoadedTableSet` snapshot each, so every row of one
/// response comes from one version (no torn reads). A newer complete version is loaded and
/// verified on a background queue, warmed, then swapped in atomically; versions only move
/// forward; a version that fails to load or does not match (different dims, shard count) is
/// rejected with a logged reason while the current one keeps serving. The previous version stays
/// available for `previousVersionGrace` to requests that pin it (`version` field); its mapping is
/// released when the last request using it finishes.
public final class TableSetBackend: ShardBackend {
    public let root: String
    public let shard: Int
    public let shardCount: Int
    /// Accept ids that hash to another shard (answered as missing) instead of INVALID_ARGUMENT.
    public let allowForeignIDs: Bool
    public let previousVersionGrace: Duration
    /// Lock each served version's mappings in memory (see `LoadedTableSet.lockInMemory`).
    public let lockTables: Bool
    private let pool: WorkerPool
    /// How approximate Search is served (thresholds for the exact fallback, limits).
    public let annServing: ANNServing
    /// Sampled shadow exact searches measuring ANN recall (nil: off).
    public let recallMonitor: ANNRecallMonitor?
    /// Concurrent Search calls share passes over the table.
    let batcher: SearchBatcher
    private let logger: Logger
    private let state: Mutex<State>
    private let reloadQueue = DispatchQueue(label: "shardrank.shard.reload")
    /// Touched only on `reloadQueue` (and in deinit).
    nonisolated(unsafe) private var pollTimer: (any DispatchSourceTimer)?
    private let stats = Stats()

    struct State {
        var current: LoadedTableSet
        var previous: LoadedTableSet?
        var previousUntil: ContinuousClock.Instant = .now
        var rejected: [UInt64: String] = [:]
    }

    final class Stats: Sendable {
        let reloads = Atomic<Int>(0)
        let rejections = Atomic<Int>(0)
    }

    public enum ReloadOutcome: Sendable, Equatable {
        case unchanged(UInt64)
        case switched(from: UInt64, to: UInt64)
        case rejected(version: UInt64, reason: String)
    }

    /// Loads and verifies the newest complete version (blocking).
    /// - Throws: `TableError` when the root holds no complete version or it does not load.
    public init(root: String, shard: Int, of shardCount: Int, pool: WorkerPool, allowForeignIDs: Bool = false,
                previousVersionGrace: Duration = .seconds(30), lockTables: Bool = false, annServing: ANNServing = ANNServing(),
                logger: Logger = Logger(label: "shardrank.shard")) throws {
        self.root = root
        self.annServing = annServing
        self.recallMonitor = annServing.shadowEvery > 0 ? ANNRecallMonitor(every: annServing.shadowEvery) : nil
        self.shard = shard
        self.shardCount = shardCount
        self.pool = pool
        self.batcher = SearchBatcher(pool: pool)
        self.allowForeignIDs = allowForeignIDs
        self.previousVersionGrace = previousVersionGrace
        self.lockTables = lockTables
        self.logger = logger
        let versions = try TableSetCatalog(root: root).completeVersions()
        guard !versions.isEmpty else {
            throw TableError(.notFound, "no complete table-set version under \(root) (expected \(root)/v<N>/manifest.json)")
        }
        // The newest version that loads and verifies: a corrupt newest one is refused (as a hot
        // reload refuses it) and the last good one serves; only when none loads does start fail.
        var loaded: LoadedTableSet?
        var rejected: [UInt64: String] = [:]
        var firstError: (any Error)?
        for v in versions.reversed() {
            do {
                loaded = try TableSetLoader.load(root: root, version: v, shard: shard, of: shardCount)
                break
            } catch {
                rejected[v] = "\(error)"
                if firstError == nil { firstError = error }
                logger.error("rejected table set v\(v): \(error)")
            }
        }
        guard let ts = loaded else { throw firstError! }
        ts.warm()
        if lockTables { for w in ts.lockInMemory() { logger.warning("not locked in memory (serving anyway): \(w)") } }
        var st = State(current: ts)
        st.rejected = rejected
        state = Mutex(st)
        stats.rejections.store(rejected.count, ordering: .relaxed)
        if let newest = versions.last, newest != ts.version {
            logger.warning("serving v\(ts.version), the newest version that loads: v\(newest) was refused")
        }
        logger.info("serving table set \(root) v\(ts.version), shard \(shard) of \(shardCount): \(ts.tables.keys.sorted().joined(separator: ", "))")
    }

    deinit { pollTimer?.cancel() }

    /// The version answering new requests.
    public var currentVersion: UInt64 { state.withLock { $0.current.version } }
    public var reloadCount: Int { stats.reloads.load(ordering: .relaxed) }
    public var rejectionCount: Int { stats.rejections.load(ordering: .relaxed) }

    /// Polls `root` for a newer complete version every `interval`.
    public func startPolling(every interval: Duration) {
        let t = DispatchSource.makeTimerSource(queue: reloadQueue)
        let ms = Int(interval.clampedNanoseconds / 1_000_000)
        t.schedule(deadline: .now() + .milliseconds(ms), repeating: .milliseconds(max(ms, 10)))
        t.setEventHandler { [weak self] in _ = self?.reloadOnQueue() }
        t.resume()
        reloadQueue.sync {
            pollTimer?.cancel()
            pollTimer = t
        }
    }

    /// Checks for a newer version now (SIGHUP, admin call), off the caller's thread.
    public func reloadSoon() {
        reloadQueue.async { [weak self] in _ = self?.reloadOnQueue() }
    }

    /// Checks for a newer version and switches to it if it loads; blocking (for tests and tools).
    public func reloadNow() -> ReloadOutcome {
        reloadQueue.sync { reloadOnQueue() }
    }

    private func reloadOnQueue() -> ReloadOutcome {
        let (current, rejected) = state.withLock { ($0.current, $0.rejected) }
        dropExpiredPrevious()
        let newest: UInt64?
        do { newest = try TableSetCatalog(root: root).newestVersion() } catch {
            logger.warning("cannot list \(root): \(error)")
            return .unchanged(current.version)
        }
        guard let newest, newest > current.version else { return .unchanged(current.version) }
        if let reason = rejected[newest] { return .rejected(version: newest, reason: reason) }
        do {
            let next = try TableSetLoader.load(root: root, version: newest, shard: shard, of: shardCount)
            try Self.checkCompatible(next, with: current)
            next.warm()
            if lockTables { for w in next.lockInMemory() { logger.warning("v\(newest) not locked in memory (serving anyway): \(w)") } }
            state.withLock { s in
                s.previous = s.current
                s.previousUntil = ContinuousClock.now.advanced(by: previousVersionGrace)
                s.current = next
            }
            stats.reloads.wrappingAdd(1, ordering: .relaxed)
            logger.info("switched to table set v\(newest) (was v\(current.version))")
            return .switched(from: current.version, to: newest)
        } catch {
            let reason = "\(error)"
            state.withLock { $0.rejected[newest] = reason }
            stats.rejections.wrappingAdd(1, ordering: .relaxed)
            logger.error("rejected table set v\(newest): \(reason); still serving v\(current.version)")
            return .rejected(version: newest, reason: reason)
        }
    }

    private func dropExpiredPrevious() {
        state.withLock { s in
            if s.previous != nil && ContinuousClock.now >= s.previousUntil { s.previous = nil }
        }
    }

    /// A new version must keep the dims and dtypes of the embedding tables both versions have.
    static func checkCompatible(_ next: LoadedTableSet, with current: LoadedTableSet) throws {
        for (name, table) in current.tables {
            guard case .embedding(let old) = table, case .embedding(let new)? = next.tables[name] else { continue }
            if old.dim != new.dim {
                throw TableError(.mismatch, "table '\(name)' has dim \(new.dim) in v\(next.version) but \(old.dim) in v\(current.version)")
            }
            // Pinned requests read the previous version while new ones read this one: a changed
            // element type would mix f32 and int8 rows (and scales) within one rollout.
            if old.dtype != new.dtype {
                throw TableError(.mismatch, "table '\(name)' has dtype \(new.dtype) in v\(next.version) but \(old.dtype) in v\(current.version)")
            }
        }
    }

    /// The snapshot for a request: the current version, or the previous one when pinned.
    private func snapshot(pinned: UInt64) throws(RPCError) -> LoadedTableSet {
        let (cur, prev) = state.withLock { s in (s.current, s.previous) }
        if pinned == 0 || pinned == cur.version { return cur }
        if let prev, prev.version == pinned { return prev }
        throw RPCError(.failedPrecondition, "table-set version \(pinned) is not served by shard \(shard) (serving v\(cur.version))")
    }

    private func tableMissing(_ name: String, _ ts: LoadedTableSet, want: String) -> RPCError {
        if let t = ts.tables[name] {
            return RPCError(.invalidArgument, "table '\(name)' is a \(t.kind) table, not \(want)")
        }
        return RPCError(.notFound, "unknown table '\(name)' in table set v\(ts.version) (tables: \(ts.tables.keys.sorted().joined(separator: ", ")))")
    }

    // MARK: - Lookup

    public func lookup(_ req: LookupRequest, context: ServerContext) throws(RPCError) -> FramedMessage {
        let ts = try snapshot(pinned: req.version)
        guard let table = ts.embedding(req.table) else { throw tableMissing(req.table, ts, want: "an embedding table") }
        if !allowForeignIDs {
            for id in req.ids where ts.router.shard(ofID: id) != shard {
                throw RPCError(.invalidArgument, "id \(id) belongs to shard \(ts.router.shard(ofID: id)) of \(shardCount), not shard \(shard)")
            }
        }
        let target: TableDType
        switch req.dtype {
        case .unspecified: target = table.dtype
        case .f32: target = .f32
        case .f16: target = .f16
        case .int8: target = .int8
        }
        // Resolve every id once; rows are then copied by index (repeated ids copy the same row).
        var rows = [Int](repeating: -1, count: req.ids.count)
        var missing: [UInt64] = []
        var found = 0
        for (i, id) in req.ids.enumerated() {
            if let r = table.rowIndex(of: id) { rows[i] = r; found += 1 } else { missing.append(id) }
        }
        let outStride = table.dim * target.elementSize
        try LookupResponse.checkSize(vectorBytes: found * outStride, dim: table.dim, dtype: DType(rawValue: target.rawValue) ?? .f32)
        var scales = [Float](repeating: 1, count: target == .int8 ? found : 0)
        var scratch = [Float](repeating: 0, count: target == table.dtype ? 0 : table.dim)
        if target == .int8 && table.dtype != .int8 {
            // Quantisation happens during the gather; compute the scales first so the encoder can
            // write them before the vectors (the vectors field is appended in place last).
            scratch.withUnsafeMutableBufferPointer { sp in
                var k = 0
                for r in rows where r >= 0 {
                    table.decodeRow(at: r, into: sp)
                    var m: Float = 0
                    for j in 0 ..< table.dim { m = max(m, abs(sp[j])) }
                    scales[k] = m > 0 ? m / 127 : 1
                    k += 1
                }
            }
        } else if target == .int8 {
            var k = 0
            for r in rows where r >= 0 { scales[k] = table.scale(at: r); k += 1 }
        }
        let scaleBytes: [UInt8] = scales.isEmpty ? [] : scales.withUnsafeBytes { Array($0) }
        return LookupResponse.encode(dim: UInt32(table.dim), dtype: DType(rawValue: target.rawValue)!, missingIDs: missing,
                                     version: ts.version, scales: scaleBytes, shard: UInt32(shard), shardCount: UInt32(shardCount),
                                     vectorBytes: found * outStride) { dst in
            var k = 0
            if target == table.dtype {
                // Rows as stored: one prefetching gather (rows[i] < 0: missing, skipped).
                guard found > 0 else { return }
                _ = rows.withUnsafeBufferPointer { rp in
                    RowGather.gather(into: dst.baseAddress!, base: table.rowPointer(at: 0), rowBytes: outStride, rows: rp)
                }
                return
            }
            scratch.withUnsafeMutableBufferPointer { sp in
                for r in rows where r >= 0 {
                    table.decodeRow(at: r, into: sp)
                    let out = dst.baseAddress! + k * outStride
                    switch target {
                    case .f32:
                        out.copyMemory(from: sp.baseAddress!, byteCount: outStride)
                    case .f16:
                        for j in 0 ..< table.dim {
                            out.storeBytes(of: Float16(sp[j]).bitPattern.littleEndian, toByteOffset: j * 2, as: UInt16.self)
                        }
                    case .int8:
                        let s = scales[k]
                        for j in 0 ..< table.dim {
                            let q = max(-127, min(127, (sp[j] / s).rounded()))
                            out.storeBytes(of: Int8(q), toByteOffset: j, as: Int8.self)
                        }
                    }
                    k += 1
                }
            }
        }
    }

    // MARK: - Search, Lists, Info

    public func search(_ req: SearchRequest, context: ServerContext) throws(RPCError) -> SearchResponse {
        let ts = try snapshot(pinned: req.version)
        let table = try searchTable(req, ts)
        let excluded = req.allExcludedIDs()
        if let plan = try ANNSearch.plan(req, excluded: excluded, index: ts.index(req.table), serving: annServing) {
            let (hits, rows) = try ANNSearch.run(plan, req, context: context, monitor: recallMonitor)
            return searchResponse(hits, ts, mode: .ann, req, table, rows: rows)
        }
        let (hits, _) = try SearchBatcher.chunked(table: table, queries: req.queries, queryCount: req.queryCount, k: Int(req.k),
                                                  exclude: excluded, pool: pool, context: context)
        return searchResponse(hits, ts, req, table)
    }

    public var deferredSearch: Bool { true }

    /// Search on the connection's event loop: an ANN query is answered at once (tens of µs, no
    /// thread hop); an exact one joins the batcher, whose pass answers from its own thread
    /// (concurrent calls share passes over the table: SearchBatcher).
    public func searchDeferred(_ req: SearchRequest, context: ServerContext,
                               respond: @escaping @Sendable (Result<SearchResponse, RPCError>) -> Void) {
        let ts: LoadedTableSet, table: EmbeddingTable
        // Both exclusion fields as one sorted array, decoded once per call.
        let excluded = req.allExcludedIDs()
        do throws(RPCError) {
            ts = try snapshot(pinned: req.version)
            table = try searchTable(req, ts)
            try context.checkCancellation()
            if let plan = try ANNSearch.plan(req, excluded: excluded, index: ts.index(req.table), serving: annServing) {
                let (hits, rows) = try ANNSearch.run(plan, req, context: context, monitor: recallMonitor)
                respond(.success(searchResponse(hits, ts, mode: .ann, req, table, rows: rows)))
                return
            }
        } catch {
            respond(.failure(error))
            return
        }
        if table.rowCount * req.queryCount <= annServing.inlineExactRows {
            // Small: scan here, no thread hop.
            do throws(RPCError) {
                let (hits, _) = try SearchBatcher.chunked(table: table, queries: req.queries, queryCount: req.queryCount, k: Int(req.k),
                                                          exclude: excluded, pool: nil, context: context)
                respond(.success(searchResponse(hits, ts, req, table)))
            } catch {
                respond(.failure(error))
            }
            return
        }
        batcher.submit(SearchBatcher.Job(owner: ts, table: table, queries: req.queries, queryCount: req.queryCount, k: Int(req.k),
                                         exclude: excluded, context: context) { [self] result in
            respond(result.map { searchResponse($0, ts, req, table) })
        })
    }

    /// The response to `req`; with `req.withRows`, each hit's row of `table` as stored (and its
    /// int8 scale) rides along: `rows[q][i]` when the search reported it (the ANN kernel does),
    /// else found by id.
    private func searchResponse(_ hits: [[ScoredID]], _ ts: LoadedTableSet, mode: SearchMode = .exact,
                                _ req: SearchRequest, _ table: EmbeddingTable, rows: [[Int]]? = nil) -> SearchResponse {
        guard req.withRows else {
            return SearchResponse(results: hits.map { h in SearchHits(ids: h.map(\.id), scores: h.map(\.score)) }, version: ts.version,
                                  shard: UInt32(shard), shardCount: UInt32(shardCount), mode: mode)
        }
        let stride = table.dim * table.dtype.elementSize
        let results = hits.enumerated().map { q, h -> SearchHits in
            var vectors = [UInt8](repeating: 0, count: h.count * stride)
            var scales = [Float](repeating: 1, count: table.dtype == .int8 ? h.count : 0)
            let known = rows.map { $0[q] }
            vectors.withUnsafeMutableBytes { dst in
                for (i, item) in h.enumerated() {
                    // A hit always comes from this slice: its row exists.
                    let row = known.flatMap { i < $0.count && $0[i] >= 0 ? $0[i] : nil } ?? table.rowIndex(of: item.id)
                    guard let r = row else { continue }
                    dst.baseAddress!.advanced(by: i * stride).copyMemory(from: table.rowPointer(at: r), byteCount: stride)
                    if table.dtype == .int8 { scales[i] = table.scale(at: r) }
                }
            }
            return SearchHits(ids: h.map(\.id), scores: h.map(\.score), vectors: vectors, scales: scales)
        }
        return SearchResponse(results: results, version: ts.version, shard: UInt32(shard), shardCount: UInt32(shardCount), mode: mode,
                              dim: UInt32(table.dim), dtype: DType(rawValue: table.dtype.rawValue) ?? .unspecified)
    }

    private func searchTable(_ req: SearchRequest, _ ts: LoadedTableSet) throws(RPCError) -> EmbeddingTable {
        guard let table = ts.embedding(req.table) else { throw tableMissing(req.table, ts, want: "an embedding table") }
        guard Int(req.dim) == table.dim else {
            throw RPCError(.invalidArgument, "query dim \(req.dim) does not match table '\(req.table)' dim \(table.dim)")
        }
        return table
    }

    public func lists(_ req: ListsRequest, context: ServerContext) throws(RPCError) -> ListsResponse {
        let ts = try snapshot(pinned: req.version)
        guard let table = ts.list(req.table) else { throw tableMissing(req.table, ts, want: "a list table") }
        var lists: [RankedList] = []
        var missing: [String] = []
        for key in req.keys {
            guard let l = table.list(forKey: key) else { missing.append(key); continue }
            let n = req.limit == 0 ? l.count : min(l.count, Int(req.limit))
            lists.append(RankedList(key: key, ids: Array(l.ids.prefix(n)), scores: Array(l.scores.prefix(n))))
        }
        return ListsResponse(lists: lists, missingKeys: missing, version: ts.version, shard: UInt32(shard), shardCount: UInt32(shardCount))
    }

    public func profiles(_ req: ProfilesRequest, context: ServerContext) throws(RPCError) -> ProfilesResponse {
        let ts = try snapshot(pinned: req.version)
        guard let table = ts.profile(req.table) else { throw tableMissing(req.table, ts, want: "a profile table") }
        var out: [UserProfile] = []
        var missing: [UInt64] = []
        for id in req.userIDs {
            guard let p = table.profile(forUser: id) else { missing.append(id); continue }
            out.append(UserProfile(userID: id, recentItemIDs: Array(p.recentItems), history: table.history(of: p),
                                   topGenres: table.topGenreNames(p), country: table.countryName(p) ?? ""))
        }
        return ProfilesResponse(profiles: out, missingUserIDs: missing, version: ts.version, shard: UInt32(shard), shardCount: UInt32(shardCount))
    }

    public func attributes(_ req: AttributesRequest, context: ServerContext) throws(RPCError) -> AttributesResponse {
        let ts = try snapshot(pinned: req.version)
        guard let table = ts.attribute(req.table) else { throw tableMissing(req.table, ts, want: "an attribute table") }
        var ids: [UInt64] = [], masks: [UInt64] = [], times: [Int64] = [], pops: [Float] = [], missing: [UInt64] = []
        for id in req.itemIDs {
            guard let a = table.attributes(forItem: id) else { missing.append(id); continue }
            ids.append(id); masks.append(a.genresMask); times.append(a.timestamp); pops.append(a.popularity)
        }
        return AttributesResponse(itemIDs: ids, genreMasks: masks, timestamps: times, popularity: pops, genres: table.genres,
                                  missingItemIDs: missing, version: ts.version, shard: UInt32(shard), shardCount: UInt32(shardCount))
    }

    public func info() -> InfoResponse {
        let ts = state.withLock { $0.current }
        let tables = ts.tables.keys.sorted().map { name -> TableInfo in
            let t = ts.tables[name]!
            let range = ts.idRanges[name]
            let lo = range?.lowerBound ?? 0, hi = range?.upperBound ?? 0
            switch t {
            case .embedding(let e):
                return TableInfo(name: name, kind: .embedding, dim: UInt32(e.dim), dtype: DType(rawValue: e.dtype.rawValue)!, rows: UInt64(e.rowCount),
                                 minID: lo, maxID: hi)
            case .list:
                return TableInfo(name: name, kind: .list, dim: 0, dtype: .unspecified, rows: UInt64(t.rowCount))
            case .profile:
                return TableInfo(name: name, kind: .profile, dim: 0, dtype: .unspecified, rows: UInt64(t.rowCount), minID: lo, maxID: hi)
            case .attribute:
                return TableInfo(name: name, kind: .attribute, dim: 0, dtype: .unspecified, rows: UInt64(t.rowCount), minID: lo, maxID: hi)
            }
        }
        return InfoResponse(version: ts.version, shard: UInt32(shard), shardCount: UInt32(shardCount), tables: tables,
                            mappedBytes: UInt64(ts.mappedBytes), source: "table-set:" + (root.split(separator: "/").last.map(String.init) ?? root), hash: StableHash.functionName, hashSeed: ts.router.seed)
    }

    public func ids(_ req: IdsRequest, context: ServerContext) throws(RPCError) -> IdsResponse {
        let ts = try snapshot(pinned: req.version)
        guard let t = ts.tables[req.table] else { throw tableMissing(req.table, ts, want: "a table") }
        guard let ids = t.ids else {
            throw RPCError(.invalidArgument, "table '\(req.table)' is a list table: its keys are strings, not ids (Lists reads them)")
        }
        let start = Int(min(req.offset, UInt64(ids.count)))
        let end = min(ids.count, start + req.pageSize)
        return IdsResponse(ids: Array(ids[start ..< end]), rows: UInt64(ids.count), version: ts.version, shard: UInt32(shard),
                           shardCount: UInt32(shardCount))
    }
}
