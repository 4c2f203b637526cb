import ShardRankRouting
/// A ranked list: ids best first with their scores (views into the mapped file, valid while the
/// table that returned them is alive).
public struct RankedListView: @unchecked Sendable {
    public let ids: UnsafeBufferPointer<UInt64>
    public let scores: UnsafeBufferPointer<Float>
    public var count: Int { ids.count }
}

/// One shard's slice of a list table (string key → ranked ids with f32 scores): `similar` (keyed by
/// the decimal item id), `genre_top` (genre name), `country_top` (country), `popular` (key `all`),
/// or a list supplied to the builder. Immutable, `Sendable`, allocation-free lookups for native
/// strings; the mapping is released in `deinit`.
public final class ListTable: @unchecked Sendable {
    public let name: String
    /// Number of keys in this slice.
    public let keyCount: Int
    public var mappedBytes: Int { file.mapping.bytes.count }

    let file: TableFile
    private let keyOffsets: UnsafeBufferPointer<UInt64>
    private let keyBytes: UnsafeRawBufferPointer
    private let listOffsets: UnsafeBufferPointer<UInt64>
    private let listIDs: UnsafeBufferPointer<UInt64>
    private let listScores: UnsafeBufferPointer<Float>
    private let index: SlotIndex
    private let seed: UInt64

    init(name: String, file: TableFile) throws {
        guard file.kind == .list else { throw TableError(.mismatch, "not a list table (\(file.kind))", path: file.path) }
        let rows = file.rows
        try file.expectCount(.keyOffsets, rows + 1, "rows + 1 key offsets")
        try file.expectCount(.listOffsets, rows + 1, "rows + 1 list offsets")
        let keyOffsets = file.typed(.keyOffsets, as: UInt64.self)
        let keyBytes = file.section(.keyBytes)
        try file.validateOffsets(keyOffsets, total: keyBytes.count, .keyOffsets)
        let listOffsets = file.typed(.listOffsets, as: UInt64.self)
        let entries = file.count(.listIDs)
        try file.expectCount(.listScores, entries, "one score per list entry")
        try file.validateOffsets(listOffsets, total: entries, .listOffsets)
        self.name = name
        self.file = file
        self.keyCount = rows
        self.keyOffsets = keyOffsets
        self.keyBytes = keyBytes
        self.listOffsets = listOffsets
        self.listIDs = file.typed(.listIDs, as: UInt64.self)
        self.listScores = file.typed(.listScores, as: Float.self)
        self.seed = file.seed
        let seed = file.seed
        self.index = try SlotIndex.validate(file, rows: rows) { index, r in
            let key = Self.keySlice(keyBytes, keyOffsets, r)
            return index.find(hash: StableHash.hash(bytes: key, seed: seed)) { Self.keySlice(keyBytes, keyOffsets, $0).elementsEqual(key) }
        }
        for s in listScores where s.isNaN { throw TableError.corrupt(file.path, "a list score is NaN") }
    }

    private static func keySlice(_ bytes: UnsafeRawBufferPointer, _ offsets: UnsafeBufferPointer<UInt64>, _ r: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Int(offsets[r])..<Int(offsets[r + 1])])
    }

    /// The key index of `key` (UTF-8 bytes) in this slice.
    public func keyIndex(ofKeyBytes key: UnsafeRawBufferPointer) -> Int? {
        let keyBytes = self.keyBytes, keyOffsets = self.keyOffsets
        return index.find(hash: StableHash.hash(bytes: key, seed: seed)) {
            Self.keySlice(keyBytes, keyOffsets, $0).elementsEqual(key)
        }
    }

    /// The key index of `key` in this slice, or `nil` if this shard does not hold it.
    public func keyIndex(of key: String) -> Int? {
        if let r = key.utf8.withContiguousStorageIfAvailable({ keyIndex(ofKeyBytes: UnsafeRawBufferPointer($0)) }) {
            return r
        }
        var copy = key
        copy.makeContiguousUTF8()
        return copy.utf8.withContiguousStorageIfAvailable { keyIndex(ofKeyBytes: UnsafeRawBufferPointer($0)) }!
    }

    /// The ranked list of `key` (best first), or `nil` if this shard does not hold the key.
    public func list(forKey key: String) -> RankedListView? {
        keyIndex(of: key).map(list(at:))
    }

    /// The ranked list of the key at `keyIndex`.
    public func list(at keyIndex: Int) -> RankedListView {
        precondition(keyIndex >= 0 && keyIndex < keyCount)
        let lo = Int(listOffsets[keyIndex]), hi = Int(listOffsets[keyIndex + 1])
        return RankedListView(ids: UnsafeBufferPointer(rebasing: listIDs[lo..<hi]),
                              scores: UnsafeBufferPointer(rebasing: listScores[lo..<hi]))
    }

    /// The key at `keyIndex` (allocates a String).
    public func key(at keyIndex: Int) -> String {
        precondition(keyIndex >= 0 && keyIndex < keyCount)
        return String(decoding: Self.keySlice(keyBytes, keyOffsets, keyIndex), as: UTF8.self)
    }

    /// All keys of this slice (allocates).
    public var keys: [String] { (0..<keyCount).map(key(at:)) }

    public func warm() { file.mapping.adviseWillNeed() }
    func lockInMemory() -> String? { file.mapping.lockInMemory() }
}
