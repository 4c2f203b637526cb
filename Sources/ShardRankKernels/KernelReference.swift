/// Scalar references of the kernels: the definitions the SIMD variants are tested against.
/// Straightforward loops, summing columns in order, no SIMD; slow by design.
public enum KernelReference {
    /// `result[i] = (Σ_j query[j] · row(i)[j]) · scale(row(i))`, summed in column order.
    /// - Parameters:
    ///   - query: `rows.dimension` floats.
    ///   - rowIndices: nil (all rows) or row numbers.
    public static func dot(query: UnsafePointer<Float>, rows: RowMatrix, rowIndices: [Int64]? = nil) -> [Float] {
        let picks = rowIndices.map { $0.map(Int.init) } ?? Array(0..<rows.count)
        return picks.map { r in
            var s: Float = 0
            for j in 0..<rows.dimension { s += query[j] * rows.value(row: r, column: j) }
            return s * rows.scale(row: r)
        }
    }

    /// `|row(i)|²` including the int8 scale squared.
    public static func squaredNorms(rows: RowMatrix, rowIndices: [Int64]? = nil) -> [Float] {
        let picks = rowIndices.map { $0.map(Int.init) } ?? Array(0..<rows.count)
        return picks.map { r in
            var s: Float = 0
            for j in 0..<rows.dimension { let x = rows.value(row: r, column: j); s += x * x }
            let sc = rows.scale(row: r)
            return s * (sc * sc)
        }
    }

    /// Top-k by full sort: the `k` best of `items`, best first (higher score, then lower id),
    /// NaN scores dropped.
    public static func topK(_ items: [ScoredID], k: Int) -> [ScoredID] {
        Array(items.filter { !$0.score.isNaN }.sorted(by: ScoredID.ranksBefore).prefix(k))
    }
}
