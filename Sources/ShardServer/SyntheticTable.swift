/// The synthetic embedding table of `shardrank shard --synthetic ROWSxDIM`: table `items`, ids
/// `0..<rows`, and the row of id `i` is `x[j] = Float((i &* 31 &+ j) % 1000) / 1000` for
/// `j` in `0..<dim`. Any client can recompute every byte, so it is the fixture of the RPC tests
/// and benchmarks. Rows are materialised once at start (rows × dim × 4 bytes), so a lookup is a
/// memcpy per row.
/// Immutable after `init`, so sharing it across threads is safe.
public final class SyntheticTable: @unchecked Sendable {
    public let rows: Int
    public let dim: Int
    private let storage: UnsafeMutableRawBufferPointer

    /// The value of element `j` of row `i` (the definition every checker uses).
    @inline(__always)
    public static func value(row i: UInt64, column j: Int) -> Float {
        Float((i &* 31 &+ UInt64(j)) % 1000) / 1000
    }

    public init(rows: Int, dim: Int) {
        precondition(rows > 0 && dim > 0)
        self.rows = rows
        self.dim = dim
        storage = .allocate(byteCount: rows * dim * 4, alignment: 64)
        let f = storage.bindMemory(to: Float.self)
        for i in 0 ..< rows {
            for j in 0 ..< dim { f[i * dim + j] = SyntheticTable.value(row: UInt64(i), column: j) }
        }
    }

    deinit { storage.deallocate() }

    /// The row of `id` (`dim` floats), or nil when `id` is not in the table. Valid while `self` lives.
    @inline(__always)
    public func row(_ id: UInt64) -> UnsafePointer<Float>? {
        guard id < UInt64(rows) else { return nil }
        return UnsafePointer(storage.baseAddress!.assumingMemoryBound(to: Float.self)) + Int(id) * dim
    }
}
