internal import CShardRankKernels

/// Inner products and cosine similarities of f32 queries against f32/f16/int8 rows.
///
/// All functions are pure: they read their inputs, write `scores`, allocate nothing (cosine
/// excepted, see there) and may run concurrently on disjoint outputs. Row `i` of a call is
/// `rows` row `i`, or row `rowIndices[i]` when an index list is given (a gather from a big
/// table). Results equal `KernelReference` up to summation order (exactly equal on
/// integer-valued inputs whose partial sums stay below 2^24).
public enum InnerProducts {
    /// `scores[i] = query · row(i)` (times the row scale for int8).
    /// - Parameters:
    ///   - query: `rows.dimension` floats.
    ///   - rowIndices: nil (rows `0..<rows.count`) or row numbers `< rows.count`.
    ///   - scores: `rowIndices?.count ?? rows.count` floats.
    public static func dot(query: UnsafePointer<Float>, rows: RowMatrix,
                           rowIndices: UnsafeBufferPointer<Int64>? = nil,
                           scores: UnsafeMutablePointer<Float>, isa: KernelISA = .best) {
        batchDot(queries: query, queryCount: 1, rows: rows, rowIndices: rowIndices,
                 scores: scores, isa: isa)
    }

    /// `scores[q * n + i] = query_q · row(i)` for `q < queryCount`, `i < n`, where
    /// `n = rowIndices?.count ?? rows.count`.
    /// - Parameters:
    ///   - queries: `queryCount * rows.dimension` floats, row-major.
    ///   - scores: `queryCount * n` floats, row-major (one row of scores per query).
    public static func batchDot(queries: UnsafePointer<Float>, queryCount: Int, rows: RowMatrix,
                                rowIndices: UnsafeBufferPointer<Int64>? = nil,
                                scores: UnsafeMutablePointer<Float>, isa: KernelISA = .best) {
        let n = rowIndices?.count ?? rows.count
        guard n > 0, queryCount > 0 else { return }
        let d = rows.dimension
        let fn = dotKernel(isa, rows.elementType)
        // A long contiguous scan may get software prefetch ahead of the hardware's.
        let flags = rowIndices == nil
            ? srk_stream_flags(rows.elementType.rawValue, Int64(queryCount), Int64(n * d * rows.elementType.byteWidth)) : 0
        fn(queries, Int64(queryCount), Int64(d), rows.base, rows.scales,
           rowIndices?.baseAddress, Int64(n), Int64(d), scores, Int64(n), flags)
    }

    /// `out[i] = |row(i)|²` (with the int8 scale). `out`: `rowIndices?.count ?? rows.count` floats.
    public static func squaredNorms(rows: RowMatrix, rowIndices: UnsafeBufferPointer<Int64>? = nil,
                                    out: UnsafeMutablePointer<Float>, isa: KernelISA = .best) {
        let n = rowIndices?.count ?? rows.count
        guard n > 0 else { return }
        let fn = sqnormKernel(isa, rows.elementType)
        fn(rows.base, rows.scales, rowIndices?.baseAddress, Int64(n), Int64(rows.dimension), out)
    }

    /// `scores[i] = cos(query, row(i)) = query·row / (|query| |row|)`; 0 where either norm is 0.
    /// - Parameters:
    ///   - rowInverseNorms: nil, or `1/|row|` for every row of `rows` (`rows.count` floats,
    ///     indexed like the rows, e.g. precomputed by the table builder). When nil the norms
    ///     are computed on the fly (second pass over the rows, in `scores`-sized stack chunks).
    ///   - scores: `rowIndices?.count ?? rows.count` floats.
    public static func cosine(query: UnsafePointer<Float>, rows: RowMatrix,
                              rowIndices: UnsafeBufferPointer<Int64>? = nil,
                              rowInverseNorms: UnsafePointer<Float>? = nil,
                              scores: UnsafeMutablePointer<Float>, isa: KernelISA = .best) {
        let n = rowIndices?.count ?? rows.count
        guard n > 0 else { return }
        let d = rows.dimension
        var qq: Float = 0
        for j in 0..<d { qq += query[j] * query[j] }
        let qInv: Float = qq > 0 ? 1 / qq.squareRoot() : 0
        dot(query: query, rows: rows, rowIndices: rowIndices, scores: scores, isa: isa)
        if let inv = rowInverseNorms {
            for i in 0..<n {
                let r = rowIndices.map { Int($0[i]) } ?? i
                scores[i] *= qInv * inv[r]
            }
            return
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 256) { tmp in
            var i0 = 0
            while i0 < n {
                let m = min(256, n - i0)
                if let idx = rowIndices {
                    squaredNorms(rows: rows, rowIndices: UnsafeBufferPointer(rebasing: idx[i0..<(i0 + m)]),
                                 out: tmp.baseAddress!, isa: isa)
                } else {
                    squaredNorms(rows: rows.slice(i0..<(i0 + m)), out: tmp.baseAddress!, isa: isa)
                }
                for t in 0..<m {
                    let nn = tmp[t]
                    scores[i0 + t] = nn > 0 ? scores[i0 + t] * qInv / nn.squareRoot() : 0
                }
                i0 += m
            }
        }
    }
}

@inline(__always) func dotKernel(_ isa: KernelISA, _ t: RowElementType) -> srk_dot_fn {
    let k = isa.table.pointee
    switch t {
    case .f32: return k.dot.0!
    case .f16: return k.dot.1!
    case .int8: return k.dot.2!
    }
}

@inline(__always) func sqnormKernel(_ isa: KernelISA, _ t: RowElementType) -> srk_sqnorm_fn {
    let k = isa.table.pointee
    switch t {
    case .f32: return k.sqnorm.0!
    case .f16: return k.sqnorm.1!
    case .int8: return k.sqnorm.2!
    }
}
