public import ShardRankIDs

/// A user's profile (views into the mapped file, valid while the table is alive).
public struct UserProfileView: @unchecked Sendable {
    /// The user's most recent item ids, most recent first (at most the builder's `--recent N`).
    public let recentItems: UnsafeBufferPointer<UInt64>
    /// Every item the user interacted with: sorted unique ids, delta-varint (`DeltaVarint`;
    /// verified at load). `nil` in a table written before the history sections existed: the
    /// history is then `recentItems` (see `ProfileTable.history(of:)`).
    public let history: UnsafeRawBufferPointer?
    /// Up to 3 indices into the table set's genre vocabulary (`manifest.genres`), most watched
    /// first; `nil` entries are absent.
    public let topGenreIndices: (UInt32?, UInt32?, UInt32?)
    /// Index into the table set's country vocabulary (`manifest.countries`), if known.
    public let countryIndex: UInt32?

    /// The genre indices as an array (allocates).
    public var topGenres: [Int] {
        [topGenreIndices.0, topGenreIndices.1, topGenreIndices.2].compactMap { $0.map(Int.init) }
    }
}

/// One shard's slice of the profile table (user id → recent items, full history, top genres,
/// country).
/// Immutable, `Sendable`, allocation-free lookups; the mapping is released in `deinit`.
public final class ProfileTable: @unchecked Sendable {
    public let name: String
    public let rowCount: Int
    /// User ids of this slice in row order.
    public let ids: UnsafeBufferPointer<UInt64>
    /// The vocabularies of the table set (copied from the manifest).
    public let genres: [String]
    public let countries: [String]
    public var mappedBytes: Int { file.mapping.bytes.count }
    /// Whether the file has the history sections (tables built before them have not).
    public let hasStoredHistory: Bool

    let file: TableFile
    private let recentOffsets: UnsafeBufferPointer<UInt64>
    private let recentIDs: UnsafeBufferPointer<UInt64>
    private let historyOffsets: UnsafeBufferPointer<UInt64>
    private let historyBytes: UnsafeRawBufferPointer
    private let genreSlots: UnsafeBufferPointer<UInt32>
    private let country: UnsafeBufferPointer<UInt32>
    private let index: SlotIndex
    private let seed: UInt64

    init(name: String, file: TableFile, genres: [String], countries: [String]) throws {
        guard file.kind == .profile else { throw TableError(.mismatch, "not a profile table (\(file.kind))", path: file.path) }
        guard file.dim == TableFormat.profileGenreSlots else {
            throw TableError.corrupt(file.path, "profile table has \(file.dim) genre slots, expected \(TableFormat.profileGenreSlots)")
        }
        let rows = file.rows
        try file.expectCount(.ids, rows, "one user id per row")
        try file.expectCount(.recentOffsets, rows + 1, "rows + 1 offsets")
        try file.expectCount(.profileGenres, rows * TableFormat.profileGenreSlots, "3 genre slots per row")
        try file.expectCount(.profileCountry, rows, "one country per row")
        let recentOffsets = file.typed(.recentOffsets, as: UInt64.self)
        try file.validateOffsets(recentOffsets, total: file.count(.recentIDs), .recentOffsets)
        // History (optional): offsets into the byte section; every row's bytes a valid
        // delta-varint stream of its own (so decoding a row never reads past its end).
        if file.has(.historyOffsets) {
            try file.expectCount(.historyOffsets, rows + 1, "rows + 1 history offsets")
            let offsets = file.typed(.historyOffsets, as: UInt64.self)
            try file.validateOffsets(offsets, total: file.count(.historyBytes), .historyOffsets)
            let bytes = file.section(.historyBytes)
            let ids = file.typed(.ids, as: UInt64.self)
            for r in 0..<rows {
                let row = UnsafeRawBufferPointer(rebasing: bytes[Int(offsets[r])..<Int(offsets[r + 1])])
                do throws(DeltaVarint.DecodeError) {
                    _ = try DeltaVarint.validate(row)
                } catch {
                    throw TableError.corrupt(file.path, "history of user \(ids[r]) (row \(r)): \(error)")
                }
            }
            historyOffsets = offsets
            historyBytes = bytes
            hasStoredHistory = true
        } else {
            historyOffsets = UnsafeBufferPointer(start: nil, count: 0)
            historyBytes = UnsafeRawBufferPointer(start: nil, count: 0)
            hasStoredHistory = false
        }
        let genreSlots = file.typed(.profileGenres, as: UInt32.self)
        for g in genreSlots where g != TableFormat.noVocabularyEntry && Int(g) >= genres.count {
            throw TableError.corrupt(file.path, "genre index \(g) outside the manifest's \(genres.count) genres")
        }
        let country = file.typed(.profileCountry, as: UInt32.self)
        for c in country where c != TableFormat.noVocabularyEntry && Int(c) >= countries.count {
            throw TableError.corrupt(file.path, "country index \(c) outside the manifest's \(countries.count) countries")
        }
        self.name = name
        self.file = file
        self.rowCount = rows
        let ids = file.typed(.ids, as: UInt64.self)
        self.ids = ids
        self.genres = genres
        self.countries = countries
        self.recentOffsets = recentOffsets
        self.recentIDs = file.typed(.recentIDs, as: UInt64.self)
        self.genreSlots = genreSlots
        self.country = country
        self.seed = file.seed
        self.index = try SlotIndex.validate(file, ids: ids, seed: file.seed)
    }

    /// The row of user `id` in this slice, or `nil`.
    public func rowIndex(of id: UInt64) -> Int? {
        index.row(of: id, ids: ids, seed: seed)
    }

    /// The profile at `row`.
    public func profile(at row: Int) -> UserProfileView {
        precondition(row >= 0 && row < rowCount)
        let lo = Int(recentOffsets[row]), hi = Int(recentOffsets[row + 1])
        func slot(_ v: UInt32) -> UInt32? { v == TableFormat.noVocabularyEntry ? nil : v }
        let g = row * TableFormat.profileGenreSlots
        let history = hasStoredHistory
            ? UnsafeRawBufferPointer(rebasing: historyBytes[Int(historyOffsets[row])..<Int(historyOffsets[row + 1])]) : nil
        return UserProfileView(recentItems: UnsafeBufferPointer(rebasing: recentIDs[lo..<hi]), history: history,
                               topGenreIndices: (slot(genreSlots[g]), slot(genreSlots[g + 1]), slot(genreSlots[g + 2])),
                               countryIndex: slot(country[row]))
    }

    /// The profile of user `id`, or `nil` if this shard does not hold it.
    public func profile(forUser id: UInt64) -> UserProfileView? {
        rowIndex(of: id).map(profile(at:))
    }

    /// The profile's whole history as a `PackedIDs` (copies the stored bytes; for a table without
    /// history sections, packs the recent items).
    public func history(of p: UserProfileView) -> PackedIDs {
        guard let h = p.history else { return PackedIDs(Array(p.recentItems)) }
        return PackedIDs(trustedBytes: Array(h), count: DeltaVarint.terminatorCount(h))
    }

    /// Genre names of a profile, most watched first (allocates).
    public func topGenreNames(_ p: UserProfileView) -> [String] { p.topGenres.map { genres[$0] } }

    /// Country name of a profile (allocates), if known.
    public func countryName(_ p: UserProfileView) -> String? { p.countryIndex.map { countries[Int($0)] } }

    public func warm() { file.mapping.adviseWillNeed() }
    func lockInMemory() -> String? { file.mapping.lockInMemory() }
}
