public import ShardRankKernels
import ShardRankWire

/// What a learned ranker knows per (user, candidate) beyond `V_u · V_m`: which sources proposed
/// the candidate and where, how the similar-items source reached it, and the item's attributes
/// against the user's profile. docs/ranking.md defines each feature; the names are the contract
/// with a trained model (a model names the features it reads, in its own column order).
/// Pure: a function of the retrieval results, the attributes and the plan.
public enum RankingFeatures {
    /// Column order of `compute`'s matrix. A missing value is NaN (a source that did not propose
    /// the candidate, an item without attributes, a cold-start user without a vector).
    public static let names: [String] = [
        "dot",               // V_u · V_m (the dot model's score)
        "search_rank",       // 0-based position among the merged search hits
        "similar_rank",      // best 0-based position in the similar list of any recent item
        "similar_count",     // how many of the user's recent items' similar lists hold it (0 = none)
        "similar_score_sum", // the sum of its similarity scores over those lists (0 = none)
        "similar_recency",   // recency position (0 = most recent) of the nearest recent item proposing it
        "genre_rank",        // best 0-based position in a favourite genre's list
        "country_rank",      // 0-based position in the user's country list
        "popular_rank",      // 0-based position in the global popular list
        "popularity",        // the attribute table's popularity (interactions in the training data)
        "age_days",          // (now - the item's timestamp) / 86 400; NaN without a timestamp
        "genre_affinity",    // 3/2/1 for each of the user's 1st/2nd/3rd genres the item has, summed
        "seen_count",        // the size of the user's seen set (history and exclusions)
    ]
    public static var count: Int { names.count }

    /// The row-major `ids.count × names.count` matrix for the candidates `ids`.
    /// - Parameters:
    ///   - dot: `V_u · V_m` per candidate (nil: cold start, all NaN).
    ///   - lists: the retrieved lists (similar, genre, country, popular), as `retrieve` returns them.
    ///   - search: the merged search hits, best first.
    ///   - attributes: the items' attributes (nil or absent entries: NaN); `genres` is the
    ///     attribute table's genre vocabulary (bit order of `genresMask`).
    static func compute(ids: [UInt64], dot: [Float]?, plan: RetrievalPlan, lists: [[RankedList]],
                        search: [ScoredID], attributes: [UInt64: ItemAttributes]?, genres: [String],
                        now: Double) -> [Float] {
        let f = count, n = ids.count
        var m = [Float](repeating: .nan, count: n * f)
        guard n > 0 else { return m }
        let index = IDIndex(capacity: n)
        for (i, id) in ids.enumerated() { index.insert(id, i) }
        for i in 0 ..< n {
            m[i * f + 0] = dot?[i] ?? .nan
            m[i * f + 3] = 0
            m[i * f + 4] = 0
        }
        @inline(__always) func best(_ col: Int, _ row: Int, _ v: Float) {
            let at = row * f + col
            if m[at].isNaN || v < m[at] { m[at] = v }
        }
        for (r, hit) in search.enumerated() {
            if let i = index.get(hit.id) { best(1, i, Float(r)) }
        }
        // Similar lists: keyed by the recent item they came from (the fan-out returns them in
        // completion order).
        var recency: [String: Int] = [:]
        for (p, id) in plan.recent.enumerated() where recency[String(id)] == nil { recency[String(id)] = p }
        if lists.count > 0 {
            for l in lists[0] {
                let position = recency[l.key].map(Float.init) ?? .nan
                for j in 0 ..< min(l.ids.count, l.scores.count, plan.similarLimit) {
                    guard let i = index.get(l.ids[j]) else { continue }
                    best(2, i, Float(j))
                    m[i * f + 3] += 1
                    m[i * f + 4] += l.scores[j]
                    if !position.isNaN { best(5, i, position) }
                }
            }
        }
        // Each list read to the length the plan asked for: a cached list may be longer, and the
        // features must not depend on what the cache happens to hold.
        for (source, col, limit) in [(1, 6, plan.genreLimit), (2, 7, plan.countryLimit), (3, 8, plan.popularLimit)] where source < lists.count {
            for l in lists[source] {
                for j in 0 ..< min(l.ids.count, limit) {
                    if let i = index.get(l.ids[j]) { best(col, i, Float(j)) }
                }
            }
        }
        // The user's genres as bits of the attribute vocabulary, weighted 3, 2, 1.
        var weights: [(bit: UInt64, weight: Float)] = []
        for (p, g) in plan.genres.prefix(3).enumerated() {
            if let b = genres.firstIndex(of: g), b < 64 { weights.append((1 << UInt64(b), Float(3 - p))) }
        }
        let seen = Float(plan.seenSorted.count)
        for i in 0 ..< n {
            m[i * f + 12] = seen
            guard let a = attributes?[ids[i]] else { continue }
            m[i * f + 9] = a.popularity
            if a.timestamp > 0 { m[i * f + 10] = Float((now - Double(a.timestamp)) / 86_400) }
            var affinity: Float = 0
            for w in weights where a.genresMask & w.bit != 0 { affinity += w.weight }
            m[i * f + 11] = affinity
        }
        return m
    }
}

/// A learned ranker the coordinator serves: scores rows of named features. `TreeEnsemble`
/// (LightGBM models) conforms.
public protocol LearnedRanker: Sendable {
    /// The features the model reads, in its column order.
    var featureNames: [String] { get }
    /// Scores `rows` rows of `stride` floats each (the model's columns first) into `out`,
    /// spreading large batches over `pool`.
    func rank(features: UnsafePointer<Float>, rows: Int, stride: Int, into out: UnsafeMutablePointer<Float>, pool: WorkerPool)
}

/// A loaded ranker and, per model column, the column of `RankingFeatures.names` it reads.
public struct ServedRanker: Sendable {
    public let name: String
    public let model: any LearnedRanker
    let columns: [Int]

    /// - Throws: a message naming the first feature the coordinator does not compute.
    public init(name: String, model: any LearnedRanker) throws(RPCConfigurationError) {
        var columns: [Int] = []
        for f in model.featureNames {
            guard let c = RankingFeatures.names.firstIndex(of: f) else {
                throw RPCConfigurationError("ranker '\(name)' reads feature '\(f)', which the coordinator does not compute (known: \(RankingFeatures.names.joined(separator: ", ")))")
            }
            columns.append(c)
        }
        guard !columns.isEmpty else { throw RPCConfigurationError("ranker '\(name)' reads no features") }
        self.name = name
        self.model = model
        self.columns = columns
    }

    /// Scores the `RankingFeatures` matrix `features` (`rows × RankingFeatures.count`).
    func scores(_ features: [Float], rows: Int, pool: WorkerPool) -> [Float] {
        var out = [Float](repeating: 0, count: rows)
        guard rows > 0 else { return out }
        let f = RankingFeatures.count
        let identity = columns == Array(0 ..< columns.count)
        var permuted: [Float] = []
        if !identity {
            let c = columns.count
            permuted = [Float](repeating: .nan, count: rows * c)
            for r in 0 ..< rows { for (j, col) in columns.enumerated() { permuted[r * c + j] = features[r * f + col] } }
        }
        let stride = identity ? f : columns.count
        (identity ? features : permuted).withUnsafeBufferPointer { x in
            out.withUnsafeMutableBufferPointer { o in
                model.rank(features: x.baseAddress!, rows: rows, stride: stride, into: o.baseAddress!, pool: pool)
            }
        }
        return out
    }
}

/// A configuration mistake found while loading (a ranker that cannot be served).
public struct RPCConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension TreeEnsemble: LearnedRanker {
    public func rank(features: UnsafePointer<Float>, rows: Int, stride: Int, into out: UnsafeMutablePointer<Float>, pool: WorkerPool) {
        score(features: features, rows: rows, stride: stride, into: out, pool: Optional(pool), minRowsPerTask: 128)
    }
}
