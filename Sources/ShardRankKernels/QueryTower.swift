#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif

/// The JSON that accompanies a query tower's safetensors weights (`T.json` beside
/// `T.safetensors`; written by `scripts/train-query-tower`). The contract:
///
/// ```json
/// {"kind": "shardrank-query-tower", "version": 1, "dim": 64, "recent": 20, "recency_decay": 0.8,
///  "residual": 1, "genre_dim": 16, "country_dim": 8, "hidden": 128,
///  "genres": ["Action", ...], "countries": ["DE", ...], "items_table": "items", "trained": {...}}
/// ```
/// `genres` and `countries` name the embedding rows in order; `trained` (what the trainer
/// records about the run) is not read.
public struct QueryTowerConfig: Codable, Sendable, Equatable {
    public var kind: String
    public var version: Int
    /// The width of the item vectors and of the user vector it computes.
    public var dim: Int
    /// The most recent items read (R).
    public var recent: Int
    /// The weight of the i-th most recent item in the recency mean is `recency_decay^i`.
    public var recencyDecay: Double
    /// 1: the recency mean is added to the MLP's output.
    public var residual: Int
    public var genreDim: Int
    public var countryDim: Int
    public var hidden: Int
    public var genres: [String]
    public var countries: [String]
    /// The table whose vectors the tower reads and whose space it maps into.
    public var itemsTable: String

    enum CodingKeys: String, CodingKey {
        case kind, version, dim, recent, residual, hidden, genres, countries
        case recencyDecay = "recency_decay", genreDim = "genre_dim", countryDim = "country_dim", itemsTable = "items_table"
    }

    public init(dim: Int, recent: Int, recencyDecay: Double, residual: Bool, genreDim: Int, countryDim: Int, hidden: Int,
                genres: [String], countries: [String], itemsTable: String = "items") {
        kind = QueryTower.kind; version = 1
        self.dim = dim; self.recent = recent; self.recencyDecay = recencyDecay; self.residual = residual ? 1 : 0
        self.genreDim = genreDim; self.countryDim = countryDim; self.hidden = hidden
        self.genres = genres; self.countries = countries; self.itemsTable = itemsTable
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(String.self, forKey: .kind)
        version = try c.decode(Int.self, forKey: .version)
        dim = try c.decode(Int.self, forKey: .dim)
        recent = try c.decode(Int.self, forKey: .recent)
        recencyDecay = try c.decode(Double.self, forKey: .recencyDecay)
        // 0|1 by the contract; a JSON boolean is taken too.
        if let b = try? c.decode(Bool.self, forKey: .residual) { residual = b ? 1 : 0 } else { residual = try c.decode(Int.self, forKey: .residual) }
        genreDim = try c.decode(Int.self, forKey: .genreDim)
        countryDim = try c.decode(Int.self, forKey: .countryDim)
        hidden = try c.decode(Int.self, forKey: .hidden)
        genres = try c.decode([String].self, forKey: .genres)
        countries = try c.decode([String].self, forKey: .countries)
        itemsTable = try c.decodeIfPresent(String.self, forKey: .itemsTable) ?? "items"
    }

    /// The MLP's input width: mean, recency mean, genre and country embeddings.
    public var inputDimension: Int { 2 * dim + genreDim + countryDim }
}

/// The query tower: a user's vector computed now, in the item vectors' space, from what the
/// user just did — so a user the offline build never saw, or one whose taste moved since, is
/// searched and ranked with a vector that knows it (docs/ranking.md).
///
/// Forward pass for the recent items (most recent first), ≤ 3 genres (most watched first) and a
/// country:
/// 1. the first R recent items' vectors V_0…V_{n−1} (R = `recent`; items the table lacks are
///    skipped, so n ≤ R);
/// 2. mean = Σ V_i / n and recency = Σ w_i V_i / Σ w_i with w_i = decay^i (zeros when n = 0);
/// 3. genre = Σ_j g_j E_genre[genre_j] / Σ_j g_j, g = (3, 2, 1), an unknown name → row
///    n_genres, no genres at all → row n_genres alone;
/// 4. country = E_country[country], unknown or empty → row n_countries;
/// 5. x = [mean, recency, genre, country]; h = relu(W0 x + b0); out = W1 h + b1;
/// 6. V_u = out + residual · recency.
///
/// Immutable after loading, safe from many threads; a forward pass allocates nothing (its
/// scratch is on the stack) and runs the two matrix–vector products with the SIMD dot kernel.
public final class QueryTower: @unchecked Sendable {
    public static let kind = "shardrank-query-tower"
    /// The tensors a tower file must hold.
    public static let tensorNames = ["genre_embedding", "country_embedding", "layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"]

    public let config: QueryTowerConfig
    /// The width of the user vector (and of the item vectors it reads).
    public var dimension: Int { config.dim }
    /// R: the most recent items read.
    public var recentItems: Int { config.recent }

    let genreRow: [String: Int]
    let countryRow: [String: Int]
    let genreEmbedding: UnsafeMutablePointer<Float>    // (n_genres + 1) × genreDim
    let countryEmbedding: UnsafeMutablePointer<Float>  // (n_countries + 1) × countryDim
    let w0: UnsafeMutablePointer<Float>                 // hidden × in
    let b0: UnsafeMutablePointer<Float>
    let w1: UnsafeMutablePointer<Float>                 // dim × hidden
    let b1: UnsafeMutablePointer<Float>
    /// decay^i for i < R.
    let weights: UnsafeMutablePointer<Float>
    private let owned: [UnsafeMutablePointer<Float>]

    /// Reads `weightsPath` (safetensors) and `configPath` (JSON). Throws `ModelError`.
    public convenience init(weightsPath: String, configPath: String) throws {
        let weights: [UInt8], config: [UInt8]
        do { weights = [UInt8](try Data(contentsOf: URL(fileURLWithPath: weightsPath))) } catch {
            throw ModelError(.unreadable, "cannot read the query tower's weights \(weightsPath): \(error)")
        }
        do { config = [UInt8](try Data(contentsOf: URL(fileURLWithPath: configPath))) } catch {
            throw ModelError(.unreadable, "cannot read the query tower's config \(configPath): \(error)")
        }
        try self.init(weights: weights, config: config)
    }

    /// From the bytes of the safetensors file and of the JSON config. Throws `ModelError`.
    public convenience init(weights: [UInt8], config: [UInt8]) throws {
        try self.init(config: try Self.config(config), tensors: try SafeTensors(bytes: weights))
    }

    /// Parses and checks a config's JSON. Throws `ModelError(.malformedConfig)` naming the key.
    public static func config(_ bytes: [UInt8]) throws -> QueryTowerConfig {
        do { return try JSONDecoder().decode(QueryTowerConfig.self, from: Data(bytes)) } catch {
            throw ModelError(.malformedConfig, "the query tower's config is not valid: \(error)")
        }
    }

    /// Validates `tensors` against `config` (every tensor's shape; errors name the tensor) and
    /// copies the weights into aligned buffers. Throws `ModelError`.
    public init(config c: QueryTowerConfig, tensors st: SafeTensors) throws {
        func bad(_ m: String) -> ModelError { ModelError(.malformedConfig, "query tower config: \(m)") }
        guard c.kind == Self.kind else { throw bad("kind is '\(c.kind)', expected '\(Self.kind)'") }
        guard c.version == 1 else { throw bad("version \(c.version) is not supported (this build reads version 1)") }
        guard c.dim >= 1 else { throw bad("dim must be >= 1, got \(c.dim)") }
        guard c.recent >= 1 else { throw bad("recent must be >= 1, got \(c.recent)") }
        guard c.hidden >= 1 else { throw bad("hidden must be >= 1, got \(c.hidden)") }
        guard c.genreDim >= 0, c.countryDim >= 0 else { throw bad("genre_dim and country_dim must be >= 0") }
        guard c.recencyDecay.isFinite, c.recencyDecay > 0 else { throw bad("recency_decay must be finite and > 0, got \(c.recencyDecay)") }
        guard c.residual == 0 || c.residual == 1 else { throw bad("residual must be 0 or 1, got \(c.residual)") }
        var genreRow: [String: Int] = [:], countryRow: [String: Int] = [:]
        for (i, g) in c.genres.enumerated() {
            guard genreRow.updateValue(i, forKey: g) == nil else { throw bad("genre '\(g)' is listed twice") }
        }
        for (i, k) in c.countries.enumerated() {
            guard countryRow.updateValue(i, forKey: k) == nil else { throw bad("country '\(k)' is listed twice") }
        }
        let input = c.inputDimension
        let expected: [(String, [Int], String)] = [
            ("genre_embedding", [c.genres.count + 1, c.genreDim], "[n_genres + 1 = \(c.genres.count + 1), genre_dim = \(c.genreDim)]"),
            ("country_embedding", [c.countries.count + 1, c.countryDim],
             "[n_countries + 1 = \(c.countries.count + 1), country_dim = \(c.countryDim)]"),
            ("layer0.weight", [c.hidden, input], "[hidden = \(c.hidden), 2·dim + genre_dim + country_dim = \(input)]"),
            ("layer0.bias", [c.hidden], "[hidden = \(c.hidden)]"),
            ("layer1.weight", [c.dim, c.hidden], "[dim = \(c.dim), hidden = \(c.hidden)]"),
            ("layer1.bias", [c.dim], "[dim = \(c.dim)]"),
        ]
        var owned: [UnsafeMutablePointer<Float>] = []
        func copy(_ v: [Float]) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(v.count, 1) * 4, alignment: 64).bindMemory(to: Float.self, capacity: max(v.count, 1))
            p.initialize(from: v, count: v.count)
            owned.append(p)
            return p
        }
        var buffers: [UnsafeMutablePointer<Float>] = []
        do {
            for (name, shape, what) in expected {
                guard let t = st.tensors[name] else {
                    throw ModelError(.missingTensor, "the query tower's weights lack tensor '\(name)' (expected shape \(what))")
                }
                guard t.shape == shape else {
                    throw ModelError(.shapeMismatch, "query tower tensor '\(name)' has shape \(t.shape), expected \(what)")
                }
                guard t.values.allSatisfy(\.isFinite) else {
                    throw ModelError(.malformedWeights, "query tower tensor '\(name)' holds a NaN or an infinity")
                }
                buffers.append(copy(t.values))
            }
        } catch {
            for p in owned { p.deallocate() }
            throw error
        }
        var w = [Float](repeating: 0, count: c.recent)
        var x: Double = 1
        for i in 0 ..< c.recent { w[i] = Float(x); x *= c.recencyDecay }
        weights = copy(w)
        config = c
        self.genreRow = genreRow
        self.countryRow = countryRow
        genreEmbedding = buffers[0]; countryEmbedding = buffers[1]
        w0 = buffers[2]; b0 = buffers[3]; w1 = buffers[4]; b1 = buffers[5]
        self.owned = owned
    }

    deinit { for p in owned { p.deallocate() } }

    // MARK: - Forward pass

    /// The user vector from the rows of the recent items' vectors (most recent first, the ones
    /// the table holds: `count` rows of `dimension` floats, row-major; rows past R are not read),
    /// the user's genres (most watched first; past the third not read) and country, into `out`
    /// (`dimension` floats). Allocates nothing.
    public func userVector(recentRows rows: UnsafePointer<Float>?, count: Int, genres: [String], country: String,
                           into out: UnsafeMutablePointer<Float>, isa: KernelISA = .best) {
        let d = config.dim, gd = config.genreDim, cd = config.countryDim, hidden = config.hidden
        let input = config.inputDimension
        let n = rows == nil ? 0 : min(count, config.recent)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: input + hidden) { scratch in
            let x = scratch.baseAddress!, h = x + input
            x.initialize(repeating: 0, count: input + hidden)
            // 1–2. mean and recency-weighted mean of the recent items' vectors.
            if let rows, n > 0 {
                let mean = x, recency = x + d
                var total: Float = 0
                for i in 0 ..< n {
                    let v = rows + i * d, w = weights[i]
                    total += w
                    for j in 0 ..< d {
                        mean[j] += v[j]
                        recency[j] += w * v[j]
                    }
                }
                let count = Float(n)
                for j in 0 ..< d {
                    mean[j] /= count
                    recency[j] /= total
                }
            }
            // 3. genres, weighted 3, 2, 1.
            let genre = x + 2 * d
            if gd > 0 {
                let unknown = config.genres.count
                if genres.isEmpty {
                    genre.update(from: genreEmbedding + unknown * gd, count: gd)
                } else {
                    var total: Float = 0
                    for (j, name) in genres.prefix(3).enumerated() {
                        let row = genreEmbedding + (genreRow[name] ?? unknown) * gd, g = Float(3 - j)
                        total += g
                        for k in 0 ..< gd { genre[k] += g * row[k] }
                    }
                    for k in 0 ..< gd { genre[k] /= total }
                }
            }
            // 4. country.
            if cd > 0 {
                let row = country.isEmpty ? config.countries.count : countryRow[country] ?? config.countries.count
                (x + 2 * d + gd).update(from: countryEmbedding + row * cd, count: cd)
            }
            // 5. h = relu(W0 x + b0); out = W1 h + b1.
            InnerProducts.dot(query: x, rows: RowMatrix(f32: w0, count: hidden, dimension: input), scores: h, isa: isa)
            for k in 0 ..< hidden { h[k] = max(h[k] + b0[k], 0) }
            InnerProducts.dot(query: h, rows: RowMatrix(f32: w1, count: d, dimension: hidden), scores: out, isa: isa)
            // 6. the residual recency mean.
            if config.residual == 1 {
                let recency = x + d
                for j in 0 ..< d { out[j] += b1[j] + recency[j] }
            } else {
                for j in 0 ..< d { out[j] += b1[j] }
            }
        }
    }

    /// The user vector from recent item ids (most recent first) and a lookup of their vectors:
    /// the first R ids are read and those `itemVector` does not know (nil) are skipped.
    /// - Precondition: every vector `itemVector` returns has `dimension` floats.
    public func userVector(recent ids: [UInt64], itemVector: (UInt64) -> [Float]?, genres: [String], country: String) -> [Float] {
        let d = config.dim
        var rows: [Float] = []
        rows.reserveCapacity(min(ids.count, config.recent) * d)
        var n = 0
        // Unknown items are skipped first, then the first R known ones are read (the trainer's rule).
        for id in ids where n < config.recent {
            guard let v = itemVector(id) else { continue }
            precondition(v.count == d, "item \(id) has a vector of \(v.count) floats, the tower reads \(d)")
            rows += v
            n += 1
        }
        var out = [Float](repeating: 0, count: d)
        rows.withUnsafeBufferPointer { r in
            out.withUnsafeMutableBufferPointer { o in
                userVector(recentRows: n == 0 ? nil : r.baseAddress, count: n, genres: genres, country: country, into: o.baseAddress!)
            }
        }
        return out
    }

    /// The forward pass as one standalone function of the tower's parts — its config, its
    /// tensors (as read from the safetensors file), a lookup of item vectors — and the user's
    /// inputs: what a fixture from the trainer (inputs → expected V_u) is checked against.
    /// Throws `ModelError` when the tensors do not fit the config.
    public static func userVector(config: QueryTowerConfig, tensors: SafeTensors, itemVector: (UInt64) -> [Float]?,
                                  recent: [UInt64], genres: [String], country: String) throws -> [Float] {
        try QueryTower(config: config, tensors: tensors).userVector(recent: recent, itemVector: itemVector, genres: genres, country: country)
    }
}
