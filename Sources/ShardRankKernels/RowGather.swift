internal import CShardRankKernels

/// The gather of a Lookup: rows of a row-major table copied, in request order, into a response.
public enum RowGather {
    /// Copies the rows `rows[i] >= 0` (negative entries are skipped: missing ids) of the table at
    /// `base` (`rowBytes` per row) contiguously into `dst`, prefetching a few rows ahead. Rows of
    /// 64, 128, 256 and 512 bytes are copied by loops specialised for that size.
    /// - Parameter isa: the variant to run (tests compare them); the best one by default.
    /// - Returns: the number of rows copied.
    /// - Precondition: `dst` holds that many rows; every row index >= 0 is inside the table;
    ///   `isa` is supported.
    @discardableResult
    public static func gather(into dst: UnsafeMutableRawPointer, base: UnsafeRawPointer, rowBytes: Int,
                              rows: UnsafeBufferPointer<Int>, isa: KernelISA = .best) -> Int {
        guard let r = rows.baseAddress, rows.count > 0 else { return 0 }
        let copied = r.withMemoryRebound(to: Int64.self, capacity: rows.count) {
            srk_gather_rows_isa(isa.rawValue, dst, base, Int64(rowBytes), $0, Int64(rows.count))
        }
        precondition(copied >= 0, "KernelISA.\(isa) is not supported by this CPU")
        return Int(copied)
    }
}
