public import ShardRankKernels

/// One shard's slice of an embedding table (id → vector), memory-mapped and verified.
///
/// Immutable and `Sendable`: every method is safe to call from any number of threads at once and
/// none of them allocates. Pointers it hands out (`ids`, `rowPointer(at:)`, `rowsBase`, `scales`)
/// are valid while this object is alive; hold a reference to it (or to its `LoadedTableSet`) for as
/// long as you use them. The mapping is released in `deinit`.
public final class EmbeddingTable: @unchecked Sendable {
    public let name: String
    public let dim: Int
    public let dtype: TableDType
    public let rowCount: Int
    /// Bytes per row: `dim * dtype.elementSize`.
    public let rowStride: Int
    /// The ids of this slice in row order: `rowCount` values.
    public let ids: UnsafeBufferPointer<UInt64>
    /// All rows, row-major: `rowCount * rowStride` bytes (64-byte aligned).
    public let rowsBase: UnsafeRawPointer
    /// Per-row scales for `int8` tables (`rowCount` values); `nil` otherwise.
    public let scales: UnsafeBufferPointer<Float>?
    /// Bytes of the mapped file.
    public var mappedBytes: Int { file.mapping.bytes.count }

    let file: TableFile
    private let index: SlotIndex
    private let seed: UInt64

    init(name: String, file: TableFile) throws {
        guard file.kind == .embedding, let dtype = file.dtype else {
            throw TableError(.mismatch, "not an embedding table (\(file.kind))", path: file.path)
        }
        guard file.dim >= 1 else { throw TableError.corrupt(file.path, "dimension 0") }
        let rows = file.rows
        try file.expectCount(.ids, rows, "one id per row")
        let (bytes, overflow) = rows.multipliedReportingOverflow(by: file.dim * dtype.elementSize)
        guard !overflow else { throw TableError.corrupt(file.path, "row count × dimension overflows") }
        try file.expectCount(.vectors, bytes, "\(rows) rows × \(file.dim) × \(dtype.elementSize) bytes")
        if dtype == .int8 { try file.expectCount(.scales, rows, "one scale per row") }
        self.name = name
        self.file = file
        self.dim = file.dim
        self.dtype = dtype
        self.rowCount = rows
        self.rowStride = file.dim * dtype.elementSize
        self.seed = file.seed
        let ids = file.typed(.ids, as: UInt64.self)
        self.ids = ids
        // An empty section has no address; point at the (mapped) header instead: never read.
        self.rowsBase = file.section(.vectors).baseAddress ?? file.mapping.bytes.baseAddress!
        let scales = dtype == .int8 ? file.typed(.scales, as: Float.self) : nil
        self.scales = scales
        self.index = try SlotIndex.validate(file, ids: ids, seed: file.seed)
        if let scales {
            for (r, s) in scales.enumerated() where !(s.isFinite && s >= 0) {
                throw TableError.corrupt(file.path, "row \(r) has scale \(s)")
            }
        }
    }

    /// The row of `id` in this slice, or `nil` if this shard does not hold it. O(1) expected.
    @inlinable
    public func rowIndex(of id: UInt64) -> Int? {
        _rowIndex(of: id)
    }

    @usableFromInline
    func _rowIndex(of id: UInt64) -> Int? {
        index.row(of: id, ids: ids, seed: seed)
    }

    /// The first byte of row `row` (`rowStride` bytes, little-endian elements of `dtype`).
    /// - Precondition: `0 <= row < rowCount`.
    public func rowPointer(at row: Int) -> UnsafeRawPointer {
        precondition(row >= 0 && row < rowCount, "row \(row) out of 0..<\(rowCount)")
        return rowsBase + row * rowStride
    }

    /// Calls `body` with the bytes of row `row`.
    public func withRowBytes<R>(at row: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: rowPointer(at: row), count: rowStride))
    }

    /// The scale of row `row`: the int8 dequantisation factor, or 1 for f32/f16 tables.
    public func scale(at row: Int) -> Float {
        precondition(row >= 0 && row < rowCount, "row \(row) out of 0..<\(rowCount)")
        return scales?[row] ?? 1
    }

    /// Writes row `row` as `dim` f32 values into `destination` (dequantising f16/int8).
    /// - Precondition: `destination.count >= dim`.
    public func decodeRow(at row: Int, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(destination.count >= dim)
        let p = rowPointer(at: row)
        let out = destination.baseAddress!
        switch dtype {
        case .f32:
            out.update(from: p.assumingMemoryBound(to: Float.self), count: dim)
        case .f16:
            #if arch(x86_64) || arch(arm64)
            let h = p.assumingMemoryBound(to: Float16.self)
            for i in 0..<dim { out[i] = Float(h[i]) }
            #else
            let h = p.assumingMemoryBound(to: UInt16.self)
            for i in 0..<dim { out[i] = HalfFloat.toFloat(h[i]) }
            #endif
        case .int8:
            let q = p.assumingMemoryBound(to: Int8.self)
            let s = scales![row]
            for i in 0..<dim { out[i] = Float(q[i]) * s }
        }
    }

    /// The gather of a `Lookup`: copies the rows of `ids`, in request order and in this table's own
    /// dtype, packed into `destination` (found rows only: the i-th *found* id goes to bytes
    /// `[k * rowStride, (k + 1) * rowStride)` where k counts found ids before it). For `int8`
    /// tables the row scales go to `scales` the same way (ignored otherwise). `onMissing(i)` is
    /// called, in order, for each position `i` of `ids` this slice does not hold. Allocation-free.
    ///
    /// - Precondition: `destination.count >= ids.count * rowStride`; for int8,
    ///   `scales.count >= ids.count` when given.
    /// - Returns: the number of rows copied.
    @discardableResult
    public func copyRows(ids requested: UnsafeBufferPointer<UInt64>,
                         into destination: UnsafeMutableRawBufferPointer,
                         scales scalesOut: UnsafeMutableBufferPointer<Float>? = nil,
                         onMissing: (Int) -> Void = { _ in }) -> Int {
        precondition(destination.count >= requested.count * rowStride, "destination too small")
        if let scalesOut { precondition(scalesOut.count >= requested.count, "scales buffer too small") }
        var found = 0
        let dst = destination.baseAddress
        for (i, id) in requested.enumerated() {
            guard let row = _rowIndex(of: id) else {
                onMissing(i)
                continue
            }
            (dst! + found * rowStride).copyMemory(from: rowsBase + row * rowStride, byteCount: rowStride)
            if let scalesOut { scalesOut[found] = scales?[row] ?? 1 }
            found += 1
        }
        return found
    }

    /// The gather of a `Lookup` that asks for another dtype: like `copyRows(ids:into:scales:onMissing:)`
    /// but each found row is converted to `target` (f32 → dequantised values; f16 → round to
    /// nearest even, saturating to ±65504 is *not* done: out-of-range values become ±inf; int8 →
    /// re-quantised with a per-row scale `max|x| / 127`, written to `scales`). Same packing; when
    /// `target == dtype` it is exactly `copyRows`. Needs `dim` floats of scratch, given by the
    /// caller so that nothing is allocated.
    ///
    /// - Precondition: `destination.count >= ids.count * dim * target.elementSize`;
    ///   `scratch.count >= dim`; for an int8 target, `scales` is given with `count >= ids.count`.
    @discardableResult
    public func copyRows(ids requested: UnsafeBufferPointer<UInt64>, as target: TableDType,
                         into destination: UnsafeMutableRawBufferPointer,
                         scales scalesOut: UnsafeMutableBufferPointer<Float>? = nil,
                         scratch: UnsafeMutableBufferPointer<Float>,
                         onMissing: (Int) -> Void = { _ in }) -> Int {
        if target == dtype {
            return copyRows(ids: requested, into: destination, scales: scalesOut, onMissing: onMissing)
        }
        let outStride = dim * target.elementSize
        precondition(destination.count >= requested.count * outStride, "destination too small")
        precondition(scratch.count >= dim, "scratch too small")
        if target == .int8 { precondition((scalesOut?.count ?? -1) >= requested.count, "int8 needs a scales buffer") }
        var found = 0
        let dst = destination.baseAddress
        let values = UnsafeBufferPointer(rebasing: scratch[0..<dim])
        for (i, id) in requested.enumerated() {
            guard let row = _rowIndex(of: id) else {
                onMissing(i)
                continue
            }
            decodeRow(at: row, into: scratch)
            let out = dst! + found * outStride
            switch target {
            case .f32:
                out.copyMemory(from: values.baseAddress!, byteCount: outStride)
                scalesOut?[found] = 1
            case .f16:
                let h = out.bindMemory(to: UInt16.self, capacity: dim)
                for j in 0..<dim { h[j] = TableSetBuilder.toF16Bits(values[j]).littleEndian }
                scalesOut?[found] = 1
            case .int8:
                let q = UnsafeMutableBufferPointer(start: out.bindMemory(to: Int8.self, capacity: dim), count: dim)
                scalesOut![found] = TableSetBuilder.quantize(values, into: q)
            }
            found += 1
        }
        return found
    }

    /// This slice's rows as a kernel `RowMatrix` (for `Search.topK`, `InnerProducts`), in row
    /// order parallel to `ids`. Borrowed: valid while this table is alive.
    public var rowMatrix: RowMatrix {
        switch dtype {
        case .f32:
            return RowMatrix(f32: rowsBase.assumingMemoryBound(to: Float.self), count: rowCount, dimension: dim)
        case .f16:
            return RowMatrix(f16: rowsBase.assumingMemoryBound(to: UInt16.self), count: rowCount, dimension: dim)
        case .int8:
            // An empty int8 table has no scales section address; any valid pointer will do (never read).
            let scalesBase = scales?.baseAddress ?? UnsafeRawPointer(rowsBase).assumingMemoryBound(to: Float.self)
            return RowMatrix(int8: rowsBase.assumingMemoryBound(to: Int8.self), scales: scalesBase, count: rowCount, dimension: dim)
        }
    }

    /// Asks the kernel to page the file in (warming before serving).
    public func warm() { file.mapping.adviseWillNeed() }
    func lockInMemory() -> String? { file.mapping.lockInMemory() }
}

/// IEEE-754 binary16 conversions without `Float16` (for targets lacking it).
enum HalfFloat {
    static func toFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = Int((h >> 10) & 0x1F)
        let mant = UInt32(h & 0x3FF)
        if exp == 0 {
            return Float(sign: sign != 0 ? .minus : .plus, exponent: -24, significand: Float(mant))
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13)) }
        return Float(bitPattern: sign | UInt32(exp + 112) << 23 | (mant << 13))
    }
}
