internal import Synchronization
internal import ShardRankKernels

/// Exact item → top-k most similar items by inner product (the `similar` list table), over all
/// cores. Ties break towards the lower id; an item is never its own neighbour.
enum SimilarItems {
    /// - Parameters:
    ///   - ids: `n` item ids; `vectors`: `n * dim` floats, row-major.
    ///   - progress: `(itemsDone, n)`, called from worker threads (serialised).
    /// - Returns: one list per item, keyed by the decimal item id, in item order.
    ///
    /// Uses the fused search kernel of `ShardRankKernels` (`Search.topK`, best ISA) for blocks of
    /// queries against all rows, asking for `k + 1` and dropping the query itself; query blocks
    /// run in parallel.
    static func compute(ids: [UInt64], vectors: UnsafeBufferPointer<Float>, dim: Int, k: Int,
                        progress: @escaping @Sendable (Int, Int) -> Void) -> [RankedListRecord] {
        let n = ids.count
        let k = min(k, max(n - 1, 0))
        guard n > 0, k > 0 else {
            return ids.map { RankedListRecord(key: String($0), ids: [], scores: []) }
        }
        let outIDs = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: n * k)
        let outScores = UnsafeMutableBufferPointer<Float>.allocate(capacity: n * k)
        defer { outIDs.deallocate(); outScores.deallocate() }
        let block = 32
        let blocks = (n + block - 1) / block
        let done = Mutex(0)
        let base = vectors.baseAddress!
        let rows = RowMatrix(f32: base, count: n, dimension: dim)
        ids.withUnsafeBufferPointer { idp in
            let workers = min(blocks, 64)  // strided chunks; Dispatch runs them on its per-core pool
            Parallel.forEach(workers) { w in
                var b = w
                while b < blocks {
                    let q0 = b * block
                    let qn = min(block, n - q0)
                    let results = Search.topK(queries: base + q0 * dim, queryCount: qn, rows: rows, ids: idp.baseAddress!, k: k + 1)
                    for q in 0..<qn {
                        let me = idp[q0 + q]
                        var r = 0
                        for item in results[q] where item.id != me && r < k {
                            outIDs[(q0 + q) * k + r] = item.id
                            outScores[(q0 + q) * k + r] = item.score
                            r += 1
                        }
                        precondition(r == k, "search returned too few neighbours")
                    }
                    let total = done.withLock { d -> Int in
                        d += qn
                        return d
                    }
                    if total % 1024 < qn || total == n { progress(total, n) }
                    b += workers
                }
            }
        }
        return (0..<n).map { i in
            RankedListRecord(key: String(ids[i]), ids: Array(outIDs[(i * k)..<((i + 1) * k)]),
                             scores: Array(outScores[(i * k)..<((i + 1) * k)]))
        }
    }
}

/// What the approximate similar-items computation measured.
public struct SimilarItemsReport: Sendable {
    public var items: Int
    public var k: Int
    /// Exact (small catalog) or through an IVF-PQ4 index.
    public var approximate: Bool
    /// recall@k against the exact lists over `sampled` items (1 when exact).
    public var recall: Double
    public var sampled: Int
    public var seconds: Double
    /// Computed from the interactions by co-visitation with this window (0: whole histories);
    /// nil: from the item vectors.
    public var covisitWindow: Int? = nil
}

extension SimilarItems {
    /// Item → top-k similar items through an IVF-PQ4 index over the whole catalog (built here,
    /// then dropped): each item queries the index for k neighbours with itself excluded inside the
    /// search. Queries run over `pool`, each participant with its own scratch. Afterwards
    /// `recallSample` seeded items are also computed exactly and recall@k is reported.
    static func computeApproximate(ids: [UInt64], vectors: UnsafeBufferPointer<Float>, dim: Int, k: Int,
                                   parameters: ANNSearchParameters, options: IVFPQBuildOptions, pool: WorkerPool,
                                   recallSample: Int = 1000,
                                   progress: @escaping @Sendable (String, Int, Int) -> Void) throws -> ([RankedListRecord], SimilarItemsReport) {
        let start = ContinuousClock.now
        let n = ids.count
        let k = min(k, max(n - 1, 0))
        guard n > 0, k > 0 else {
            return (ids.map { RankedListRecord(key: String($0), ids: [], scores: []) },
                    SimilarItemsReport(items: n, k: k, approximate: false, recall: 1, sampled: 0, seconds: 0))
        }
        let rows = RowMatrix(f32: vectors.baseAddress!, count: n, dimension: dim)
        let data: IVFPQIndexData
        do {
            data = try IVFPQBuilder.build(rows: rows, options: options, pool: pool) { stage, f in
                progress("similar items: index \(stage)", Int(f * 100), 100)
            }
        } catch let e as IVFPQBuilder.BuildError {
            throw TableError(.invalidInput, "--similar: \(e.description)")
        }
        let index = data.index
        let outIDs = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: n * k)
        let outScores = UnsafeMutableBufferPointer<Float>.allocate(capacity: n * k)
        let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: n)
        defer { outIDs.deallocate(); outScores.deallocate(); counts.deallocate() }
        let scratchBytes = index.scratchBytes(parameters, k: k)
        let participants = pool.threadCount
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: scratchBytes * participants, alignment: 64)
        defer { scratch.deallocate() }
        let done = Mutex(0)
        let chunk = 2048
        ids.withUnsafeBufferPointer { idp in
            pool.parallelFor(count: (n + chunk - 1) / chunk, minChunk: 1) { range, participant in
                let sp = scratch + participant * scratchBytes
                for c in range {
                    for i in (c * chunk)..<min(n, (c + 1) * chunk) {
                        var me = UInt32(i)
                        let items = withUnsafePointer(to: &me) { ex in
                            index.search(query: vectors.baseAddress! + i * dim, k: k, parameters: parameters, rows: rows, ids: idp.baseAddress!,
                                         excludedRows: UnsafeBufferPointer(start: ex, count: 1), scratch: sp).items
                        }
                        for (r, it) in items.enumerated() {
                            outIDs[i * k + r] = it.id
                            outScores[i * k + r] = it.score
                        }
                        counts[i] = items.count
                    }
                    let total = done.withLock { d -> Int in d += min(n, (c + 1) * chunk) - c * chunk; return d }
                    progress("similar items (top \(k), approximate)", total, n)
                }
            }
        }
        // Recall against the exact lists on a seeded sample of items.
        var rng = SplitMix64(seed: options.seed ^ 0x5EED)
        let sample = (0..<min(recallSample, n)).map { _ in Int(rng.next() % UInt64(n)) }
        var hits = 0, expected = 0
        ids.withUnsafeBufferPointer { idp in
            for i in sample {
                let exact = Search.topK(queries: vectors.baseAddress! + i * dim, queryCount: 1, rows: rows, ids: idp.baseAddress!, k: k + 1,
                                        pool: pool)[0].filter { $0.id != idp[i] }.prefix(k)
                let got = Set(outIDs[(i * k)..<(i * k + counts[i])])
                hits += exact.filter { got.contains($0.id) }.count
                expected += exact.count
            }
        }
        withExtendedLifetime(data) {}
        let lists = (0..<n).map { i in
            RankedListRecord(key: String(ids[i]), ids: Array(outIDs[(i * k)..<(i * k + counts[i])]),
                             scores: Array(outScores[(i * k)..<(i * k + counts[i])]))
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        return (lists, SimilarItemsReport(items: n, k: k, approximate: true, recall: expected > 0 ? Double(hits) / Double(expected) : 1,
                                          sampled: sample.count, seconds: seconds))
    }
}
