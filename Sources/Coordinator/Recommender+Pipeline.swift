#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
public import RPCCore
public import ShardRankWire
import ShardRankKernels

extension Recommender {
    /// Validates what a caller can get wrong, with INVALID_ARGUMENT naming the field.
    func validate(_ req: RecommendRequest) throws(RPCError) {
        guard req.k >= 1 && Int(req.k) <= settings.maxK else {
            throw RPCError(.invalidArgument, "k=\(req.k) is out of range 1...\(settings.maxK)")
        }
        if let b = req.budgets {
            for (name, v) in [("similar_per_item", b.similarPerItem), ("genre", b.genre), ("country", b.country),
                              ("popular", b.popular), ("search", b.search)] where Int(v) > settings.maxBudget {
                throw RPCError(.invalidArgument, "budgets.\(name)=\(v) exceeds the limit of \(settings.maxBudget)")
            }
        }
        guard ["", "dot", "mlp"].contains(req.model) else {
            throw RPCError(.invalidArgument, "unknown model '\(req.model)' (known: dot, mlp)")
        }
        if req.model == "mlp" && model == nil {
            throw RPCError(.invalidArgument, "model 'mlp' is not loaded (start the coordinator with --model FILE)")
        }
        guard req.diversityLambda.isFinite, req.diversityLambda >= 0, req.diversityLambda <= 1 else {
            throw RPCError(.invalidArgument, "diversity_lambda=\(req.diversityLambda) is out of range [0, 1]")
        }
        guard req.freshnessWeight.isFinite, req.freshnessWeight >= 0 else {
            throw RPCError(.invalidArgument, "freshness_weight=\(req.freshnessWeight) must be finite and >= 0")
        }
        guard req.minCoverage.isFinite, req.minCoverage >= 0, req.minCoverage <= 1 else {
            throw RPCError(.invalidArgument, "min_coverage=\(req.minCoverage) is out of range [0, 1]")
        }
        for s in req.sources where ![.similar, .genre, .country, .popular, .search].contains(s) {
            throw RPCError(.invalidArgument, "sources: \(s) is not a retrieval source (similar, genre, country, popular, search)")
        }
    }

    /// `Recommend`: the whole two-stage pipeline.
    public func recommend(_ req: RecommendRequest, context ctx: ServerContext) async throws(RPCError) -> RecommendResponse {
        try validate(req)
        let trace = makeTrace(ctx)
        let b = req.budgets ?? Budgets()
        func budget(_ v: UInt32, _ d: Int) -> Int { v == 0 ? d : Int(v) }
        let only = Set(req.sources)
        func on(_ s: Source) -> Bool { only.isEmpty || only.contains(s) }
        let similarPerItem = on(.similar) ? budget(b.similarPerItem, settings.similarPerItem) : 0
        let genreBudget = on(.genre) ? budget(b.genre, settings.genreBudget) : 0
        let countryBudget = on(.country) ? budget(b.country, settings.countryBudget) : 0
        let popularBudget = on(.popular) ? budget(b.popular, settings.popularBudget) : 0
        let searchBudget = on(.search) ? budget(b.search, settings.searchBudget) : 0
        let k = Int(req.k)

        // --- Retrieve: profile and user vector first (unless the context gives them), then the
        // sources in parallel.
        let t0 = ContinuousClock.now
        let profileDeadline = trace.stageDeadline(0.3)
        let context = req.context ?? RecommendContext()
        let needProfile = context.recentItemIDs.isEmpty || context.genres.isEmpty || context.country.isEmpty
        async let profileTask: UserProfile? = needProfile ? profile(req.userID, trace: trace, deadline: profileDeadline) : nil
        async let vectorTask = userVector(req.userID, trace: trace, deadline: profileDeadline)
        let storedProfile = await profileTask
        let (userVec, userVecFailed) = await vectorTask
        let coldStart = storedProfile == nil && userVec == nil && !userVecFailed
        let recent = Array((context.recentItemIDs.isEmpty ? storedProfile?.recentItemIDs ?? [] : context.recentItemIDs).prefix(settings.recentItems))
        let genres = Array((context.genres.isEmpty ? storedProfile?.topGenres ?? [] : context.genres).prefix(3))
        let country = context.country.isEmpty ? storedProfile?.country ?? "" : context.country
        var seenSet = Set(storedProfile?.recentItemIDs ?? [])
        seenSet.formUnion(context.recentItemIDs)
        seenSet.formUnion(context.excludeIDs)
        let seen = seenSet
        let seenList = Array(seen)
        let seenCount = seenList.count

        let retrieveDeadline = trace.stageDeadline(0.6)
        let perGenre = genres.isEmpty ? 0 : max(1, genreBudget / genres.count)
        async let similarLists = lists(table: "similar", keys: recent.map { String($0) }, limit: similarPerItem, source: .similar,
                                       trace: trace, deadline: retrieveDeadline)
        async let genreLists = lists(table: "genre_top", keys: genreBudget == 0 ? [] : genres, limit: perGenre + seenCount, source: .genre,
                                     trace: trace, deadline: retrieveDeadline)
        async let countryLists = lists(table: "country_top", keys: country.isEmpty || countryBudget == 0 ? [] : [country], limit: countryBudget + seenCount,
                                       source: .country, trace: trace, deadline: retrieveDeadline)
        async let popularLists = lists(table: "popular", keys: popularBudget == 0 ? [] : ["all"], limit: popularBudget + seenCount, source: .popular,
                                       trace: trace, deadline: retrieveDeadline)
        async let searched = search(query: userVec ?? [], k: userVec == nil ? 0 : searchBudget, exclude: seenList, withRows: true,
                                    trace: trace, deadline: retrieveDeadline)
        let sim = await similarLists, gen = await genreLists, cty = await countryLists, pop = await popularLists
        let srch = await searched
        let t1 = ContinuousClock.now

        // --- Merge, dedupe (remembering sources) and filter seen items.
        func items(_ ls: [RankedList], cap: Int) -> [ShardRankKernels.ScoredItem] {
            var out: [ShardRankKernels.ScoredItem] = []
            for l in ls {
                var n = 0
                for (id, s) in zip(l.ids, l.scores) where !seen.contains(id) {
                    if n >= cap { break }
                    out.append(ShardRankKernels.ScoredItem(id: id, score: s))
                    n += 1
                }
            }
            return out
        }
        let sourceLists: [[ShardRankKernels.ScoredItem]] = [
            items(sim, cap: similarPerItem), items(gen, cap: perGenre), items(cty, cap: countryBudget),
            items(pop, cap: popularBudget), srch.items.filter { !seen.contains($0.id) },
        ]
        let merged = TopK.mergeCandidates(sourceLists)
        let t2 = ContinuousClock.now

        // --- Gather vectors of the candidates: the search hits' rows came with them; the others
        // take one Lookup per shard. The attributes post-ranking needs (genre cap, freshness) are
        // fetched at the same time.
        let needAttributes = req.genreCap > 0 || req.freshnessWeight > 0
        async let attributesTask: [UInt64: ItemAttributes]? = needAttributes
            ? itemAttributes(merged.map(\.id), trace: trace, deadline: trace.stageDeadline(0.85)) : nil
        let gathered = await assemble(merged.map(\.id), search: srch, dim: userVec?.count, trace: trace, deadline: trace.stageDeadline(0.85))
        let t3 = ContinuousClock.now

        // --- Rank.
        let n = gathered.ids.count
        var scores = try score(model: req.model, user: userVec, rows: n == 0 ? nil : gathered.rows.matrix)
        if userVec == nil {
            // Cold start: no user vector; rank by the best retrieval score, normalised per source.
            let best = Dictionary(uniqueKeysWithValues: merged.map { ($0.id, $0.score) })
            scores = gathered.ids.map { best[$0] ?? 0 }
        }
        let t4 = ContinuousClock.now

        // --- Post-rank: freshness boost, MMR (λ) and an optional per-genre cap.
        let lambda = req.diversityLambda == 0 ? settings.diversityLambda : req.diversityLambda
        var order: [Int]
        let attributes = await attributesTask
        var genreMasks: [UInt64]? = nil
        if req.genreCap > 0, let attributes {
            genreMasks = gathered.ids.map { attributes[$0]?.genresMask ?? 0 }
        }
        if req.freshnessWeight > 0, let attributes {
            let now = req.nowUnixSeconds != 0 ? Double(req.nowUnixSeconds) : Self.unixNow()
            let halfLife = req.freshnessHalfLifeSeconds != 0 ? Double(req.freshnessHalfLifeSeconds) : settings.freshnessHalfLifeSeconds
            Self.boostFreshness(&scores, ids: gathered.ids, attributes: attributes, weight: req.freshnessWeight, now: now, halfLife: halfLife)
        }
        if lambda < 1, n > 0 {
            let matrix = gathered.rows.matrix
            order = scores.withUnsafeBufferPointer { s in
                if let masks = genreMasks {
                    return masks.withUnsafeBufferPointer { m in
                        Diversity.mmr(relevance: s, vectors: matrix, lambda: lambda, k: k, attributes: m, attributeCap: Int(req.genreCap))
                    }
                }
                return Diversity.mmr(relevance: s, vectors: matrix, lambda: lambda, k: k)
            }
        } else {
            order = Array(0 ..< n).sorted { a, b in
                scores[a] > scores[b] || (scores[a] == scores[b] && gathered.ids[a] < gathered.ids[b])
            }
            if let masks = genreMasks {
                order = masks.withUnsafeBufferPointer { Diversity.capPerAttribute(order: order, attributes: $0, cap: Int(req.genreCap), limit: k) }
            }
            order = Array(order.prefix(k))
        }
        let t5 = ContinuousClock.now

        let sourcesOf = Dictionary(uniqueKeysWithValues: merged.map { ($0.id, $0.sources) })
        let out = order.map { i -> ShardRankWire.ScoredItem in
            let mask = sourcesOf[gathered.ids[i]] ?? 0
            let sources = Recommender.sourceOrder.enumerated().compactMap { (bit, s) in mask & (1 << bit) != 0 ? s : nil }
            return ShardRankWire.ScoredItem(itemID: gathered.ids[i], score: scores[i], sources: sources)
        }
        var coverage = trace.coverage(shardCount: cluster.shardCount)
        if userVec != nil && coverage.shardsAsked > 0 {
            let share = Float(coverage.shardsAnswered) / Float(coverage.shardsAsked)
            if share < req.minCoverage {
                throw RPCError(.unavailable, "only \(coverage.shardsAnswered) of \(coverage.shardsAsked) shards answered (min_coverage \(req.minCoverage)): \(coverage.degradedReasons.joined(separator: "; "))")
            }
        }
        if coldStart { coverage.degradedReasons.append("cold start: user \(req.userID) has no stored vector or profile") }
        let timings = StageTimings(retrieveMicros: Self.micros(t1 - t0), filterMicros: Self.micros(t2 - t1), gatherMicros: Self.micros(t3 - t2),
                                   rankMicros: Self.micros(t4 - t3), postRankMicros: Self.micros(t5 - t4),
                                   totalMicros: Self.micros(ContinuousClock.now - trace.start))
        let version = trace.answeredVersions.max() ?? trace.version
        let response = RecommendResponse(items: out, version: version, timings: timings, coverage: coverage, candidates: UInt32(merged.count),
                                         coldStart: coldStart)
        observer?.answered(response)
        return response
    }

    /// What post-ranking reads of an item.
    struct ItemAttributes: Sendable {
        var genresMask: UInt64
        var timestamp: Int64
    }

    /// Attributes of `ids` (one call per shard); items without attributes, or on a shard that
    /// failed (flagged degraded), are absent.
    func itemAttributes(_ ids: [UInt64], trace: Trace, deadline: ContinuousClock.Instant) async -> [UInt64: ItemAttributes] {
        var byShard: [Int: [UInt64]] = [:]
        for id in ids { byShard[router.shard(ofID: id), default: []].append(id) }
        let table = settings.attributesTable, version = trace.version
        return await withTaskGroup(of: [(UInt64, ItemAttributes)].self) { group in
            for (shard, list) in byShard {
                group.addTask {
                    do throws(RPCError) {
                        let r = try await self.shardCall(shard, trace: trace, deadline: deadline) { c, t throws(RPCError) in
                            try await c.attributes(AttributesRequest(table: table, itemIDs: list, version: version), timeout: t)
                        }
                        return (0 ..< r.itemIDs.count).map { i in
                            (r.itemIDs[i], ItemAttributes(genresMask: i < r.genreMasks.count ? r.genreMasks[i] : 0,
                                                          timestamp: i < r.timestamps.count ? r.timestamps[i] : 0))
                        }
                    } catch {
                        trace.fail(nil, "attributes: shard \(shard): \(error) (genre cap and freshness boost not applied to its items)")
                        return []
                    }
                }
            }
            var m: [UInt64: ItemAttributes] = [:]
            m.reserveCapacity(ids.count)
            for await l in group { for (id, a) in l { m[id] = a } }
            return m
        }
    }

    /// Adds `weight * 2^(-age / halfLife)` to each score, age = `now` - the item's timestamp in
    /// seconds (clamped at 0: an item from the future counts as new). Items without attributes
    /// get no boost.
    static func boostFreshness(_ scores: inout [Float], ids: [UInt64], attributes: [UInt64: ItemAttributes],
                               weight: Float, now: Double, halfLife: Double) {
        for i in 0 ..< min(scores.count, ids.count) {
            guard let a = attributes[ids[i]] else { continue }
            let age = max(0, now - Double(a.timestamp))
            scores[i] += weight * Float(exp2(-age / halfLife))
        }
    }

    /// Wall-clock time in Unix seconds.
    static func unixNow() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// `Rank`: scores caller-supplied candidates for a user.
    public func rank(_ req: RankRequest, context ctx: ServerContext) async throws(RPCError) -> ItemsResponse {
        guard !req.candidateIDs.isEmpty else { throw RPCError(.invalidArgument, "candidate_ids is empty") }
        guard req.candidateIDs.count <= settings.maxBudget else {
            throw RPCError(.invalidArgument, "\(req.candidateIDs.count) candidates exceed the limit of \(settings.maxBudget)")
        }
        guard ["", "dot", "mlp"].contains(req.model) else { throw RPCError(.invalidArgument, "unknown model '\(req.model)' (known: dot, mlp)") }
        let trace = makeTrace(ctx)
        let (userVec, failed) = await userVector(req.userID, trace: trace, deadline: trace.stageDeadline(0.4))
        guard let userVec else {
            throw failed ? RPCError(.unavailable, "the user's shard did not answer")
                         : RPCError(.notFound, "user \(req.userID) has no stored vector")
        }
        var unique: [UInt64] = []
        var seenIDs = Set<UInt64>()
        for id in req.candidateIDs where seenIDs.insert(id).inserted { unique.append(id) }
        let g = await gather(unique, dim: userVec.count, trace: trace, deadline: trace.stageDeadline(0.8))
        let scores = try score(model: req.model, user: userVec, vectors: g.vectors, count: g.ids.count, dim: g.dim)
        var order = Array(0 ..< g.ids.count).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && g.ids[$0] < g.ids[$1]) }
        if req.k > 0 { order = Array(order.prefix(Int(req.k))) }
        var coverage = trace.coverage(shardCount: cluster.shardCount)
        let missing = unique.count - g.ids.count
        if missing > 0 && !coverage.degraded { coverage.degradedReasons.append("\(missing) candidates not found in table '\(settings.itemsTable)'") }
        return ItemsResponse(items: order.map { ShardRankWire.ScoredItem(itemID: g.ids[$0], score: scores[$0], sources: [.caller]) },
                             version: trace.answeredVersions.max() ?? trace.version, coverage: coverage)
    }

    /// `Similar`: the precomputed item→similar list, or an inner-product search with the item's
    /// vector when the table set has no `similar` list for it.
    public func similar(_ req: SimilarRequest, context ctx: ServerContext) async throws(RPCError) -> ItemsResponse {
        let k = req.k == 0 ? 10 : Int(req.k)
        guard k <= settings.maxK else { throw RPCError(.invalidArgument, "k=\(req.k) is out of range 1...\(settings.maxK)") }
        let trace = makeTrace(ctx)
        let l = await lists(table: "similar", keys: [String(req.itemID)], limit: k, source: .similar, trace: trace,
                            deadline: trace.stageDeadline(0.4))
        if let first = l.first, !first.ids.isEmpty {
            let items = zip(first.ids, first.scores).prefix(k).map { ShardRankWire.ScoredItem(itemID: $0, score: $1, sources: [.similar]) }
            return ItemsResponse(items: Array(items), version: trace.version, coverage: trace.coverage(shardCount: cluster.shardCount))
        }
        let g = await gather([req.itemID], dim: nil, trace: trace, deadline: trace.stageDeadline(0.3))
        guard g.ids.count == 1 else { throw RPCError(.notFound, "item \(req.itemID) is not in table '\(settings.itemsTable)'") }
        let hits = await search(query: g.vectors, k: k, exclude: [req.itemID], trace: trace, deadline: trace.stageDeadline(0.9)).items
        return ItemsResponse(items: hits.map { ShardRankWire.ScoredItem(itemID: $0.id, score: $0.score, sources: [.search]) },
                             version: trace.answeredVersions.max() ?? trace.version, coverage: trace.coverage(shardCount: cluster.shardCount))
    }
}

/// `shardrank.v1.Recommender` on the RPC server.
public struct RecommenderService: RPCService {
    public let serviceName = "shardrank.v1.Recommender"
    public let recommender: Recommender
    public init(recommender: Recommender) { self.recommender = recommender }

    public var methods: [RPCMethod] {
        let r = recommender
        return [
            RPCMethod(service: serviceName, method: "Recommend", placement: .inline, handler: .asyncUnary { bytes, ctx throws(RPCError) in
                try await r.recommend(try RecommendRequest.decode(bytes), context: ctx).encoded()
            }),
            RPCMethod(service: serviceName, method: "Rank", placement: .inline, handler: .asyncUnary { bytes, ctx throws(RPCError) in
                try await r.rank(try RankRequest.decode(bytes), context: ctx).encodedAsRank()
            }),
            RPCMethod(service: serviceName, method: "Similar", placement: .inline, handler: .asyncUnary { bytes, ctx throws(RPCError) in
                try await r.similar(try SimilarRequest.decode(bytes), context: ctx).encodedAsSimilar()
            }),
        ]
    }
}
