internal import CShardRankKernels
#if canImport(Glibc)
internal import Glibc
private func Foundation_log(_ x: Double) -> Double { Glibc.log(x) }
private func Foundation_cos(_ x: Double) -> Double { Glibc.cos(x) }
#endif

/// How to build an IVF-PQ4 index (`IVFPQBuilder.build`). Every choice is deterministic for a
/// given seed: the same rows and options give byte-identical arrays on any number of threads.
public struct IVFPQBuildOptions: Sendable, Hashable {
    /// Lists (k-means centroids); nil = `IVFPQBuilder.defaultListCount(rows:)`.
    public var lists: Int?
    /// Dimensions per 4-bit subspace (2: 64-dim vectors take 32 codes, 16 bytes).
    public var subspaceDimension: Int
    public var seed: UInt64
    /// Coarse k-means: iterations, and training points per centroid (a seeded sample).
    public var iterations: Int
    public var pointsPerCentroid: Int
    /// Codebook k-means (16 codewords per subspace): sample size and iterations.
    public var codebookSample: Int
    public var codebookIterations: Int
    /// Also file every row in a second list (SOAR, Sun et al. 2023): the list whose residual is
    /// most orthogonal to the row's primary residual, so that a query the primary list's centroid
    /// underrates finds the row through the second. Twice the codes, higher recall per list probed.
    public var spill: Bool
    /// SOAR's λ: the weight of the residuals' alignment in choosing the second list.
    public var spillWeight: Float
    /// Code residuals after a seeded random rotation (orthogonal, so inner products are
    /// unchanged): spreads a dominant coordinate (e.g. a popularity dimension) over every
    /// subspace, so the shared u8 step of the lookup tables loses less precision.
    public var rotate: Bool

    public init(lists: Int? = nil, subspaceDimension: Int = 0, seed: UInt64 = 0x5eed, iterations: Int = 10,
                pointsPerCentroid: Int = 32, codebookSample: Int = 65_536, codebookIterations: Int = 16,
                spill: Bool = true, spillWeight: Float = 1, rotate: Bool = true) {
        self.rotate = rotate
        self.spill = spill
        self.spillWeight = spillWeight
        self.lists = lists
        self.subspaceDimension = subspaceDimension
        self.seed = seed
        self.iterations = iterations
        self.pointsPerCentroid = pointsPerCentroid
        self.codebookSample = codebookSample
        self.codebookIterations = codebookIterations
    }
}

/// An IVF-PQ4 index held in memory (what the builder makes and the index-file writer stores).
/// Owns its arrays; `index` is a view valid while this object is alive.
public final class IVFPQIndexData: @unchecked Sendable {
    public let dimension: Int
    public let listCount: Int
    public let subspaces: Int
    public let subspaceDimension: Int
    public let centroids: UnsafeMutableBufferPointer<Float>
    public let codebooks: UnsafeMutableBufferPointer<Float>
    /// `dimension²` floats, row-major: residuals are coded as `rotation · (row − centroid)`.
    public let rotation: UnsafeMutableBufferPointer<Float>
    public let listOffsets: UnsafeMutableBufferPointer<Int64>
    public let codes: UnsafeMutableBufferPointer<UInt8>
    public let rows: UnsafeMutableBufferPointer<UInt32>
    /// `listCount` probe bonuses: `probeBonusWeight × listSpread`.
    public let listBonus: UnsafeMutableBufferPointer<Float>
    /// Each list's spread (`IVFPQIndex.computeListSpread`), computed by `finish()`.
    public let listSpread: UnsafeMutableBufferPointer<Float>
    /// The weight of the lists' spread in the probe order (0: centroid scores alone); stored in
    /// the index file. Set by `setProbeBonusWeight`.
    public private(set) var probeBonusWeight: Float = 0

    init(dimension: Int, listCount: Int, subspaces: Int, subspaceDimension: Int, positions: Int) {
        func alloc<T>(_ n: Int, _ fill: T) -> UnsafeMutableBufferPointer<T> {
            let raw = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1) * MemoryLayout<T>.stride, alignment: 64)
            let p = raw.bindMemory(to: T.self, capacity: max(n, 1))
            p.initialize(repeating: fill, count: max(n, 1))
            return UnsafeMutableBufferPointer(start: p, count: n)
        }
        self.dimension = dimension
        self.listCount = listCount
        self.subspaces = subspaces
        self.subspaceDimension = subspaceDimension
        centroids = alloc(listCount * dimension, 0)
        codebooks = alloc(subspaces * 16 * subspaceDimension, 0)
        rotation = alloc(dimension * dimension, 0)
        listOffsets = alloc(listCount + 1, 0)
        codes = alloc(positions / 32 * 16 * subspaces, 0)
        rows = alloc(positions, UInt32.max)
        listBonus = alloc(listCount, 0)
        listSpread = alloc(listCount, 0)
    }

    /// Computes the lists' spreads once the codes are in place.
    func finish() {
        index.computeListSpread(into: listSpread.baseAddress!)
        setProbeBonusWeight(probeBonusWeight)
    }

    /// Sets the weight of the lists' spread in the probe order (finite, 0...64).
    public func setProbeBonusWeight(_ weight: Float) {
        precondition(weight.isFinite && weight >= 0 && weight <= 64, "probe bonus weight \(weight)")
        probeBonusWeight = weight
        for l in 0..<listCount { listBonus[l] = weight * listSpread[l] }
    }

    deinit {
        centroids.baseAddress!.deallocate(); codebooks.baseAddress!.deallocate(); rotation.baseAddress!.deallocate()
        listOffsets.baseAddress!.deallocate()
        codes.baseAddress!.deallocate(); rows.baseAddress!.deallocate(); listBonus.baseAddress!.deallocate(); listSpread.baseAddress!.deallocate()
    }

    /// A view of these arrays (valid while `self` is alive: use it inside `withExtendedLifetime`).
    public var index: IVFPQIndex {
        IVFPQIndex(dimension: dimension, listCount: listCount, subspaces: subspaces, subspaceDimension: subspaceDimension,
                   centroids: centroids.baseAddress!, codebooks: codebooks.baseAddress!, rotation: rotation.baseAddress!,
                   listOffsets: listOffsets.baseAddress!,
                   codes: codes.baseAddress!, rows: rows.baseAddress!, listBonus: listBonus.baseAddress!)
    }
}

/// Builds IVF-PQ4 indexes: coarse k-means (L2, on a seeded sample, GEMM-based assignment),
/// residual codebooks (16 codewords per subspace), then every row coded and laid out by list.
public enum IVFPQBuilder {
    /// The list count used when none is given: about 4·√rows, a power of two, at most rows / 32
    /// (so that a list holds a few blocks), at least 1.
    public static func defaultListCount(rows: Int) -> Int {
        guard rows >= 64 else { return 1 }
        let target = 4.0 * Double(rows).squareRoot()
        var n = 1
        while Double(n * 2) <= target && n * 2 <= rows / 32 { n *= 2 }
        return n
    }

    /// Subspaces for a dimension: ⌈dim / dsub⌉ rounded up to a multiple of 4.
    /// The subspace dimension used when the options ask for 0 (automatic): 1 (a 4-bit code per
    /// dimension: the finest codes, which on recommendation vectors need the fewest probes and
    /// re-ranks for a given recall; docs/kernels.md) while that fits `SRK_PQ4_MAX_M`
    /// subspaces, else the smallest that does.
    public static func automaticSubspaceDimension(dimension: Int) -> Int {
        max(1, (dimension + Int(SRK_PQ4_MAX_M) - 1) / Int(SRK_PQ4_MAX_M))
    }

    public static func subspaces(dimension: Int, subspaceDimension: Int) -> Int {
        let m = (dimension + subspaceDimension - 1) / subspaceDimension
        return (m + 3) / 4 * 4
    }

    public struct BuildError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Builds the index of `rows` (row numbers 0..<rows.count).
    /// - Parameters:
    ///   - pool: the work is split into fixed chunks over its threads (results do not depend on
    ///     the thread count).
    ///   - progress: called with a phase name and the fraction done (0...1), from the calling thread.
    /// - Throws: `BuildError` for an empty table, too many rows for `UInt32` row numbers, a
    ///   dimension too large for 4-bit codes, or non-finite values.
    public static func build(rows: RowMatrix, options: IVFPQBuildOptions = IVFPQBuildOptions(), pool: WorkerPool? = nil,
                             progress: (String, Double) -> Void = { _, _ in }) throws -> IVFPQIndexData {
        let n = rows.count, d = rows.dimension
        guard n >= 1 else { throw BuildError(description: "cannot index an empty table") }
        guard n < Int(UInt32.max) else { throw BuildError(description: "\(n) rows exceed the index's 32-bit row numbers") }
        guard options.subspaceDimension >= 0 else { throw BuildError(description: "subspace dimension must be at least 1 (0: automatic)") }
        let dsub = options.subspaceDimension == 0 ? automaticSubspaceDimension(dimension: d) : options.subspaceDimension
        let m = subspaces(dimension: d, subspaceDimension: dsub)
        guard m <= Int(SRK_PQ4_MAX_M) else {
            throw BuildError(description: "dimension \(d) needs \(m) subspaces of \(dsub) (at most \(SRK_PQ4_MAX_M)): use a larger subspace dimension")
        }
        let nlist = min(max(1, options.lists ?? defaultListCount(rows: n)), n)
        // All rows as f32 (the index describes the stored values, whatever their dtype).
        let x = UnsafeMutableBufferPointer<Float>.allocate(capacity: n * d)
        defer { x.deallocate() }
        try decode(rows, into: x.baseAddress!, pool: pool)
        var rng = SplitMix64(seed: options.seed)

        // 1. Coarse centroids: k-means on a sample.
        let sampleCount = min(n, max(nlist, nlist * max(1, options.pointsPerCentroid)))
        let sample = sampleRows(n: n, count: sampleCount, rng: &rng)
        let train = UnsafeMutableBufferPointer<Float>.allocate(capacity: sampleCount * d)
        defer { train.deallocate() }
        for (i, r) in sample.enumerated() { (train.baseAddress! + i * d).update(from: x.baseAddress! + r * d, count: d) }
        let centroids = kmeans(points: train.baseAddress!, count: sampleCount, dimension: d, k: nlist,
                               iterations: options.iterations, rng: &rng, pool: pool) { progress("k-means", $0) }

        // 2. Every row's list.
        var assign = [Int32](repeating: 0, count: n)
        assign.withUnsafeMutableBufferPointer { a in
            nearest(points: x.baseAddress!, count: n, dimension: d, centroids: centroids, k: nlist,
                    into: a.baseAddress!,
                    pool: pool) { progress("assign", $0) }
        }

        // 3. Residual codebooks: per-subspace k-means (16 codewords) on a sample of (rotated) residuals.
        let rotation = options.rotate ? randomRotation(d, seed: rng.next()) : (0..<(d * d)).map { $0 % (d + 1) == 0 ? Float(1) : 0 }
        let cbSample = sampleRows(n: n, count: min(n, options.codebookSample), rng: &rng)
        let cb = UnsafeMutableBufferPointer<Float>.allocate(capacity: m * 16 * dsub)
        defer { cb.deallocate() }
        cb.initialize(repeating: 0)
        trainCodebooks(x: x.baseAddress!, d: d, centroids: centroids, rotation: rotation, assign: assign, sample: cbSample, m: m, dsub: dsub,
                       iterations: options.codebookIterations, seed: rng.next(), into: cb.baseAddress!, pool: pool)
        progress("codebooks", 1)

        // 4. The entries: every row in its list, and (spill) in a second list.
        var entryRow = [Int32](), entryList = [Int32]()
        entryRow.reserveCapacity(options.spill ? 2 * n : n)
        entryList.reserveCapacity(options.spill ? 2 * n : n)
        let second: [Int32]? = options.spill && nlist > 1
            ? spillAssign(x: x.baseAddress!, n: n, d: d, centroids: centroids, k: nlist, primary: assign, weight: options.spillWeight, pool: pool)
            : nil
        for r in 0..<n {
            entryRow.append(Int32(r)); entryList.append(assign[r])
            if let second { entryRow.append(Int32(r)); entryList.append(second[r]) }
        }
        progress("spill", 1)

        // 5. Codes of every entry's residual (one byte per subspace, packed into blocks below).
        let entries = entryRow.count
        let flat = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: entries * m)
        defer { flat.deallocate() }
        encode(x: x.baseAddress!, d: d, centroids: centroids, rotation: rotation, rows: entryRow, lists: entryList, codebooks: cb.baseAddress!, m: m,
               dsub: dsub, into: flat.baseAddress!, pool: pool) { progress("encode", $0) }

        // 6. Layout: lists padded to whole blocks, entries in ascending row order within a list.
        var counts = [Int](repeating: 0, count: nlist)
        for a in entryList { counts[Int(a)] += 1 }
        var offsets = [Int](repeating: 0, count: nlist + 1)
        for l in 0..<nlist { offsets[l + 1] = offsets[l] + (counts[l] + 31) / 32 * 32 }
        let data = IVFPQIndexData(dimension: d, listCount: nlist, subspaces: m, subspaceDimension: dsub, positions: offsets[nlist])
        centroids.withUnsafeBufferPointer { data.centroids.baseAddress!.update(from: $0.baseAddress!, count: nlist * d) }
        data.codebooks.baseAddress!.update(from: cb.baseAddress!, count: m * 16 * dsub)
        for i in 0..<(d * d) { data.rotation[i] = rotation[i] }
        for l in 0...nlist { data.listOffsets[l] = Int64(offsets[l]) }
        var fill = offsets
        for e in 0..<entries {
            let l = Int(entryList[e])
            let p = fill[l]
            fill[l] += 1
            data.rows[p] = UInt32(entryRow[e])
            let blk = data.codes.baseAddress! + (p / 32) * 16 * m
            let v = p % 32
            for s in 0..<m {
                let c = flat[e * m + s]
                blk[(s / 2) * 32 + v] |= s % 2 == 0 ? c : c << 4
            }
        }
        data.finish()
        progress("layout", 1)
        return data
    }

    /// Chooses the index's probe-bonus weight (`IVFPQIndexData.setProbeBonusWeight`) among
    /// `IVFPQIndex.probeBonusWeights` by recall@`k` of `parameters` against the exact scan on
    /// `queries` (`count` vectors of the index's dimension), leaves the best one set (ties: the
    /// smaller weight) and returns it with its hits (approximate results in the exact top-`k`)
    /// and the exact results counted.
    @discardableResult
    public static func chooseProbeBonusWeight(_ data: IVFPQIndexData, rows: RowMatrix, ids: UnsafePointer<UInt64>,
                                              queries: UnsafePointer<Float>, count: Int, parameters: ANNSearchParameters,
                                              k: Int = 10) -> (weight: Float, hits: Int, asked: Int) {
        let d = data.dimension
        guard count > 0 else { return (data.probeBonusWeight, 0, 0) }
        let exact = Search.topK(queries: queries, queryCount: count, rows: rows, ids: ids, k: k).map { Set($0.map(\.id)) }
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: data.index.scratchBytes(parameters, k: k), alignment: 64)
        defer { scratch.deallocate() }
        var best: (weight: Float, hits: Int, asked: Int) = (0, -1, 0)
        for w in IVFPQIndex.probeBonusWeights {
            data.setProbeBonusWeight(w)
            let index = data.index
            var hits = 0, asked = 0
            for q in 0..<count {
                let got = index.search(query: queries + q * d, k: k, parameters: parameters, rows: rows, ids: ids, scratch: scratch).items
                hits += got.reduce(0) { $0 + (exact[q].contains($1.id) ? 1 : 0) }
                asked += exact[q].count
            }
            if hits > best.hits { best = (w, hits, asked) }
        }
        data.setProbeBonusWeight(best.weight)
        return best
    }

    // MARK: - Steps

    /// Fixed-size chunks over the pool (the chunking never depends on the thread count).
    static func chunks(_ count: Int, size: Int, pool: WorkerPool?, _ body: (Range<Int>) -> Void) {
        let nchunks = (count + size - 1) / size
        if let pool {
            pool.parallelFor(count: nchunks, minChunk: 1) { range, _ in
                for c in range { body((c * size)..<min(count, (c + 1) * size)) }
            }
        } else {
            for c in 0..<nchunks { body((c * size)..<min(count, (c + 1) * size)) }
        }
    }

    static func decode(_ rows: RowMatrix, into out: UnsafeMutablePointer<Float>, pool: WorkerPool?) throws {
        let d = rows.dimension
        chunks(rows.count, size: 4096, pool: pool) { range in
            switch rows.elementType {
            case .f32:
                (out + range.lowerBound * d).update(from: rows.base.assumingMemoryBound(to: Float.self) + range.lowerBound * d,
                                                    count: range.count * d)
            case .f16, .int8:
                for r in range {
                    let s = rows.scale(row: r)
                    for j in 0..<d { out[r * d + j] = rows.value(row: r, column: j) * s }
                }
            }
        }
        for i in 0..<(rows.count * d) where !out[i].isFinite {
            throw BuildError(description: "row \(i / d) has a non-finite value")
        }
    }

    /// `count` distinct row numbers of `0..<n`, in a seeded random order (a partial shuffle).
    static func sampleRows(n: Int, count: Int, rng: inout SplitMix64) -> [Int] {
        if count >= n { return Array(0..<n) }
        var picked = [Int: Int]() // sparse Fisher-Yates
        var out = [Int]()
        out.reserveCapacity(count)
        for i in 0..<count {
            let j = i + Int(rng.next() % UInt64(n - i))
            let vj = picked[j] ?? j
            picked[j] = picked[i] ?? i
            out.append(vj)
        }
        return out
    }

    /// For each point, the centroid with the smallest L2 distance (argmax of x·c − |c|²/2; ties
    /// to the lower centroid), computed with the packed GEMM in chunks of 256 points. (Assigning by
    /// the largest inner product instead collapses the lists onto a few large-norm centroids on
    /// skewed-norm data: recall@10 0.002-0.04 on the 1M synth world, BENCHMARKS.md.)
    static func nearest(points: UnsafePointer<Float>, count: Int, dimension d: Int, centroids: [Float], k: Int,
                        into out: UnsafeMutablePointer<Int32>, pool: WorkerPool?, progress: (Double) -> Void = { _ in }) {
        let t = KernelISA.best.table.pointee
        let packedSize = Int(t.gemm_packed_size(Int64(k), Int64(d)))
        let packed = UnsafeMutablePointer<Float>.allocate(capacity: packedSize)
        defer { packed.deallocate() }
        var half = [Float](repeating: 0, count: k)
        centroids.withUnsafeBufferPointer { c in
            t.gemm_pack_b(Int64(k), Int64(d), c.baseAddress!, Int64(d), packed)
            for j in 0..<k {
                var s: Float = 0
                for i in 0..<d { s += c[j * d + i] * c[j * d + i] }
                half[j] = 0.5 * s
            }
        }
        let chunk = 256
        let slices = 16 // progress granularity: the points in 16 slices, each chunked over the pool
        half.withUnsafeBufferPointer { hb in
            for s in 0..<slices {
                let lo = count * s / slices, hi = count * (s + 1) / slices
                chunks(hi - lo, size: chunk, pool: pool) { range in
                    let r0 = lo + range.lowerBound
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: chunk * k) { scores in
                        t.gemm_nt_packed(Int64(range.count), Int64(k), Int64(d), points + r0 * d, Int64(d), packed,
                                         scores.baseAddress!, Int64(k))
                        for i in 0..<range.count {
                            let row = scores.baseAddress! + i * k
                            var best = 0
                            var bv = row[0] - hb[0]
                            for j in 1..<k {
                                let v = row[j] - hb[j]
                                if v > bv { bv = v; best = j }
                            }
                            out[r0 + i] = Int32(best)
                        }
                    }
                }
                progress(Double(s + 1) / Double(slices))
            }
        }
    }

    /// Lloyd's k-means (L2) from `k` distinct sample points; an empty cluster takes half of the
    /// largest one (its centroid split by a small symmetric perturbation). Deterministic.
    static func kmeans(points: UnsafePointer<Float>, count: Int, dimension d: Int, k: Int, iterations: Int,
                       rng: inout SplitMix64, pool: WorkerPool?, progress: (Double) -> Void) -> [Float] {
        var c = [Float](repeating: 0, count: k * d)
        let init0 = sampleRows(n: count, count: k, rng: &rng)
        for (j, p) in init0.enumerated() { for i in 0..<d { c[j * d + i] = points[p * d + i] } }
        var assign = [Int32](repeating: 0, count: count)
        for it in 0..<max(1, iterations) {
            assign.withUnsafeMutableBufferPointer { a in
                nearest(points: points, count: count, dimension: d, centroids: c, k: k, into: a.baseAddress!, pool: pool)
            }
            var sums = [Double](repeating: 0, count: k * d)
            var sizes = [Int](repeating: 0, count: k)
            for p in 0..<count {
                let j = Int(assign[p])
                sizes[j] += 1
                for i in 0..<d { sums[j * d + i] += Double(points[p * d + i]) }
            }
            for j in 0..<k where sizes[j] > 0 {
                for i in 0..<d { c[j * d + i] = Float(sums[j * d + i] / Double(sizes[j])) }
            }
            for j in 0..<k where sizes[j] == 0 {
                let big = sizes.indices.max { sizes[$0] < sizes[$1] || (sizes[$0] == sizes[$1] && $0 > $1) }!
                for i in 0..<d {
                    let v = c[big * d + i]
                    let e: Float = (i % 2 == 0 ? 1 : -1) * 1e-3 * max(abs(v), 1e-3)
                    c[j * d + i] = v + e
                    c[big * d + i] = v - e
                }
                sizes[j] = sizes[big] / 2
                sizes[big] -= sizes[j]
            }
            progress(Double(it + 1) / Double(max(1, iterations)))
        }
        return c
    }

    /// 16 codewords per subspace from the residuals of the sampled rows (k-means per subspace,
    /// subspaces spread over the pool, each deterministic on its own).
    static func trainCodebooks(x: UnsafePointer<Float>, d: Int, centroids: [Float], rotation: [Float], assign: [Int32], sample: [Int], m: Int,
                               dsub: Int, iterations: Int, seed: UInt64, into cb: UnsafeMutablePointer<Float>, pool: WorkerPool?) {
        let ns = sample.count, width = m * dsub
        // The sample's rotated residuals, padded to m × dsub coordinates (zeros past d).
        var res = [Float](repeating: 0, count: ns * width)
        res.withUnsafeMutableBufferPointer { rp in
            rotatedResiduals(x: x, d: d, centroids: centroids, rotation: rotation, rows: sample.map { Int32($0) },
                             lists: sample.map { assign[$0] }, width: width, into: rp.baseAddress!, pool: pool)
        }
        chunks(m, size: 1, pool: pool) { range in
            for s in range {
                var pts = [Float](repeating: 0, count: ns * dsub)
                for i in 0..<ns { for t in 0..<dsub { pts[i * dsub + t] = res[i * width + s * dsub + t] } }
                var rng = SplitMix64(seed: seed ^ UInt64(s) &* 0x9E37_79B9_7F4A_7C15)
                let words = smallKMeans(pts, count: ns, dim: dsub, k: 16, iterations: iterations, rng: &rng)
                for i in 0..<(16 * dsub) { cb[s * 16 * dsub + i] = words[i] }
            }
        }
    }

    /// `out[e * width + i] = (rotation · (x[rows[e]] − centroid[lists[e]]))[i]` for i < d, 0 up to
    /// `width`; chunks of 1024 entries, the rotation applied with the packed GEMM.
    static func rotatedResiduals(x: UnsafePointer<Float>, d: Int, centroids: [Float], rotation: [Float], rows: [Int32], lists: [Int32],
                                 width: Int, into out: UnsafeMutablePointer<Float>, pool: WorkerPool?) {
        let t = KernelISA.best.table.pointee
        let packed = UnsafeMutablePointer<Float>.allocate(capacity: Int(t.gemm_packed_size(Int64(d), Int64(d))))
        defer { packed.deallocate() }
        rotation.withUnsafeBufferPointer { t.gemm_pack_b(Int64(d), Int64(d), $0.baseAddress!, Int64(d), packed) }
        let chunk = 1024
        centroids.withUnsafeBufferPointer { cen in
            chunks(rows.count, size: chunk, pool: pool) { range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * chunk * d) { buf in
                    let raw = buf.baseAddress!, rot = raw + chunk * d
                    for (i, e) in range.enumerated() {
                        let r = Int(rows[e]), l = Int(lists[e])
                        for j in 0..<d { raw[i * d + j] = x[r * d + j] - cen[l * d + j] }
                    }
                    t.gemm_nt_packed(Int64(range.count), Int64(d), Int64(d), raw, Int64(d), packed, rot, Int64(d))
                    for (i, e) in range.enumerated() {
                        let o = out + e * width
                        for j in 0..<width { o[j] = j < d ? rot[i * d + j] : 0 }
                    }
                }
            }
        }
    }

    /// A seeded random orthogonal d × d matrix (Gaussian entries, Gram–Schmidt in Double), row-major.
    static func randomRotation(_ d: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        func gaussian() -> Double {
            let u1 = (Double(rng.next() >> 11) + 0.5) / Double(1 << 53), u2 = Double(rng.next() >> 11) / Double(1 << 53)
            return (-2 * Foundation_log(u1)).squareRoot() * Foundation_cos(2 * Double.pi * u2)
        }
        var q = [Double](repeating: 0, count: d * d)
        var i = 0
        while i < d {
            var v = (0..<d).map { _ in gaussian() }
            for j in 0..<i {
                var dot = 0.0
                for t in 0..<d { dot += v[t] * q[j * d + t] }
                for t in 0..<d { v[t] -= dot * q[j * d + t] }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm < 1e-6 { continue } // degenerate draw: draw again
            for t in 0..<d { q[i * d + t] = v[t] / norm }
            i += 1
        }
        return q.map { Float($0) }
    }

    /// k-means for tiny k and dimension (scalar), starting from k distinct random points
    /// (fewer points than k: the rest repeat the last point).
    static func smallKMeans(_ pts: [Float], count n: Int, dim: Int, k: Int, iterations: Int, rng: inout SplitMix64) -> [Float] {
        var c = [Float](repeating: 0, count: k * dim)
        guard n > 0 else { return c }
        let start = sampleRows(n: n, count: min(n, k), rng: &rng)
        for j in 0..<k {
            let p = start[min(j, start.count - 1)]
            for t in 0..<dim { c[j * dim + t] = pts[p * dim + t] }
        }
        var assign = [Int](repeating: 0, count: n)
        var sums = [Double](repeating: 0, count: k * dim)
        var sizes = [Int](repeating: 0, count: k)
        pts.withUnsafeBufferPointer { pp in
            for _ in 0..<max(1, iterations) {
                c.withUnsafeBufferPointer { cp in
                    assign.withUnsafeMutableBufferPointer { ap in
                        for p in 0..<n { ap[p] = nearestWord(pp.baseAddress! + p * dim, cp.baseAddress!, k: k, dim: dim) }
                    }
                }
                for i in sums.indices { sums[i] = 0 }
                for j in 0..<k { sizes[j] = 0 }
                for p in 0..<n {
                    let a = assign[p]
                    sizes[a] += 1
                    for t in 0..<dim { sums[a * dim + t] += Double(pp[p * dim + t]) }
                }
                for j in 0..<k where sizes[j] > 0 {
                    for t in 0..<dim { c[j * dim + t] = Float(sums[j * dim + t] / Double(sizes[j])) }
                }
            }
        }
        return c
    }

    /// The codeword (of `k`, `dim` floats each) nearest to `x` in L2; ties to the lower one.
    @inline(__always)
    static func nearestWord(_ x: UnsafePointer<Float>, _ c: UnsafePointer<Float>, k: Int, dim: Int) -> Int {
        var best = 0
        var bd = Float.infinity
        for j in 0..<k {
            var dist: Float = 0
            for t in 0..<dim {
                let e = x[t] - c[j * dim + t]
                dist += e * e
            }
            if dist < bd { bd = dist; best = j }
        }
        return best
    }

    /// Codes of entry e: row `rows[e]`'s residual against centroid `lists[e]`, nearest codeword
    /// per subspace (L2). `out`: entries × m bytes.
    static func encode(x: UnsafePointer<Float>, d: Int, centroids: [Float], rotation: [Float], rows: [Int32], lists: [Int32],
                       codebooks cb: UnsafePointer<Float>, m: Int, dsub: Int, into out: UnsafeMutablePointer<UInt8>, pool: WorkerPool?,
                       progress: (Double) -> Void) {
        let slices = 8, n = rows.count, width = m * dsub
        for sl in 0..<slices {
            let lo = n * sl / slices, hi = n * (sl + 1) / slices
            let res = UnsafeMutablePointer<Float>.allocate(capacity: max(1, (hi - lo) * width))
            defer { res.deallocate() }
            rotatedResiduals(x: x, d: d, centroids: centroids, rotation: rotation, rows: Array(rows[lo..<hi]), lists: Array(lists[lo..<hi]),
                             width: width, into: res, pool: pool)
            chunks(hi - lo, size: 4096, pool: pool) { range in
                for e in range {
                    for s in 0..<m {
                        out[(lo + e) * m + s] = UInt8(nearestWord(res + e * width + s * dsub, cb + s * 16 * dsub, k: 16, dim: dsub))
                    }
                }
            }
            progress(Double(sl + 1) / Double(slices))
        }
    }

    /// SOAR's second list for every row: argmin over centroids c ≠ primary of
    /// |x − c|² + λ (r·(x − c))² / |r|², r = x − c_primary (two packed GEMMs per 256-row chunk).
    static func spillAssign(x: UnsafePointer<Float>, n: Int, d: Int, centroids: [Float], k: Int, primary: [Int32], weight: Float,
                            pool: WorkerPool?) -> [Int32] {
        let t = KernelISA.best.table.pointee
        let packed = UnsafeMutablePointer<Float>.allocate(capacity: Int(t.gemm_packed_size(Int64(k), Int64(d))))
        defer { packed.deallocate() }
        var norms = [Float](repeating: 0, count: k)
        centroids.withUnsafeBufferPointer { c in
            t.gemm_pack_b(Int64(k), Int64(d), c.baseAddress!, Int64(d), packed)
            for j in 0..<k { var s: Float = 0; for i in 0..<d { s += c[j * d + i] * c[j * d + i] }; norms[j] = s }
        }
        var out = [Int32](repeating: 0, count: n)
        let chunk = 256
        centroids.withUnsafeBufferPointer { cen in
            norms.withUnsafeBufferPointer { nb in
                out.withUnsafeMutableBufferPointer { ob in
                    let op = ob.baseAddress!
                    chunks(n, size: chunk, pool: pool) { range in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * chunk * k + chunk * d) { buf in
                            let xs = buf.baseAddress!, rs = xs + chunk * k, res = rs + chunk * k
                            let r0 = range.lowerBound, cn = range.count
                            var rx = [Float](repeating: 0, count: cn), rr = [Float](repeating: 0, count: cn)
                            for i in 0..<cn {
                                let p = Int(primary[r0 + i])
                                var a: Float = 0, b: Float = 0
                                for j in 0..<d {
                                    let v = x[(r0 + i) * d + j], e = v - cen[p * d + j]
                                    res[i * d + j] = e
                                    a += e * v
                                    b += e * e
                                }
                                rx[i] = a; rr[i] = b
                            }
                            t.gemm_nt_packed(Int64(cn), Int64(k), Int64(d), x + r0 * d, Int64(d), packed, xs, Int64(k))
                            t.gemm_nt_packed(Int64(cn), Int64(k), Int64(d), res, Int64(d), packed, rs, Int64(k))
                            for i in 0..<cn {
                                let p = Int(primary[r0 + i])
                                let w = rr[i] > 0 ? weight / rr[i] : 0
                                var best = -1
                                var bv = Float.infinity
                                for j in 0..<k where j != p {
                                    let align = rx[i] - rs[i * k + j]
                                    let v = nb[j] - 2 * xs[i * k + j] + w * align * align
                                    if v < bv { bv = v; best = j }
                                }
                                op[r0 + i] = Int32(best)
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): a small seeded generator, the same sequence on every
/// platform (never the system RNG), for builders, tests and benchmarks that must be reproducible.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
