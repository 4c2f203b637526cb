import Testing
import ShardRankKernels

/// The int8 search prefilter (AVX-512 VNNI, search_vnni.c) must return exactly what the exact
/// scan returns — same ids, same scores, bit for bit — because it only skips rows whose proven
/// upper bound is below the running top-k threshold and scores the rest with the same kernel.
/// The inputs are built to stress the bound: non-integer scales, near-ties (duplicated rows
/// and rows differing in one step), queries with a wide dynamic range, every dimension the
/// prefilter takes (1...128, with the byte masks of d < 64 and 64 < d < 128) and one it does
/// not (129, the exact path).
@Suite struct SearchPrefilterTests {
    /// int8 rows with per-row scales; every 3rd row repeats the previous one and every 5th
    /// differs from it in one element, so many scores tie or nearly tie.
    final class Rows: @unchecked Sendable {
        let values: UnsafeMutablePointer<Int8>
        let scales: UnsafeMutablePointer<Float>
        let matrix: RowMatrix
        init(count: Int, dimension d: Int, rng: inout SplitMix64) {
            values = .allocate(capacity: count * d)
            scales = .allocate(capacity: count)
            for r in 0..<count {
                if r > 0 && r % 3 == 0 {
                    (values + r * d).update(from: values + (r - 1) * d, count: d)
                    scales[r] = scales[r - 1]
                } else {
                    for j in 0..<d { values[r * d + j] = Int8(rng.int(-127, 127)) }
                    scales[r] = 0.003 + abs(rng.uniform(0.02))
                }
                if r > 0 && r % 5 == 0 {
                    (values + r * d).update(from: values + (r - 1) * d, count: d)
                    scales[r] = scales[r - 1]
                    let j = rng.int(0, d - 1)
                    values[r * d + j] = values[r * d + j] == 127 ? 126 : values[r * d + j] + 1
                }
            }
            matrix = RowMatrix(int8: values, scales: scales, count: count, dimension: d)
        }
        deinit { values.deallocate(); scales.deallocate() }
    }

    @Test(.enabled(if: KernelISA.avx512.isSupported, "the int8 prefilter is AVX-512 only: skipped (and reported) without it"),
          arguments: [1, 3, 16, 37, 63, 64, 65, 100, 127, 128, 129])
    func prefilterEqualsExactScan(d: Int) {
        var rng = SplitMix64(seed: 0xABC0 + UInt64(d))
        let n = 5003
        let rows = Rows(count: n, dimension: d, rng: &rng)
        let ids: [UInt64] = (0..<n).map { UInt64(($0 * 7919) % n * 3 + 1) }
        let qn = 5
        var queries = makeQueries(qn, d, integer: false, rng: &rng)
        queries[0] *= 1000               // one dominant component
        queries[d] = 1e-30               // a tiny one (query 1)
        for j in 0..<d { queries[2 * d + j] = Float(j % 2 == 0 ? 1 : -1) * 0.125 } // exact digits
        let exclude: [UInt64] = (0..<40).map { _ in ids[rng.int(0, n - 1)] }
        let pool = WorkerPool(threadCount: 2)
        for k in [1, 17, 300] {
            for usePool in [false, true] {
                func run(_ exact: Bool, _ count: Int, _ offset: Int) -> [[ScoredID]] {
                    queries.withUnsafeBufferPointer { q in
                        ids.withUnsafeBufferPointer { idp in
                            Search.topK(queries: q.baseAddress! + offset * d, queryCount: count, rows: rows.matrix,
                                        ids: idp.baseAddress!, k: k, excluding: exclude, pool: usePool ? pool : nil,
                                        minRowsPerTask: 1000, isa: .avx512, exact: exact)
                        }
                    }
                }
                // One query at a time on both sides: the exact scan then uses the same
                // single-query kernel as the prefilter's rescoring, so results are bitwise equal.
                for qi in 0..<qn {
                    let want = run(true, 1, qi)
                    let got = run(false, 1, qi)
                    #expect(got == want, "d=\(d) k=\(k) pool=\(usePool) q=\(qi)")
                    #expect(want[0].count == min(k, n - Set(exclude).count))
                }
                // A batch goes through the prefilter query by query; same answers. (At d = 129
                // the batch takes the exact multi-query tile, whose rounding differs in the last bit.)
                guard d <= 128 else { continue }
                let batch = run(false, qn, 0)
                for qi in 0..<qn { #expect(batch[qi] == run(true, 1, qi)[0], "batch d=\(d) k=\(k) q=\(qi)") }
            }
        }
    }

    @Test(.enabled(if: KernelISA.avx512.isSupported, "the int8 prefilter is AVX-512 only: skipped (and reported) without it"))
    func zeroNonFiniteAndExtremeQueriesFallBackToTheExactScan() {
        var rng = SplitMix64(seed: 77)
        let d = 64, n = 700
        let rows = Rows(count: n, dimension: d, rng: &rng)
        let ids: [UInt64] = (0..<n).map { UInt64($0) }
        for special: Float in [0, .nan, .infinity, 1e-30, 1e30] {
            var q = makeQueries(1, d, integer: false, rng: &rng)
            if special == 0 { q = Array(repeating: 0, count: d) }
            else if special.isFinite { q = q.map { $0 * special } }   // extreme magnitudes
            else { q[5] = special }
            func run(_ exact: Bool) -> [[ScoredID]] {
                q.withUnsafeBufferPointer { qp in
                    ids.withUnsafeBufferPointer {
                        Search.topK(queries: qp.baseAddress!, queryCount: 1, rows: rows.matrix, ids: $0.baseAddress!,
                                    k: 10, isa: .avx512, exact: exact)
                    }
                }
            }
            let a = run(true), b = run(false)
            #expect(a.map { $0.map(\.id) } == b.map { $0.map(\.id) }, "query with \(special)")
        }
    }
}
