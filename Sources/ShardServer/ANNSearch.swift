import Dispatch
import Synchronization
import RPCCore
import ShardRankWire
import ShardRankTables
import ShardRankKernels

/// How a shard serves approximate Search, with its defaults.
public struct ANNServing: Sendable, Hashable {
    /// Slices with fewer rows than this are always scanned exactly (an index buys nothing there).
    public var minRows = 10_000
    /// When a call's exclusions cover more than this share of the slice, it is scanned exactly
    /// (an index would probe many lists to find k survivors).
    public var maxExcludedShare = 0.25
    /// Every N-th approximate query is also answered exactly off the request's path to measure
    /// recall@k (0: never). See `ANNRecallMonitor`.
    public var shadowEvery = 1000
    /// Largest ANN knobs a request may ask for.
    public var maxNprobe = 65_536
    public var maxRerank = 100_000
    /// An exact scan of at most this many rows × queries is answered at once on the connection's
    /// event loop (tens of µs); larger ones go to the search batcher's worker threads.
    public var inlineExactRows = 32_768
    public init() {}
}

/// Approximate Search over a loaded index: the plan (which mode answers a request) and the run.
enum ANNSearch {
    struct Plan {
        let index: ANNIndexTable
        let parameters: ANNSearchParameters
        /// The call's exclusions as sorted, distinct row numbers of this slice.
        let excludedRows: [UInt32]
    }

    /// The ANN plan for `req`, or nil when the exact scan answers: the request asks for EXACT; the
    /// table has no index; the mode is UNSPECIFIED and the manifest's default is exact; the slice
    /// is small; or the exclusions (`excluded`: `req.allExcludedIDs()`) cover a large share of it.
    static func plan(_ req: SearchRequest, excluded: [UInt64], index: ANNIndexTable?, serving: ANNServing) throws(RPCError) -> Plan? {
        guard req.mode != .exact, let index else { return nil }
        if req.mode == .unspecified && !index.annByDefault { return nil }
        let table = index.table
        guard table.rowCount >= serving.minRows else { return nil }
        guard Int(req.nprobe) <= serving.maxNprobe else {
            throw RPCError(.invalidArgument, "Search nprobe=\(req.nprobe) exceeds the limit of \(serving.maxNprobe)")
        }
        guard Int(req.rerank) <= serving.maxRerank else {
            throw RPCError(.invalidArgument, "Search rerank=\(req.rerank) exceeds the limit of \(serving.maxRerank)")
        }
        var rows: [UInt32] = []
        rows.reserveCapacity(excluded.count)
        for id in excluded { if let r = table.rowIndex(of: id) { rows.append(UInt32(r)) } }
        if !rows.isEmpty {
            rows.sort()
            var w = 1
            for i in 1..<rows.count where rows[i] != rows[w - 1] { rows[w] = rows[i]; w += 1 }
            rows.removeLast(rows.count - w)
        }
        guard Double(rows.count) <= serving.maxExcludedShare * Double(table.rowCount) else { return nil }
        // A knob left at 0 takes the manifest's default, scaled for k (the defaults are set for k = 10).
        let defaults = index.defaults.scaled(forK: Int(req.k))
        let p = ANNSearchParameters(nprobe: req.nprobe > 0 ? Int(req.nprobe) : defaults.nprobe,
                                    rerank: req.rerank > 0 ? Int(req.rerank) : defaults.rerank)
        return Plan(index: index, parameters: p, excludedRows: rows)
    }

    /// Runs every query of `req` through the plan's index (one scratch area for the call),
    /// checking `context` for cancellation every 16 queries.
    /// The hits of every query, and with `req.withRows` each hit's row of the table (from the
    /// kernel, no id lookup).
    static func run(_ plan: Plan, _ req: SearchRequest, context: ServerContext,
                    monitor: ANNRecallMonitor?) throws(RPCError) -> (hits: [[ScoredID]], rows: [[Int]]?) {
        let index = plan.index.index, table = plan.index.table
        let k = Int(req.k), d = table.dim, n = req.queryCount
        let rows = table.rowMatrix
        let bytes = index.scratchBytes(plan.parameters, k: k)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { scratch.deallocate() }
        var results: [[ScoredID]] = []
        results.reserveCapacity(n)
        var hitRows: [[Int]] = []
        if req.withRows { hitRows.reserveCapacity(n) }
        for q in 0..<n {
            if q % 16 == 0 { try context.checkCancellation() }
            let (items, _, r) = req.queries.withUnsafeBufferPointer { qp in
                plan.excludedRows.withUnsafeBufferPointer { ex in
                    index.search(query: qp.baseAddress! + q * d, k: k, parameters: plan.parameters, rows: rows,
                                 ids: table.ids.baseAddress!, excludedRows: ex, scratch: scratch, withRows: req.withRows)
                }
            }
            if req.withRows { hitRows.append(r) }
            if let monitor, monitor.sampleNext() {
                monitor.offer(plan.index, query: Array(req.queries[(q * d)..<((q + 1) * d)]), k: k, excludedRows: plan.excludedRows,
                              answer: items)
            }
            results.append(items)
        }
        return (results, req.withRows ? hitRows : nil)
    }
}

/// Measures the recall of approximate Search while serving: every `every`-th approximate query
/// is re-run as an exact scan on one background thread, off the request's path, and the overlap
/// of the two top-k lists is added to per-table counters. At most one exact query waits or runs
/// at a time (a sampled query arriving while one is pending is skipped and counted as skipped),
/// so the monitor costs at most one core-share of exact scans at the sampling rate and never
/// delays a request. Counters are exported as Prometheus metrics by `shardrank shard`.
public final class ANNRecallMonitor: Sendable {
    public struct TableRecall: Sendable, Equatable {
        /// Exact top-k results that the approximate answer also returned, summed over sampled queries.
        public var hits = 0
        /// Exact top-k results, summed over sampled queries (recall = hits / expected).
        public var expected = 0
        public var queries = 0
        public var skipped = 0
        public var recall: Double { expected == 0 ? 1 : Double(hits) / Double(expected) }
    }

    public let every: Int
    private let counter = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let stats = Mutex<[String: TableRecall]>([:])
    private let queue = DispatchQueue(label: "shardrank.shard.ann-recall", qos: .utility)

    public init(every: Int) { self.every = max(0, every) }

    /// Per-table recall so far.
    public var snapshot: [String: TableRecall] { stats.withLock { $0 } }

    /// Counts one approximate query; true for every `every`-th (then call `offer`).
    func sampleNext() -> Bool {
        every > 0 && counter.wrappingAdd(1, ordering: .relaxed).oldValue % every == 0
    }

    /// Re-runs a sampled query exactly in the background (or counts it as skipped when the
    /// previous one is still running).
    func offer(_ index: ANNIndexTable, query: [Float], k: Int, excludedRows: [UInt32], answer: [ScoredID]) {
        let name = index.table.name
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            stats.withLock { $0[name, default: TableRecall()].skipped += 1 }
            return
        }
        queue.async { [self] in
            defer { busy.store(false, ordering: .releasing) }
            let exact = Self.exact(index.table, query: query, k: k, excludedRows: excludedRows)
            let want = Set(exact.map(\.id))
            let hits = answer.reduce(0) { $0 + (want.contains($1.id) ? 1 : 0) }
            stats.withLock { s in
                s[name, default: TableRecall()].hits += hits
                s[name, default: TableRecall()].expected += exact.count
                s[name, default: TableRecall()].queries += 1
            }
        }
    }

    /// The exact answer (single thread) with the same exclusions.
    static func exact(_ table: EmbeddingTable, query: [Float], k: Int, excludedRows: [UInt32]) -> [ScoredID] {
        let excluded = excludedRows.map { table.ids[Int($0)] }
        return query.withUnsafeBufferPointer { q in
            Search.topK(queries: q.baseAddress!, queryCount: 1, rows: table.rowMatrix, ids: table.ids.baseAddress!, k: k,
                        excluding: excluded)[0]
        }
    }

    /// Waits until no sampled query is pending (tests).
    func drain() { queue.sync {} }
}
