import Synchronization
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
        let dst = base + row * dim
        switch dtype {
        case .f32, .unspecified:
            UnsafeMutableRawPointer(dst).copyMemory(from: bytes.baseAddress! + source * dim * 4, byteCount: dim * 4)
        case .f16:
            let src = bytes.baseAddress! + source * dim * 2
            for j in 0 ..< dim {
                dst[j] = Float(Float16(bitPattern: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: j * 2, as: UInt16.self))))
            }
        case .int8:
            let src = (bytes.baseAddress! + source * dim).assumingMemoryBound(to: Int8.self)
            for j in 0 ..< dim { dst[j] = Float(src[j]) * scale }
        }
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

/// Item rows (f32) the coordinator already fetched with a Lookup, for one table-set version (a
/// published version never changes, so a cached row is exactly what the shard would send): the
/// hot candidates of the list sources (popular, genre, country, similar items) need no Lookup
/// once seen. Bounded by bytes; when full it is cleared (the hot set refills it within a few
/// requests). A new version empties it.
final class RowCache: Sendable {
    private struct State {
        var version: UInt64 = 0
        var dim = 0
        var index: [UInt64: Int] = [:]
        var storage: [Float] = []
        var hits = 0, misses = 0
    }
    private let state = Mutex(State())
    let capacityBytes: Int

    init(capacityBytes: Int) { self.capacityBytes = capacityBytes }

    /// The row width cached for `version`, if any.
    func dimension(version: UInt64) -> Int? {
        state.withLock { $0.version == version && $0.dim > 0 && version != 0 ? $0.dim : nil }
    }

    /// Fills the unfilled rows of `rows` whose id is cached for `version`.
    func copy(version: UInt64, ids: [UInt64], into rows: CandidateRows) {
        guard version != 0, capacityBytes > 0 else { return }
        state.withLock { s in
            guard s.version == version, s.dim == rows.dim else { return }
            s.storage.withUnsafeBufferPointer { st in
                for (i, id) in ids.enumerated() where !rows.filled[i] {
                    if let at = s.index[id] {
                        (rows.base + i * rows.dim).update(from: st.baseAddress! + at, count: rows.dim)
                        rows.markFilled(i)
                        s.hits += 1
                    } else {
                        s.misses += 1
                    }
                }
            }
        }
    }

    /// Remembers rows `which` of `rows` (ids[i] for row i) for `version`.
    func insert(version: UInt64, ids: [UInt64], rows which: [Int], from rows: CandidateRows) {
        guard version != 0, capacityBytes > 0 else { return }
        let dim = rows.dim
        state.withLock { s in
            if version > s.version || s.dim != dim {
                guard version >= s.version else { return }
                s = State(version: version, dim: dim, hits: s.hits, misses: s.misses)
            }
            guard version == s.version else { return }
            if (s.storage.count + which.count * dim) * MemoryLayout<Float>.stride > capacityBytes {
                s.storage.removeAll(keepingCapacity: true)
                s.index.removeAll(keepingCapacity: true)
            }
            for r in which where s.index[ids[r]] == nil {
                guard (s.storage.count + dim) * MemoryLayout<Float>.stride <= capacityBytes else { break }
                s.index[ids[r]] = s.storage.count
                s.storage.append(contentsOf: UnsafeBufferPointer(start: rows.base + r * dim, count: dim))
            }
        }
    }

    /// Hits and misses so far (tests, metrics).
    var counts: (hits: Int, misses: Int) { state.withLock { ($0.hits, $0.misses) } }
}
