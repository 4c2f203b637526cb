import RPCCore
import ShardRankIDs
import ShardRankWire

/// Stage 1 — what one Recommend retrieves: each source's budget and the keys and lengths of
/// the lists it reads, and the seen set every source is filtered by. A pure function of the
/// request, the coordinator's settings and the user's stored profile.
struct RetrievalPlan: Sendable, Equatable {
    var k: Int
    var similarPerItem = 0, genreBudget = 0, countryBudget = 0, popularBudget = 0, searchBudget = 0
    /// Keys of the item→similar lists: the user's most recent items (at most `recentItems` of
    /// `latest`).
    var recent: [UInt64] = []
    /// The user's latest items, most recent first: the session's (`RecordEvents`), then the
    /// context's recent items — or, when it gives none, the stored profile's — without repeats.
    /// The similar source reads its first `recentItems`, the query tower its first R.
    var latest: [UInt64] = []
    /// Keys of the genre lists (at most 3) and of the country list ("" = none).
    var genres: [String] = []
    var country = ""
    /// Items never returned (the *seen* set), ascending and unique: the user's whole stored
    /// history (`UserProfile.history`; the stored recent items when the shard sends none), the
    /// context's recent items and its exclusions. The merge filters by it (binary search).
    private(set) var seenSorted: [UInt64] = []
    /// The same set, delta-varint packed: pushed into every shard's Search as `exclude_sorted`.
    /// When the context adds nothing to the stored history, these are the profile's own bytes.
    private(set) var seenPacked = PackedIDs()
    var seenCount: Int { seenSorted.count }

    /// Sets the seen set to `ids` (any order, repeats allowed).
    mutating func setSeen(_ ids: [UInt64]) {
        seenSorted = SortedIDs.sortedUnique(ids)
        seenPacked = PackedIDs(sortedUnique: seenSorted)
    }

    func isSeen(_ id: UInt64) -> Bool { SortedIDs.contains(seenSorted, id) }

    // MARK: - Request context bounds

    /// Most `context.recent_item_ids` a request may carry (they also key the similar source).
    static let maxContextRecentItems = 100
    /// Most `context.exclude_ids` a request may carry.
    static let maxContextExcludeIDs = 10_000

    /// The context's lists within their bounds, else INVALID_ARGUMENT naming the field and bound.
    static func validateContext(_ context: RecommendContext?) throws(RPCError) {
        guard let c = context else { return }
        guard c.recentItemIDs.count <= maxContextRecentItems else {
            throw RPCError(.invalidArgument, "context.recent_item_ids has \(c.recentItemIDs.count) entries, more than the limit of \(maxContextRecentItems)")
        }
        guard c.excludeIDs.count <= maxContextExcludeIDs else {
            throw RPCError(.invalidArgument, "context.exclude_ids has \(c.excludeIDs.count) entries, more than the limit of \(maxContextExcludeIDs)")
        }
    }

    // MARK: - List lengths

    /// Each genre's share of the genre budget.
    var perGenre: Int { genres.isEmpty ? 0 : max(1, genreBudget / genres.count) }

    /// The most a genre, country or popular list is over-fetched for seen items. Lists are read
    /// past their budget so that seen items (dropped in the merge) cost no slot: by the seen
    /// set's size, but at most this many. A history runs to thousands of items, most of them far
    /// down any one ranked list or not in it, while the merge stops reading a list as soon as its
    /// budget is filled; over-fetching by the whole history would make every Lists call (and
    /// list-cache entry) for such a user thousands of entries long for items never read. With
    /// the cap, a user who has seen more than `maxSeenOverFetch` of a list's top
    /// `budget + maxSeenOverFetch` entries gets fewer than the budget from that list — never a
    /// seen item. (The search needs no over-fetch: the seen set is excluded inside it.)
    static let maxSeenOverFetch = 500
    var seenOverFetch: Int { min(seenCount, Self.maxSeenOverFetch) }
    var genreLimit: Int { perGenre + seenOverFetch }
    /// Similar lists are over-fetched the same way: a user's recent items' neighbours are often
    /// items the user has seen too (co-visitation lists above all).
    var similarLimit: Int { similarPerItem == 0 ? 0 : similarPerItem + seenOverFetch }
    var countryLimit: Int { countryBudget + seenOverFetch }
    var popularLimit: Int { popularBudget + seenOverFetch }

    /// Hits each of `shards` shards returns for a search of `k` (see
    /// `CoordinatorSettings.searchShardSigma`).
    static func perShardK(_ k: Int, shards: Int, sigma: Double) -> Int {
        guard shards > 1, sigma >= 0, k > 0 else { return k }
        let p = 1 / Double(shards)
        let want = Double(k) * p + sigma * (Double(k) * p * (1 - p)).squareRoot()
        return min(k, Int(want.rounded(.up)) + 1)
    }

    init(k: Int) { self.k = k }

    /// - Parameter session: the user's session items on this coordinator, most recent first,
    ///   distinct (`SessionStore.Session.items`).
    init(_ req: RecommendRequest, settings: CoordinatorSettings, profile: UserProfile?, session: [UInt64] = []) {
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
        latest = Self.latest(session: session, then: context.recentItemIDs.isEmpty ? profile?.recentItemIDs ?? [] : context.recentItemIDs)
        recent = Array(latest.prefix(settings.recentItems))
        genres = Array((context.genres.isEmpty ? profile?.topGenres ?? [] : context.genres).prefix(3))
        country = context.country.isEmpty ? profile?.country ?? "" : context.country
        (seenSorted, seenPacked) = Self.seen(profile: profile, context: context, session: session)
    }

    /// The session's items, then `older` without the session's items (`older` as it is when there
    /// is no session).
    static func latest(session: [UInt64], then older: [UInt64]) -> [UInt64] {
        if session.isEmpty { return older }
        var out = session
        out.reserveCapacity(session.count + older.count)
        if session.count <= 64 {
            for id in older where !session.contains(id) { out.append(id) }
        } else {
            let s = Set(session)
            for id in older where !s.contains(id) { out.append(id) }
        }
        return out
    }

    /// The seen set, sorted and packed: the stored history ∪ the stored recent items (already in
    /// it unless the shard sent no history) ∪ the context's recent items and exclusions ∪ the
    /// session's items. One decode of the history and one merge; no re-encoding when nothing is
    /// added to it.
    static func seen(profile: UserProfile?, context: RecommendContext, session: [UInt64] = []) -> ([UInt64], PackedIDs) {
        let history = profile?.history ?? PackedIDs()
        let stored = history.decoded()
        var extra = context.recentItemIDs + context.excludeIDs + session
        for id in profile?.recentItemIDs ?? [] where !SortedIDs.contains(stored, id) { extra.append(id) }
        if extra.isEmpty { return (stored, history) }
        let all = SortedIDs.union(stored, SortedIDs.sortedUnique(extra))
        return (all, all.count == stored.count ? history : PackedIDs(sortedUnique: all))
    }
}
