import Dispatch
import Synchronization
public import RPCCore
public import ShardRankKernels
public import ShardRankTables
import ShardRankIDs

/// Runs the shard's Search calls as passes over the table, one pass at a time, and lets every
/// call that arrives while a pass runs join the next one.
///
/// An int8 scan of a shard slice is bound by memory bandwidth once the slice is out of the
/// caches (several ms per pass from DRAM), and the arithmetic per extra query is small next to
/// the bytes read (docs/kernels.md). So a burst of concurrent Searches costs one pass per
/// burst rather than one per call, which is what keeps the tail short when a coordinator's
/// fan-outs pile up. With one call at a time nothing waits: the call starts its pass at once.
///
/// Calls with different exclusions share a pass by asking each query for `k + e` results
/// without exclusions, e = how many of its excluded ids this slice holds (an id the slice does
/// not hold can never be a hit), and removing their own excluded ids afterwards (binary search
/// in the sorted exclusions) — the top `k` of the rest is exactly the excluded search's answer. A call that is already cancelled (deadline
/// passed, RST_STREAM) when its pass is formed is answered with its cancellation error and costs
/// nothing. Calls are grouped per table object (one version of one table); a pass takes at most
/// `maxQueriesPerPass` queries (a single larger call runs alone, in chunks of 16 queries,
/// checking cancellation between chunks and yielding to waiting calls: its remaining queries
/// go to the back of the queue, so a 1024-query call never holds up the one-query calls of a
/// coordinator's fan-out).
public final class SearchBatcher: Sendable {
    public struct Job: Sendable {
        /// Keeps the table's mapping alive until the pass is done.
        public let owner: any Sendable
        public let table: EmbeddingTable
        public let queries: [Float]
        public let queryCount: Int
        public let k: Int
        /// Ascending, unique (`SearchRequest.allExcludedIDs()`).
        public let exclude: [UInt64]
        public let context: ServerContext
        public let done: @Sendable (Result<[[ScoredID]], RPCError>) -> Void

        public init(owner: any Sendable, table: EmbeddingTable, queries: [Float], queryCount: Int, k: Int, exclude: [UInt64],
                    context: ServerContext, done: @escaping @Sendable (Result<[[ScoredID]], RPCError>) -> Void) {
            self.owner = owner; self.table = table; self.queries = queries; self.queryCount = queryCount; self.k = k
            self.exclude = exclude; self.context = context; self.done = done
        }
    }

    /// Counters: passes run and calls answered (their ratio is the mean batch size).
    public struct Stats: Sendable, Equatable {
        public var passes = 0
        public var calls = 0
    }

    private struct State {
        var jobs: [Job] = []
        var running = false
        var held = false
        var stats = Stats()
    }

    public let maxQueriesPerPass: Int
    private let pool: WorkerPool?
    private let state = Mutex<State>(State())
    private let queue = DispatchQueue(label: "shardrank.shard.search")

    public init(pool: WorkerPool?, maxQueriesPerPass: Int = 64) {
        self.pool = pool
        self.maxQueriesPerPass = max(1, maxQueriesPerPass)
    }

    public var stats: Stats { state.withLock { $0.stats } }

    /// Queues `job`; its `done` is called once, from the pass's thread.
    public func submit(_ job: Job) {
        let start = state.withLock { s -> Bool in
            s.jobs.append(job)
            if s.running || s.held { return false }
            s.running = true
            return true
        }
        if start { queue.async { self.drain() } }
    }

    /// Tests: while held, submitted jobs only queue; `release` then runs them (as one pass
    /// where they fit).
    func hold() { state.withLock { $0.held = true } }
    /// Tests: jobs waiting in the queue (so a test can wait until its calls have arrived).
    var queuedJobs: Int { state.withLock { $0.jobs.count } }
    func release() {
        let start = state.withLock { s -> Bool in
            s.held = false
            if s.running || s.jobs.isEmpty { return false }
            s.running = true
            return true
        }
        if start { queue.async { self.drain() } }
    }

    private func drain() {
        while true {
            let batch: [Job] = state.withLock { s in
                if s.jobs.isEmpty || s.held { s.running = false; return [] }
                var take: [Job] = [], rest: [Job] = []
                var queries = 0
                for j in s.jobs {
                    if take.isEmpty || (j.table === take[0].table && queries + j.queryCount <= maxQueriesPerPass) {
                        take.append(j)
                        queries += j.queryCount
                    } else {
                        rest.append(j)
                    }
                }
                s.jobs = rest
                s.stats.passes += 1
                s.stats.calls += take.count
                return take
            }
            if batch.isEmpty { return }
            run(batch)
        }
    }

    /// One call's queries against `table` in chunks of 16, checking `context` for cancellation
    /// (its deadline, RST_STREAM) before each chunk; after a chunk, stops early when `yield`
    /// says so. The shard's synchronous Search uses it too, never yielding.
    /// - Returns: the results so far and the index of the first query not yet scored.
    static func chunked(table: EmbeddingTable, queries: [Float], queryCount: Int, k: Int, exclude: [UInt64], pool: WorkerPool?,
                        context: ServerContext, yield: () -> Bool = { false }) throws(RPCError) -> ([[ScoredID]], Int) {
        let rows = table.rowMatrix
        var results: [[ScoredID]] = []
        results.reserveCapacity(queryCount)
        var start = 0
        while start < queryCount {
            try context.checkCancellation()
            let n = min(16, queryCount - start)
            let hits = queries.withUnsafeBufferPointer { q in
                Search.topK(queries: q.baseAddress! + start * rows.dimension, queryCount: n, rows: rows, ids: table.ids.baseAddress!,
                            k: k, excluding: exclude, pool: pool)
            }
            results.append(contentsOf: hits)
            start += n
            if start < queryCount && yield() { break }
        }
        return (results, start)
    }

    private func run(_ batch: [Job]) {
        var live: [Job] = []
        for j in batch {
            if j.context.isCancelled { j.done(.failure(j.context.cancellationError ?? .cancelled())) } else { live.append(j) }
        }
        guard let first = live.first else { return }
        let rows = first.table.rowMatrix
        let ids = first.table.ids.baseAddress!
        if live.count == 1 {
            // Alone: its own exclusions in the kernel, in chunks. A large call must not hold up
            // the calls behind it: when others wait, its remaining queries go to the back of the
            // queue and it continues later.
            let results: [[ScoredID]], next: Int
            do throws(RPCError) {
                (results, next) = try Self.chunked(table: first.table, queries: first.queries, queryCount: first.queryCount,
                                                   k: first.k, exclude: first.exclude, pool: pool, context: first.context) {
                    self.state.withLock { !$0.jobs.isEmpty }
                }
            } catch {
                first.done(.failure(error))
                return
            }
            if next < first.queryCount {
                let original = first
                let rest = Job(owner: first.owner, table: first.table, queries: Array(first.queries[(next * rows.dimension)...]),
                               queryCount: first.queryCount - next, k: first.k, exclude: first.exclude, context: first.context,
                               done: { r in original.done(r.map { results + $0 }) })
                state.withLock { $0.jobs.append(rest) }
            } else {
                first.done(.success(results))
            }
            return
        }
        // Together: one pass; each query asks for k + (its exclusions this slice holds) and
        // filters afterwards.
        var queries: [Float] = []
        var ks: [Int] = []
        for j in live {
            queries.append(contentsOf: j.queries)
            var held = 0
            for id in j.exclude where j.table.rowIndex(of: id) != nil { held += 1 }
            ks.append(contentsOf: repeatElement(j.k + held, count: j.queryCount))
        }
        let hits = queries.withUnsafeBufferPointer { q in
            Search.topK(queries: q.baseAddress!, queryCount: ks.count, rows: rows, ids: ids, k: ks.max() ?? 0,
                        perQueryK: ks, pool: pool)
        }
        var at = 0
        for j in live {
            let ex = j.exclude
            let mine = hits[at ..< at + j.queryCount].map { list in
                Array((ex.isEmpty ? list : list.filter { !SortedIDs.contains(ex, $0.id) }).prefix(j.k))
            }
            at += j.queryCount
            j.done(.success(mine))
        }
    }
}
