/// The parameters of a synthetic world (`shardrank synth`). The defaults are the demo world.
///
/// The model (docs/data.md has the equations): `D − 1` latent dimensions plus one popularity
/// coordinate. Genre centroids `μ_g ~ N(0, I/(D−1))`; item `i` of primary genre `g` and secondary
/// genres `S` has `v_i = itemScale · (μ_g + ½ Σ_{h∈S} μ_h + noise · ε)` and popularity bias
/// `b_i = −popularityExponent · ln(rank_i + 1)` (a random rank: Zipf popularity), written as the
/// last coordinate; user `u` of country `c` prefers 1–3 genres drawn from the country's genre
/// distribution with weights `π` (Dirichlet(1)): `x_u = userScale · (Σ π_k μ_{g_k} + noise · ε)`,
/// last coordinate 1. So `x_u · v_i` (the dot product of the written rows) is exactly the logit of
/// the model, `P(i | u) ∝ exp(x_u · v_i)`.
public struct SynthParameters: Sendable, Equatable {
    public var users = 5000
    public var items = 20000
    /// Written embedding dimension D (≥ 2): D − 1 latent dimensions + the popularity coordinate.
    public var dim = 32
    public var genres = 12
    public var countries = 8
    public var seed: UInt64 = 42
    /// Interactions per user kept out of `interactions.csv` (the last H by time) for `heldout.csv`.
    public var heldout = 5
    /// Mean interactions per user (training + held out); each user has at least `heldout + 1`.
    public var interactionsPerUser = 40

    // ---- Model constants (recorded in world.json) ----------------------------------------------
    /// Zipf exponent s of item popularity: proposal weight `(rank + 1)^−s`.
    public var popularityExponent = 0.8
    public var userScale = 4.0
    public var itemScale = 2.0
    /// Standard deviation (per unit norm) of the noise added to genre mixtures.
    public var factorNoise = 0.5
    /// Minimum number of popularity draws per user for the candidate set (at least 20 × K_u).
    public var candidateDraws = 1000
    /// Item release timestamps are uniform in [itemTimeStart, interactionTimeStart); interactions
    /// fall in [interactionTimeStart, interactionTimeStart + interactionTimeSpan).
    public var itemTimeStart: Int64 = 1_420_070_400        // 2015-01-01T00:00:00Z
    public var interactionTimeStart: Int64 = 1_704_067_200 // 2024-01-01T00:00:00Z
    public var interactionTimeSpan: Int64 = 365 * 86_400

    public init() {}

    /// Throws `SynthError(.invalidArgument)` naming the flag for anything out of range.
    public func validate() throws {
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws {
            if !ok { throw SynthError.invalidArgument(message()) }
        }
        try check(users >= 1 && users <= 100_000_000, "--users must be in 1...100000000, got \(users)")
        try check(items >= 2 && items <= 1_000_000_000, "--items must be in 2...1000000000, got \(items)")
        try check(dim >= 2 && dim <= 4096, "--dim must be in 2...4096 (D − 1 latent dimensions + 1 popularity), got \(dim)")
        try check(genres >= 1 && genres <= 64, "--genres must be in 1...64 (the table format's genre masks are 64 bits), got \(genres)")
        try check(countries >= 1 && countries <= 10_000, "--countries must be in 1...10000, got \(countries)")
        try check(heldout >= 0, "--heldout-per-user must be ≥ 0, got \(heldout)")
        try check(interactionsPerUser >= 1 && interactionsPerUser <= 100_000,
                  "--interactions-per-user must be in 1...100000, got \(interactionsPerUser)")
        try check(heldout < interactionsPerUser,
                  "--heldout-per-user (\(heldout)) must be smaller than --interactions-per-user (\(interactionsPerUser))")
        try check(interactionsPerUser <= items,
                  "--interactions-per-user (\(interactionsPerUser)) must not exceed --items (\(items)): histories have distinct items")
        let (cells, o1) = items.multipliedReportingOverflow(by: dim)
        try check(!o1 && cells <= 4_000_000_000, "--items × --dim (\(items) × \(dim)) is too large (at most 4e9 floats)")
        try check(popularityExponent >= 0 && popularityExponent.isFinite, "popularity exponent must be finite and ≥ 0")
        try check(userScale.isFinite && itemScale.isFinite && factorNoise.isFinite && factorNoise >= 0, "scales must be finite")
        try check(candidateDraws >= 1, "candidate draws must be ≥ 1")
        try check(interactionTimeSpan >= 1 && itemTimeStart < interactionTimeStart, "time ranges are empty")
    }
}

/// One progress report: `done` of `total` units of `stage`.
public struct SynthProgress: Sendable {
    public var stage: String
    public var done: Int
    public var total: Int
}

/// What `Synth.generate` wrote.
public struct SynthSummary: Sendable, Equatable {
    public var files: [String]
    public var interactions: Int
    public var heldout: Int
}

/// The deterministic synthetic world (issue 7): a latent-factor model with genres, countries,
/// Zipf popularity and sampled, time-stamped histories, written as the input directory of
/// docs/data.md (what `shardrank build` reads). Same parameters → same bytes.
public enum Synth {
    /// The `formatVersion` written to world.json; bump it when the same seed stops giving the same world.
    public static let formatVersion = 1

    /// The files `generate` writes, in the order it writes them.
    public static let fileNames = ["items.npy", "item_ids.npy", "items.csv", "users.npy", "user_ids.npy", "users.csv",
                                   "interactions.csv", "heldout.csv", "world.json"]

    /// Generates the world of `parameters` into `outputDirectory` (created with its parents if
    /// missing; files of the same names are overwritten, nothing else is touched).
    ///
    /// Memory: the item factors (M × D floats) plus about 40 bytes per item; users and interactions
    /// are streamed to disk. Progress is reported on the calling thread. Throws `SynthError`:
    /// `.invalidArgument` for bad parameters (before anything is written), `.io` naming the path.
    @discardableResult
    public static func generate(_ parameters: SynthParameters, outputDirectory: String,
                                progress: ((SynthProgress) -> Void)? = nil) throws -> SynthSummary {
        try parameters.validate()
        try SynthDirectory.create(outputDirectory)
        var world = SynthWorld(parameters)
        return try world.write(to: outputDirectory, progress: progress)
    }

    /// The genre names of a world with `count` genres: MovieLens's 18, then `Genre19`, ….
    public static func genreNames(_ count: Int) -> [String] {
        let base = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
                    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
        return (0..<count).map { $0 < base.count ? base[$0] : "Genre\($0 + 1)" }
    }

    /// The country codes of a world with `count` countries: 24 ISO 3166 codes, then `Z25`, ….
    public static func countryNames(_ count: Int) -> [String] {
        let base = ["US", "GB", "DE", "FR", "BR", "IN", "JP", "CA", "ES", "IT", "MX", "KR",
                    "AU", "NL", "SE", "PL", "AR", "TR", "ID", "NG", "ZA", "EG", "NO", "FI"]
        return (0..<count).map { $0 < base.count ? base[$0] : "Z\($0 + 1)" }
    }
}
