public import ShardRankRouting
public import ShardRankKernels
import ShardRankIDs
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// A ranked list to store in a list table.
public struct RankedListRecord: Sendable, Equatable {
    public var key: String
    /// Best first.
    public var ids: [UInt64]
    public var scores: [Float]

    public init(key: String, ids: [UInt64], scores: [Float]) {
        self.key = key
        self.ids = ids
        self.scores = scores
    }
}

/// A user profile to store in a profile table.
public struct UserProfileRecord: Sendable, Equatable {
    public var userID: UInt64
    /// Most recent first.
    public var recentItems: [UInt64]
    /// Every item the user interacted with (any order, repeats allowed). The table stores the
    /// sorted unique union of this and `recentItems`.
    public var history: [UInt64]
    /// At most 3 indices into the builder's genre vocabulary, most watched first.
    public var topGenres: [Int]
    /// Index into the builder's country vocabulary.
    public var country: Int?

    /// - Parameter history: every item of the user's history; nil: only the recent items.
    public init(userID: UInt64, recentItems: [UInt64], history: [UInt64]? = nil, topGenres: [Int], country: Int?) {
        self.userID = userID
        self.recentItems = recentItems
        self.history = history ?? []
        self.topGenres = topGenres
        self.country = country
    }

    /// What the table stores as the history: sorted, unique, the recent items included.
    public var storedHistory: [UInt64] { SortedIDs.sortedUnique(history + recentItems) }
}

/// An item's attributes to store in an attribute table.
public struct ItemAttributeRecord: Sendable, Equatable {
    public var itemID: UInt64
    public var attributes: ItemAttributes

    public init(itemID: UInt64, attributes: ItemAttributes) {
        self.itemID = itemID
        self.attributes = attributes
    }
}

/// Progress of a long step, for a progress bar: `done` of `total` units of `stage`.
public struct BuildProgress: Sendable {
    public var stage: String
    public var done: Int
    public var total: Int
}

/// Writes a new table-set version under a root: `<root>/v<N+1>/`.
///
/// Each `add…` call validates its input, then writes the table's S shard files immediately (each
/// one: temp name → fsync → rename) into the new version directory; `publish()` writes
/// `manifest.json` last (temp → fsync → rename) and fsyncs the directories. Until `publish()`
/// returns, the version has no manifest and every loader ignores it; if the builder is dropped
/// unpublished (an error was thrown), the directory is removed. Not thread-safe: one thread drives
/// a builder.
public final class TableSetBuilder {
    public let root: String
    public let router: ShardRouter
    public let genres: [String]
    public let countries: [String]
    private let progress: (@Sendable (BuildProgress) -> Void)?
    private var tables: [TableSetManifest.Table] = []
    private var stagedVersion: UInt64?
    private var published = false
    /// Write the profile tables' history sections (off only to produce the older layout in tests).
    var writesProfileHistory = true

    /// - Parameters:
    ///   - genres: the genre vocabulary (≤ 64 names) that attribute masks and profiles refer to.
    ///   - countries: the country vocabulary that profiles refer to.
    /// - Throws: `TableError(.invalidInput)` for a bad shard count or vocabulary.
    public init(root: String, shardCount: Int, seed: UInt64 = StableHash.defaultSeed,
                genres: [String] = [], countries: [String] = [],
                progress: (@Sendable (BuildProgress) -> Void)? = nil) throws {
        guard shardCount >= 1 && shardCount <= 65_536 else {
            throw TableError(.invalidInput, "shard count must be in 1...65536, got \(shardCount)")
        }
        guard genres.count <= 64 else { throw TableError(.invalidInput, "at most 64 genres are supported, got \(genres.count)") }
        guard Set(genres).count == genres.count else { throw TableError(.invalidInput, "duplicate genre names") }
        guard Set(countries).count == countries.count else { throw TableError(.invalidInput, "duplicate country names") }
        self.root = root
        self.router = ShardRouter(shardCount: shardCount, seed: seed)
        self.genres = genres
        self.countries = countries
        self.progress = progress
    }

    deinit {
        if !published, let v = stagedVersion {
            FileIO.removeTree(TableSetCatalog(root: root).directory(of: v))
        }
    }

    /// The version directory being written (created on the first `add…`).
    public var stagingVersion: UInt64? { stagedVersion }

    private func versionDirectory() throws -> String {
        let catalog = TableSetCatalog(root: root)
        if let v = stagedVersion { return catalog.directory(of: v) }
        try FileIO.makeDirectories(root)
        var next = (try catalog.versionDirectories().last ?? 0) + 1
        while !(try FileIO.makeDirectoryExclusive(catalog.directory(of: next))) { next += 1 }
        stagedVersion = next
        return catalog.directory(of: next)
    }

    private func checkName(_ name: String) throws {
        guard TableSetManifest.isValidTableName(name) else {
            throw TableError(.invalidInput, "table name \"\(name)\" must be 1–64 characters of A–Z a–z 0–9 _ -")
        }
        guard !tables.contains(where: { $0.name == name }) else { throw TableError(.invalidInput, "table \(name) added twice") }
        guard !published else { throw TableError(.invalidInput, "table set already published") }
    }

    /// Groups row indices by the shard of their key.
    private func partition(count: Int, shardOf: (Int) -> Int) -> [[Int]] {
        var perShard = [[Int]](repeating: [], count: router.shardCount)
        for r in 0..<count { perShard[shardOf(r)].append(r) }
        return perShard
    }

    private func writeShards(name: String, kind: TableKind, dtype: TableDType?, dim: Int, totalRows: Int,
                             perShard: [[Int]], sections: (Int, [Int]) throws -> (indexCapacity: Int, [SectionSpec])) throws {
        let dir = try versionDirectory()
        var files: [TableSetManifest.File] = []
        for shard in 0..<router.shardCount {
            let rows = perShard[shard]
            let (cap, specs) = try sections(shard, rows)
            let fileName = TableSetManifest.fileName(table: name, shard: shard, shardCount: router.shardCount)
            let d = TableFileDescriptor(kind: kind, dtype: dtype, dim: dim, rows: rows.count, shard: shard,
                                        shardCount: router.shardCount, seed: router.seed, indexCapacity: cap)
            let written = try TableFileWriter.write(path: dir + "/" + fileName, descriptor: d, sections: specs)
            files.append(.init(shard: shard, file: fileName, rows: UInt64(rows.count), bytes: UInt64(written.fileSize),
                               checksum: "xxh64:" + hex(written.headerChecksum).dropFirst(2)))
            progress?(BuildProgress(stage: "write \(name)", done: shard + 1, total: router.shardCount))
        }
        tables.append(.init(name: name, kind: kind, dim: dim, dtype: dtype, rows: UInt64(totalRows), shards: files))
    }

    // MARK: - Embedding tables

    /// Checks an embedding input: `vectors.count == ids.count * dim`, ids unique, every value
    /// finite (and within f16 range when converting to f16). Errors name `source` (and
    /// `idSource` for id errors) and the 1-based row.
    public static func validateEmbedding(ids: [UInt64], vectors: UnsafeBufferPointer<Float>, dim: Int, dtype: TableDType,
                                         source: String, idSource: String? = nil) throws {
        guard dim >= 1 else { throw TableError.input(source, "dimension must be ≥ 1") }
        guard vectors.count == ids.count * dim else {
            throw TableError.input(source, "\(vectors.count / max(dim, 1)) rows of vectors for \(ids.count) ids")
        }
        guard ids.count <= TableFormat.maxRowsPerFile else { throw TableError.input(source, "too many rows") }
        var seen = [UInt64: Int](minimumCapacity: ids.count)
        for (r, id) in ids.enumerated() {
            if let first = seen.updateValue(r, forKey: id) {
                throw TableError.input(idSource ?? source, line: r + 1, "duplicate id \(id) (first at row \(first + 1))")
            }
        }
        let limit: Float = dtype == .f16 ? 65504 : .greatestFiniteMagnitude
        for r in 0..<ids.count {
            let row = UnsafeBufferPointer(rebasing: vectors[(r * dim)..<((r + 1) * dim)])
            for (c, x) in row.enumerated() where !x.isFinite || abs(x) > limit {
                throw TableError.input(source, line: r + 1,
                                       x.isFinite ? "value \(x) in column \(c + 1) does not fit f16" : "row has a non-finite value (\(x)) in column \(c + 1)")
            }
        }
    }

    /// Adds an embedding table: row `r` of `vectors` (`ids.count * dim` f32 values, row-major) is
    /// the vector of `ids[r]`; stored as `dtype` (f16: round to nearest even; int8: per-row scale
    /// `max|x| / 127` (1 for an all-zero row), values rounded to nearest, ties away from zero).
    /// `vectors` need only stay valid during the call.
    public func addEmbedding(name: String, ids: [UInt64], vectors: UnsafeBufferPointer<Float>, dim: Int,
                             dtype: TableDType = .f32, source: String? = nil, validated: Bool = false) throws {
        try checkName(name)
        if !validated {
            try Self.validateEmbedding(ids: ids, vectors: vectors, dim: dim, dtype: dtype, source: source ?? name)
        }
        let seed = router.seed
        let perShard = partition(count: ids.count) { router.shard(ofID: ids[$0]) }
        let rowBytes = dim * dtype.elementSize
        try writeShards(name: name, kind: .embedding, dtype: dtype, dim: dim, totalRows: ids.count, perShard: perShard) { _, rows in
            let slots = SlotIndex.build(hashes: rows.map { StableHash.hash(id: ids[$0], seed: seed) })
            var scales = [Float](repeating: 1, count: dtype == .int8 ? rows.count : 0)
            var specs: [SectionSpec] = [
                SectionSpec(id: .ids, count: rows.count) { sink in
                    for r in rows { try sink.append(ids[r].littleEndian) }
                },
                SectionSpec(id: .index, count: slots.count) { try $0.append(contentsOf: slots) },
                SectionSpec(id: .vectors, count: rows.count * rowBytes) { sink in
                    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(rowBytes, 1), alignment: 16)
                    defer { scratch.deallocate() }
                    for (k, r) in rows.enumerated() {
                        let row = UnsafeBufferPointer(rebasing: vectors[(r * dim)..<((r + 1) * dim)])
                        switch dtype {
                        case .f32:
                            try sink.append(UnsafeRawBufferPointer(row))
                        case .f16:
                            let h = scratch.bindMemory(to: UInt16.self)
                            for i in 0..<dim { h[i] = Self.toF16Bits(row[i]).littleEndian }
                            try sink.append(UnsafeRawBufferPointer(scratch))
                        case .int8:
                            let q = scratch.bindMemory(to: Int8.self)
                            scales[k] = Self.quantize(row, into: q)
                            try sink.append(UnsafeRawBufferPointer(scratch))
                        }
                    }
                },
            ]
            if dtype == .int8 {
                specs.append(SectionSpec(id: .scales, count: rows.count) { try $0.append(contentsOf: scales) })
            }
            return (slots.count, specs)
        }
    }

    /// f32 → IEEE binary16 bits, round to nearest even.
    static func toF16Bits(_ x: Float) -> UInt16 {
        #if arch(x86_64) || arch(arm64)
        return Float16(x).bitPattern
        #else
        fatalError("f16 conversion needs Float16")
        #endif
    }

    /// Quantises a row to int8 with a per-row scale; returns the scale.
    static func quantize(_ row: UnsafeBufferPointer<Float>, into q: UnsafeMutableBufferPointer<Int8>) -> Float {
        var maxAbs: Float = 0
        for x in row { maxAbs = max(maxAbs, abs(x)) }
        let scale: Float = maxAbs > 0 ? maxAbs / 127 : 1
        for i in 0..<row.count {
            let v = (row[i] / scale).rounded(.toNearestOrAwayFromZero)
            q[i] = Int8(max(-127, min(127, v)))
        }
        return scale
    }

    // MARK: - List tables

    /// Adds a list table (key → ranked ids with scores), sharded by the key's UTF-8 hash. Keys must
    /// be unique and non-empty; each list's ids and scores must have the same length; scores must
    /// not be NaN. Lists are stored in the order given (best first).
    public func addList(name: String, lists: [RankedListRecord], source: String? = nil) throws {
        try checkName(name)
        var seen = Set<String>()
        for (i, l) in lists.enumerated() {
            guard !l.key.isEmpty else { throw TableError.input(source ?? name, "list \(i + 1) has an empty key") }
            guard seen.insert(l.key).inserted else { throw TableError.input(source ?? name, "duplicate list key \"\(l.key)\"") }
            guard l.ids.count == l.scores.count else {
                throw TableError.input(source ?? name, "list \"\(l.key)\" has \(l.ids.count) ids and \(l.scores.count) scores")
            }
            guard !l.scores.contains(where: \.isNaN) else { throw TableError.input(source ?? name, "list \"\(l.key)\" has a NaN score") }
        }
        let seed = router.seed
        let perShard = partition(count: lists.count) { router.shard(ofKey: lists[$0].key) }
        try writeShards(name: name, kind: .list, dtype: nil, dim: 0, totalRows: lists.count, perShard: perShard) { _, rows in
            let keys = rows.map { Array(lists[$0].key.utf8) }
            let slots = SlotIndex.build(hashes: keys.map { k in k.withUnsafeBytes { StableHash.hash(bytes: $0, seed: seed) } })
            var keyOffsets: [UInt64] = [0]
            for k in keys { keyOffsets.append(keyOffsets.last! + UInt64(k.count)) }
            var listOffsets: [UInt64] = [0]
            for r in rows { listOffsets.append(listOffsets.last! + UInt64(lists[r].ids.count)) }
            let entries = Int(listOffsets.last!)
            return (slots.count, [
                SectionSpec(id: .keyOffsets, count: keyOffsets.count) { try $0.append(contentsOf: keyOffsets) },
                SectionSpec(id: .keyBytes, count: Int(keyOffsets.last!)) { sink in for k in keys { try sink.append(contentsOf: k) } },
                SectionSpec(id: .index, count: slots.count) { try $0.append(contentsOf: slots) },
                SectionSpec(id: .listOffsets, count: listOffsets.count) { try $0.append(contentsOf: listOffsets) },
                SectionSpec(id: .listIDs, count: entries) { sink in for r in rows { try sink.append(contentsOf: lists[r].ids) } },
                SectionSpec(id: .listScores, count: entries) { sink in for r in rows { try sink.append(contentsOf: lists[r].scores) } },
            ])
        }
    }

    // MARK: - Profile and attribute tables

    /// Adds a profile table (user id → recent items, whole history, ≤ 3 top genres, country),
    /// sharded by user id. The history is stored per row as delta-varint bytes (`DeltaVarint`)
    /// of the sorted unique union of `history` and `recentItems`.
    public func addProfiles(name: String = "profiles", _ profiles: [UserProfileRecord], source: String? = nil) throws {
        try checkName(name)
        var seen = Set<UInt64>()
        for p in profiles {
            guard seen.insert(p.userID).inserted else { throw TableError.input(source ?? name, "duplicate user \(p.userID)") }
            guard p.topGenres.count <= TableFormat.profileGenreSlots, p.topGenres.allSatisfy({ $0 >= 0 && $0 < genres.count }) else {
                throw TableError.input(source ?? name, "user \(p.userID): bad top genres \(p.topGenres) for \(genres.count) genres")
            }
            if let c = p.country, !(c >= 0 && c < countries.count) {
                throw TableError.input(source ?? name, "user \(p.userID): country index \(c) outside \(countries.count) countries")
            }
        }
        let seed = router.seed
        let perShard = partition(count: profiles.count) { router.shard(ofID: profiles[$0].userID) }
        try writeShards(name: name, kind: .profile, dtype: nil, dim: TableFormat.profileGenreSlots, totalRows: profiles.count,
                        perShard: perShard) { _, rows in
            let slots = SlotIndex.build(hashes: rows.map { StableHash.hash(id: profiles[$0].userID, seed: seed) })
            var offsets: [UInt64] = [0]
            for r in rows { offsets.append(offsets.last! + UInt64(profiles[r].recentItems.count)) }
            var genreSlots: [UInt32] = []
            genreSlots.reserveCapacity(rows.count * TableFormat.profileGenreSlots)
            for r in rows {
                let g = profiles[r].topGenres
                for i in 0..<TableFormat.profileGenreSlots { genreSlots.append(i < g.count ? UInt32(g[i]) : TableFormat.noVocabularyEntry) }
            }
            let country = rows.map { profiles[$0].country.map(UInt32.init) ?? TableFormat.noVocabularyEntry }
            var specs = [
                SectionSpec(id: .ids, count: rows.count) { sink in for r in rows { try sink.append(profiles[r].userID) } },
                SectionSpec(id: .index, count: slots.count) { try $0.append(contentsOf: slots) },
                SectionSpec(id: .recentOffsets, count: offsets.count) { try $0.append(contentsOf: offsets) },
                SectionSpec(id: .recentIDs, count: Int(offsets.last!)) { sink in for r in rows { try sink.append(contentsOf: profiles[r].recentItems) } },
                SectionSpec(id: .profileGenres, count: genreSlots.count) { try $0.append(contentsOf: genreSlots) },
                SectionSpec(id: .profileCountry, count: country.count) { try $0.append(contentsOf: country) },
            ]
            if writesProfileHistory {
                // The shard's histories, encoded (1–3 bytes per item for a catalog's ids).
                let encoded = rows.map { DeltaVarint.encode(profiles[$0].storedHistory) }
                var historyOffsets: [UInt64] = [0]
                historyOffsets.reserveCapacity(rows.count + 1)
                for e in encoded { historyOffsets.append(historyOffsets.last! + UInt64(e.count)) }
                specs.append(SectionSpec(id: .historyOffsets, count: historyOffsets.count) { try $0.append(contentsOf: historyOffsets) })
                specs.append(SectionSpec(id: .historyBytes, count: Int(historyOffsets.last!)) { sink in
                    for e in encoded { try sink.append(contentsOf: e) }
                })
            }
            return (slots.count, specs)
        }
    }

    /// Adds an attribute table (item id → genres mask, timestamp, popularity), sharded by item id.
    public func addAttributes(name: String = "attributes", _ items: [ItemAttributeRecord], source: String? = nil) throws {
        try checkName(name)
        let allowed: UInt64 = genres.count >= 64 ? .max : (UInt64(1) << UInt64(genres.count)) - 1
        var seen = Set<UInt64>()
        for a in items {
            guard seen.insert(a.itemID).inserted else { throw TableError.input(source ?? name, "duplicate item \(a.itemID)") }
            guard a.attributes.genresMask & ~allowed == 0 else {
                throw TableError.input(source ?? name, "item \(a.itemID): genre mask names genres outside the \(genres.count) known")
            }
        }
        let seed = router.seed
        let perShard = partition(count: items.count) { router.shard(ofID: items[$0].itemID) }
        try writeShards(name: name, kind: .attribute, dtype: nil, dim: 0, totalRows: items.count, perShard: perShard) { _, rows in
            let slots = SlotIndex.build(hashes: rows.map { StableHash.hash(id: items[$0].itemID, seed: seed) })
            return (slots.count, [
                SectionSpec(id: .ids, count: rows.count) { sink in for r in rows { try sink.append(items[r].itemID) } },
                SectionSpec(id: .index, count: slots.count) { try $0.append(contentsOf: slots) },
                SectionSpec(id: .genreMask, count: rows.count) { sink in for r in rows { try sink.append(items[r].attributes.genresMask) } },
                SectionSpec(id: .timestamps, count: rows.count) { sink in for r in rows { try sink.append(items[r].attributes.timestamp) } },
                SectionSpec(id: .popularity, count: rows.count) { sink in for r in rows { try sink.append(items[r].attributes.popularity) } },
            ])
        }
    }

    // MARK: - ANN indexes

    /// What `addANNIndex` measured.
    public struct ANNIndexReport: Sendable {
        public var lists: Int
        public var subspaces: Int
        /// recall@10 of the default knobs against exact search, over `sampledQueries` queries
        /// (each against every shard's slice).
        public var recallAt10: Double
        public var sampledQueries: Int
        public var seconds: Double
        /// The queries were the given query vectors (else stored rows).
        public var queriesGiven: Bool
        /// The probe-bonus weight chosen per shard (`IVFPQBuilder.chooseProbeBonusWeight`).
        public var probeBonusWeights: [Float] = []
    }

    /// Builds an IVF-PQ4 index for each shard file of the embedding table `table` (already added
    /// to this version) and records it in the manifest entry of that table. The index describes
    /// the rows as stored (after f16/int8 conversion). `options.lists` nil = per shard,
    /// `IVFPQBuilder.defaultListCount(rows:)`. Then measures recall@10 of `defaults` against the
    /// exact scan on `recallSample` seeded queries: rows of `queries` (e.g. the user vectors, the
    /// queries the shards will serve; `dim` floats each) when given, else stored rows.
    /// - Throws: `TableError(.invalidInput)` for an unknown or non-embedding table, or what the
    ///   index builder refuses (e.g. non-finite values).
    @discardableResult
    public func addANNIndex(table name: String, options: IVFPQBuildOptions, defaults: ANNSearchParameters,
                            defaultMode: String = "ann", pool: WorkerPool?, recallSample: Int = 200,
                            queries: UnsafeBufferPointer<Float>? = nil) throws -> ANNIndexReport {
        guard let ti = tables.firstIndex(where: { $0.name == name }) else {
            throw TableError(.invalidInput, "--ann: no table \(name) in this build")
        }
        guard tables[ti].kind == .embedding, tables[ti].index == nil else {
            throw TableError(.invalidInput, "--ann: table \(name) is not an embedding table without an index")
        }
        guard defaultMode == "ann" || defaultMode == "exact" else { throw TableError(.invalidInput, "default mode must be ann or exact") }
        let start = ContinuousClock.now
        let dir = try versionDirectory()
        var files: [TableSetManifest.File] = []
        var lists = 0, subspaces = 0, subspaceDim = 0
        var hits = 0, asked = 0
        var weights: [Float] = []
        var rng = SplitMix64(seed: options.seed ^ 0xA11CE)
        // One list count for every shard (the manifest records one), from the average slice.
        var opts = options
        if opts.lists == nil {
            opts.lists = IVFPQBuilder.defaultListCount(rows: max(1, Int(tables[ti].rows) / router.shardCount))
        }
        for shard in 0..<router.shardCount {
            let entry = tables[ti].shards[shard]
            let tableFile = try TableFile.open(path: dir + "/" + entry.file)
            let table = try EmbeddingTable(name: name, file: tableFile)
            let rows = table.rowMatrix
            let fileName = TableSetManifest.indexFileName(table: name, shard: shard, shardCount: router.shardCount)
            let written: WrittenTableFile
            if rows.count == 0 {
                throw TableError(.invalidInput, "--ann: shard \(shard) of table \(name) has no rows to index")
            }
            let data: IVFPQIndexData
            do {
                data = try IVFPQBuilder.build(rows: rows, options: opts, pool: pool) { stage, fraction in
                    self.progress?(BuildProgress(stage: "index \(name) shard \(shard + 1)/\(self.router.shardCount): \(stage)",
                                                 done: Int(fraction * 100), total: 100))
                }
            } catch let e as IVFPQBuilder.BuildError {
                throw TableError(.invalidInput, "--ann: table \(name) shard \(shard): \(e.description)")
            }
            // The probe-bonus weight, chosen by recall@10 of the defaults against the exact scan
            // on sampled queries: the given queries (e.g. the user vectors, what the shards will
            // serve), or this shard's share of stored rows. That recall is the one reported.
            let given = queries.map { $0.count / table.dim } ?? 0
            let picks: [Int]
            if given > 0 {
                var qr = SplitMix64(seed: options.seed ^ 0x9E3779B9)
                picks = (0..<min(recallSample, given)).map { _ in Int(qr.next() % UInt64(given)) }
            } else {
                let share = (recallSample * rows.count + Int(tables[ti].rows) - 1) / max(1, Int(tables[ti].rows))
                picks = (0..<min(share, rows.count)).map { _ in Int(rng.next() % UInt64(rows.count)) }
            }
            var qs = [Float](repeating: 0, count: picks.count * table.dim)
            qs.withUnsafeMutableBufferPointer { out in
                for (i, r) in picks.enumerated() {
                    let dst = UnsafeMutableBufferPointer(rebasing: out[(i * table.dim)..<((i + 1) * table.dim)])
                    if given > 0 {
                        dst.baseAddress!.update(from: queries!.baseAddress! + r * table.dim, count: table.dim)
                    } else {
                        table.decodeRow(at: r, into: dst)
                    }
                }
            }
            let chosen = qs.withUnsafeBufferPointer {
                IVFPQBuilder.chooseProbeBonusWeight(data, rows: rows, ids: table.ids.baseAddress!, queries: $0.baseAddress!,
                                                    count: picks.count, parameters: defaults)
            }
            hits += chosen.hits
            asked += chosen.asked
            weights.append(chosen.weight)
            written = try ANNIndexTable.write(path: dir + "/" + fileName, data: data, tableFile: tableFile, rows: rows.count,
                                              shard: shard, shardCount: router.shardCount, seed: router.seed)
            guard lists == 0 || lists == data.listCount else {
                throw TableError(.invalidInput, "--ann: shard \(shard) of table \(name) has \(rows.count) rows, too few for \(lists) lists")
            }
            lists = data.listCount
            subspaces = data.subspaces
            subspaceDim = data.subspaceDimension
            files.append(.init(shard: shard, file: fileName, rows: UInt64(rows.count), bytes: UInt64(written.fileSize),
                               checksum: "xxh64:" + hex(written.headerChecksum).dropFirst(2)))
            withExtendedLifetime(data) {}
        }
        let recall = asked > 0 ? Double(hits) / Double(asked) : 1
        tables[ti].index = TableSetManifest.ANNIndexSpec(
            kind: "ivfpq4", lists: lists, subspaces: subspaces, subspaceDim: subspaceDim, spill: options.spill,
            seed: hex(options.seed),
            defaultMode: defaultMode, nprobe: defaults.nprobe, rerank: defaults.rerank,
            recallAt10: (recall * 10_000).rounded() / 10_000, shards: files)
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        let given = (queries?.count ?? 0) >= (tables[ti].dim)
        return ANNIndexReport(lists: lists, subspaces: subspaces, recallAt10: recall,
                              sampledQueries: given ? min(recallSample, queries!.count / tables[ti].dim) : asked / 10,
                              seconds: seconds, queriesGiven: given, probeBonusWeights: weights)
    }

    // MARK: - Publishing

    /// Writes the manifest (temp → fsync → rename) after fsyncing the version directory, then
    /// fsyncs the version directory and the root. Returns the published version N.
    @discardableResult
    public func publish(createdAt: String? = nil) throws -> UInt64 {
        guard !published else { throw TableError(.invalidInput, "table set already published") }
        let dir = try versionDirectory()
        let version = stagedVersion!
        try FileIO.syncDirectory(dir)
        let manifest = TableSetManifest(
            formatVersion: Int(TableFormat.formatVersion), version: version, createdAt: createdAt ?? Self.utcTimestamp(),
            shardCount: router.shardCount,
            hash: .init(function: StableHash.functionName, seed: hex(router.seed)),
            genres: genres, countries: countries, tables: tables)
        try FileIO.writeFileAtomically(dir + "/manifest.json", try manifest.encoded())
        try FileIO.syncDirectory(dir)
        try FileIO.syncDirectory(root)
        published = true
        return version
    }

    static func utcTimestamp() -> String {
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))Z"
    }
}
