import ShardRankWire

/// Stage 1 — what one Recommend retrieves: each source's budget and the keys and lengths of
/// the lists it reads, and the seen set every source is filtered by. A pure function of the
/// request, the coordinator's settings and the user's stored profile.
struct RetrievalPlan: Sendable, Equatable {
    var k: Int
    var similarPerItem = 0, genreBudget = 0, countryBudget = 0, popularBudget = 0, searchBudget = 0
    /// Keys of the item→similar lists: the user's most recent items (at most `recentItems`).
    var recent: [UInt64] = []
    /// Keys of the genre lists (at most 3) and of the country list ("" = none).
    var genres: [String] = []
    var country = ""
    /// Items never returned: the stored recent items, the context's recent items and exclusions.
    var seen: Set<UInt64> = [] { didSet { seenSorted = seen.sorted() } }
    /// `seen` sorted (pushed down into Search; the filter's lookup table is built from it).
    private(set) var seenSorted: [UInt64] = []

    /// Each genre's share of the genre budget.
    var perGenre: Int { genres.isEmpty ? 0 : max(1, genreBudget / genres.count) }
    /// Lists are over-fetched by the seen set, then filtered (so a seen item costs no slot).
    var genreLimit: Int { perGenre + seen.count }
    var countryLimit: Int { countryBudget + seen.count }
    var popularLimit: Int { popularBudget + seen.count }

    /// Hits each of `shards` shards returns for a search of `k` (see
    /// `CoordinatorSettings.searchShardSigma`).
    static func perShardK(_ k: Int, shards: Int, sigma: Double) -> Int {
        guard shards > 1, sigma >= 0, k > 0 else { return k }
        let p = 1 / Double(shards)
        let want = Double(k) * p + sigma * (Double(k) * p * (1 - p)).squareRoot()
        return min(k, Int(want.rounded(.up)) + 1)
    }

    /// True when the request's context lacks something only the stored profile gives.
    static func needsProfile(_ req: RecommendRequest) -> Bool {
        let c = req.context ?? RecommendContext()
        return c.recentItemIDs.isEmpty || c.genres.isEmpty || c.country.isEmpty
    }

    init(k: Int) { self.k = k }

    init(_ req: RecommendRequest, settings: CoordinatorSettings, profile: UserProfile?) {
        k = Int(req.k)
        let b = req.budgets ?? Budgets()
        let only = Set(req.sources)
        func budget(_ s: Source, _ v: UInt32, _ d: Int) -> Int { only.isEmpty || only.contains(s) ? (v == 0 ? d : Int(v)) : 0 }
        similarPerItem = budget(.similar, b.similarPerItem, settings.similarPerItem)
        genreBudget = budget(.genre, b.genre, settings.genreBudget)
        countryBudget = budget(.country, b.country, settings.countryBudget)
        popularBudget = budget(.popular, b.popular, settings.popularBudget)
        searchBudget = budget(.search, b.search, settings.searchBudget)
        let context = req.context ?? RecommendContext()
        recent = Array((context.recentItemIDs.isEmpty ? profile?.recentItemIDs ?? [] : context.recentItemIDs).prefix(settings.recentItems))
        genres = Array((context.genres.isEmpty ? profile?.topGenres ?? [] : context.genres).prefix(3))
        country = context.country.isEmpty ? profile?.country ?? "" : context.country
        seen = Set(profile?.recentItemIDs ?? [])
        seen.formUnion(context.recentItemIDs)
        seen.formUnion(context.excludeIDs)
        seenSorted = seen.sorted()
    }
}
