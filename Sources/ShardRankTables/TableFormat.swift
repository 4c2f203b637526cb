/// Element type of embedding rows. Raw values match `shardrank.v1.DType` and the on-disk header.
public enum TableDType: UInt32, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    /// IEEE-754 binary32, 4 bytes per element.
    case f32 = 1
    /// IEEE-754 binary16, 2 bytes per element.
    case f16 = 2
    /// Two's-complement int8, 1 byte per element; value = int8 × the row's f32 scale.
    case int8 = 3

    /// Bytes per element.
    public var elementSize: Int {
        switch self {
        case .f32: 4
        case .f16: 2
        case .int8: 1
        }
    }

    /// The name used in `manifest.json` and on the command line.
    public var name: String {
        switch self {
        case .f32: "f32"
        case .f16: "f16"
        case .int8: "int8"
        }
    }

    public var description: String { name }

    public init?(name: String) {
        guard let v = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = v
    }

    public init(from decoder: any Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let v = TableDType(name: s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown dtype \(s)"))
        }
        self = v
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(name)
    }
}

/// What a table holds. Raw values match `shardrank.v1.TableKind` and the on-disk header.
public enum TableKind: UInt32, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    /// id → vector.
    case embedding = 1
    /// string key → ranked ids with f32 scores.
    case list = 2
    /// user id → recent item ids, top genres, country.
    case profile = 3
    /// item id → genres bitmask, timestamp, popularity.
    case attribute = 4
    /// An approximate-nearest-neighbour index over an embedding table's shard file (IVF-PQ4).
    /// Never a table of its own in the manifest: it hangs off its embedding table (`index`).
    case annIndex = 5

    public var name: String {
        switch self {
        case .embedding: "embedding"
        case .list: "list"
        case .profile: "profile"
        case .attribute: "attribute"
        case .annIndex: "ann-index"
        }
    }

    public var description: String { name }

    public init?(name: String) {
        guard let v = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = v
    }

    public init(from decoder: any Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let v = TableKind(name: s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown table kind \(s)"))
        }
        self = v
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(name)
    }
}

/// Constants and the fixed layout of a table file (format version 1). `docs/table-format.md` is the
/// prose version of this; keep them in step.
enum TableFormat {
    static let magic: [UInt8] = Array("SRKTABLE".utf8)
    static let formatVersion: UInt32 = 1
    static let headerSize = 128
    static let sectionEntrySize = 32
    static let maxSections = 16
    static let alignment = 64
    static let blockSize = 1 << 20
    /// `u32` slot value of an empty index slot; other values are `row + 1`.
    static let emptySlot: UInt32 = 0
    /// "No genre" / "no country" in profile tables.
    static let noVocabularyEntry: UInt32 = .max
    /// Genre slots per profile row (the header's `dim` for profile tables).
    static let profileGenreSlots = 3
    /// Largest rows per file (ids are indexed by `u32` slots holding `row + 1`).
    static let maxRowsPerFile = Int(UInt32.max) - 1

    // Header field offsets.
    static let offMagic = 0
    static let offFormatVersion = 8
    static let offKind = 12
    static let offDType = 16
    static let offDim = 20
    static let offRows = 24
    static let offShard = 32
    static let offShardCount = 36
    static let offSeed = 40
    static let offSectionCount = 48
    static let offBlockSize = 52
    static let offPayloadOffset = 56
    static let offFileSize = 64
    static let offBlockCount = 72
    static let offIndexCapacity = 80
    static let offHeaderChecksum = 120

    static func align(_ x: Int) -> Int { (x + alignment - 1) & ~(alignment - 1) }

    /// Index capacity for `rows` keys: the smallest power of two ≥ max(16, 2 × rows) (load ≤ 0.5).
    static func indexCapacity(rows: Int) -> Int {
        var cap = 16
        while cap < rows * 2 { cap <<= 1 }
        return cap
    }
}

/// Section identifiers (the `id` of a section-table entry).
enum SectionID: UInt32, CaseIterable {
    case ids = 1             // u64[rows]: row keys (embedding, profile, attribute)
    case index = 2           // u32[capacity]: open-addressing slots, row + 1 or 0
    case keyOffsets = 3      // u64[rows + 1]: string keys (list)
    case keyBytes = 4        // u8[keyOffsets[rows]]
    case vectors = 10        // dtype[rows * dim]
    case scales = 11         // f32[rows] (int8 only)
    case listOffsets = 20    // u64[rows + 1]
    case listIDs = 21        // u64[listOffsets[rows]]
    case listScores = 22     // f32[listOffsets[rows]]
    case recentOffsets = 30  // u64[rows + 1]
    case recentIDs = 31      // u64[recentOffsets[rows]]
    case profileGenres = 32  // u32[rows * 3]
    case profileCountry = 33 // u32[rows]
    case historyOffsets = 34 // u64[rows + 1]: byte offsets into historyBytes
    case historyBytes = 35   // u8[historyOffsets[rows]]: each row's sorted unique item ids, delta-varint
    case genreMask = 40      // u64[rows]
    case timestamps = 41     // i64[rows]
    case popularity = 42     // f32[rows]
    case annParams = 50      // u64[8]: layout version, lists, subspaces, subspace dim, positions, table checksum, 0, 0
    case annCentroids = 51   // f32[lists * dim]
    case annCodebooks = 52   // f32[subspaces * 16 * subspace dim]
    case annListOffsets = 53 // i64[lists + 1]
    case annCodes = 54       // u8[positions / 32 * 16 * subspaces]
    case annRows = 55        // u32[positions]
    case annRotation = 56    // f32[dim * dim]

    var elementSize: Int {
        switch self {
        case .ids, .keyOffsets, .listOffsets, .listIDs, .recentOffsets, .recentIDs, .historyOffsets, .genreMask, .timestamps,
             .annParams, .annListOffsets: 8
        case .index, .scales, .listScores, .profileGenres, .profileCountry, .popularity, .annCentroids, .annCodebooks, .annRows, .annRotation: 4
        case .keyBytes, .historyBytes, .annCodes: 1
        case .vectors: 1 // the vectors section counts bytes
        }
    }

    /// The sections a table of `kind` has, in file order (what the writer writes).
    static func sections(for kind: TableKind, dtype: TableDType?) -> [SectionID] {
        switch kind {
        case .embedding: dtype == .int8 ? [.ids, .index, .vectors, .scales] : [.ids, .index, .vectors]
        case .list: [.keyOffsets, .keyBytes, .index, .listOffsets, .listIDs, .listScores]
        case .profile: profileWithoutHistory + [.historyOffsets, .historyBytes]
        case .attribute: [.ids, .index, .genreMask, .timestamps, .popularity]
        case .annIndex: [.annParams, .annCentroids, .annCodebooks, .annRotation, .annListOffsets, .annCodes, .annRows]
        }
    }

    /// A profile table as written before the history sections existed (still loaded: each
    /// user's history is then their recent items).
    static let profileWithoutHistory: [SectionID] = [.ids, .index, .recentOffsets, .recentIDs, .profileGenres, .profileCountry]

    /// Every section set the loader accepts for `kind` (the current one first).
    static func acceptedSections(for kind: TableKind, dtype: TableDType?) -> [[SectionID]] {
        kind == .profile ? [sections(for: kind, dtype: dtype), profileWithoutHistory] : [sections(for: kind, dtype: dtype)]
    }
}

#if _endian(big)
#error("the table-set format is little-endian and is mapped in place; big-endian hosts are not supported")
#endif
