import ShardRankRouting
public import ShardRankKernels
#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif

/// Options of `shardrank build`.
public struct BuildOptions: Sendable {
    public var shardCount: Int
    /// Element type of the `items` and `users` embedding tables.
    public var dtype: TableDType = .f32
    /// Compute the `similar` list table with this many neighbours per item (exact inner product).
    public var similarK: Int? = nil
    /// What the `similar` lists are computed from: the item vectors (inner product) or the
    /// interactions (co-visitation, `CoVisitation`; needs interactions.csv).
    public var similarSource: SimilarSource = .vectors
    /// Co-visitation window: positions at most this far apart in a user's sequence count (0: all).
    public var covisitWindow: Int = 20
    /// Recent items kept per user profile.
    public var recentN: Int = 50
    /// Length of the computed `genre_top`, `country_top` and `popular` lists.
    public var listLength: Int = 1000
    /// The sharding hash seed, recorded in the manifest and every file (`shardrank build --hash-seed`).
    public var seed: UInt64 = StableHash.defaultSeed
    /// Build an ANN index over each shard of the `items` table (nil: none).
    public var ann: ANNBuild? = nil
    /// `similarK` over catalogs of at least this many items goes through an IVF-PQ4 index
    /// (`similarSearch` knobs); smaller catalogs are computed exactly.
    public var similarExactBelow = 50_000
    /// Item queries need more lists and finer codes than user queries (BENCHMARKS.md, "ANN"):
    /// 1 dimension per subspace, 64 lists probed, 300 re-ranked.
    public var similarSearch = ANNSearchParameters(nprobe: 64, rerank: 300)
    public var similarPool: WorkerPool? = nil

    /// `--similar-source`.
    public enum SimilarSource: String, Sendable, CaseIterable {
        case vectors
        case interactions
    }

    /// What `--ann` asks for.
    public struct ANNBuild: Sendable {
        public var options: IVFPQBuildOptions
        public var defaults: ANNSearchParameters
        /// The manifest's default search mode: "ann" or "exact".
        public var defaultMode: String
        public var pool: WorkerPool?
        public init(options: IVFPQBuildOptions, defaults: ANNSearchParameters, defaultMode: String = "ann", pool: WorkerPool?) {
            self.options = options; self.defaults = defaults; self.defaultMode = defaultMode; self.pool = pool
        }
    }

    public init(shardCount: Int, dtype: TableDType = .f32, similarK: Int? = nil, recentN: Int = 50, listLength: Int = 1000) {
        self.shardCount = shardCount
        self.dtype = dtype
        self.similarK = similarK
        self.recentN = recentN
        self.listLength = listLength
    }
}

extension TableSetBuilder {
    /// Names of the tables built from an input directory.
    public enum StandardTable {
        public static let items = "items"
        public static let users = "users"
        public static let similar = "similar"
        public static let genreTop = "genre_top"
        public static let countryTop = "country_top"
        public static let popular = "popular"
        public static let profiles = "profiles"
        public static let attributes = "attributes"
        /// The key of the single list of the `popular` table.
        public static let popularKey = "all"
    }

    /// Reads an input directory (docs/data.md), validates all of it, derives profiles and lists,
    /// and publishes it as the next version under `root`. Returns the version published.
    ///
    /// Inputs: `items.npy` + `item_ids.npy` (required); `users.npy` + `user_ids.npy`; `items.csv`
    /// (`item_id,genres,timestamp[,title]`); `users.csv` (`user_id,country`); `interactions.csv`
    /// (`user_id,item_id,timestamp[,rating]`); `lists/*.csv` (`key,item_id,score`) and
    /// `lists/*.jsonl`. Every problem is a thrown `TableError(.invalidInput)` naming the file and the
    /// 1-based line (CSV, JSONL) or row (`.npy`); nothing is published then.
    @discardableResult
    public static func build(inputDirectory dir: String, root: String, options: BuildOptions,
                             progress: (@Sendable (BuildProgress) -> Void)? = nil,
                             annReport: ((ANNIndexReport) -> Void)? = nil,
                             similarReport: ((SimilarItemsReport) -> Void)? = nil) throws -> UInt64 {
        guard options.shardCount >= 1 && options.shardCount <= 65_536 else {
            throw TableError(.invalidInput, "--shards must be in 1...65536, got \(options.shardCount)")
        }
        guard options.recentN >= 0 else { throw TableError(.invalidInput, "--recent must be ≥ 0") }
        if let k = options.similarK, k < 1 { throw TableError(.invalidInput, "--similar must be ≥ 1") }
        guard options.listLength >= 1 else { throw TableError(.invalidInput, "list length must be ≥ 1") }
        guard FileIO.isDirectory(dir) else { throw TableError(.notFound, "input directory does not exist", path: dir) }
        func path(_ name: String) -> String { dir + "/" + name }
        func has(_ name: String) -> Bool { FileIO.exists(path(name)) }
        if options.similarK != nil && options.similarSource == .interactions {
            guard options.covisitWindow >= 0 else { throw TableError(.invalidInput, "--covisit-window must be ≥ 0") }
            guard has("interactions.csv") else {
                throw TableError.input(path("interactions.csv"), "missing (--similar-source interactions computes the similar lists from it)")
            }
        }

        // ---- Embeddings -----------------------------------------------------------------------
        guard has("items.npy") else { throw TableError.input(path("items.npy"), "missing (required: item embeddings, float32 M×D)") }
        guard has("item_ids.npy") else { throw TableError.input(path("item_ids.npy"), "missing (required: item ids, int64 M)") }
        let items = try loadEmbedding(vectors: path("items.npy"), ids: path("item_ids.npy"), dtype: options.dtype, progress: progress)
        var users: LoadedEmbedding?
        if has("users.npy") || has("user_ids.npy") {
            guard has("users.npy") else { throw TableError.input(path("users.npy"), "missing (user_ids.npy is present)") }
            guard has("user_ids.npy") else { throw TableError.input(path("user_ids.npy"), "missing (users.npy is present)") }
            users = try loadEmbedding(vectors: path("users.npy"), ids: path("user_ids.npy"), dtype: options.dtype, progress: progress)
        }

        // ---- Items: known ids and attributes ----------------------------------------------------
        var itemIndex = [UInt64: Int](minimumCapacity: items.ids.count)
        var itemList: [UInt64] = []
        for id in items.ids { itemIndex[id] = itemList.count; itemList.append(id) }
        var attrs: [(id: UInt64, genres: [Int], timestamp: Int64)] = []
        var genreVocabulary: [String] = []
        if has("items.csv") {
            let csv = try CSVReader(path: path("items.csv"), displayName: path("items.csv"),
                                    required: ["item_id", "genres", "timestamp"], optional: ["title"])
            let cID = csv.column("item_id")!, cG = csv.column("genres")!, cT = csv.column("timestamp")!
            var tempGenres: [String: Int] = [:]
            var rowOfItem = [UInt64: Int]()
            let total = csv.byteCount
            try csv.forEachRecord(progress: { progress?(BuildProgress(stage: "read items.csv (bytes)", done: $0, total: total)) }) { rec in
                let id = try rec.id(cID)
                if let first = rowOfItem[id] { throw rec.error("duplicate item_id \(id) (first on line \(first))") }
                rowOfItem[id] = rec.line
                var gs: [Int] = []
                if !rec.isEmpty(cG) {
                    for name in rec.string(cG).split(separator: "|", omittingEmptySubsequences: true) {
                        let n = String(name).trimmingSpaces
                        let g: Int
                        if let t = tempGenres[n] { g = t } else {
                            guard tempGenres.count < 64 else { throw rec.error("more than 64 distinct genres (at '\(n)')") }
                            g = tempGenres.count
                            tempGenres[n] = g
                        }
                        if !gs.contains(g) { gs.append(g) }
                    }
                }
                attrs.append((id, gs, try rec.int64(cT)))
                if itemIndex[id] == nil { itemIndex[id] = itemList.count; itemList.append(id) }
            }
            for (r, id) in items.ids.enumerated() where rowOfItem[id] == nil {
                throw TableError.input(path("item_ids.npy"), line: r + 1, "item \(id) has an embedding but no row in items.csv")
            }
            // Sorted vocabulary: independent of row order.
            genreVocabulary = tempGenres.keys.sorted()
            let remap = Dictionary(uniqueKeysWithValues: tempGenres.map { ($0.value, genreVocabulary.firstIndex(of: $0.key)!) })
            for i in attrs.indices { attrs[i].genres = attrs[i].genres.map { remap[$0]! } }
        }
        let itemGenres: [[Int]] = {
            var g = [[Int]](repeating: [], count: itemList.count)
            for a in attrs { g[itemIndex[a.id]!] = a.genres }
            return g
        }()

        // ---- Users: known ids and countries -------------------------------------------------------
        var userIndex = [UInt64: Int]()
        var userList: [UInt64] = []
        for id in users?.ids ?? [] { userIndex[id] = userList.count; userList.append(id) }
        var countryOfUser: [Int: Int] = [:]  // user index -> country index
        var countryVocabulary: [String] = []
        let hasUserTable = users != nil || has("users.csv")
        if has("users.csv") {
            let csv = try CSVReader(path: path("users.csv"), displayName: path("users.csv"), required: ["user_id", "country"])
            let cID = csv.column("user_id")!, cC = csv.column("country")!
            var seen = [UInt64: Int]()
            var raw: [(Int, String)] = []
            try csv.forEachRecord { rec in
                let id = try rec.id(cID)
                if let first = seen[id] { throw rec.error("duplicate user_id \(id) (first on line \(first))") }
                seen[id] = rec.line
                if userIndex[id] == nil { userIndex[id] = userList.count; userList.append(id) }
                let c = rec.string(cC).trimmingSpaces
                if !c.isEmpty { raw.append((userIndex[id]!, c)) }
            }
            if let users {
                for (r, id) in users.ids.enumerated() where seen[id] == nil {
                    throw TableError.input(path("user_ids.npy"), line: r + 1, "user \(id) has an embedding but no row in users.csv")
                }
            }
            countryVocabulary = Set(raw.map(\.1)).sorted()
            let ci = Dictionary(uniqueKeysWithValues: countryVocabulary.enumerated().map { ($1, $0) })
            for (u, c) in raw { countryOfUser[u] = ci[c]! }
        }

        // ---- Interactions -----------------------------------------------------------------------------
        var interUser: [Int32] = [], interItem: [Int32] = [], interTime: [Int64] = []
        if has("interactions.csv") {
            let csv = try CSVReader(path: path("interactions.csv"), displayName: path("interactions.csv"),
                                    required: ["user_id", "item_id", "timestamp"], optional: ["rating"])
            let cU = csv.column("user_id")!, cI = csv.column("item_id")!, cT = csv.column("timestamp")!
            let cR = csv.column("rating")
            let total = csv.byteCount
            try csv.forEachRecord(progress: { progress?(BuildProgress(stage: "read interactions.csv (bytes)", done: $0, total: total)) }) { rec in
                let uid = try rec.id(cU), iid = try rec.id(cI)
                let u: Int
                if let x = userIndex[uid] { u = x } else {
                    guard !hasUserTable else { throw rec.error("user_id \(uid) is not in users.csv / user_ids.npy") }
                    u = userList.count
                    userIndex[uid] = u
                    userList.append(uid)
                }
                guard let i = itemIndex[iid] else { throw rec.error("item_id \(iid) is not in item_ids.npy / items.csv") }
                let t = try rec.int64(cT)
                if let cR, !rec.isEmpty(cR) { _ = try rec.float(cR) }
                interUser.append(Int32(u))
                interItem.append(Int32(i))
                interTime.append(t)
            }
        }

        // ---- Lists supplied by the user ------------------------------------------------------------
        var suppliedLists: [(name: String, lists: [RankedListRecord], source: String)] = []
        if FileIO.isDirectory(path("lists")) {
            for file in try FileIO.listDirectory(path("lists")).sorted() {
                let p = path("lists/" + file)
                let stem: String, isCSV: Bool
                if file.hasSuffix(".csv") { stem = String(file.dropLast(4)); isCSV = true } else if file.hasSuffix(".jsonl") {
                    stem = String(file.dropLast(6)); isCSV = false
                } else { continue }
                guard TableSetManifest.isValidTableName(stem) else {
                    throw TableError.input(p, "a list file's name (without extension) must be a table name of A–Z a–z 0–9 _ -")
                }
                guard ![StandardTable.items, StandardTable.users, StandardTable.profiles, StandardTable.attributes].contains(stem),
                      !suppliedLists.contains(where: { $0.name == stem }) else {
                    throw TableError.input(p, "list table name '\(stem)' clashes with another table")
                }
                let lists = isCSV ? try readListCSV(p, itemIndex: itemIndex) : try readListJSONL(p, itemIndex: itemIndex)
                suppliedLists.append((stem, lists, p))
            }
        }
        let supplied = Set(suppliedLists.map(\.name))

        // ---- Derived data ----------------------------------------------------------------------------
        var popularity = [Int](repeating: 0, count: itemList.count)
        for i in interItem { popularity[Int(i)] += 1 }
        var computedLists: [(String, [RankedListRecord])] = []
        /// Items with a count > 0, by count descending, ties by lower id.
        func ranked(_ counts: [Int]) -> [Int] {
            var idx = counts.indices.filter { counts[$0] > 0 }
            idx.sort { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : itemList[$0] < itemList[$1] }
            return idx
        }
        func top(_ counts: [Int]) -> RankedListRecord.Parts {
            let chosen = ranked(counts).prefix(options.listLength)
            return (chosen.map { itemList[$0] }, chosen.map { Float(counts[$0]) })
        }
        if !interItem.isEmpty {
            let byPopularity = ranked(popularity)
            let chosen = byPopularity.prefix(options.listLength)
            computedLists.append((StandardTable.popular, [RankedListRecord(
                key: StandardTable.popularKey, ids: chosen.map { itemList[$0] }, scores: chosen.map { Float(popularity[$0]) })]))
            if !genreVocabulary.isEmpty {
                var perGenre = [[Int]](repeating: [], count: genreVocabulary.count)
                for i in byPopularity {
                    for g in itemGenres[i] where perGenre[g].count < options.listLength { perGenre[g].append(i) }
                }
                let lists = genreVocabulary.indices.filter { !perGenre[$0].isEmpty }.map { g in
                    RankedListRecord(key: genreVocabulary[g], ids: perGenre[g].map { itemList[$0] },
                                     scores: perGenre[g].map { Float(popularity[$0]) })
                }
                computedLists.append((StandardTable.genreTop, lists))
            }
            if !countryVocabulary.isEmpty {
                var perCountry = [[Int]](repeating: [], count: countryVocabulary.count)
                for k in interUser.indices {
                    guard let c = countryOfUser[Int(interUser[k])] else { continue }
                    if perCountry[c].isEmpty { perCountry[c] = [Int](repeating: 0, count: itemList.count) }
                    perCountry[c][Int(interItem[k])] += 1
                }
                var lists: [RankedListRecord] = []
                for (c, name) in countryVocabulary.enumerated() where !perCountry[c].isEmpty {
                    let t = top(perCountry[c])
                    lists.append(RankedListRecord(key: name, ids: t.0, scores: t.1))
                }
                computedLists.append((StandardTable.countryTop, lists))
            }
        }
        var profiles: [UserProfileRecord] = []
        if !userList.isEmpty && (has("interactions.csv") || has("users.csv")) {
            profiles = computeProfiles(userList: userList, itemList: itemList, itemGenres: itemGenres, genreCount: genreVocabulary.count,
                                       interUser: interUser, interItem: interItem, interTime: interTime,
                                       countryOfUser: countryOfUser, recentN: options.recentN)
        }
        if let k = options.similarK, !supplied.contains(StandardTable.similar) {
            let lists: [RankedListRecord]
            if options.similarSource == .interactions {
                let start = ContinuousClock.now
                let window = options.covisitWindow
                lists = CoVisitation.compute(itemIDs: itemList, userCount: userList.count, interUser: interUser, interItem: interItem,
                                             interTime: interTime, k: k, window: window) { done, total in
                    progress?(BuildProgress(stage: "similar items (top \(k), co-visitation)", done: done, total: total))
                }
                let e = ContinuousClock.now - start
                similarReport?(SimilarItemsReport(items: itemList.count, k: k, approximate: false, recall: 1, sampled: 0,
                                                  seconds: Double(e.components.seconds) + Double(e.components.attoseconds) * 1e-18,
                                                  covisitWindow: window))
            } else if items.ids.count >= options.similarExactBelow {
                let report: SimilarItemsReport
                (lists, report) = try SimilarItems.computeApproximate(
                    ids: items.ids, vectors: items.array.floats(), dim: items.dim, k: k, parameters: options.similarSearch,
                    options: IVFPQBuildOptions(subspaceDimension: 1, seed: options.ann?.options.seed ?? 1), pool: options.similarPool ?? WorkerPool(spinMicroseconds: 0)
                ) { stage, done, total in
                    progress?(BuildProgress(stage: stage, done: done, total: total))
                }
                similarReport?(report)
            } else {
                let start = ContinuousClock.now
                lists = SimilarItems.compute(ids: items.ids, vectors: items.array.floats(), dim: items.dim, k: k) { done, total in
                    progress?(BuildProgress(stage: "similar items (top \(k))", done: done, total: total))
                }
                let e = ContinuousClock.now - start
                similarReport?(SimilarItemsReport(items: items.ids.count, k: k, approximate: false, recall: 1, sampled: 0,
                                                  seconds: Double(e.components.seconds) + Double(e.components.attoseconds) * 1e-18))
            }
            computedLists.append((StandardTable.similar, lists))
        }

        // ---- Write and publish -----------------------------------------------------------------------
        let builder = try TableSetBuilder(root: root, shardCount: options.shardCount, seed: options.seed,
                                          genres: genreVocabulary, countries: countryVocabulary, progress: progress)
        try builder.addEmbedding(name: StandardTable.items, ids: items.ids, vectors: items.array.floats(), dim: items.dim,
                                 dtype: options.dtype, source: items.array.path, validated: true)
        if let ann = options.ann {
            // Recall measured with the user vectors as queries (what the shards' Search serves),
            // when the input has users of the items' dimension.
            let userQueries = users.flatMap { $0.dim == items.dim ? $0.array.floats() : nil }
            let report = try builder.addANNIndex(table: StandardTable.items, options: ann.options, defaults: ann.defaults,
                                                 defaultMode: ann.defaultMode, pool: ann.pool, queries: userQueries)
            annReport?(report)
        }
        if let users {
            try builder.addEmbedding(name: StandardTable.users, ids: users.ids, vectors: users.array.floats(), dim: users.dim,
                                     dtype: options.dtype, source: users.array.path, validated: true)
        }
        if !attrs.isEmpty || !interItem.isEmpty {
            var records: [ItemAttributeRecord] = []
            var timeOf = [UInt64: Int64]()
            for a in attrs { timeOf[a.id] = a.timestamp }
            for (i, id) in itemList.enumerated() {
                var mask: UInt64 = 0
                for g in itemGenres[i] { mask |= UInt64(1) << UInt64(g) }
                records.append(ItemAttributeRecord(itemID: id, attributes: ItemAttributes(
                    genresMask: mask, timestamp: timeOf[id] ?? 0, popularity: Float(popularity[i]))))
            }
            try builder.addAttributes(name: StandardTable.attributes, records)
        }
        if !profiles.isEmpty { try builder.addProfiles(name: StandardTable.profiles, profiles) }
        for (name, lists) in computedLists where !supplied.contains(name) {
            try builder.addList(name: name, lists: lists)
        }
        for s in suppliedLists {
            if computedLists.contains(where: { $0.0 == s.name }) {
                progress?(BuildProgress(stage: "note: \(s.source) replaces the computed \(s.name) table", done: 1, total: 1))
            }
            try builder.addList(name: s.name, lists: s.lists, source: s.source)
        }
        return try builder.publish()
    }

    struct LoadedEmbedding {
        var array: NpyArray
        var ids: [UInt64]
        var dim: Int
    }

    private static func loadEmbedding(vectors: String, ids idsPath: String, dtype: TableDType,
                                      progress: (@Sendable (BuildProgress) -> Void)?) throws -> LoadedEmbedding {
        let v = try NpyArray(path: vectors, displayName: vectors)
        guard v.dtype == .f4, v.shape.count == 2 else {
            throw TableError.input(vectors, "expected a float32 ('<f4') matrix of shape (rows, dim), got \(v.dtype.rawValue) \(v.shape)")
        }
        guard v.columns >= 1 else { throw TableError.input(vectors, "dimension is 0") }
        let i = try NpyArray(path: idsPath, displayName: idsPath)
        guard i.dtype == .i8, i.shape.count == 1 else {
            throw TableError.input(idsPath, "expected an int64 ('<i8') vector of shape (rows,), got \(i.dtype.rawValue) \(i.shape)")
        }
        guard i.rows == v.rows else {
            throw TableError.input(idsPath, "\(i.rows) ids for \(v.rows) rows in \(vectors)")
        }
        var ids: [UInt64] = []
        ids.reserveCapacity(i.rows)
        for (r, x) in i.int64s().enumerated() {
            guard x >= 0 else { throw TableError.input(idsPath, line: r + 1, "negative id \(x)") }
            ids.append(UInt64(x))
        }
        progress?(BuildProgress(stage: "validate \(vectors)", done: 0, total: 1))
        try TableSetBuilder.validateEmbedding(ids: ids, vectors: v.floats(), dim: v.columns, dtype: dtype,
                                              source: vectors, idSource: idsPath)
        progress?(BuildProgress(stage: "validate \(vectors)", done: 1, total: 1))
        return LoadedEmbedding(array: v, ids: ids, dim: v.columns)
    }

    private static func rankList(_ entries: [(UInt64, Float)]) -> RankedListRecord.Parts {
        let sorted = entries.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        return (sorted.map(\.0), sorted.map(\.1))
    }

    private static func readListCSV(_ p: String, itemIndex: [UInt64: Int]) throws -> [RankedListRecord] {
        let csv = try CSVReader(path: p, displayName: p, required: ["key", "item_id", "score"])
        let cK = csv.column("key")!, cI = csv.column("item_id")!, cS = csv.column("score")!
        var order: [String] = []
        var entries: [String: [(UInt64, Float)]] = [:]
        var seen: [String: Set<UInt64>] = [:]
        try csv.forEachRecord { rec in
            let key = rec.string(cK).trimmingSpaces
            guard !key.isEmpty else { throw rec.error("empty key") }
            let id = try rec.id(cI)
            guard itemIndex[id] != nil else { throw rec.error("item_id \(id) is not in item_ids.npy / items.csv") }
            let score = try rec.float(cS)
            if entries[key] == nil { order.append(key) }
            guard seen[key, default: []].insert(id).inserted else { throw rec.error("item \(id) listed twice for key '\(key)'") }
            entries[key, default: []].append((id, score))
        }
        return order.map { k in
            let r = rankList(entries[k]!)
            return RankedListRecord(key: k, ids: r.0, scores: r.1)
        }
    }

    private struct JSONLEntry: Decodable {
        var key: String
        var item_id: UInt64?
        var score: Float?
        var ids: [UInt64]?
        var scores: [Float]?
    }

    /// JSONL lists: one object per line, either `{"key": K, "item_id": ID, "score": S}` or
    /// `{"key": K, "ids": [...], "scores": [...]}` (scores optional: then rank order gives
    /// descending scores).
    private static func readListJSONL(_ p: String, itemIndex: [UInt64: Int]) throws -> [RankedListRecord] {
        let bytes = try FileIO.readFile(p)
        var order: [String] = []
        var entries: [String: [(UInt64, Float)]] = [:]
        var seen: [String: Set<UInt64>] = [:]
        var lineNo = 0
        let decoder = JSONDecoder()
        for lineBytes in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNo += 1
            if lineBytes.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            let e: JSONLEntry
            do { e = try decoder.decode(JSONLEntry.self, from: Data(lineBytes)) } catch {
                throw TableError.input(p, line: lineNo, "not a list object ({\"key\",\"item_id\",\"score\"} or {\"key\",\"ids\",\"scores\"}): \(error)")
            }
            guard !e.key.isEmpty else { throw TableError.input(p, line: lineNo, "empty key") }
            var pairs: [(UInt64, Float)] = []
            if let id = e.item_id {
                guard let s = e.score, e.ids == nil else { throw TableError.input(p, line: lineNo, "item_id needs a score and no ids") }
                pairs = [(id, s)]
            } else if let ids = e.ids {
                let scores = e.scores ?? ids.indices.map { Float(ids.count - $0) }
                guard scores.count == ids.count else { throw TableError.input(p, line: lineNo, "\(ids.count) ids but \(scores.count) scores") }
                pairs = Array(zip(ids, scores))
            } else {
                throw TableError.input(p, line: lineNo, "needs item_id+score or ids")
            }
            if entries[e.key] == nil { order.append(e.key) }
            for (id, s) in pairs {
                guard itemIndex[id] != nil else { throw TableError.input(p, line: lineNo, "item_id \(id) is not in item_ids.npy / items.csv") }
                guard s.isFinite else { throw TableError.input(p, line: lineNo, "score \(s) is not finite") }
                guard seen[e.key, default: []].insert(id).inserted else { throw TableError.input(p, line: lineNo, "item \(id) listed twice for key '\(e.key)'") }
                entries[e.key, default: []].append((id, s))
            }
        }
        return order.map { k in
            let r = rankList(entries[k]!)
            return RankedListRecord(key: k, ids: r.0, scores: r.1)
        }
    }

    /// Profiles: the last `recentN` distinct items by time (most recent first; equal timestamps:
    /// the later line first), every item of the history (stored sorted and unique), the 3 most
    /// frequent genres over the whole history (ties: lower genre index, i.e. alphabetical), and
    /// the country.
    static func computeProfiles(userList: [UInt64], itemList: [UInt64], itemGenres: [[Int]], genreCount: Int,
                                interUser: [Int32], interItem: [Int32], interTime: [Int64],
                                countryOfUser: [Int: Int], recentN: Int) -> [UserProfileRecord] {
        // Bucket interactions by user (counting sort), keeping line order inside a bucket.
        var start = [Int](repeating: 0, count: userList.count + 1)
        for u in interUser { start[Int(u) + 1] += 1 }
        for i in 0..<userList.count { start[i + 1] += start[i] }
        var fill = start
        var order = [Int](repeating: 0, count: interUser.count)
        for (k, u) in interUser.enumerated() {
            order[fill[Int(u)]] = k
            fill[Int(u)] += 1
        }
        var out: [UserProfileRecord] = []
        out.reserveCapacity(userList.count)
        var genreCounts = [Int](repeating: 0, count: max(genreCount, 1))
        for u in 0..<userList.count {
            var ks = Array(order[start[u]..<start[u + 1]])
            ks.sort { interTime[$0] != interTime[$1] ? interTime[$0] > interTime[$1] : $0 > $1 }
            var recent: [UInt64] = []
            var seen = Set<Int32>()
            for k in ks where recent.count < recentN {
                if seen.insert(interItem[k]).inserted { recent.append(itemList[Int(interItem[k])]) }
            }
            // The whole history: every item of the user's training interactions.
            let history = ks.map { itemList[Int(interItem[$0])] }
            for g in genreCounts.indices { genreCounts[g] = 0 }
            for k in ks { for g in itemGenres[Int(interItem[k])] { genreCounts[g] += 1 } }
            let topGenres = genreCounts.indices.filter { genreCounts[$0] > 0 }
                .sorted { genreCounts[$0] != genreCounts[$1] ? genreCounts[$0] > genreCounts[$1] : $0 < $1 }
                .prefix(TableFormat.profileGenreSlots)
            out.append(UserProfileRecord(userID: userList[u], recentItems: recent, history: history, topGenres: Array(topGenres),
                                         country: countryOfUser[u]))
        }
        return out
    }
}

extension RankedListRecord {
    typealias Parts = ([UInt64], [Float])
}
