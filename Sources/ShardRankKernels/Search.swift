internal import CShardRankKernels

/// The fused search kernel: B queries against N rows → per-query top-k, without
/// materialising the B × N score matrix (rows are scored in blocks of 256 and filtered
/// against each query's heap threshold).
public enum Search {
    /// Per-query top-`k` of `queries · rows`, best first.
    ///
    /// - Parameters:
    ///   - queries: `queryCount * rows.dimension` floats, row-major.
    ///   - rows: the table slice to scan (f32, f16 or int8 with row scales).
    ///   - ids: `rows.count` ids, the id of each row (parallel array).
    ///   - k: results per query.
    ///   - excluding: ids never returned (any order, duplicates allowed).
    ///   - pool: when given and `rows.count ≥ 2 * minRowsPerTask`, the rows are split into
    ///     blocks over the pool's threads, each with its own heaps, merged at the end.
    ///   - perQueryK: when given (`queryCount` values, each in 0...k), query `q` gets at most
    ///     `perQueryK[q]` results instead of `k`.
    ///   - exact: score every row with the dot kernel. By default int8 rows on a CPU with
    ///     AVX-512 VNNI go through an integer prefilter with a proven error bound that skips
    ///     only rows which cannot reach the top-k (same results, less arithmetic; see
    ///     docs/kernels.md); this switch exists for tests and benchmarks.
    /// - Returns: `queryCount` lists of at most `k` items, each ranked best first.
    /// Allocates its heaps and scratch once per call (O(threads · queryCount · k)).
    public static func topK(queries: UnsafePointer<Float>, queryCount: Int, rows: RowMatrix,
                            ids: UnsafePointer<UInt64>, k: Int, excluding: [UInt64] = [], perQueryK: [Int]? = nil,
                            pool: WorkerPool? = nil, minRowsPerTask: Int = 32_768,
                            isa: KernelISA = .best, exact: Bool = false) -> [[ScoredID]] {
        precondition(queryCount >= 0 && k >= 0)
        precondition(perQueryK.map { $0.count == queryCount && $0.allSatisfy { $0 >= 0 && $0 <= k } } ?? true,
                     "perQueryK needs queryCount values in 0...k")
        guard queryCount > 0 else { return [] }
        guard k > 0, rows.count > 0 else { return Array(repeating: [], count: queryCount) }
        // The kernel binary-searches a sorted, duplicate-free list: no work when it already is
        // (the shard passes its requests' exclusions that way).
        let exclude = isSortedUnique(excluding) ? excluding : Array(Set(excluding)).sorted()
        let participants = pool?.participants(count: rows.count, minChunk: minRowsPerTask) ?? 1
        // Per-participant state, each participant's part padded to whole cache lines so that
        // two threads never write the same line.
        let heapStride = (queryCount + 1) & ~1          // srk_topk is 32 bytes: 2 per line
        let kStride = (k + 15) & ~15                     // 16 floats / 8 ids per line
        let heapCount = participants * heapStride
        let heapScores = UnsafeMutableRawPointer.allocate(byteCount: heapCount * kStride * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: heapCount * kStride)
        let heapIDs = UnsafeMutableRawPointer.allocate(byteCount: heapCount * kStride * 8, alignment: 64)
            .bindMemory(to: UInt64.self, capacity: heapCount * kStride)
        let heaps = UnsafeMutableRawPointer.allocate(byteCount: heapCount * MemoryLayout<srk_topk>.stride, alignment: 64)
            .bindMemory(to: srk_topk.self, capacity: heapCount)
        let scratchCount = participants * queryCount * Int(SRK_SEARCH_BLOCK)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: scratchCount * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: scratchCount)
        defer {
            heapScores.deallocate(); heapIDs.deallocate(); heaps.deallocate(); scratch.deallocate()
        }
        for h in 0..<heapCount {
            let q = h % heapStride
            let capacity = q < queryCount ? perQueryK?[q] ?? k : 0
            (heaps + h).initialize(to: srk_topk(scores: heapScores + h * kStride, ids: heapIDs + h * kStride,
                                                count: 0, capacity: Int64(capacity)))
        }
        let table = isa.table
        let dtype = rows.elementType.rawValue
        exclude.withUnsafeBufferPointer { ex in
            let run = { (range: Range<Int>, p: Int) in
                let part = rows.slice(range)
                srk_search(table, dtype, queries, Int64(queryCount), part.base, part.scales,
                           ids + range.lowerBound, Int64(range.count), Int64(rows.dimension),
                           ex.baseAddress, Int64(ex.count), heaps + p * heapStride,
                           scratch + p * queryCount * Int(SRK_SEARCH_BLOCK),
                           exact ? SRK_SEARCH_EXACT : SRK_SEARCH_AUTO)
            }
            if let pool, participants > 1 {
                pool.parallelFor(count: rows.count, minChunk: minRowsPerTask, run)
            } else {
                run(0..<rows.count, 0)
            }
        }
        // Merge the participants' heaps into the first participant's.
        var results: [[ScoredID]] = []
        results.reserveCapacity(queryCount)
        for q in 0..<queryCount {
            let dst = heaps + q
            for p in 1..<max(participants, 1) {
                let src = heaps[p * heapStride + q]
                srk_topk_push_many(dst, src.scores, src.ids, 0, src.count, nil, 0)
            }
            srk_topk_sort(dst)
            let h = dst.pointee
            results.append((0..<Int(h.count)).map { ScoredID(id: h.ids![$0], score: h.scores![$0]) })
        }
        return results
    }

    static func isSortedUnique(_ ids: [UInt64]) -> Bool {
        var i = 1
        while i < ids.count {
            if ids[i] <= ids[i - 1] { return false }
            i += 1
        }
        return true
    }
}
