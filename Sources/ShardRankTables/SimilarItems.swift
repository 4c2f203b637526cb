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
