import ShardRankRouting
import Foundation
import Logging
import Testing
import RPCCore
import ShardRankIDs
import ShardRankKernels
import ShardRankTables
import ShardRankWire
import ShardServer
@testable import Coordinator

/// A table set whose heavy user has seen 3000 of 4000 items — three of every four, so every
/// ranked list, every similar-items list and the search's best hits are mostly seen items — and
/// a light user with a handful. Served by two in-process shards, with the search answered
/// exactly or through the ANN index.
final class HistoryWorld: @unchecked Sendable {
    static let dim = 8
    static let itemIDs: [UInt64] = (0 ..< 4000).map { 50_000 + UInt64($0) }
    static let heavy: UInt64 = 1, light: UInt64 = 2
    /// Items at index i with i % 4 != 0.
    static let heavyHistory: [UInt64] = itemIDs.enumerated().filter { $0.offset % 4 != 0 }.map(\.element)
    static let lightHistory: [UInt64] = [itemIDs[0], itemIDs[4], itemIDs[8], itemIDs[1], itemIDs[2]]
    static let genres = ["Action", "Comedy", "Drama"]

    static func itemVector(_ id: UInt64) -> [Float] {
        (0 ..< dim).map { j in Float(sin(Double(id) * 0.73 + Double(j) * 1.3)) }
    }
    static func userVector(_ id: UInt64) -> [Float] {
        (0 ..< dim).map { j in Float(cos(Double(id) * 0.51 + Double(j) * 0.7)) }
    }
    static func history(_ user: UInt64) -> [UInt64] { user == heavy ? heavyHistory : lightHistory }

    let root: String
    let local: LocalShards
    let recommender: Recommender

    /// `ann`: the shards answer Search through the index (even a small slice, even with most of
    /// it excluded); otherwise by the exact scan.
    init(ann: Bool) throws {
        let root = NSTemporaryDirectory() + "shardrank-history-\(UInt64.random(in: 0 ... .max))"
        self.root = root
        let b = try TableSetBuilder(root: root, shardCount: 2, genres: Self.genres, countries: ["DE", "FR"])
        let ids = Self.itemIDs
        try ids.flatMap(Self.itemVector).withUnsafeBufferPointer {
            try b.addEmbedding(name: "items", ids: ids, vectors: $0, dim: Self.dim)
        }
        try b.addANNIndex(table: "items", options: IVFPQBuildOptions(lists: 16), defaults: ANNSearchParameters(nprobe: 8, rerank: 200),
                          pool: nil, recallSample: 10)
        let users = [Self.heavy, Self.light]
        try users.flatMap(Self.userVector).withUnsafeBufferPointer { try b.addEmbedding(name: "users", ids: users, vectors: $0, dim: Self.dim) }
        try b.addProfiles(users.map { u in
            // The history in "time" order, most recent first: the recent items are its first 50.
            let h = Self.history(u).reversed()
            return UserProfileRecord(userID: u, recentItems: Array(h.prefix(50)), history: Array(h), topGenres: [0, 1, 2], country: 0)
        })
        // Ranked lists over the whole catalog (1000 entries each): three of four entries are seen.
        try b.addList(name: "popular", lists: [RankedListRecord(key: "all", ids: Array(ids.prefix(1000)),
                                                                scores: (0 ..< 1000).map { Float(1000 - $0) })])
        try b.addList(name: "genre_top", lists: Self.genres.indices.map { g in
            let l = ids.enumerated().filter { $0.offset % 3 == g }.map(\.element).prefix(1000)
            return RankedListRecord(key: Self.genres[g], ids: Array(l), scores: (0 ..< l.count).map { Float(1000 - $0) })
        })
        try b.addList(name: "country_top", lists: [RankedListRecord(key: "DE", ids: Array(ids.reversed().prefix(1000)),
                                                                    scores: (0 ..< 1000).map { Float(1000 - $0) })])
        // Each item's 40 successors are its "similar" items.
        try b.addList(name: "similar", lists: ids.indices.map { i in
            let l = (1 ... 40).map { ids[(i + $0) % ids.count] }
            return RankedListRecord(key: String(ids[i]), ids: l, scores: (0 ..< 40).map { Float(40 - $0) })
        })
        try b.publish()
        var serving = ANNServing()
        if ann {
            serving.minRows = 0
            serving.maxExcludedShare = 1
        } else {
            serving.minRows = .max
        }
        let log = DeadlineLog()
        let backends = try (0 ..< 2).map { s in
            RecordingBackend(inner: try TableSetBackend(root: root, shard: s, of: 2, pool: WorkerPool(threadCount: 1), annServing: serving),
                             log: log)
        }
        local = LocalShards(backends)
        recommender = Recommender(fetcher: local, settings: CoordinatorSettings(), pool: WorkerPool(threadCount: 1), logger: Logger(label: "test"))
    }

    func stop() { try? FileManager.default.removeItem(atPath: root) }

    /// The exhaustive top k of `V_u · V_m` over the items not in `seen`.
    static func exhaustive(user: UInt64, k: Int, excluding seen: Set<UInt64>) -> [UInt64] {
        let u = userVector(user)
        var scored: [(id: UInt64, score: Float)] = []
        for id in itemIDs where !seen.contains(id) {
            let v = itemVector(id)
            var s: Float = 0
            for j in 0 ..< dim { s += u[j] * v[j] }
            scored.append((id, s))
        }
        scored.sort { $0.score > $1.score || ($0.score == $1.score && $0.id < $1.id) }
        return scored.prefix(k).map(\.id)
    }
}

// Nested in the serialized `CoordinatorTests`, so these CPU-heavier suites never run beside its
// deadline-bound tests (a 60 ms Recommend on a 2-core machine).
extension CoordinatorTests {
    @Suite(.serialized) struct HistoryTests {
        static let sourceSets: [[Source]] = [[.similar], [.genre], [.country], [.popular], [.search], []]
        static let budgets: [(name: String, budgets: Budgets?, k: UInt32)] = [
            ("small", Budgets(similarPerItem: 2, genre: 6, country: 3, popular: 4, search: 10), 10),
            ("default", nil, 50),
            ("large", Budgets(similarPerItem: 40, genre: 3000, country: 1000, popular: 1000, search: 2000), 1000),
        ]

        /// A user with 3000 history items never gets one back: from any source, with any budget,
        /// with the search exact or approximate.
        @Test(arguments: [false, true]) func noHistoryItemComesBack(ann: Bool) async throws {
            let w = try HistoryWorld(ann: ann)
            defer { w.stop() }
            for user in [HistoryWorld.heavy, HistoryWorld.light] {
                let seen = Set(HistoryWorld.history(user))
                for sources in Self.sourceSets {
                    for b in Self.budgets {
                        let what = "user \(user), sources \(sources.isEmpty ? "all" : "\(sources)"), \(b.name) budgets, \(ann ? "ann" : "exact")"
                        let r = try await w.recommender.recommend(RecommendRequest(userID: user, k: b.k, budgets: b.budgets, diversityLambda: 1,
                                                                                   sources: sources), context: Cluster.context())
                        #expect(!r.items.isEmpty, "\(what): no answer")
                        #expect(r.coverage?.degraded == false, "\(what): \(r.coverage?.degradedReasons ?? [])")
                        let back = r.items.map(\.itemID).filter(seen.contains)
                        #expect(back.count == 0, "\(what): history items came back, e.g. \(back.prefix(5))")
                        if !sources.isEmpty {
                            #expect(r.items.allSatisfy { $0.sources.allSatisfy(sources.contains) }, "\(what): another source answered")
                        }
                    }
                }
            }
            // The search pushed the whole history down (`exclude_sorted`), through the requested mode.
            let searches = w.local.searchLog
            #expect(!searches.isEmpty && searches.allSatisfy { $0.mode == (ann ? .ann : .exact) })
            #expect(searches.contains { $0.excluded == 3000 }, "the heavy user's searches exclude the whole history")
            // Lists are over-fetched for seen items by at most `maxSeenOverFetch`, not by 3000.
            #expect(w.local.listLimits.allSatisfy { $0 <= 1000 + UInt32(RetrievalPlan.maxSeenOverFetch) }, "\(w.local.listLimits.max() ?? 0)")
            #expect(w.recommender.userCache.counts.hits > 0, "profiles (with their histories) came from the user cache too")
        }

        /// The exclusions happen inside the shards' search, so the search source still fills its
        /// budget (an exclusion applied only in the merge would leave a quarter of it), and the exact
        /// answer is the exhaustive top k of the unseen items; the context's recent items and
        /// exclusions are added to the stored history.
        @Test func theSearchFillsItsBudgetFromUnseenItems() async throws {
            let w = try HistoryWorld(ann: false)
            defer { w.stop() }
            let user = HistoryWorld.heavy
            let r = try await w.recommender.recommend(RecommendRequest(userID: user, k: 200, budgets: Budgets(search: 200), diversityLambda: 1,
                                                                       sources: [.search]), context: Cluster.context())
            let seen = Set(HistoryWorld.heavyHistory)
            #expect(r.items.count == 200)
            let want = HistoryWorld.exhaustive(user: user, k: 200, excluding: seen)
            #expect(r.items.prefix(20).map(\.itemID) == Array(want.prefix(20)))
            let extra = Array(want.prefix(3))
            let ctx = RecommendContext(recentItemIDs: [want[3]], excludeIDs: extra)
            let r2 = try await w.recommender.recommend(RecommendRequest(userID: user, context: ctx, k: 10, budgets: Budgets(search: 50),
                                                                        diversityLambda: 1, sources: [.search]), context: Cluster.context())
            #expect(r2.items.map(\.itemID) == HistoryWorld.exhaustive(user: user, k: 10, excluding: seen.union(want.prefix(4))))
            #expect(w.local.searchLog.last?.excluded == 3004)
        }

        @Test func contextBoundsAreInvalidArgumentNamingTheField() async throws {
            let w = try HistoryWorld(ann: false)
            defer { w.stop() }
            let cases: [(RecommendContext, String)] = [
                (RecommendContext(recentItemIDs: (0 ..< 101).map(UInt64.init)), "context.recent_item_ids"),
                (RecommendContext(excludeIDs: (0 ..< 10_001).map(UInt64.init)), "context.exclude_ids"),
            ]
            for (ctx, field) in cases {
                do {
                    _ = try await w.recommender.recommend(RecommendRequest(userID: 1, context: ctx), context: Cluster.context())
                    Issue.record("accepted \(field) over its bound")
                } catch {
                    #expect(error.code == .invalidArgument && error.message.contains(field), "\(error)")
                }
            }
            let atBound = RecommendContext(recentItemIDs: (0 ..< 100).map { HistoryWorld.itemIDs[$0] }, excludeIDs: (0 ..< 10_000).map(UInt64.init))
            let r = try await w.recommender.recommend(RecommendRequest(userID: 1, context: atBound, k: 5), context: Cluster.context())
            #expect(r.items.count == 5)
        }

        @Test func theUserCacheIsBoundedByBytes() {
            let history = PackedIDs(sortedUnique: HistoryWorld.heavyHistory)
            let entry = UserCache.Entry(vector: [Float](repeating: 0, count: 8),
                                        profile: UserProfile(userID: 1, recentItemIDs: [1, 2], history: history, topGenres: ["Drama"], country: "DE"))
            #expect(entry.bytes >= history.bytes.count + 32 && history.bytes.count >= 3000)
            let cache = UserCache(capacity: 1000, capacityBytes: 3 * entry.bytes)
            for u in UInt64(1) ... 3 { cache.put(version: 1, user: u, entry) }
            #expect(cache.usage == (3, 3 * entry.bytes))
            cache.put(version: 1, user: 4, entry)  // a fourth would pass the byte bound: cleared first
            #expect(cache.usage == (1, entry.bytes))
            #expect(cache.get(version: 1, user: 4) != nil && cache.get(version: 1, user: 1) == nil)
            cache.put(version: 1, user: 4, entry)  // replacing an entry does not count it twice
            #expect(cache.usage == (1, entry.bytes))
            let tiny = UserCache(capacity: 1000, capacityBytes: entry.bytes - 1)
            tiny.put(version: 1, user: 1, entry)
            #expect(tiny.usage.entries == 0, "an entry larger than the whole budget is not kept")
        }
    }

    /// A table set built with another hash seed than the default: the shards report it in Info and
    /// the coordinator routes with it (users, lists and rows all found on their shards).
    @Suite(.serialized) struct HashSeedTests {
        static let seed: UInt64 = 0x5EED_0000_1234_ABCD

        @Test(arguments: [false, true]) func aNonDefaultSeedIsServedCorrectly(sockets: Bool) async throws {
            let c = try await Cluster(sockets: sockets, hashSeed: Self.seed)
            defer { Task { await c.stop() } }
            if let cluster = c.cluster {
                #expect(cluster.pinned == PinnedTableSet(version: 1, hashSeed: Self.seed), "the seed comes with the version from Info")
            }
            #expect(c.recommender.router.seed == Self.seed)
            // The seed moves ids: some user lives elsewhere than the default seed would put it.
            let defaultRouter = ShardRouter(shardCount: 2)
            #expect(Cluster.userIDs.contains { c.recommender.router.shard(ofID: $0) != defaultRouter.shard(ofID: $0) })
            for user in Cluster.userIDs {
                let r = try await c.recommender.recommend(RecommendRequest(userID: user, k: 20, diversityLambda: 1), context: Cluster.context())
                #expect(!r.coldStart, "user \(user) not found")
                #expect(r.coverage?.degraded == false, "user \(user): \(r.coverage?.degradedReasons ?? [])")
                #expect(r.items.count == 20)
                // Each list source alone: its keys were routed to the shard that holds them (a list
                // asked of the wrong shard is merely missing, so it would come back empty).
                for source: Source in [.popular, .genre] {
                    let l = try await c.recommender.recommend(RecommendRequest(userID: user, k: 5, sources: [source]), context: Cluster.context())
                    #expect(l.items.count == 5 && l.coverage?.degraded == false, "user \(user), \(source)")
                }
            }
            let s = try await c.recommender.similar(SimilarRequest(itemID: 1010, k: 5), context: Cluster.context())
            #expect(s.items.count == 5, "the item is found on its shard")
            let ranked = try await c.recommender.rank(RankRequest(userID: 3, candidateIDs: Array(Cluster.itemIDs.prefix(30)), k: 0),
                                                      context: Cluster.context())
            #expect(ranked.items.count == 30 && ranked.coverage?.degraded == false, "every candidate's row found")
        }

        @Test func searchOnlyWithASeedEqualsExhaustiveScoring() async throws {
            let c = try await Cluster(hashSeed: Self.seed, settings: searchOnly)
            defer { Task { await c.stop() } }
            for user in Cluster.userIDs.prefix(6) {
                let r = try await c.recommender.recommend(RecommendRequest(userID: user, k: 10, diversityLambda: 1), context: Cluster.context())
                #expect(r.items.map(\.itemID) == Cluster.exhaustive(user: user, k: 10, excluding: Set(Cluster.recentItems(user))))
            }
        }
    }
}
