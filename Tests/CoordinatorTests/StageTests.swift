import Foundation
import Logging
import Testing
import RPCCore
import ShardRankIDs
import ShardRankKernels
import ShardRankWire
@testable import Coordinator

/// The pipeline's stages as values and functions: no shards, no sockets.
@Suite struct RetrievalPlanTests {
    static let profile = UserProfile(userID: 7, recentItemIDs: Array(1 ... 15), topGenres: ["Drama", "Comedy", "Action", "Horror"], country: "DE")

    @Test func budgetsComeFromSettingsAndTheRequestAndSourcesSwitchThemOff() {
        var s = CoordinatorSettings()
        s.recentItems = 4
        let p = RetrievalPlan(RecommendRequest(userID: 7, k: 12, budgets: Budgets(genre: 30, search: 99)), settings: s, profile: Self.profile)
        #expect(p.k == 12)
        #expect(p.similarPerItem == s.similarPerItem && p.countryBudget == s.countryBudget && p.popularBudget == s.popularBudget)
        #expect(p.genreBudget == 30 && p.searchBudget == 99)
        #expect(p.recent == [1, 2, 3, 4], "the most recent recentItems items key the similar source")
        #expect(p.genres == ["Drama", "Comedy", "Action"], "at most 3 genres")
        #expect(p.perGenre == 10 && p.country == "DE")
        let only = RetrievalPlan(RecommendRequest(userID: 7, sources: [.search, .popular]), settings: s, profile: Self.profile)
        #expect(only.similarPerItem == 0 && only.genreBudget == 0 && only.countryBudget == 0)
        #expect(only.popularBudget == s.popularBudget && only.searchBudget == s.searchBudget)
    }

    @Test func theContextOverridesTheProfileAndTheSeenSetIsTheirUnion() {
        let ctx = RecommendContext(recentItemIDs: [100, 101], country: "FR", genres: ["Musical"], excludeIDs: [500, 1])
        let p = RetrievalPlan(RecommendRequest(userID: 7, context: ctx), settings: CoordinatorSettings(), profile: Self.profile)
        #expect(p.recent == [100, 101] && p.genres == ["Musical"] && p.country == "FR")
        // A profile without a stored history (an older shard): its recent items stand for it.
        #expect(p.seenSorted == (Array(1 ... 15) + [100, 101, 500]).sorted())
        #expect(p.seenPacked.decoded() == p.seenSorted)
        #expect(p.genreLimit == p.perGenre + p.seenCount && p.popularLimit == p.popularBudget + p.seenCount)
        let cold = RetrievalPlan(RecommendRequest(userID: 7), settings: CoordinatorSettings(), profile: nil)
        #expect(cold.recent.isEmpty && cold.genres.isEmpty && cold.country.isEmpty && cold.seenSorted.isEmpty && cold.perGenre == 0)
    }

    @Test func theSeenSetIsTheWholeStoredHistoryAndTheContext() {
        let history = (0 ..< 3000).map { UInt64($0) * 7 + 3 }
        var profile = Self.profile
        profile.recentItemIDs = Array(history.suffix(50).reversed())
        profile.history = PackedIDs(sortedUnique: history)
        // Nothing added by the context: the profile's own bytes are pushed down, not re-encoded.
        let plain = RetrievalPlan(RecommendRequest(userID: 7), settings: CoordinatorSettings(), profile: profile)
        #expect(plain.seenSorted == history)
        #expect(plain.seenPacked == profile.history)
        #expect(history.allSatisfy(plain.isSeen) && !plain.isSeen(4))
        // The context adds its recent items and exclusions; a stored recent item missing from the
        // history still counts.
        profile.recentItemIDs.append(1)
        let ctx = RecommendContext(recentItemIDs: [2, 3], excludeIDs: [5, 10, 3])
        let p = RetrievalPlan(RecommendRequest(userID: 7, context: ctx), settings: CoordinatorSettings(), profile: profile)
        let want = Array(Set(history + [1, 2, 5, 10])).sorted()
        #expect(p.seenSorted == want && p.seenPacked.decoded() == want && p.seenCount == 3003, "3 and 10 are in the history already")
        // Lists are over-fetched by the seen set, but by at most `maxSeenOverFetch`.
        #expect(p.popularLimit == p.popularBudget + RetrievalPlan.maxSeenOverFetch)
        #expect(p.genreLimit == p.perGenre + RetrievalPlan.maxSeenOverFetch)
        #expect(p.countryLimit == p.countryBudget + RetrievalPlan.maxSeenOverFetch)
        let few = RetrievalPlan(RecommendRequest(userID: 7, context: RecommendContext(excludeIDs: [1, 2])), settings: CoordinatorSettings(),
                                profile: nil)
        #expect(few.popularLimit == few.popularBudget + 2, "a small seen set over-fetches by its size")
    }

    @Test func contextListsBeyondTheirBoundsAreInvalidArgument() throws {
        try RetrievalPlan.validateContext(nil)
        try RetrievalPlan.validateContext(RecommendContext(recentItemIDs: (0 ..< 100).map(UInt64.init), excludeIDs: (0 ..< 10_000).map(UInt64.init)))
        let cases: [(RecommendContext, String, Int)] = [
            (RecommendContext(recentItemIDs: (0 ..< 101).map(UInt64.init)), "context.recent_item_ids", RetrievalPlan.maxContextRecentItems),
            (RecommendContext(excludeIDs: (0 ..< 10_001).map(UInt64.init)), "context.exclude_ids", RetrievalPlan.maxContextExcludeIDs),
        ]
        for (ctx, field, bound) in cases {
            do {
                try RetrievalPlan.validateContext(ctx)
                Issue.record("accepted \(field) over its bound")
            } catch {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains(field) && error.message.contains("\(bound)"), "\(error.message)")
            }
        }
        #expect(RetrievalPlan.maxContextRecentItems == 100 && RetrievalPlan.maxContextExcludeIDs == 10_000)
    }
}

@Suite struct CandidateMergeTests {
    @Test func seenItemsAreDroppedSourcesCappedAndDuplicatesMerged() {
        var plan = RetrievalPlan(k: 10)
        plan.similarPerItem = 2; plan.genreBudget = 4; plan.genres = ["A", "B"]; plan.countryBudget = 1; plan.popularBudget = 3
        plan.setSeen([40, 3])
        func l(_ ids: [UInt64]) -> RankedList { RankedList(key: "k", ids: ids, scores: ids.map { Float(100 - $0) }) }
        let merged = CandidateMerge.merge(plan: plan, similar: [l([3, 4, 5, 6]), l([5, 7])], genre: [l([8, 9, 10]), l([40, 11, 12])],
                                          country: [l([13, 4])], popular: [l([4, 14, 15, 16])],
                                          search: [ScoredID(id: 40, score: 1), ScoredID(id: 4, score: 200)])
        let ids = Set(merged.map(\.id))
        // similar: 4,5 (3 seen) + 5,7; genre: 8,9 + 11,12 (40 seen); country: 13; popular: 4,14,15; search: 4 (40 seen).
        #expect(ids == [4, 5, 7, 8, 9, 11, 12, 13, 14, 15])
        let four = merged.first { $0.id == 4 }!
        #expect(CandidateMerge.sources(four.sources) == [.similar, .popular, .search])
        #expect(four.score == 200, "the best retrieval score")
        #expect(CandidateMerge.sources(merged.first { $0.id == 5 }!.sources) == [.similar])
        #expect(zip(merged, merged.dropFirst()).allSatisfy { ScoredID.ranksBefore($0.item, $1.item) })
    }
}

@Suite struct RankingTests {
    static let rows: [Float] = [1, 0, 0, 1, 2, 2, -1, 3]

    @Test func dotIsTheInnerProductAndBadModelsAreRefused() throws {
        let scores = try Self.rows.withUnsafeBufferPointer { r in
            try Ranking.scores(model: "dot", mlp: nil, user: [2, 0.5], rows: RowMatrix(f32: r.baseAddress!, count: 4, dimension: 2),
                               pool: WorkerPool(threadCount: 1))
        }
        #expect(scores == [2, 0.5, 5, -0.5])
        #expect(try Ranking.scores(model: "", mlp: nil, user: [1, 1], rows: nil, pool: WorkerPool(threadCount: 1)).isEmpty)
        for model in ["xgb", "mlp"] {
            do {
                _ = try Self.rows.withUnsafeBufferPointer { r throws(RPCError) in
                    try Ranking.scores(model: model, mlp: nil, user: [1, 1], rows: RowMatrix(f32: r.baseAddress!, count: 4, dimension: 2),
                                       pool: WorkerPool(threadCount: 1))
                }
                Issue.record("model \(model) accepted")
            } catch {
                #expect(error.code == .invalidArgument && error.message.contains(model))
            }
        }
        // A user vector of another width than the items is a configuration error, not zero scores.
        do {
            _ = try Self.rows.withUnsafeBufferPointer { r throws(RPCError) in
                try Ranking.scores(model: "dot", mlp: nil, user: [1, 1, 1], rows: RowMatrix(f32: r.baseAddress!, count: 4, dimension: 2),
                                   pool: WorkerPool(threadCount: 1))
            }
            Issue.record("a 3-dim user vector was scored against 2-dim items")
        } catch {
            #expect(error.code == .failedPrecondition && error.message.contains("dim 3"))
        }
        let cold = Ranking.retrievalScores(ids: [9, 8, 7], merged: [MergedCandidate(id: 8, score: 3, sources: 1), MergedCandidate(id: 9, score: 1, sources: 2)])
        #expect(cold == [1, 3, 0])
    }
}

@Suite struct PostRankingTests {
    @Test func plainOrderGenreCapFreshnessAndMMR() {
        let ids: [UInt64] = [10, 11, 12, 13, 14]
        var scores: [Float] = [0.5, 0.9, 0.9, 0.1, 0.7]
        var o = PostRanking.Options(k: 3)
        #expect(PostRanking.order(scores: &scores, ids: ids, rows: nil, attributes: nil, options: o) == [1, 2, 4], "ties to the lower id")
        // Genre cap 1: 11 and 12 share genre bit 0.
        let attributes: [UInt64: ItemAttributes] = [10: .init(genresMask: 2, timestamp: 0), 11: .init(genresMask: 1, timestamp: 0),
                                                    12: .init(genresMask: 1, timestamp: 1000), 13: .init(genresMask: 4, timestamp: 1000),
                                                    14: .init(genresMask: 1, timestamp: 0)]
        o.genreCap = 1
        #expect(PostRanking.order(scores: &scores, ids: ids, rows: nil, attributes: attributes, options: o) == [1, 0, 3])
        // Freshness: weight 1, half-life 1000 s, now 1000: items stamped 1000 get +1, stamped 0 get +0.5.
        o.genreCap = 0; o.freshnessWeight = 1; o.now = 1000; o.halfLife = 1000
        var boosted = scores
        let order = PostRanking.order(scores: &boosted, ids: ids, rows: nil, attributes: attributes, options: o)
        #expect(boosted == [1.0, 1.4, 1.9, 1.1, 1.2])
        #expect(order == [2, 1, 4])
        // MMR with λ < 1 over rows: two identical vectors are not both picked first.
        let rows: [Float] = [1, 0, 1, 0, 0, 1, 0.7, 0.7, -1, 0]
        var s2: [Float] = [1, 1, 0.6, 0.8, 0]
        let mmr = rows.withUnsafeBufferPointer { r in
            PostRanking.order(scores: &s2, ids: ids, rows: RowMatrix(f32: r.baseAddress!, count: 5, dimension: 2), attributes: nil,
                              options: PostRanking.Options(k: 2, lambda: 0.3))
        }
        #expect(mmr.first == 0 && mmr[1] != 1, "\(mmr)")
    }
}

@Suite struct FanOutPieceTests {
    @Test func searchAnswersAreMergedAndTheirRowsLocated() {
        func part(_ ids: [UInt64], _ scores: [Float], rows: Bool) -> SearchResponse {
            let vectors: [UInt8] = rows ? ids.flatMap { id in [UInt8(id), UInt8(id), 0, 0] } : []
            return SearchResponse(results: [SearchHits(ids: ids, scores: scores, vectors: vectors, scales: rows ? ids.map { _ in 0.5 } : [])],
                                  version: 3, dim: rows ? 4 : 0, dtype: rows ? .int8 : .unspecified)
        }
        let r = Recommender.mergeSearch([part([5, 9, 1], [0.9, 0.5, 0.1], rows: true), part([2, 4], [0.9, 0.6], rows: false)], k: 4)
        #expect(r.items.map(\.id) == [2, 5, 4, 9], "best first, ties to the lower id")
        #expect(r.rows.map(\.id) == [5, 9] && r.rows.map(\.part) == [0, 0] && r.rows.map(\.index) == [0, 1],
                "rows of the hits that brought one; none for hits beyond k")
        // An answer out of order (or with a NaN) is not trusted: the same best-first result.
        let shuffled = Recommender.mergeSearch([part([1, 9, 5], [0.1, 0.5, 0.9], rows: true), part([2, 4], [0.9, 0.6], rows: false)], k: 4)
        #expect(shuffled.items.map(\.id) == [2, 5, 4, 9])
        #expect(Set(shuffled.rows.map(\.id)) == [5, 9] && shuffled.rows.allSatisfy { $0.part == 0 })
        let nan = Recommender.mergeSearch([part([5, 9], [.nan, 0.5], rows: false), part([2, 4], [0.9, 0.6], rows: false)], k: 3)
        #expect(nan.items.map(\.id) == [2, 4, 9], "NaN last")
    }

    @Test func candidateRowsDecodeEveryDtypeOnce() {
        let rows = CandidateRows(count: 3, dim: 2)
        #expect(Int(bitPattern: rows.base) % 64 == 0, "aligned")
        let f32: [Float] = [9, 9, 1.5, -2]
        f32.withUnsafeBytes { rows.set(row: 0, from: $0, source: 1, dtype: .f32, scale: 1) }
        let f16: [Float16] = [0.25, 4]
        f16.withUnsafeBytes { rows.set(row: 1, from: $0, source: 0, dtype: .f16, scale: 1) }
        let i8: [Int8] = [1, 2, -4, 10]
        i8.withUnsafeBytes { rows.set(row: 2, from: $0, source: 1, dtype: .int8, scale: 0.5) }
        #expect(Array(UnsafeBufferPointer(start: rows.base, count: 6)) == [1.5, -2, 0.25, 4, -2, 5])
        #expect(rows.filled == [true, true, true])
        let kept = rows.compacted([2, 0])
        #expect(Array(UnsafeBufferPointer(start: kept.base, count: 4)) == [-2, 5, 1.5, -2])
    }

    @Test func rowCacheServesOneVersionWithinItsBudget() {
        let cache = RowCache(capacityBytes: 4 * 4 * 3)  // three rows of dim 4
        let src = CandidateRows(count: 4, dim: 4)
        for i in 0 ..< 16 { src.base[i] = Float(i) }
        let ids: [UInt64] = [10, 11, 12, 13]
        cache.insert(version: 5, ids: ids, rows: [0, 1], from: src)
        #expect(cache.dimension(version: 5) == 4 && cache.dimension(version: 4) == nil)
        let dst = CandidateRows(count: 3, dim: 4)
        cache.copy(version: 5, ids: [11, 99, 10], into: dst)
        #expect(dst.filled == [true, false, true])
        #expect(Array(UnsafeBufferPointer(start: dst.base, count: 4)) == [4, 5, 6, 7])
        #expect(cache.counts == (hits: 2, misses: 1))
        let other = CandidateRows(count: 1, dim: 4)
        cache.copy(version: 6, ids: [10], into: other)
        #expect(other.filled == [false], "another version is not served")
        cache.insert(version: 5, ids: ids, rows: [2, 3], from: src)  // over budget: cleared, then filled
        let again = CandidateRows(count: 2, dim: 4)
        cache.copy(version: 5, ids: [10, 13], into: again)
        #expect(again.filled == [false, true])
        cache.insert(version: 6, ids: ids, rows: [0], from: src)  // a newer version replaces it
        #expect(cache.dimension(version: 5) == nil && cache.dimension(version: 6) == 4)
    }
}

/// The whole Recommend over in-process shards: round trips and faults without sockets.
@Suite(.serialized) struct RecommendRoundTests {
    @Test func searchHitsNeedNoLookupAndListRowsAreCached() async throws {
        let c = try await Cluster(settings: searchOnly)
        defer { Task { await c.stop() } }
        let local = try #require(c.local)
        let before = local.calls
        let r = try await c.recommender.recommend(RecommendRequest(userID: 3, k: 10, diversityLambda: 1), context: Cluster.context())
        let after = local.calls
        #expect(r.items.map(\.itemID) == Cluster.exhaustive(user: 3, k: 10, excluding: Set(Cluster.recentItems(3))))
        #expect(after[0] - before[0] == 1, "one Lookup (the user's vector): the search hits brought their rows")
        #expect(after[1] - before[1] == 2, "one Search per shard")
        // With the list sources, the second identical request reads list rows from the cache.
        let d = try await Cluster()
        defer { Task { await d.stop() } }
        let l = try #require(d.local)
        let req = RecommendRequest(userID: 2, k: 20, diversityLambda: 1)
        let first = try await d.recommender.recommend(req, context: Cluster.context())
        let mid = l.calls
        let second = try await d.recommender.recommend(req, context: Cluster.context())
        let end = l.calls
        #expect(first.items == second.items)
        #expect(end[0] - mid[0] == 0, "second request: no Lookup at all (user and list rows cached; \(end[0] - mid[0]) Lookups)")
        #expect(end[3] - mid[3] == 0, "second request: the profile from the user cache")
        #expect(d.recommender.userCache.counts.hits >= 1)
        #expect(end[2] - mid[2] == 0, "second request: lists from the cache")
        #expect(d.recommender.rowCache.counts.hits > 0)
    }

    @Test func aFailingShardDegradesTheAnswerAndMinCoverageRefuses() async throws {
        let c = try await Cluster(settings: searchOnly)
        defer { Task { await c.stop() } }
        let local = try #require(c.local)
        local.failing = [1]
        let r = try await c.recommender.recommend(RecommendRequest(userID: 4, k: 10, diversityLambda: 1), context: Cluster.context())
        let cov = try #require(r.coverage)
        #expect(cov.degraded && cov.shardsAsked == 2 && cov.shardsAnswered == 1 && cov.sourcesFailed.contains(.search))
        #expect(cov.degradedReasons.contains { $0.contains("shard 1") })
        // What shard 0 holds is still ranked exactly.
        let router = c.recommender.router
        let want = Cluster.exhaustive(user: 4, k: 240, excluding: Set(Cluster.recentItems(4))).filter { router.shard(ofID: $0) == 0 }
        if router.shard(ofID: 4) == 0 { #expect(r.items.map(\.itemID) == Array(want.prefix(10))) }
        await #expect(throws: RPCError.self) {
            _ = try await c.recommender.recommend(RecommendRequest(userID: 4, k: 10, diversityLambda: 1, minCoverage: 1), context: Cluster.context())
        }
        local.failing = []
        let healed = try await c.recommender.recommend(RecommendRequest(userID: 4, k: 10, diversityLambda: 1), context: Cluster.context())
        #expect(healed.coverage?.degraded == false)
    }

    /// `min_coverage` holds whatever failed, including the shard that holds the user's own profile
    /// and vector (the answer then has no vector, and used to come back OK and degraded), and
    /// when every shard is down.
    @Test func minCoverageHoldsWhenTheUsersOwnShardOrEveryShardIsDown() async throws {
        let c = try await Cluster(settings: searchOnly)
        defer { Task { await c.stop() } }
        let local = try #require(c.local)
        let user: UInt64 = 4
        let home = c.recommender.router.shard(ofID: user)
        for failing in [[home], [0, 1]] {
            local.failing = Set(failing)
            let lenient = try await c.recommender.recommend(RecommendRequest(userID: user, k: 10, diversityLambda: 1), context: Cluster.context())
            #expect(lenient.coverage?.degraded == true, "shards \(failing) down: flagged")
            do {
                _ = try await c.recommender.recommend(RecommendRequest(userID: user, k: 10, diversityLambda: 1, minCoverage: 1), context: Cluster.context())
                Issue.record("shards \(failing) down, min_coverage 1: answered")
            } catch {
                #expect(error.code == .unavailable && error.message.contains("min_coverage"), "\(error)")
            }
        }
        local.failing = []
    }
}

@Suite struct SearchFanOutMathTests {
    @Test func perShardKCoversTheBinomialTailAndNeverExceedsK() {
        #expect(RetrievalPlan.perShardK(200, shards: 4, sigma: 4) == 76)  // 50 + 4·6.12 = 74.5, rounded up, + 1
        #expect(RetrievalPlan.perShardK(200, shards: 1, sigma: 4) == 200)
        #expect(RetrievalPlan.perShardK(200, shards: 4, sigma: -1) == 200, "negative sigma: every shard returns k")
        #expect(RetrievalPlan.perShardK(10, shards: 2, sigma: 4) == 10, "capped at k")
        // Simulated: 20,000 random hash spreads of a top 200 over 4 shards; a shard above 76 is rare.
        var rng = SplitMix64(seed: 7)
        var over = 0
        for _ in 0 ..< 20_000 {
            var perShard = [0, 0, 0, 0]
            for _ in 0 ..< 200 { perShard[Int(rng.next() % 4)] += 1 }
            if perShard.contains(where: { $0 > 76 }) { over += 1 }
        }
        #expect(over <= 5, "\(over) of 20,000 requests would miss a tail item")
    }

    @Test func idIndexMapsIdsAndKeepsTheFirstValue() {
        let index = IDIndex(capacity: 1000)
        var rng = SplitMix64(seed: 3)
        let ids = (0 ..< 1000).map { _ in rng.next() % 5000 }
        var want: [UInt64: Int] = [:]
        for (i, id) in ids.enumerated() {
            let (v, inserted) = index.insert(id, i)
            if let w = want[id] { #expect(!inserted && v == w) } else { want[id] = i; #expect(inserted && v == i) }
        }
        #expect(index.count == want.count)
        for id in UInt64(0) ..< 5000 { #expect(index.get(id) == want[id]) }
    }

    /// The packed-key sort gives exactly `ScoredItem.ranksBefore`'s order (ties to the lower id,
    /// -0 == +0, negative scores, infinities), NaN last, and its first `limit` with a limit.
    @Test func rankOrderIsTheServingOrder() {
        var rng = SplitMix64(seed: 11)
        let palette: [Float] = [0, -0.0, 1, -1, 0.5, -0.25, .infinity, -.infinity, 3e-39, -3e-39, 1e30]
        for round in 0 ..< 200 {
            let n = Int(rng.next() % 300)
            let scores: [Float] = (0 ..< n).map { _ in
                rng.next() % 3 == 0 ? palette[Int(rng.next() % UInt64(palette.count))] : Float(Int(rng.next() % 2001) - 1000) / 7
            }
            var ids: [UInt64] = (0 ..< n).map { _ in rng.next() % 50 }
            if round % 2 == 0 { ids = ids.map { $0 * 1_000_003 } }
            var nanAt = Set<Int>()
            var s = scores
            if n > 3 && round % 3 == 0 { for _ in 0 ..< 3 { let i = Int(rng.next() % UInt64(n)); s[i] = .nan; nanAt.insert(i) } }
            let got = RankOrder.order(count: n, score: { s[$0] }, id: { ids[$0] })
            let finite = (0 ..< n).filter { !nanAt.contains($0) }.sorted { a, b in
                ScoredID.ranksBefore(.init(id: ids[a], score: s[a]), .init(id: ids[b], score: s[b])) || (ids[a] == ids[b] && s[a] == s[b] && a < b)
            }
            #expect(Array(got.prefix(finite.count)) == finite, "round \(round)")
            #expect(Set(got.dropFirst(finite.count)) == nanAt, "NaN last, round \(round)")
            let limit = Int(rng.next() % 20)
            #expect(RankOrder.order(count: n, limit: limit, score: { s[$0] }, id: { ids[$0] }) == Array(got.prefix(limit)))
        }
    }
}
