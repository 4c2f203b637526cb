import Logging
import Testing
import RPCCore
import ShardRankKernels
import ShardRankWire
@testable import Coordinator

/// A ranker over named features: score = Σ weight × feature (NaN counts as 0).
struct LinearRanker: LearnedRanker {
    let featureNames: [String]
    let weights: [Float]
    func rank(features: UnsafePointer<Float>, rows: Int, stride: Int, into out: UnsafeMutablePointer<Float>, pool: WorkerPool) {
        for r in 0 ..< rows {
            var s: Float = 0
            for (j, w) in weights.enumerated() {
                let v = features[r * stride + j]
                if !v.isNaN { s += w * v }
            }
            out[r] = s
        }
    }
}

@Suite struct RankingFeaturesTests {
    func column(_ name: String) -> Int { RankingFeatures.names.firstIndex(of: name)! }

    @Test func everyFeatureComesFromItsSource() throws {
        var plan = RetrievalPlan(k: 10)
        plan.recent = [7, 8, 9]
        plan.genres = ["Drama", "Action"]
        plan.similarPerItem = 3; plan.genreBudget = 2; plan.countryBudget = 1; plan.popularBudget = 1
        plan.setSeen([7, 8, 9, 50])
        let ids: [UInt64] = [100, 101, 102, 103]
        let similar = [RankedList(key: "8", ids: [7, 100, 101], scores: [0.9, 0.5, 0.4]),
                       RankedList(key: "7", ids: [101, 102], scores: [0.3, 0.2])]
        let genre = [RankedList(key: "Drama", ids: [50, 103, 100], scores: [3, 2, 1])]
        let country = [RankedList(key: "DE", ids: [102], scores: [1])]
        let popular = [RankedList(key: "all", ids: [103, 101], scores: [9, 8])]
        let search = [ScoredID(id: 102, score: 2), ScoredID(id: 100, score: 1)]
        let attributes: [UInt64: ItemAttributes] = [
            100: ItemAttributes(genresMask: 0b01, timestamp: 1_000, popularity: 42),   // Action
            101: ItemAttributes(genresMask: 0b10, timestamp: 0, popularity: 7),        // Drama, no timestamp
            102: ItemAttributes(genresMask: 0b11, timestamp: 87_400, popularity: 1),   // both
        ]
        let m = RankingFeatures.compute(ids: ids, dot: [0.5, 0.25, -1, 2], plan: plan, lists: [similar, genre, country, popular],
                                        search: search, attributes: attributes, genres: ["Action", "Drama"], now: 87_400 + 86_400)
        let f = RankingFeatures.count
        #expect(m.count == ids.count * f)
        func v(_ row: Int, _ name: String) -> Float { m[row * f + column(name)] }
        #expect(v(0, "dot") == 0.5 && v(3, "dot") == 2)
        // search ranks: 102 first, 100 second; 101 and 103 not proposed.
        #expect(v(2, "search_rank") == 0 && v(0, "search_rank") == 1 && v(1, "search_rank").isNaN && v(3, "search_rank").isNaN)
        // similar: 100 at position 1 of item 8's list (recency 1); 101 in both lists (8: pos 2, 7: pos 0).
        #expect(v(0, "similar_rank") == 1 && v(0, "similar_count") == 1 && v(0, "similar_score_sum") == 0.5 && v(0, "similar_recency") == 1)
        #expect(v(1, "similar_rank") == 0 && v(1, "similar_count") == 2 && abs(v(1, "similar_score_sum") - 0.7) < 1e-6)
        #expect(v(1, "similar_recency") == 0, "item 7 is the most recent item proposing 101")
        #expect(v(3, "similar_count") == 0 && v(3, "similar_rank").isNaN && v(3, "similar_recency").isNaN)
        #expect(v(3, "genre_rank") == 1 && v(0, "genre_rank") == 2 && v(1, "genre_rank").isNaN)
        #expect(v(2, "country_rank") == 0 && v(0, "country_rank").isNaN)
        #expect(v(3, "popular_rank") == 0 && v(1, "popular_rank") == 1)
        #expect(v(0, "popularity") == 42 && v(3, "popularity").isNaN, "103 has no attributes")
        #expect(v(2, "age_days") == 1 && v(1, "age_days").isNaN)
        // Drama (the 1st genre) weighs 3, Action (2nd) 2.
        #expect(v(0, "genre_affinity") == 2 && v(1, "genre_affinity") == 3 && v(2, "genre_affinity") == 5)
        #expect((0 ..< 4).allSatisfy { v($0, "seen_count") == 4 })
    }

    /// A list longer than the plan asked for (a cached one) reads as if it had the asked length.
    @Test func listsAreReadToThePlansLengthOnly() {
        var plan = RetrievalPlan(k: 10)
        plan.recent = [7]
        plan.similarPerItem = 2; plan.popularBudget = 1
        #expect(plan.similarLimit == 2 && plan.popularLimit == 1, "nothing seen: no over-fetch")
        let long = [RankedList(key: "7", ids: [100, 101, 102], scores: [0.3, 0.2, 0.1])]
        let popular = [RankedList(key: "all", ids: [101, 102], scores: [2, 1])]
        let m = RankingFeatures.compute(ids: [101, 102], dot: nil, plan: plan, lists: [long, [], [], popular], search: [], attributes: nil,
                                        genres: [], now: 0)
        let f = RankingFeatures.count
        #expect(m[column("similar_rank")] == 1 && m[column("similar_count")] == 1)
        #expect(m[f + column("similar_count")] == 0 && m[f + column("similar_rank")].isNaN, "102 is past the asked length")
        #expect(m[column("popular_rank")] == 0 && m[f + column("popular_rank")].isNaN)
    }

    @Test func coldStartHasNoDot() {
        let m = RankingFeatures.compute(ids: [1, 2], dot: nil, plan: RetrievalPlan(k: 2), lists: [], search: [], attributes: nil,
                                        genres: [], now: 0)
        #expect(m[column("dot")].isNaN && m[RankingFeatures.count + column("dot")].isNaN)
    }

    @Test func aRankerReadsItsColumnsByName() throws {
        // The model's columns in another order than the coordinator's.
        let model = LinearRanker(featureNames: ["popularity", "dot"], weights: [1, 100])
        let served = try ServedRanker(name: "lin", model: model)
        #expect(served.columns == [column("popularity"), column("dot")])
        var x = [Float](repeating: .nan, count: 2 * RankingFeatures.count)
        x[column("dot")] = 1; x[column("popularity")] = 5
        x[RankingFeatures.count + column("dot")] = 2
        #expect(served.scores(x, rows: 2, pool: WorkerPool(threadCount: 1)) == [105, 200])
        #expect(throws: RPCConfigurationError.self) { _ = try ServedRanker(name: "x", model: LinearRanker(featureNames: ["dot", "clicks"], weights: [1, 1])) }
        #expect(throws: RPCConfigurationError.self) { _ = try ServedRanker(name: "x", model: LinearRanker(featureNames: [], weights: [])) }
    }

    /// Through the whole pipeline: the features come back for every candidate, the dot column is
    /// the dot model's score, and a learned ranker decides the order.
    @Test func recommendReturnsFeaturesAndServesALearnedRanker() async throws {
        let c = try await Cluster()
        defer { Task { await c.stop() } }
        let local = try #require(c.local)
        // Ranks by -dot: the reverse of the dot order.
        let reverse = try ServedRanker(name: "reverse", model: LinearRanker(featureNames: ["dot"], weights: [-1]))
        let r = Recommender(fetcher: local, settings: CoordinatorSettings(), rankers: [reverse], pool: WorkerPool(threadCount: 1),
                            logger: Logger(label: "test"))
        let user: UInt64 = 5
        let dot = try await r.recommend(RecommendRequest(userID: user, k: 240, diversityLambda: 1, returnFeatures: true), context: Cluster.context())
        let f = try #require(dot.features)
        #expect(f.names == RankingFeatures.names)
        #expect(f.itemIDs.count == Int(dot.candidates) && f.values.count == f.itemIDs.count * f.names.count)
        #expect(Set(f.itemIDs) == Set(dot.items.map(\.itemID)), "k = every candidate: the answer holds them all")
        let u = Cluster.userVector(user)
        for (row, id) in f.itemIDs.enumerated() {
            let v = Cluster.itemVector(id)
            let want = zip(u, v).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            #expect(abs(f.values[row * f.names.count + column("dot")] - want) < 1e-4)
            #expect(f.values[row * f.names.count + column("popularity")] == Float(240 - Int(id - 1000)))
        }
        // The attributes of a version are cached: the same request again calls no Attributes.
        let before = local.calls[4]
        let again = try await r.recommend(RecommendRequest(userID: user, k: 240, diversityLambda: 1, returnFeatures: true), context: Cluster.context())
        #expect(local.calls[4] == before, "attributes came from the cache")
        #expect(again.features == dot.features)
        #expect(r.attributeCache.counts.hits >= f.itemIDs.count)
        let plain = try await r.recommend(RecommendRequest(userID: user, k: 240, diversityLambda: 1), context: Cluster.context())
        #expect(plain.features == nil)
        let learned = try await r.recommend(RecommendRequest(userID: user, k: 240, model: "reverse", diversityLambda: 1), context: Cluster.context())
        #expect(learned.items.map(\.itemID) == plain.items.map(\.itemID).reversed())
        // Unknown models name the ones served; Rank refuses a feature ranker.
        await #expect(throws: RPCError.self) {
            _ = try await r.recommend(RecommendRequest(userID: user, k: 5, model: "nope"), context: Cluster.context())
        }
        do {
            _ = try await r.recommend(RecommendRequest(userID: user, k: 5, model: "nope"), context: Cluster.context())
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("reverse"))
        }
        await #expect(throws: RPCError.self) {
            _ = try await r.rank(RankRequest(userID: user, candidateIDs: [1000, 1001], model: "reverse"), context: Cluster.context())
        }
    }
}
