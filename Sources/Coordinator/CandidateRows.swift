import ShardRankKernels
import ShardRankWire

/// The candidates' vectors as one 64-byte-aligned n × dim f32 matrix, filled in place: each row
/// is decoded once, straight from the bytes of the response that carried it (a Search with rows
/// or a Lookup), whatever its wire dtype (f32, f16 or int8 with a scale).
final class CandidateRows: @unchecked Sendable {
    let count: Int
    let dim: Int
    let base: UnsafeMutablePointer<Float>
    /// filled[i]: row i has been written.
    private(set) var filled: [Bool]

    init(count: Int, dim: Int) {
        self.count = count
        self.dim = dim
        let bytes = max(1, count * dim) * MemoryLayout<Float>.stride
        base = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64).bindMemory(to: Float.self, capacity: max(1, count * dim))
        filled = [Bool](repeating: false, count: count)
    }

    deinit { base.deallocate() }

    var matrix: RowMatrix { RowMatrix(f32: base, count: count, dimension: dim) }

    /// Decodes row `source` of `bytes` (rows of `dim` elements of `dtype`; `scale` multiplies
    /// int8 values) into row `row`.
    func set(row: Int, from bytes: UnsafeRawBufferPointer, source: Int, dtype: DType, scale: Float) {
        let type: RowElementType = switch dtype {
        case .f32, .unspecified: .f32
        case .f16: .f16
        case .int8: .int8
        }
        // The kernels' vector decode (the scalar loop here was ~3 instructions an element).
        type.decode(bytes.baseAddress! + source * dim * type.byteWidth, scale: scale, into: base + row * dim, count: dim)
        filled[row] = true
    }

    func markFilled(_ row: Int) { filled[row] = true }

    func copyRow(_ from: Int, to: Int) {
        (base + to * dim).update(from: base + from * dim, count: dim)
        filled[to] = true
    }

    /// Keeps only the rows in `keep` (in that order), compacting in place; returns the new view.
    func compacted(_ keep: [Int]) -> CandidateRows {
        let out = CandidateRows(count: keep.count, dim: dim)
        for (i, r) in keep.enumerated() {
            (out.base + i * dim).update(from: base + r * dim, count: dim)
            out.filled[i] = true
        }
        return out
    }
}
