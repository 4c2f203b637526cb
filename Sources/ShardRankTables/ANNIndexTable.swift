public import ShardRankKernels

/// One shard's ANN index file (IVF-PQ4) over one embedding table file, memory-mapped and verified.
///
/// The file uses the table-file container (header, section table, block checksums; kind
/// `ann-index`) with the sections of `SectionID.annParams…annRows`. Loading checks, beyond the
/// container's checksums: the layout version, that every section has the size the parameters
/// imply, that the index was built for exactly the rows of `table` (the table file's header
/// checksum is recorded in the index), and the index's own structure (`IVFPQIndex.validate`).
/// Immutable and `Sendable`; the view `index` is valid while this object is alive.
public final class ANNIndexTable: @unchecked Sendable {
    /// The layout version of the `annParams` section this build reads and writes.
    static let layoutVersion: UInt64 = 1

    public let table: EmbeddingTable
    public let index: IVFPQIndex
    /// Search defaults from the manifest.
    public let defaults: ANNSearchParameters
    /// The manifest's default mode is ANN (else exact unless a request asks for ANN).
    public let annByDefault: Bool
    public var mappedBytes: Int { file.mapping.bytes.count }
    let file: TableFile
    /// The weight of the lists' spread in the probe order, from the file.
    public let probeBonusWeight: Float
    /// The lists' probe bonuses: the weight × each list's spread, computed from the codes at load.
    private let listBonus: UnsafeMutableBufferPointer<Float>

    init(file: TableFile, table: EmbeddingTable, tableFile: TableFile, spec: TableSetManifest.ANNIndexSpec) throws {
        let path = file.path
        guard file.kind == .annIndex else { throw TableError(.mismatch, "not an ANN index file (\(file.kind))", path: path) }
        let params = file.typed(.annParams, as: UInt64.self)
        guard params.count == 8 else { throw TableError.corrupt(path, "ANN parameter section has \(params.count) values, expected 8") }
        guard params[0] == Self.layoutVersion else {
            throw TableError.corrupt(path, "unsupported ANN index layout \(params[0]) (this build reads \(Self.layoutVersion))")
        }
        let lists = Int(clamping: params[1]), m = Int(clamping: params[2]), dsub = Int(clamping: params[3]), positions = Int(clamping: params[4])
        let d = table.dim
        guard file.dim == d, file.rows == table.rowCount else {
            throw TableError(.mismatch, "index is for \(file.rows) rows × \(file.dim), the table has \(table.rowCount) × \(d)", path: path)
        }
        guard params[5] == tableFile.headerChecksum else {
            throw TableError(.mismatch, "index was built for other rows (table checksum \(hex(params[5])), the table file's is \(hex(tableFile.headerChecksum)))", path: path)
        }
        guard lists >= 1, lists <= 1 << 24, m >= 4, m % 4 == 0, m <= 128, dsub >= 1, dsub <= 1024, m * dsub >= d,
              positions >= 0, positions % 32 == 0, positions <= (2 * table.rowCount + 31 * lists) else {
            throw TableError.corrupt(path, "bad ANN parameters: \(lists) lists, \(m) subspaces × \(dsub), \(positions) positions")
        }
        guard lists == spec.lists, m == spec.subspaces, dsub == spec.subspaceDim else {
            throw TableError(.mismatch, "index parameters (\(lists) lists, \(m) × \(dsub)) differ from the manifest's", path: path)
        }
        try file.expectCount(.annCentroids, lists * d, "lists × dim")
        try file.expectCount(.annCodebooks, m * 16 * dsub, "subspaces × 16 × subspace dim")
        try file.expectCount(.annRotation, d * d, "dim × dim")
        try file.expectCount(.annListOffsets, lists + 1, "lists + 1")
        try file.expectCount(.annCodes, positions / 32 * 16 * m, "blocks × 16 × subspaces")
        try file.expectCount(.annRows, positions, "positions")
        let offsets = file.typed(.annListOffsets, as: Int64.self)
        guard offsets[lists] == Int64(positions) else { throw TableError.corrupt(path, "list offsets end at \(offsets[lists]), not \(positions)") }
        // Empty sections have no address; any aligned pointer will do (never read).
        let anyPtr = file.mapping.bytes.baseAddress!
        func ptr<T>(_ id: SectionID, _: T.Type) -> UnsafePointer<T> {
            file.typed(id, as: T.self).baseAddress ?? anyPtr.assumingMemoryBound(to: T.self)
        }
        let plain = IVFPQIndex(dimension: d, listCount: lists, subspaces: m, subspaceDimension: dsub,
                               centroids: ptr(.annCentroids, Float.self), codebooks: ptr(.annCodebooks, Float.self),
                               rotation: ptr(.annRotation, Float.self),
                               listOffsets: offsets.baseAddress!, codes: ptr(.annCodes, UInt8.self), rows: ptr(.annRows, UInt32.self))
        if let problem = plain.validate(rowCount: table.rowCount) { throw TableError.corrupt(path, "ANN index: \(problem)") }
        // params[6]: the probe-bonus weight as Float bits (0 in files written before it existed).
        let weight = Float(bitPattern: UInt32(truncatingIfNeeded: params[6]))
        guard params[6] >> 32 == 0, weight.isFinite, weight >= 0, weight <= 64 else {
            throw TableError.corrupt(path, "bad ANN probe bonus weight (parameter 6 = \(hex(params[6])))")
        }
        let bonus = UnsafeMutableBufferPointer<Float>.allocate(capacity: lists)
        plain.computeListSpread(into: bonus.baseAddress!)
        for l in 0..<lists { bonus[l] *= weight }
        self.probeBonusWeight = weight
        self.listBonus = bonus
        self.file = file
        self.table = table
        self.index = IVFPQIndex(dimension: d, listCount: lists, subspaces: m, subspaceDimension: dsub,
                                centroids: plain.centroids, codebooks: plain.codebooks, rotation: plain.rotation,
                                listOffsets: plain.listOffsets, codes: plain.codes, rows: plain.rows, listBonus: bonus.baseAddress!)
        self.defaults = ANNSearchParameters(nprobe: spec.nprobe, rerank: spec.rerank)
        self.annByDefault = spec.defaultMode == "ann"
    }

    deinit { listBonus.deallocate() }

    /// Writes the index file of `data` built over `tableFile` (the shard's embedding file).
    static func write(path: String, data: IVFPQIndexData, tableFile: TableFile, rows: Int, shard: Int, shardCount: Int,
                      seed: UInt64) throws -> WrittenTableFile {
        let positions = data.rows.count
        let params: [UInt64] = [layoutVersion, UInt64(data.listCount), UInt64(data.subspaces), UInt64(data.subspaceDimension),
                                UInt64(positions), tableFile.headerChecksum, UInt64(data.probeBonusWeight.bitPattern), 0]
        func raw<T>(_ b: UnsafeMutableBufferPointer<T>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(b) }
        let sections: [SectionSpec] = [
            SectionSpec(id: .annParams, count: 8) { try $0.append(contentsOf: params) },
            SectionSpec(id: .annCentroids, count: data.centroids.count) { try $0.append(raw(data.centroids)) },
            SectionSpec(id: .annCodebooks, count: data.codebooks.count) { try $0.append(raw(data.codebooks)) },
            SectionSpec(id: .annRotation, count: data.rotation.count) { try $0.append(raw(data.rotation)) },
            SectionSpec(id: .annListOffsets, count: data.listOffsets.count) { try $0.append(raw(data.listOffsets)) },
            SectionSpec(id: .annCodes, count: data.codes.count) { try $0.append(raw(data.codes)) },
            SectionSpec(id: .annRows, count: data.rows.count) { try $0.append(raw(data.rows)) },
        ]
        let d = TableFileDescriptor(kind: .annIndex, dtype: nil, dim: data.dimension, rows: rows, shard: shard,
                                    shardCount: shardCount, seed: seed, indexCapacity: 0)
        return try TableFileWriter.write(path: path, descriptor: d, sections: sections)
    }

    public func warm() { file.mapping.adviseWillNeed() }
    func lockInMemory() -> String? { file.mapping.lockInMemory() }
}
