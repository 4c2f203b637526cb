import Testing
import ShardRankKernels

/// The IVF-PQ4 index: the fast-scan variants against the scalar reference (exact integer sums),
/// the search against the exact scan, exclusions, and a deterministic build.
@Suite struct IVFPQTests {
    /// Clustered test vectors: `clusters` random centres plus small noise, and a popularity-like
    /// last coordinate (skewed norms, as in recommendation embeddings).
    static func clustered(count: Int, dimension d: Int, clusters: Int = 24, seed: UInt64 = 7) -> [Float] {
        var rng = SplitMix64(seed: seed)
        let centres = (0..<(clusters * d)).map { _ in rng.uniform() }
        var x = [Float](repeating: 0, count: count * d)
        for r in 0..<count {
            let c = rng.int(0, clusters - 1)
            for j in 0..<d { x[r * d + j] = centres[c * d + j] + 0.3 * rng.uniform() }
            x[r * d + d - 1] = abs(rng.uniform()) * abs(rng.uniform()) * 2
        }
        return x
    }

    @Test(arguments: [4, 8, 32, 64, 128])
    func fastScanVariantsEqualTheReference(subspaces m: Int) {
        var rng = SplitMix64(seed: UInt64(m))
        let blocks = 5
        let codes = (0..<(blocks * 16 * m)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        // Extreme tables too: every entry 255 reaches the largest sum m * 255.
        for lut in [(0..<(m * 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, [UInt8](repeating: 255, count: m * 16)] {
            var want = [UInt16](repeating: 0, count: blocks * 32)
            PQ4FastScan.reference(codes: codes, blocks: blocks, subspaces: m, lut: lut, out: &want)
            for isa in KernelISA.allCases where isa.isSupported {
                var got = [UInt16](repeating: 0, count: blocks * 32)
                PQ4FastScan.scan(codes: codes, blocks: blocks, subspaces: m, lut: lut, out: &got, isa: isa)
                #expect(got == want, "\(isa), m = \(m)")
            }
        }
    }

    @Test(.enabled(if: KernelISA.avx512.isSupported, "needs a CPU with AVX-512"), arguments: [4, 32, 128])
    func avx512FastScanEqualsTheReference(subspaces m: Int) {
        var rng = SplitMix64(seed: 77)
        let blocks = 3
        let codes = (0..<(blocks * 16 * m)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let lut = (0..<(m * 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var want = [UInt16](repeating: 0, count: blocks * 32), got = want
        PQ4FastScan.reference(codes: codes, blocks: blocks, subspaces: m, lut: lut, out: &want)
        PQ4FastScan.scan(codes: codes, blocks: blocks, subspaces: m, lut: lut, out: &got, isa: .avx512)
        #expect(got == want)
    }

    func exactTopK(_ x: [Float], d: Int, query: UnsafePointer<Float>, k: Int, excluding: [UInt64] = []) -> [ScoredID] {
        let ids = (0..<UInt64(x.count / d)).map { $0 }
        return x.withUnsafeBufferPointer { xp in
            ids.withUnsafeBufferPointer { Search.topK(queries: query, queryCount: 1, rows: RowMatrix(f32: xp.baseAddress!, count: x.count / d, dimension: d), ids: $0.baseAddress!, k: k, excluding: excluding)[0] }
        }
    }

    @Test(arguments: [(3, 1), (17, 2), (64, 2), (100, 4)])
    func searchReachesHighRecallAndScoresExactly(dimension d: Int, subspaceDimension dsub: Int) throws {
        let n = 6000
        let x = Self.clustered(count: n, dimension: d)
        let ids = (0..<UInt64(n)).map { $0 }
        let data = try x.withUnsafeBufferPointer { xp in
            try IVFPQBuilder.build(rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d),
                                   options: IVFPQBuildOptions(lists: 64, subspaceDimension: dsub), pool: WorkerPool(threadCount: 2))
        }
        let index = data.index
        #expect(index.validate(rowCount: n) == nil)
        var hits = 0, total = 0
        var rng = SplitMix64(seed: 99)
        for _ in 0..<40 {
            let q = (0..<d).map { _ in rng.uniform() }
            let exact = q.withUnsafeBufferPointer { exactTopK(x, d: d, query: $0.baseAddress!, k: 10) }
            let approx = x.withUnsafeBufferPointer { xp in q.withUnsafeBufferPointer { qp in ids.withUnsafeBufferPointer { ip in
                index.search(query: qp.baseAddress!, k: 10, parameters: ANNSearchParameters(nprobe: 16, rerank: 100),
                             rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d), ids: ip.baseAddress!).items } } }
            #expect(approx.count == 10)
            // Best first, and each score is the exact kernel's score of that row.
            #expect(zip(approx, approx.dropFirst()).allSatisfy { !ScoredID.ranksBefore($1, $0) })
            let exactScores = Dictionary(uniqueKeysWithValues: exactTopK(x, d: d, query: q, k: n).map { ($0.id, $0.score) })
            for it in approx { #expect(exactScores[it.id] == it.score) }
            let want = Set(exact.map(\.id))
            hits += approx.filter { want.contains($0.id) }.count
            total += 10
            // withRows: the same hits (under ids that are not the row numbers), each with its row.
            let permuted = (0..<UInt64(n)).map { ($0 &* 7919) % UInt64(n) + 1_000_000 }
            let plain = x.withUnsafeBufferPointer { xp in q.withUnsafeBufferPointer { qp in permuted.withUnsafeBufferPointer { ip in
                index.search(query: qp.baseAddress!, k: 10, parameters: ANNSearchParameters(nprobe: 16, rerank: 100),
                             rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d), ids: ip.baseAddress!) } } }
            let rowed = x.withUnsafeBufferPointer { xp in q.withUnsafeBufferPointer { qp in permuted.withUnsafeBufferPointer { ip in
                index.search(query: qp.baseAddress!, k: 10, parameters: ANNSearchParameters(nprobe: 16, rerank: 100),
                             rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d), ids: ip.baseAddress!, withRows: true) } } }
            #expect(rowed.items == plain.items && plain.rows.isEmpty)
            #expect(rowed.rows.count == rowed.items.count && zip(rowed.rows, rowed.items).allSatisfy { permuted[$0] == $1.id })
        }
        #expect(Double(hits) / Double(total) >= 0.9, "recall@10 \(Double(hits) / Double(total))")
        withExtendedLifetime(data) {}
    }

    /// With every list probed and every row re-ranked, the index must give exactly the exact
    /// top-k, on every instruction set this machine has: any candidate the selection steps lose
    /// (the probe order, the histogram cut of the candidate buffer, the final top-k) shows up as a
    /// difference. Covers the small-k insertion paths (k 10, nprobe ≤ 64) and the large ones
    /// (k 100: quickselect; 128 lists probed: heapsort), and a partial probe's recall per ISA.
    @Test(arguments: [(10, 64), (100, 128)])
    func everyISAReturnsTheExactTopKWhenItProbesEverything(k: Int, lists: Int) throws {
        let n = 3000, d = 12
        let x = Self.clustered(count: n, dimension: d)
        let ids = (0..<UInt64(n)).map { $0 }
        let data = try x.withUnsafeBufferPointer { xp in
            try IVFPQBuilder.build(rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d),
                                   options: IVFPQBuildOptions(lists: lists), pool: WorkerPool(threadCount: 2))
        }
        let index = data.index
        var rng = SplitMix64(seed: 5)
        var checked = 0
        for isa in KernelISA.allCases where isa.isSupported {
            var partialHits = 0
            for _ in 0..<12 {
                let q = (0..<d).map { _ in rng.uniform() }
                let exact = q.withUnsafeBufferPointer { exactTopK(x, d: d, query: $0.baseAddress!, k: k) }
                func run(_ p: ANNSearchParameters) -> [ScoredID] {
                    x.withUnsafeBufferPointer { xp in q.withUnsafeBufferPointer { qp in ids.withUnsafeBufferPointer { ip in
                        index.search(query: qp.baseAddress!, k: k, parameters: p,
                                     rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d), ids: ip.baseAddress!, isa: isa).items } } }
                }
                let all = run(ANNSearchParameters(nprobe: lists, rerank: 2 * n))
                #expect(all.map(\.id) == exact.map(\.id), "\(isa): probing everything must be exact")
                let part = run(ANNSearchParameters(nprobe: 8, rerank: 4 * k))
                #expect(part.count == k)
                partialHits += Set(part.map(\.id)).intersection(exact.map(\.id)).count
            }
            #expect(Double(partialHits) / Double(12 * k) >= 0.8, "\(isa): recall@\(k) \(Double(partialHits) / Double(12 * k))")
            checked += 1
        }
        #expect(checked >= 1)
        withExtendedLifetime(data) {}
    }

    @Test(arguments: [0.01, 0.1, 0.5])
    func excludedRowsAreNeverReturnedAndKResultsStillComeBack(share: Double) throws {
        let n = 5000, d = 16
        let x = Self.clustered(count: n, dimension: d, seed: 3)
        let ids = (0..<UInt64(n)).map { $0 * 7 + 1 }
        var rng = SplitMix64(seed: 5)
        let excluded = Set((0..<Int(share * Double(n))).map { _ in UInt32(rng.int(0, n - 1)) })
        let sorted = excluded.sorted()
        let data = try x.withUnsafeBufferPointer { xp in
            try IVFPQBuilder.build(rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d), options: IVFPQBuildOptions(lists: 32))
        }
        var hits = 0, total = 0
        for t in 0..<30 {
            let q = (0..<d).map { _ in rng.uniform() }
            let got = x.withUnsafeBufferPointer { xp in q.withUnsafeBufferPointer { qp in ids.withUnsafeBufferPointer { ip in
                sorted.withUnsafeBufferPointer { ex in
                    data.index.search(query: qp.baseAddress!, k: 10, parameters: ANNSearchParameters(nprobe: share >= 0.5 ? 24 : 12, rerank: 80),
                                      rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d), ids: ip.baseAddress!, excludedRows: ex).items
                } } } }
            #expect(got.count == 10, "query \(t)")
            for it in got { #expect(!excluded.contains(UInt32((it.id - 1) / 7)), "excluded row returned") }
            let exact = x.withUnsafeBufferPointer { xp in q.withUnsafeBufferPointer { qp in ids.withUnsafeBufferPointer { ip in
                Search.topK(queries: qp.baseAddress!, queryCount: 1, rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d),
                            ids: ip.baseAddress!, k: 10, excluding: sorted.map { ids[Int($0)] })[0] } } }
            let want = Set(exact.map(\.id))
            hits += got.filter { want.contains($0.id) }.count
            total += 10
        }
        #expect(Double(hits) / Double(total) >= 0.95, "recall@10 \(Double(hits) / Double(total)) with \(share) excluded")
    }

    @Test func buildIsDeterministicForASeedWhateverTheThreadCount() throws {
        let n = 3000, d = 8
        let x = Self.clustered(count: n, dimension: d, seed: 11)
        func build(_ threads: Int, seed: UInt64) throws -> IVFPQIndexData {
            try x.withUnsafeBufferPointer { xp in
                try IVFPQBuilder.build(rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d),
                                       options: IVFPQBuildOptions(lists: 16, seed: seed), pool: threads > 1 ? WorkerPool(threadCount: threads) : nil)
            }
        }
        let a = try build(1, seed: 1), b = try build(3, seed: 1), c = try build(2, seed: 2)
        #expect(Array(a.codes) == Array(b.codes))
        #expect(Array(a.rows) == Array(b.rows))
        #expect(Array(a.centroids) == Array(b.centroids))
        #expect(Array(a.codebooks) == Array(b.codebooks))
        #expect(Array(a.centroids) != Array(c.centroids), "another seed gives another index")
    }

    @Test func badInputIsRefused() {
        let nan: [Float] = [1, 2, .nan, 4]
        #expect(throws: IVFPQBuilder.BuildError.self) {
            try nan.withUnsafeBufferPointer { try IVFPQBuilder.build(rows: RowMatrix(f32: $0.baseAddress!, count: 2, dimension: 2)) }
        }
        let one: [Float] = [1]
        #expect(throws: IVFPQBuilder.BuildError.self) {
            try one.withUnsafeBufferPointer { try IVFPQBuilder.build(rows: RowMatrix(f32: $0.baseAddress!, count: 0, dimension: 1)) }
        }
        let wide = [Float](repeating: 1, count: 600)
        #expect(throws: IVFPQBuilder.BuildError.self) {
            try wide.withUnsafeBufferPointer { try IVFPQBuilder.build(rows: RowMatrix(f32: $0.baseAddress!, count: 2, dimension: 300),
                                                                     options: IVFPQBuildOptions(subspaceDimension: 2)) }
        }
    }
}

/// `IVFPQIndex.validate` catches the layouts a damaged or foreign index file could describe.
@Suite struct IVFPQValidationTests {
    @Test func brokenLayoutsAreReported() throws {
        let n = 400, d = 4
        let x = IVFPQTests.clustered(count: n, dimension: d)
        let data = try x.withUnsafeBufferPointer { try IVFPQBuilder.build(rows: RowMatrix(f32: $0.baseAddress!, count: n, dimension: d),
                                                                         options: IVFPQBuildOptions(lists: 4)) }
        #expect(data.index.validate(rowCount: n) == nil)
        #expect(data.index.validate(rowCount: n + 1) != nil, "a row missing from the index")
        #expect(data.index.validate(rowCount: n - 1) != nil, "a row number out of range")
        // The same row twice in one list.
        let first = Int(data.listOffsets[0])
        let saved = data.rows[first + 1]
        data.rows[first + 1] = data.rows[first]
        #expect(data.index.validate(rowCount: n) != nil)
        data.rows[first + 1] = saved
        // Offsets that are not whole blocks.
        data.listOffsets[1] += 1
        #expect(data.index.validate(rowCount: n) != nil)
        data.listOffsets[1] -= 1
        let r0 = data.rotation[1]
        data.rotation[1] += 0.5
        #expect(data.index.validate(rowCount: n) != nil, "a rotation that is not orthogonal")
        data.rotation[1] = r0
        #expect(data.index.validate(rowCount: n) == nil)
        data.centroids[0] = .nan
        #expect(data.index.validate(rowCount: n) != nil)
    }

    @Test func rotationIsOrthogonalAndOptional() throws {
        let n = 2000, d = 12
        let x = IVFPQTests.clustered(count: n, dimension: d, seed: 4)
        for rotate in [true, false] {
            let data = try x.withUnsafeBufferPointer { try IVFPQBuilder.build(rows: RowMatrix(f32: $0.baseAddress!, count: n, dimension: d),
                                                                             options: IVFPQBuildOptions(lists: 16, rotate: rotate)) }
            #expect(data.index.validate(rowCount: n) == nil)
            let identity = (0..<(d * d)).allSatisfy { data.rotation[$0] == ($0 % (d + 1) == 0 ? 1 : 0) }
            #expect(identity == !rotate)
        }
    }

    @Test func spillFilesEveryRowInTwoListsAndRaisesRecall() throws {
        let n = 4000, d = 16
        let x = IVFPQTests.clustered(count: n, dimension: d, seed: 21)
        func build(_ spill: Bool) throws -> IVFPQIndexData {
            try x.withUnsafeBufferPointer { try IVFPQBuilder.build(rows: RowMatrix(f32: $0.baseAddress!, count: n, dimension: d),
                                                                  options: IVFPQBuildOptions(lists: 64, spill: spill)) }
        }
        let one = try build(false), two = try build(true)
        let count = { (data: IVFPQIndexData) in data.rows.filter { $0 != UInt32.max }.count }
        #expect(count(one) == n && count(two) == 2 * n)
        // Recall with few lists probed and a deep re-rank (so the lists decide): spill helps.
        let ids = (0..<UInt64(n)).map { $0 }
        var rng = SplitMix64(seed: 8)
        var hits = [0, 0]
        for _ in 0..<60 {
            let q = (0..<d).map { _ in rng.uniform() }
            let exact = Set(x.withUnsafeBufferPointer { xp in q.withUnsafeBufferPointer { qp in ids.withUnsafeBufferPointer { ip in
                Search.topK(queries: qp.baseAddress!, queryCount: 1, rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d), ids: ip.baseAddress!, k: 10)[0] } } }.map(\.id))
            for (i, data) in [one, two].enumerated() {
                let got = x.withUnsafeBufferPointer { xp in q.withUnsafeBufferPointer { qp in ids.withUnsafeBufferPointer { ip in
                    data.index.search(query: qp.baseAddress!, k: 10, parameters: ANNSearchParameters(nprobe: 2, rerank: 1000),
                                      rows: RowMatrix(f32: xp.baseAddress!, count: n, dimension: d), ids: ip.baseAddress!).items } } }
                #expect(Set(got.map(\.id)).count == got.count, "a spilled row returned twice")
                hits[i] += got.filter { exact.contains($0.id) }.count
            }
        }
        #expect(hits[1] > hits[0], "spill \(hits[1]) vs none \(hits[0]) of 600")
    }
}
