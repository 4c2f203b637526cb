import ShardRankKernels

/// splitmix64 (ShardRankKernels' `SplitMix64`): the deterministic generator shared with
/// scripts/mlp-reference.py.
extension SplitMix64 {
    /// In [-scale, scale): ((z >> 40) - 2^23) / 2^23 * scale, exact in Float for power-of-two scales.
    mutating func uniform(_ scale: Float = 1) -> Float {
        Float(Int64(next() >> 40) - (1 << 23)) / Float(1 << 23) * scale
    }

    /// An integer in lo...hi.
    mutating func int(_ lo: Int, _ hi: Int) -> Int { lo + Int(next() % UInt64(hi - lo + 1)) }
}

/// Rows that own their memory (freed in deinit), viewed as a RowMatrix.
final class OwnedRows: @unchecked Sendable {
    let matrix: RowMatrix
    private let raw: UnsafeMutableRawPointer
    private let scales: UnsafeMutablePointer<Float>

    /// `integer`: values are small integers (f32/f16 in -8...8, int8 in -127...127 with
    /// power-of-two scales) so every kernel result is exact.
    init(_ type: RowElementType, count: Int, dimension d: Int, integer: Bool, rng: inout SplitMix64) {
        let n = count * d
        raw = .allocate(byteCount: max(n * type.byteWidth, 1), alignment: 64)
        scales = .allocate(capacity: max(count, 1))
        switch type {
        case .f32:
            let p = raw.bindMemory(to: Float.self, capacity: n)
            for i in 0..<n { p[i] = integer ? Float(rng.int(-8, 8)) : rng.uniform() }
            matrix = RowMatrix(f32: p, count: count, dimension: d)
        case .f16:
            let p = raw.bindMemory(to: UInt16.self, capacity: n)
            for i in 0..<n { p[i] = Float16(integer ? Float(rng.int(-8, 8)) : rng.uniform()).bitPattern }
            matrix = RowMatrix(f16: p, count: count, dimension: d)
        case .int8:
            let p = raw.bindMemory(to: Int8.self, capacity: n)
            for i in 0..<n { p[i] = Int8(rng.int(-127, 127)) }
            for r in 0..<count {
                scales[r] = integer ? [0.5, 0.25, 1, 2][r % 4] : 0.01 + abs(rng.uniform(0.01))
            }
            matrix = RowMatrix(int8: p, scales: scales, count: count, dimension: d)
        }
    }

    deinit {
        raw.deallocate()
        scales.deallocate()
    }
}

func makeQueries(_ count: Int, _ d: Int, integer: Bool, rng: inout SplitMix64) -> [Float] {
    (0..<(count * d)).map { _ in integer ? Float(rng.int(-3, 3)) : rng.uniform() }
}

/// Σ_j |q_j · x_j| · scale: the scale of the rounding error of a dot product.
func absDot(_ q: UnsafePointer<Float>, _ rows: RowMatrix, _ r: Int) -> Float {
    var s: Float = 0
    for j in 0..<rows.dimension { s += abs(q[j] * rows.value(row: r, column: j)) }
    return s * rows.scale(row: r)
}

let kernelDimensions = [1, 3, 7, 8, 15, 16, 17, 64, 100, 1000]
