internal import CShardRankKernels

/// The gather of a Lookup: rows of a row-major table copied, in request order, into a response.
public enum RowGather {
    /// Copies the rows `rows[i] >= 0` (negative entries are skipped: missing ids) of the table at
    /// `base` (`rowBytes` per row) contiguously into `dst`, prefetching a few rows ahead.
    /// - Returns: the number of rows copied.
    /// - Precondition: `dst` holds that many rows; every row index >= 0 is inside the table.
    @discardableResult
    public static func gather(into dst: UnsafeMutableRawPointer, base: UnsafeRawPointer, rowBytes: Int,
                              rows: UnsafeBufferPointer<Int>) -> Int {
        guard let r = rows.baseAddress, rows.count > 0 else { return 0 }
        return r.withMemoryRebound(to: Int64.self, capacity: rows.count) {
            Int(srk_gather_rows(dst, base, Int64(rowBytes), $0, Int64(rows.count)))
        }
    }
}
