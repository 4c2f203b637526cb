internal import CShardRankKernels

/// Search settings of an IVF-PQ index: how many lists to probe and how many approximate
/// candidates to score exactly. Larger values give higher recall for more CPU.
public struct ANNSearchParameters: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Lists probed per query (1...nlist).
    public var nprobe: Int
    /// Approximate candidates re-scored exactly per query (≥ k; raised to k when smaller).
    public var rerank: Int

    public init(nprobe: Int, rerank: Int) {
        self.nprobe = nprobe
        self.rerank = rerank
    }

    public var description: String { "nprobe=\(nprobe),rerank=\(rerank)" }

    /// Default knobs are set for k = 10; a search for more results needs both more lists and more
    /// candidates for the same recall@k. For k > 10 both are multiplied by √(k / 10) (rounded
    /// up; rerank at least k): on a 250k-row shard of the 1M `synth` world, 4 / 80 gives
    /// recall@76 0.78 unscaled and 0.990 scaled (11 / 221), recall@30 0.975 and 0.991 (7 / 139).
    public func scaled(forK k: Int) -> ANNSearchParameters {
        guard k > 10 else { return self }
        let s = (Double(k) / 10).squareRoot()
        return ANNSearchParameters(nprobe: max(1, Int((Double(nprobe) * s).rounded())),
                                   rerank: max(k, Int((Double(rerank) * s).rounded())))
    }
}

/// The arrays of an IVF-PQ4 index, borrowed (from a mapped index file, or from an
/// `IVFPQIndexData` the builder made). `@unchecked Sendable`: the owner keeps the memory alive
/// and unmodified while the view is used; every method is safe to call from many threads at once
/// (each call gets its own scratch).
///
/// Layout (see docs/table-format.md, "ANN index files"): `nlist` k-means centroids over the slice;
/// every row belongs to the list of its nearest centroid (L2); its residual (row − centroid) is
/// coded with `m` 4-bit codes, one per subspace of `dsub` dimensions; each list is padded to
/// whole blocks of 32 positions whose codes are interleaved for the fast-scan kernel.
public struct IVFPQIndex: @unchecked Sendable {
    public let dimension: Int
    public let listCount: Int
    public let subspaces: Int
    public let subspaceDimension: Int
    /// `listCount * dimension` floats.
    public let centroids: UnsafePointer<Float>
    /// `subspaces * 16 * subspaceDimension` floats.
    public let codebooks: UnsafePointer<Float>
    /// `dimension²` floats, row-major, orthogonal: codes describe `rotation · residual`.
    public let rotation: UnsafePointer<Float>
    /// `listCount + 1` positions, multiples of 32, non-decreasing.
    public let listOffsets: UnsafePointer<Int64>
    /// `positions / 32 * 16 * subspaces` bytes.
    public let codes: UnsafePointer<UInt8>
    /// `positions` row numbers of the indexed table; `UInt32.max` marks padding.
    public let rows: UnsafePointer<UInt32>
    /// Total positions (`listOffsets[listCount]`).
    public let positions: Int
    /// The longest list, in positions.
    public let longestList: Int
    /// `listCount` probe bonuses (`weight × computeListSpread`), or nil: lists are then probed
    /// in the order of their centroids' scores alone.
    public let listBonus: UnsafePointer<Float>?

    /// Checks the arrays' consistency (offsets monotone and block-aligned, row numbers in range,
    /// each row at most once is *not* checked here: see `validate(rowCount:)`).
    public init(dimension: Int, listCount: Int, subspaces: Int, subspaceDimension: Int,
                centroids: UnsafePointer<Float>, codebooks: UnsafePointer<Float>, rotation: UnsafePointer<Float>,
                listOffsets: UnsafePointer<Int64>,
                codes: UnsafePointer<UInt8>, rows: UnsafePointer<UInt32>, listBonus: UnsafePointer<Float>? = nil) {
        precondition(dimension >= 1 && listCount >= 1 && subspaces >= 4 && subspaces % 4 == 0
                     && subspaces <= Int(SRK_PQ4_MAX_M) && subspaceDimension >= 1 && subspaces * subspaceDimension >= dimension)
        self.dimension = dimension
        self.listCount = listCount
        self.subspaces = subspaces
        self.subspaceDimension = subspaceDimension
        self.centroids = centroids
        self.codebooks = codebooks
        self.rotation = rotation
        self.listOffsets = listOffsets
        self.codes = codes
        self.rows = rows
        self.listBonus = listBonus
        self.positions = Int(listOffsets[listCount])
        var longest = 0
        for l in 0..<listCount { longest = max(longest, Int(listOffsets[l + 1] - listOffsets[l])) }
        self.longestList = longest
    }

    /// Structural checks for an index read from disk: offsets start at 0, are multiples of 32,
    /// never decrease; every row number is `< rowCount` or padding, and each row of the table
    /// appears once or twice (a spilled row: in two different lists). Returns a description of
    /// the first problem, or nil.
    public func validate(rowCount: Int) -> String? {
        guard listOffsets[0] == 0 else { return "list offsets do not start at 0" }
        for l in 0..<listCount {
            let a = listOffsets[l], b = listOffsets[l + 1]
            guard b >= a, b % 32 == 0 else { return "list \(l) has bad offsets \(a)..<\(b)" }
        }
        var seen = [UInt8](repeating: 0, count: rowCount)
        var lastList = [Int32](repeating: -1, count: rowCount)
        var count = 0
        for l in 0..<listCount {
            for p in Int(listOffsets[l])..<Int(listOffsets[l + 1]) {
                let r = rows[p]
                if r == UInt32.max { continue }
                guard Int(r) < rowCount else { return "position \(p) names row \(r) of \(rowCount)" }
                guard seen[Int(r)] < 2, lastList[Int(r)] != Int32(l) else { return "row \(r) is indexed too often" }
                if seen[Int(r)] == 0 { count += 1 }
                seen[Int(r)] += 1
                lastList[Int(r)] = Int32(l)
            }
        }
        guard count == rowCount else { return "\(count) of \(rowCount) rows are indexed" }
        for i in 0..<(listCount * dimension) where !centroids[i].isFinite { return "centroid value \(i) is not finite" }
        for i in 0..<(subspaces * 16 * subspaceDimension) where !codebooks[i].isFinite { return "codebook value \(i) is not finite" }
        // Orthonormal rows (inner products through the codes equal the real ones).
        for i in 0..<dimension {
            for j in i..<dimension {
                var dot: Double = 0
                for t in 0..<dimension { dot += Double(rotation[i * dimension + t]) * Double(rotation[j * dimension + t]) }
                guard dot.isFinite, abs(dot - (i == j ? 1 : 0)) < 1e-3 else { return "rotation is not orthogonal (rows \(i), \(j))" }
            }
        }
        return nil
    }

    var cView: srk_ivfpq {
        srk_ivfpq(d: Int64(dimension), nlist: Int64(listCount), m: Int64(subspaces), dsub: Int64(subspaceDimension),
                  max_list: Int64(longestList), centroids: centroids, codebooks: codebooks, rotation: rotation, list_offsets: listOffsets,
                  codes: codes, rows: rows, list_bonus: listBonus)
    }

    /// The probe-bonus weights the builder chooses from (`IVFPQBuilder.chooseProbeBonusWeight`).
    public static let probeBonusWeights: [Float] = [0, 0.25, 0.5, 1, 2]

    /// Writes each list's spread into `out` (`listCount` floats): the 90th percentile of its
    /// members' residual norms, read from their codes (the codewords' norms; the rotation keeps
    /// norms). Deterministic: the index file's loader and the builder compute the same values.
    ///
    /// A list's probe bonus is `weight × spread`, and queries probe lists by `q·c + |q| · bonus`
    /// (`q·c + |q|·‖r‖` bounds every member's score `q·c + q·r`): on skewed data the high-norm
    /// popular items, which are the top results of many queries, sit far from their centroids
    /// in lists whose centroid scores are not the highest; the bonus probes those lists first.
    /// On isotropic data `q·r` is far below that bound and the bonus only adds noise, so the
    /// weight is chosen per index by measurement (0 turns it off).
    public func computeListSpread(into out: UnsafeMutablePointer<Float>) {
        let m = subspaces, dsub = subspaceDimension
        var cwNorm = [Float](repeating: 0, count: m * 16)
        for s in 0..<m {
            for c in 0..<16 {
                var v: Float = 0
                for t in 0..<dsub { let x = codebooks[(s * 16 + c) * dsub + t]; v += x * x }
                cwNorm[s * 16 + c] = v
            }
        }
        var norms = [Float]()
        norms.reserveCapacity(longestList)
        for l in 0..<listCount {
            norms.removeAll(keepingCapacity: true)
            for p in Int(listOffsets[l])..<Int(listOffsets[l + 1]) where rows[p] != UInt32.max {
                let blk = codes + (p / 32) * 16 * m, v = p % 32
                var sq: Float = 0
                for g in 0..<(m / 2) {
                    let byte = blk[g * 32 + v]
                    sq += cwNorm[(2 * g) * 16 + Int(byte & 15)] + cwNorm[(2 * g + 1) * 16 + Int(byte >> 4)]
                }
                norms.append(sq.squareRoot())
            }
            guard !norms.isEmpty else { out[l] = 0; continue }
            norms.sort()
            out[l] = norms[(norms.count - 1) * 9 / 10]
        }
    }

    /// Per-query scratch for `search` (bytes), for callers that keep one per thread.
    public func scratchBytes(_ parameters: ANNSearchParameters, k: Int) -> Int {
        var v = cView
        return Int(srk_ivfpq_scratch_bytes(&v, Int64(min(max(1, parameters.nprobe), listCount)),
                                           Int64(max(parameters.rerank, k, 1))))
    }

    /// Approximate top-`k` of `query · row` over the indexed rows, best first (ties towards the
    /// lower id); the scores are exact (the re-rank uses the same dot kernel as the exact scan).
    ///
    /// - Parameters:
    ///   - query: `dimension` floats.
    ///   - rows: the indexed table's rows (the row numbers this index stores refer to them).
    ///   - ids: `rows.count` ids, parallel to `rows`.
    ///   - excludedRows: row numbers never returned, sorted ascending, no duplicates.
    ///   - scratch: nil (allocated here) or at least `scratchBytes(parameters, k:)` bytes.
    /// - Returns: the results and how many list positions were scanned.
    public func search(query: UnsafePointer<Float>, k: Int, parameters: ANNSearchParameters, rows: RowMatrix,
                       ids: UnsafePointer<UInt64>, excludedRows: UnsafeBufferPointer<UInt32> = .init(start: nil, count: 0),
                       scratch: UnsafeMutableRawPointer? = nil, isa: KernelISA = .best,
                       withRows: Bool = false) -> (items: [ScoredID], scanned: Int, rows: [Int]) {
        precondition(rows.dimension == dimension, "index dimension \(dimension), rows \(rows.dimension)")
        guard k > 0 else { return ([], 0, []) }
        let nprobe = min(max(1, parameters.nprobe), listCount)
        let rerank = max(parameters.rerank, k)
        var view = cView
        let owned = scratch == nil
            ? UnsafeMutableRawPointer.allocate(byteCount: Int(srk_ivfpq_scratch_bytes(&view, Int64(nprobe), Int64(rerank))), alignment: 64)
            : nil
        defer { owned?.deallocate() }
        return withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { hs in
            withUnsafeTemporaryAllocation(of: UInt64.self, capacity: k) { hi in
                var heap = srk_topk(scores: hs.baseAddress, ids: hi.baseAddress, count: 0, capacity: Int64(k))
                // With rows: the kernel sorts the hits and reports each one's row.
                var hitRows = withRows ? [Int](repeating: -1, count: k) : []
                let scanned = hitRows.withUnsafeMutableBufferPointer { r in
                    r.withMemoryRebound(to: Int64.self) { r64 in
                        srk_ivfpq_search(isa.table, isa.rawValue, &view, query, rows.elementType.rawValue, rows.base,
                                         rows.scales, ids, excludedRows.baseAddress, Int64(excludedRows.count),
                                         Int64(nprobe), Int64(rerank), &heap, scratch ?? owned!, withRows ? r64.baseAddress : nil)
                    }
                }
                if !withRows { srk_topk_sort(&heap) }
                let items = (0..<Int(heap.count)).map { ScoredID(id: hi[$0], score: hs[$0]) }
                if withRows { hitRows.removeLast(k - items.count) }
                return (items, Int(scanned), hitRows)
            }
        }
    }
}

/// The fast-scan kernel on its own, for tests and benchmarks.
public enum PQ4FastScan {
    /// `out[v] = Σ_s lut[s*16 + code_s(v)]` for the `blocks * 32` vectors of `codes`
    /// (layout of `IVFPQIndex.codes`). `lut`: `subspaces * 16` bytes; `out`: `blocks * 32`.
    public static func scan(codes: UnsafePointer<UInt8>, blocks: Int, subspaces: Int, lut: UnsafePointer<UInt8>,
                            out: UnsafeMutablePointer<UInt16>, isa: KernelISA = .best) {
        precondition(subspaces >= 4 && subspaces % 4 == 0 && subspaces <= Int(SRK_PQ4_MAX_M))
        precondition(isa.isSupported)
        srk_pq4_scan(isa.rawValue, codes, Int64(blocks), Int64(subspaces), lut, out)
    }

    /// Scalar reference of `scan` (no SIMD).
    public static func reference(codes: UnsafePointer<UInt8>, blocks: Int, subspaces: Int, lut: UnsafePointer<UInt8>,
                                 out: UnsafeMutablePointer<UInt16>) {
        for b in 0..<blocks {
            let blk = codes + b * 16 * subspaces
            for v in 0..<32 {
                var acc = 0
                for s in 0..<subspaces {
                    let byte = blk[(s / 2) * 32 + v]
                    let code = s % 2 == 0 ? byte & 15 : byte >> 4
                    acc += Int(lut[s * 16 + Int(code)])
                }
                out[b * 32 + v] = UInt16(acc)
            }
        }
    }
}
