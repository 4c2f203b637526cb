/// An item's attributes.
public struct ItemAttributes: Sendable, Hashable {
    /// Bit `i` set: the item has genre `manifest.genres[i]` (at most 64 genres).
    public var genresMask: UInt64
    /// The item's timestamp from `items.csv` (seconds, as given).
    public var timestamp: Int64
    /// Number of interactions with the item in `interactions.csv`.
    public var popularity: Float

    public init(genresMask: UInt64, timestamp: Int64, popularity: Float) {
        self.genresMask = genresMask
        self.timestamp = timestamp
        self.popularity = popularity
    }
}

/// One shard's slice of the attribute table (item id → genres bitmask, timestamp, popularity).
/// Immutable, `Sendable`, allocation-free lookups; the mapping is released in `deinit`.
public final class AttributeTable: @unchecked Sendable {
    public let name: String
    public let rowCount: Int
    /// Item ids of this slice in row order.
    public let ids: UnsafeBufferPointer<UInt64>
    /// The genre vocabulary of the table set (copied from the manifest).
    public let genres: [String]
    public let genreMasks: UnsafeBufferPointer<UInt64>
    public let timestamps: UnsafeBufferPointer<Int64>
    public let popularity: UnsafeBufferPointer<Float>
    public var mappedBytes: Int { file.mapping.bytes.count }

    let file: TableFile
    private let index: SlotIndex
    private let seed: UInt64

    init(name: String, file: TableFile, genres: [String]) throws {
        guard file.kind == .attribute else { throw TableError(.mismatch, "not an attribute table (\(file.kind))", path: file.path) }
        let rows = file.rows
        try file.expectCount(.ids, rows, "one item id per row")
        try file.expectCount(.genreMask, rows, "one genre mask per row")
        try file.expectCount(.timestamps, rows, "one timestamp per row")
        try file.expectCount(.popularity, rows, "one popularity per row")
        let masks = file.typed(.genreMask, as: UInt64.self)
        let allowed: UInt64 = genres.count >= 64 ? .max : (UInt64(1) << UInt64(genres.count)) - 1
        for m in masks where m & ~allowed != 0 {
            throw TableError.corrupt(file.path, "genre mask \(hex(m)) names genres outside the manifest's \(genres.count)")
        }
        self.name = name
        self.file = file
        self.rowCount = rows
        let ids = file.typed(.ids, as: UInt64.self)
        self.ids = ids
        self.genres = genres
        self.genreMasks = masks
        self.timestamps = file.typed(.timestamps, as: Int64.self)
        self.popularity = file.typed(.popularity, as: Float.self)
        self.seed = file.seed
        self.index = try SlotIndex.validate(file, ids: ids, seed: file.seed)
    }

    /// The row of item `id` in this slice, or `nil`.
    public func rowIndex(of id: UInt64) -> Int? {
        index.row(of: id, ids: ids, seed: seed)
    }

    public func attributes(at row: Int) -> ItemAttributes {
        precondition(row >= 0 && row < rowCount)
        return ItemAttributes(genresMask: genreMasks[row], timestamp: timestamps[row], popularity: popularity[row])
    }

    /// The attributes of item `id`, or `nil` if this shard does not hold it.
    public func attributes(forItem id: UInt64) -> ItemAttributes? {
        rowIndex(of: id).map(attributes(at:))
    }

    /// Genre names of a mask (allocates).
    public func genreNames(_ mask: UInt64) -> [String] {
        genres.indices.filter { mask & (UInt64(1) << UInt64($0)) != 0 }.map { genres[$0] }
    }

    public func warm() { file.mapping.adviseWillNeed() }
    func lockInMemory() -> String? { file.mapping.lockInMemory() }
}
