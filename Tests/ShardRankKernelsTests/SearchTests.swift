import Testing
import ShardRankKernels

/// The fused search kernel against reference dot products + full sort, for every ISA and
/// dtype, with exclusions, split over a pool and not.
@Suite struct SearchTests {
    static let cases: [(KernelISA, RowElementType)] =
        KernelISA.supported.flatMap { isa in RowElementType.allCases.map { (isa, $0) } }

    @Test(arguments: cases)
    func searchMatchesReference(isa: KernelISA, type: RowElementType) {
        let pool = WorkerPool(threadCount: 2)
        for d in [7, 16, 64, 100] {
            var rng = SplitMix64(seed: UInt64(d))
            let n = 1531
            let rows = OwnedRows(type, count: n, dimension: d, integer: true, rng: &rng)
            // A permutation, so that equal scores do not arrive in id order.
            let ids: [UInt64] = (0..<n).map { UInt64(($0 * 7919) % n * 5 + 11) }
            let qn = 4
            let queries = makeQueries(qn, d, integer: true, rng: &rng)
            let exclude: [UInt64] = (0..<30).map { _ in ids[rng.int(0, n - 1)] }
            for k in [1, 10, 100] {
                for usePool in [false, true] {
                    let got = queries.withUnsafeBufferPointer { q in
                        ids.withUnsafeBufferPointer { idp in
                            Search.topK(queries: q.baseAddress!, queryCount: qn, rows: rows.matrix, ids: idp.baseAddress!,
                                        k: k, excluding: exclude, pool: usePool ? pool : nil, minRowsPerTask: 200, isa: isa)
                        }
                    }
                    #expect(got.count == qn)
                    for qi in 0..<qn {
                        let ref = queries.withUnsafeBufferPointer {
                            KernelReference.dot(query: $0.baseAddress! + qi * d, rows: rows.matrix)
                        }
                        let items = (0..<n).filter { !exclude.contains(ids[$0]) }.map { ScoredID(id: ids[$0], score: ref[$0]) }
                        #expect(got[qi] == KernelReference.topK(items, k: k),
                                "\(isa) \(type) d=\(d) k=\(k) pool=\(usePool) q=\(qi)")
                    }
                }
            }
        }
    }

    @Test func emptyInputs() {
        var rng = SplitMix64(seed: 1)
        let rows = OwnedRows(.f32, count: 0, dimension: 4, integer: true, rng: &rng)
        let q: [Float] = [1, 2, 3, 4]
        let ids: [UInt64] = [0]
        let got = q.withUnsafeBufferPointer { qp in
            ids.withUnsafeBufferPointer { Search.topK(queries: qp.baseAddress!, queryCount: 1, rows: rows.matrix, ids: $0.baseAddress!, k: 5) }
        }
        #expect(got == [[]])
    }
}
