import ShardRankRouting
public import RPCCore
public import ShardRankWire
import ShardRankKernels
import ShardRankTables

/// Serves `SyntheticTable` as table `items` (version 1, shard 0 of 1).
public struct SyntheticBackend: ShardBackend {
    public let table: SyntheticTable
    public static let tableName = "items"
    public static let version: UInt64 = 1

    public init(table: SyntheticTable) { self.table = table }

    private func checkTable(_ name: String) throws(RPCError) {
        guard name == Self.tableName else {
            throw RPCError(.notFound, "unknown table '\(name)': this shard serves embedding table 'items' (synthetic)")
        }
    }

    private func checkVersion(_ v: UInt64) throws(RPCError) {
        guard v == 0 || v == Self.version else {
            throw RPCError(.failedPrecondition, "table-set version \(v) is not served here (serving version \(Self.version))")
        }
    }

    public func lookup(_ req: LookupRequest, context: ServerContext) throws(RPCError) -> FramedMessage {
        try checkTable(req.table)
        try checkVersion(req.version)
        let dim = table.dim
        var missing: [UInt64] = []
        var found = 0
        for id in req.ids { if id < UInt64(table.rows) { found += 1 } else { missing.append(id) } }
        let dtype: DType = req.dtype == .unspecified ? .f32 : req.dtype
        try LookupResponse.checkSize(vectorBytes: found * dim * dtype.elementSize, dim: dim, dtype: dtype)
        var scales: [UInt8] = []
        if dtype == .int8 {
            scales.reserveCapacity(found * 4)
            for id in req.ids {
                guard let row = table.row(id) else { continue }
                var m: Float = 0
                for j in 0 ..< dim { m = max(m, abs(row[j])) }
                let s = m > 0 ? m / 127 : 1
                withUnsafeBytes(of: s.bitPattern.littleEndian) { scales.append(contentsOf: $0) }
            }
        }
        let table = self.table
        return LookupResponse.encode(dim: UInt32(dim), dtype: dtype, missingIDs: missing, version: Self.version, scales: scales,
                                     shard: 0, shardCount: 1, vectorBytes: found * dim * dtype.elementSize) { dst in
            if dtype == .f32 || dtype == .unspecified {
                // Rows as they are: one prefetching gather (missing ids are skipped).
                let ids = req.ids
                withUnsafeTemporaryAllocation(of: Int.self, capacity: ids.count) { rows in
                    for (i, id) in ids.enumerated() { rows[i] = id < UInt64(table.rows) ? Int(id) : -1 }
                    RowGather.gather(into: dst.baseAddress!, base: table.row(0)!, rowBytes: dim * 4,
                                     rows: UnsafeBufferPointer(rows))
                }
                return
            }
            var offset = 0
            var rowIndex = 0
            for id in req.ids {
                guard let row = table.row(id) else { continue }
                switch dtype {
                case .f32, .unspecified:
                    dst.baseAddress!.advanced(by: offset).copyMemory(from: row, byteCount: dim * 4)
                    offset += dim * 4
                case .f16:
                    for j in 0 ..< dim {
                        dst.storeBytes(of: Float16(row[j]).bitPattern.littleEndian, toByteOffset: offset, as: UInt16.self)
                        offset += 2
                    }
                case .int8:
                    let s = scales.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: rowIndex * 4, as: UInt32.self) }
                    let scale = Float(bitPattern: UInt32(littleEndian: s))
                    for j in 0 ..< dim {
                        let q = (row[j] / scale).rounded().clamped(-127, 127)
                        dst.storeBytes(of: Int8(q), toByteOffset: offset, as: Int8.self)
                        offset += 1
                    }
                }
                rowIndex += 1
            }
        }
    }

    public func search(_ req: SearchRequest, context: ServerContext) throws(RPCError) -> SearchResponse {
        try checkTable(req.table)
        try checkVersion(req.version)
        guard Int(req.dim) == table.dim else {
            throw RPCError(.invalidArgument, "query dim \(req.dim) does not match table 'items' dim \(table.dim)")
        }
        let exclude = Set(req.allExcludedIDs())
        let k = min(Int(req.k), table.rows)
        var results: [SearchHits] = []
        // Scalar scoring on purpose (the synthetic table is the slow, checkable fixture that the
        // deadline and cancellation tests rely on); selection uses the kernels' heap.
        let heap = TopKHeap(capacity: k)
        for q in 0 ..< req.queryCount {
            try context.checkCancellation()
            heap.reset()
            req.queries.withUnsafeBufferPointer { qp in
                let query = qp.baseAddress! + q * table.dim
                for i in 0 ..< table.rows where !exclude.contains(UInt64(i)) {
                    let row = table.row(UInt64(i))!
                    var s: Float = 0
                    for j in 0 ..< table.dim { s += query[j] * row[j] }
                    heap.push(score: s, id: UInt64(i))
                }
            }
            let sorted = heap.sortedItems()
            results.append(SearchHits(ids: sorted.map(\.id), scores: sorted.map(\.score)))
        }
        return SearchResponse(results: results, version: Self.version)
    }

    public func lists(_ req: ListsRequest, context: ServerContext) throws(RPCError) -> ListsResponse {
        throw RPCError(.notFound, "unknown list table '\(req.table)': the synthetic shard serves no list tables")
    }

    public func profiles(_ req: ProfilesRequest, context: ServerContext) throws(RPCError) -> ProfilesResponse {
        throw RPCError(.notFound, "unknown profile table '\(req.table)': the synthetic shard serves no profile tables")
    }

    public func attributes(_ req: AttributesRequest, context: ServerContext) throws(RPCError) -> AttributesResponse {
        throw RPCError(.notFound, "unknown attribute table '\(req.table)': the synthetic shard serves no attribute tables")
    }

    public func info() -> InfoResponse {
        InfoResponse(version: Self.version, shard: 0, shardCount: 1,
                     tables: [TableInfo(name: Self.tableName, kind: .embedding, dim: UInt32(table.dim), dtype: .f32, rows: UInt64(table.rows),
                                        minID: 0, maxID: UInt64(table.rows - 1))],
                     mappedBytes: UInt64(table.rows * table.dim * 4), source: "synthetic:\(table.rows)x\(table.dim)", hash: "none",
                     hashSeed: StableHash.defaultSeed)
    }

    /// Ids `0 ..< rows`, in order.
    public func ids(_ req: IdsRequest, context: ServerContext) throws(RPCError) -> IdsResponse {
        try checkTable(req.table)
        try checkVersion(req.version)
        let rows = UInt64(table.rows)
        let start = min(req.offset, rows)
        let end = min(rows, start + UInt64(req.pageSize))
        return IdsResponse(ids: Array(start ..< end), rows: rows, version: Self.version)
    }
}

extension Float {
    func clamped(_ lo: Float, _ hi: Float) -> Float { Swift.min(Swift.max(self, lo), hi) }
}
