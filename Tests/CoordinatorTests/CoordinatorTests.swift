import ShardRankRouting
import Foundation
import Logging
import NIOPosix
import Testing
import RPCCore
import RPCTransport
import ShardRankKernels
import ShardRankTables
import ShardRankWire
import ShardServer
@testable import Coordinator

/// An in-process cluster: a table set with known vectors, S shards, and a `Recommender` over
/// them — by default without sockets (the shards' backends behind `LocalShards`); with
/// `sockets: true`, S shard servers (R replicas each) on loopback behind a `ShardCluster`.
final class Cluster: @unchecked Sendable {
    static let dim = 8
    static let itemIDs: [UInt64] = (0 ..< 240).map { 1000 + UInt64($0) }
    static let userIDs: [UInt64] = (1 ... 12).map { UInt64($0) }
    static let genres = ["Action", "Comedy", "Drama"]

    let root: String
    var servers: [[RPCServer]] = []
    let recommender: Recommender
    /// With sockets: the gRPC cluster; without: nil.
    let cluster: ShardCluster?
    /// Without sockets: the in-process shards (fault injection).
    let local: LocalShards?
    /// Every shard call's remaining time as the shard saw it (its `grpc-timeout`).
    let seenDeadlines = DeadlineLog()

    static func itemVector(_ id: UInt64) -> [Float] {
        (0 ..< dim).map { j in Float(sin(Double(id) * 0.91 + Double(j) * 1.7)) }
    }
    static func userVector(_ id: UInt64) -> [Float] {
        (0 ..< dim).map { j in Float(cos(Double(id) * 0.37 + Double(j) * 0.5)) }
    }
    static func recentItems(_ user: UInt64) -> [UInt64] { [itemIDs[Int(user) * 3], itemIDs[Int(user) * 3 + 1]] }

    /// `hashSeed`: the table set's sharding seed (recorded in its manifest).
    init(shards: Int = 2, replicas: Int = 1, sockets: Bool = false, hashSeed: UInt64 = StableHash.defaultSeed,
         settings: (inout CoordinatorSettings) -> Void = { _ in }) async throws {
        root = NSTemporaryDirectory() + "shardrank-coord-\(UInt64.random(in: 0 ... .max))"
        let b = try TableSetBuilder(root: root, shardCount: shards, seed: hashSeed, genres: Cluster.genres, countries: ["DE", "FR"])
        let items = Cluster.itemIDs.flatMap(Cluster.itemVector)
        try items.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: Cluster.itemIDs, vectors: $0, dim: Cluster.dim) }
        let users = Cluster.userIDs.flatMap(Cluster.userVector)
        try users.withUnsafeBufferPointer { try b.addEmbedding(name: "users", ids: Cluster.userIDs, vectors: $0, dim: Cluster.dim) }
        try b.addProfiles(Cluster.userIDs.map { UserProfileRecord(userID: $0, recentItems: Cluster.recentItems($0), topGenres: [Int($0) % 3], country: 0) })
        try b.addAttributes(Cluster.itemIDs.enumerated().map { i, id in
            ItemAttributeRecord(itemID: id, attributes: ItemAttributes(genresMask: UInt64(1) << UInt64(i % 3), timestamp: Int64(i), popularity: Float(240 - i)))
        })
        // popular: the first 30 items by id.
        try b.addList(name: "popular", lists: [RankedListRecord(key: "all", ids: Array(Cluster.itemIDs.prefix(30)),
                                                                scores: (0 ..< 30).map { Float(30 - $0) })])
        try b.addList(name: "genre_top", lists: Cluster.genres.enumerated().map { g, name in
            let ids = Cluster.itemIDs.enumerated().filter { $0.offset % 3 == g }.map(\.element).prefix(20)
            return RankedListRecord(key: name, ids: Array(ids), scores: (0 ..< ids.count).map { Float(20 - $0) })
        })
        _ = try b.publish()

        if !sockets {
            precondition(replicas == 1, "replicas need sockets")
            let log = seenDeadlines, root = self.root
            let backends = try (0 ..< shards).map { s in
                RecordingBackend(inner: try TableSetBackend(root: root, shard: s, of: shards, pool: WorkerPool(threadCount: 1)), log: log)
            }
            var st = CoordinatorSettings()
            settings(&st)
            local = LocalShards(backends)
            cluster = nil
            recommender = Recommender(fetcher: local!, settings: st, pool: WorkerPool(threadCount: 1), logger: Logger(label: "test"))
            return
        }
        local = nil
        var topoShards: [[String]] = []
        for s in 0 ..< shards {
            var row: [RPCServer] = []
            var addrs: [String] = []
            for _ in 0 ..< replicas {
                let backend = RecordingBackend(inner: try TableSetBackend(root: root, shard: s, of: shards, pool: WorkerPool(threadCount: 1)),
                                               log: seenDeadlines)
                var config = ServerConfiguration()
                config.eventLoopThreads = 1
                config.workerThreads = 1
                let server = RPCServer(configuration: config, router: Router(services: [HealthService(services: []), ShardService(backend: backend)]))
                let port = try server.start()
                row.append(server)
                addrs.append("127.0.0.1:\(port)")
            }
            servers.append(row)
            topoShards.append(addrs)
        }
        var topo = Topology(tables: root, shards: topoShards)
        topo.settings.healthIntervalMs = 50
        settings(&topo.settings)
        let cluster = try ShardCluster(topology: topo, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "test"))
        self.cluster = cluster
        await cluster.checkAll()
        // A first health check can miss its 200 ms on a loaded machine (it opens the connection;
        // a clean CI run builds and runs many suites at once), and these tests run no periodic
        // checks: start from a cluster whose every replica has answered one, as the coordinator's
        // periodic checks would get to. (Tests that want a replica down stop it afterwards.)
        let until = ContinuousClock.now.advanced(by: .seconds(10))
        while cluster.replicaStates.contains(where: { !$0.serving }) && ContinuousClock.now < until {
            try await Task.sleep(for: .milliseconds(20))
            await cluster.checkAll()
        }
        recommender = Recommender(cluster: cluster, pool: WorkerPool(threadCount: 1), logger: Logger(label: "test"))
    }

    func stop() async {
        await cluster?.stop()
        for row in servers { for s in row { await s.shutdownGracefully() } }
        try? FileManager.default.removeItem(atPath: root)
    }

    static func context(ms: Int = 2000) -> ServerContext {
        ServerContext(path: "/shardrank.v1.Recommender/Recommend", deadline: ContinuousClock.now.advanced(by: .milliseconds(ms)))
    }

    /// Exhaustive scoring of every item by `V_u · V_m` (the ceiling), excluding `seen`.
    static func exhaustive(user: UInt64, k: Int, excluding seen: Set<UInt64>) -> [UInt64] {
        let u = userVector(user)
        let scored = itemIDs.filter { !seen.contains($0) }.map { id -> (UInt64, Float) in
            let v = itemVector(id)
            var s: Float = 0
            for j in 0 ..< dim { s += u[j] * v[j] }
            return (id, s)
        }
        return scored.sorted { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }.prefix(k).map(\.0)
    }
}

final class DeadlineLog: @unchecked Sendable {
    private let lock = NSLock()
    private var remaining: [Duration?] = []
    func add(_ d: Duration?) { lock.lock(); remaining.append(d); lock.unlock() }
    var all: [Duration?] { lock.lock(); defer { lock.unlock() }; return remaining }
}

/// A shard backend that records the deadline every call arrived with.
struct RecordingBackend: ShardBackend {
    let inner: TableSetBackend
    let log: DeadlineLog
    func lookup(_ r: LookupRequest, context: ServerContext) throws(RPCError) -> FramedMessage { log.add(context.timeRemaining); return try inner.lookup(r, context: context) }
    func search(_ r: SearchRequest, context: ServerContext) throws(RPCError) -> SearchResponse { log.add(context.timeRemaining); return try inner.search(r, context: context) }
    func lists(_ r: ListsRequest, context: ServerContext) throws(RPCError) -> ListsResponse { log.add(context.timeRemaining); return try inner.lists(r, context: context) }
    func profiles(_ r: ProfilesRequest, context: ServerContext) throws(RPCError) -> ProfilesResponse { log.add(context.timeRemaining); return try inner.profiles(r, context: context) }
    func attributes(_ r: AttributesRequest, context: ServerContext) throws(RPCError) -> AttributesResponse { log.add(context.timeRemaining); return try inner.attributes(r, context: context) }
    func info() -> InfoResponse { inner.info() }
}

/// Shards as a `ShardFetcher` without sockets: each call goes straight to the shard's backend
/// with a context carrying the caller's deadline. `failing` shards answer UNAVAILABLE.
final class LocalShards: ShardFetcher, @unchecked Sendable {
    let backends: [RecordingBackend]
    private let lock = NSLock()
    private var failingShards: Set<Int> = []
    private var counts = [Int](repeating: 0, count: 5)
    private var searches: [(mode: SearchMode, excluded: Int)] = []
    private var limits: [UInt32] = []

    init(_ backends: [RecordingBackend]) { self.backends = backends }

    var shardCount: Int { backends.count }
    var pinned: PinnedTableSet {
        guard let info = backends.map({ $0.inner.info() }).min(by: { $0.version < $1.version }) else { return PinnedTableSet(version: 0, hashSeed: 0) }
        return PinnedTableSet(version: info.version, hashSeed: info.hashSeed)
    }
    var failing: Set<Int> {
        get { lock.lock(); defer { lock.unlock() }; return failingShards }
        set { lock.lock(); failingShards = newValue; lock.unlock() }
    }
    /// Calls made so far: lookup, search, lists, profiles, attributes.
    var calls: [Int] { lock.lock(); defer { lock.unlock() }; return counts }
    /// Every Search answered: how (exact or ANN), and how many ids its request excluded.
    var searchLog: [(mode: SearchMode, excluded: Int)] { lock.lock(); defer { lock.unlock() }; return searches }
    /// The `limit` of every Lists call.
    var listLimits: [UInt32] { lock.lock(); defer { lock.unlock() }; return limits }

    private func context(_ method: String, _ deadline: ContinuousClock.Instant) -> ServerContext {
        ServerContext(path: "/shardrank.v1.Shard/\(method)", deadline: deadline)
    }
    private func check(_ shard: Int, _ kind: Int) throws(RPCError) {
        lock.lock(); defer { lock.unlock() }
        counts[kind] += 1
        if failingShards.contains(shard) { throw RPCError(.unavailable, "shard \(shard) is down (test)") }
    }

    func lookup(_ r: LookupRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> LookupResponse {
        try check(shard, 0)
        return try LookupResponse.decode(Array(try backends[shard].lookup(r, context: context("Lookup", deadline)).bytes.dropFirst(5)))
    }
    func search(_ r: SearchRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> SearchResponse {
        try check(shard, 1)
        let answer = try backends[shard].search(r, context: context("Search", deadline))
        lock.withLock { searches.append((answer.mode, r.excludedCountBound)) }
        return answer
    }
    func lists(_ r: ListsRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> ListsResponse {
        try check(shard, 2)
        lock.withLock { limits.append(r.limit) }
        return try backends[shard].lists(r, context: context("Lists", deadline))
    }
    func profiles(_ r: ProfilesRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> ProfilesResponse {
        try check(shard, 3)
        return try backends[shard].profiles(r, context: context("Profiles", deadline))
    }
    func attributes(_ r: AttributesRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> AttributesResponse {
        try check(shard, 4)
        return try backends[shard].attributes(r, context: context("Attributes", deadline))
    }
}

func searchOnly(_ s: inout CoordinatorSettings) {
    s.similarPerItem = 0; s.genreBudget = 0; s.countryBudget = 0; s.popularBudget = 0
    s.searchBudget = 50
}

@Suite(.serialized) struct CoordinatorTests {
    @Test func searchOnlyEqualsExhaustiveScoring() async throws {
        let c = try await Cluster(settings: searchOnly)
        defer { Task { await c.stop() } }
        for user in Cluster.userIDs.prefix(5) {
            let r = try await c.recommender.recommend(RecommendRequest(userID: user, k: 10, diversityLambda: 1), context: Cluster.context())
            let want = Cluster.exhaustive(user: user, k: 10, excluding: Set(Cluster.recentItems(user)))
            #expect(r.items.map(\.itemID) == want)
            #expect(r.items.allSatisfy { $0.sources == [.search] })
            #expect(r.coverage?.degraded == false)
            #expect(r.coverage?.shardsAsked == 2 && r.coverage?.shardsAnswered == 2)
            #expect(r.version == 1)
        }
    }

    /// Every sub-call carries a deadline: never more than the request's remaining time nor the
    /// per-call cap, so shards stop work the coordinator can no longer use.
    @Test(arguments: [false, true]) func shardsSeeThePropagatedDeadlines(sockets: Bool) async throws {
        let c = try await Cluster(sockets: sockets)
        defer { Task { await c.stop() } }
        _ = try await c.recommender.recommend(RecommendRequest(userID: 4, k: 10), context: Cluster.context(ms: 60))
        let seen = c.seenDeadlines.all
        #expect(seen.count >= 4, "profile, user vector, lists and searches reach the shards")
        for d in seen {
            let d = try #require(d, "a shard call arrived without grpc-timeout")
            #expect(d > .zero && d <= .milliseconds(60))
        }
    }

    @Test func sourcesAreMergedFilteredAndRemembered() async throws {
        let c = try await Cluster()
        defer { Task { await c.stop() } }
        let user: UInt64 = 4
        let exclude: [UInt64] = [1000, 1001, 1002]
        let r = try await c.recommender.recommend(RecommendRequest(userID: user, context: RecommendContext(excludeIDs: exclude), k: 100,
                                                                   diversityLambda: 1), context: Cluster.context())
        let ids = r.items.map(\.itemID)
        #expect(Set(ids).count == ids.count, "duplicates in the answer")
        let seen = Set(Cluster.recentItems(user) + exclude)
        #expect(ids.allSatisfy { !seen.contains($0) }, "seen or excluded items returned")
        // popular items (ids 1000..1029) that survive the filter carry the popular source.
        let popular = r.items.filter { $0.itemID < 1030 }
        #expect(!popular.isEmpty)
        #expect(popular.allSatisfy { $0.sources.contains(.popular) })
        #expect(r.items.contains { $0.sources.count >= 2 }, "some item should be proposed by two sources")
        // Ranked by V_u · V_m: scores non-increasing.
        #expect(zip(r.items, r.items.dropFirst()).allSatisfy { $0.score >= $1.score })
        let t = try #require(r.timings)
        #expect(t.totalMicros >= t.retrieveMicros + t.filterMicros + t.gatherMicros + t.rankMicros + t.postRankMicros)
        #expect(r.candidates >= UInt32(ids.count))
    }

    @Test func mmrWithLambdaOneEqualsPlainRankingAndLowerLambdaDiversifies() async throws {
        let c = try await Cluster(settings: searchOnly)
        defer { Task { await c.stop() } }
        let plain = try await c.recommender.recommend(RecommendRequest(userID: 2, k: 10, diversityLambda: 1), context: Cluster.context())
        #expect(plain.items.map(\.itemID) == Cluster.exhaustive(user: 2, k: 10, excluding: Set(Cluster.recentItems(2))))
        let diverse = try await c.recommender.recommend(RecommendRequest(userID: 2, k: 10, diversityLambda: 0.3), context: Cluster.context())
        #expect(diverse.items.count == 10)
        #expect(diverse.items.map(\.itemID) != plain.items.map(\.itemID))
        #expect(diverse.items.first?.itemID == plain.items.first?.itemID, "the first MMR pick is the most relevant")
    }

    @Test func genreCapIsApplied() async throws {
        let c = try await Cluster(settings: searchOnly)
        defer { Task { await c.stop() } }
        let r = try await c.recommender.recommend(RecommendRequest(userID: 3, k: 6, diversityLambda: 1, genreCap: 2), context: Cluster.context())
        #expect(r.items.count == 6)
        var perGenre = [0, 0, 0]
        for it in r.items { perGenre[Int(it.itemID - 1000) % 3] += 1 }
        #expect(perGenre.allSatisfy { $0 <= 2 })
    }

    @Test func freshnessBoostAddsTheDecayedWeight() async throws {
        // Item i (id 1000 + i) has timestamp i; every item is a search candidate.
        let c = try await Cluster(settings: { searchOnly(&$0); $0.searchBudget = 240 })
        defer { Task { await c.stop() } }
        let user: UInt64 = 3
        let seen = Set(Cluster.recentItems(user))
        let u = Cluster.userVector(user)
        func dot(_ id: UInt64) -> Float { zip(u, Cluster.itemVector(id)).reduce(0) { $0 + $1.0 * $1.1 } }
        // A weight far above the dot products' range (|score| <= 8): the newest items win, in order.
        let fresh = try await c.recommender.recommend(
            RecommendRequest(userID: user, k: 5, diversityLambda: 1, freshnessWeight: 10_000, freshnessHalfLifeSeconds: 10, nowUnixSeconds: 239),
            context: Cluster.context())
        #expect(fresh.items.map(\.itemID) == [1239, 1238, 1237, 1236, 1235])
        // Each score is the dot product plus weight * 2^(-age / half-life).
        for it in fresh.items {
            let age = Double(239 - Int(it.itemID - 1000))
            let want = dot(it.itemID) + 10_000 * Float(exp2(-age / 10))
            #expect(abs(it.score - want) <= 1e-3 * abs(want), "item \(it.itemID): \(it.score) vs \(want)")
        }
        #expect(fresh.coverage?.degraded == false)
        // A moderate weight re-orders by relevance + recency exactly as computed here.
        let mixed = try await c.recommender.recommend(
            RecommendRequest(userID: user, k: 10, diversityLambda: 1, freshnessWeight: 2, freshnessHalfLifeSeconds: 60, nowUnixSeconds: 239),
            context: Cluster.context())
        func boosted(_ id: UInt64) -> Float {
            let age = Double(239 - Int(id - 1000))
            return dot(id) + 2 * Float(exp2(-age / 60))
        }
        let candidates: [(id: UInt64, score: Float)] = Cluster.itemIDs.filter { !seen.contains($0) }.map { ($0, boosted($0)) }
        let ranked = candidates.sorted { a, b in a.score > b.score || (a.score == b.score && a.id < b.id) }
        let want: [UInt64] = ranked.prefix(10).map(\.id)
        #expect(mixed.items.map(\.itemID) == want)
        // The coordinator's clock (2026): items stamped in 1970 get no measurable boost.
        let old = try await c.recommender.recommend(RecommendRequest(userID: user, k: 10, diversityLambda: 1, freshnessWeight: 1),
                                                    context: Cluster.context())
        #expect(old.items.map(\.itemID) == Cluster.exhaustive(user: user, k: 10, excluding: seen))
        for bad: Float in [-1, .nan, .infinity] {
            do {
                _ = try await c.recommender.recommend(RecommendRequest(userID: user, freshnessWeight: bad), context: Cluster.context())
                Issue.record("accepted freshness_weight \(bad)")
            } catch {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains("freshness_weight"))
            }
        }
    }

    @Test func listsComeFromTheCacheOnTheSecondRequest() async throws {
        let c = try await Cluster()
        defer { Task { await c.stop() } }
        let req = RecommendRequest(userID: 2, k: 10, diversityLambda: 1)
        let first = try await c.recommender.recommend(req, context: Cluster.context())
        let callsFirst = c.seenDeadlines.all.count
        let second = try await c.recommender.recommend(req, context: Cluster.context())
        let callsSecond = c.seenDeadlines.all.count - callsFirst
        #expect(first.items == second.items)
        #expect(callsSecond < callsFirst, "popular and genre lists were not fetched again (\(callsFirst) then \(callsSecond) shard calls)")
        #expect(c.recommender.listCache.counts.hits >= 2)
    }

    @Test func listCacheHonoursLimitsAndVersions() {
        let cache = ListCache(capacity: 3)
        func list(_ key: String, _ n: Int) -> RankedList {
            RankedList(key: key, ids: (0 ..< n).map { UInt64($0) }, scores: (0 ..< n).map { Float(100 - $0) })
        }
        cache.put(version: 1, table: "popular", list: list("all", 5), limit: 5)     // maybe longer on the shard
        #expect(cache.get(version: 1, table: "popular", key: "all", limit: 3)?.ids == [0, 1, 2, 3, 4], "the whole cached list: callers take their prefix")
        #expect(cache.get(version: 1, table: "popular", key: "all", limit: 5)?.ids.count == 5)
        #expect(cache.get(version: 1, table: "popular", key: "all", limit: 6) == nil, "a 5-item answer to limit 5 may be a prefix")
        cache.put(version: 1, table: "popular", list: list("all", 7), limit: 10)    // shorter than asked: the whole list
        #expect(cache.get(version: 1, table: "popular", key: "all", limit: 100)?.ids.count == 7)
        #expect(cache.get(version: 1, table: "genre_top", key: "all", limit: 1) == nil, "tables are separate")
        #expect(cache.get(version: 2, table: "popular", key: "all", limit: 1) == nil, "versions are separate")
        cache.put(version: 2, table: "popular", list: list("all", 2), limit: 10)
        #expect(cache.get(version: 1, table: "popular", key: "all", limit: 1) == nil, "a newer version drops the older one")
        cache.put(version: 1, table: "popular", list: list("x", 2), limit: 10)
        #expect(cache.get(version: 1, table: "popular", key: "x", limit: 1) == nil, "an older version is not stored")
        cache.put(version: 0, table: "popular", list: list("y", 2), limit: 10)
        #expect(cache.get(version: 0, table: "popular", key: "y", limit: 1) == nil, "version 0 (unknown) is never cached")
        for k in ["a", "b", "c", "d"] { cache.put(version: 2, table: "t", list: list(k, 1), limit: 10) }
        #expect(cache.get(version: 2, table: "t", key: "d", limit: 1) != nil, "full: cleared, then the new entry stored")
    }

    @Test func onlyTheRequestedSourcesRun() async throws {
        let c = try await Cluster()
        defer { Task { await c.stop() } }
        let r = try await c.recommender.recommend(RecommendRequest(userID: 2, k: 10, diversityLambda: 1, sources: [.popular]), context: Cluster.context())
        #expect(r.items.count == 10)
        #expect(r.items.allSatisfy { $0.sources == [.popular] && $0.itemID < 1030 })
        do {
            _ = try await c.recommender.recommend(RecommendRequest(userID: 2, sources: [.caller]), context: Cluster.context())
            Issue.record("accepted a non-retrieval source")
        } catch {
            #expect(error.code == .invalidArgument)
        }
    }

    @Test func coldStartUsesPopularAndIsMarked() async throws {
        let c = try await Cluster()
        defer { Task { await c.stop() } }
        let r = try await c.recommender.recommend(RecommendRequest(userID: 999_999, k: 5), context: Cluster.context())
        #expect(r.coldStart)
        #expect(r.items.count == 5)
        #expect(r.items.allSatisfy { $0.sources.contains(.popular) || $0.sources.contains(.genre) })
    }

    @Test func inputErrorsAreInvalidArgument() async throws {
        let c = try await Cluster()
        defer { Task { await c.stop() } }
        let bad = [RecommendRequest(userID: 1, k: 0), RecommendRequest(userID: 1, k: 100_000), RecommendRequest(userID: 1, model: "xgb"),
                   RecommendRequest(userID: 1, model: "mlp"), RecommendRequest(userID: 1, budgets: Budgets(search: 1_000_000)),
                   RecommendRequest(userID: 1, diversityLambda: 2), RecommendRequest(userID: 1, minCoverage: -1)]
        for req in bad {
            do {
                _ = try await c.recommender.recommend(req, context: Cluster.context())
                Issue.record("accepted \(req)")
            } catch {
                #expect(error.code == .invalidArgument, "\(req)")
            }
        }
    }

    /// `Recommender.Info`: every shard's Info merged — each table once, rows summed, the id range
    /// over all shards, the coordinator's users and items tables; a shard that does not answer is
    /// UNAVAILABLE naming it (never a partial sum).
    @Test func infoMergesEveryShardsInfo() async throws {
        let c = try await Cluster(shards: 3, sockets: true)
        defer { Task { await c.stop() } }
        let info = try await c.recommender.info(context: Cluster.context())
        #expect(info.shardCount == 3 && info.version == 1 && info.hashSeed == StableHash.defaultSeed)
        #expect(info.usersTable == "users" && info.itemsTable == "items" && info.source == "coordinator over 3 shards")
        let byName = Dictionary(uniqueKeysWithValues: info.tables.map { ($0.name, $0) })
        #expect(info.tables.map(\.name) == info.tables.map(\.name).sorted())
        #expect(byName["items"].map { ($0.rows, $0.minID, $0.maxID, $0.dim) } ?? (0, 0, 0, 0) == (240, 1000, 1239, UInt32(Cluster.dim)))
        #expect(byName["users"].map { ($0.rows, $0.minID, $0.maxID) } ?? (0, 0, 0) == (12, 1, 12))
        #expect(byName["profiles"]?.rows == 12 && byName["attributes"]?.rows == 240)
        #expect(byName["popular"].map { $0.kind == .list && $0.rows == 1 && $0.minID == 0 && $0.maxID == 0 } == true)
        await c.servers[2][0].shutdownGracefully()
        do {
            _ = try await c.recommender.info(context: Cluster.context(ms: 500))
            Issue.record("Info answered without shard 2")
        } catch {
            #expect(error.code == .unavailable && error.message.hasPrefix("shard 2 of 3 did not answer Info"), "\(error)")
        }
    }

    @Test func aDeadShardIsFlaggedAndMinCoverageRefuses() async throws {
        let c = try await Cluster(sockets: true, settings: searchOnly)
        defer { Task { await c.stop() } }
        await c.servers[1][0].shutdownGracefully()
        let r = try await c.recommender.recommend(RecommendRequest(userID: 5, k: 10, diversityLambda: 1), context: Cluster.context(ms: 500))
        let cov = try #require(r.coverage)
        #expect(cov.degraded)
        #expect(cov.shardsAsked == 2 && cov.shardsAnswered == 1)
        #expect(cov.sourcesFailed.contains(.search))
        #expect(!cov.degradedReasons.isEmpty)
        do {
            _ = try await c.recommender.recommend(RecommendRequest(userID: 5, k: 10, diversityLambda: 1, minCoverage: 1),
                                                  context: Cluster.context(ms: 500))
            Issue.record("expected UNAVAILABLE below min coverage")
        } catch {
            #expect(error.code == .unavailable)
        }
    }

    @Test func aDeadReplicaFailsNoRequest() async throws {
        let c = try await Cluster(shards: 2, replicas: 2, sockets: true, settings: searchOnly)
        defer { Task { await c.stop() } }
        await c.servers[0][0].shutdownGracefully()
        for user in Cluster.userIDs {
            let r = try await c.recommender.recommend(RecommendRequest(userID: user, k: 10, diversityLambda: 1), context: Cluster.context(ms: 1000))
            #expect(r.coverage?.shardsAnswered == 2, "user \(user): \(r.coverage?.degradedReasons ?? [])")
            #expect(r.items.map(\.itemID) == Cluster.exhaustive(user: user, k: 10, excluding: Set(Cluster.recentItems(user))))
        }
    }

    @Test func rankAndSimilar() async throws {
        let c = try await Cluster(settings: searchOnly)
        defer { Task { await c.stop() } }
        let cands: [UInt64] = [1005, 1100, 1200, 1033, 1005, 5555]
        let r = try await c.recommender.rank(RankRequest(userID: 7, candidateIDs: cands, k: 0), context: Cluster.context())
        let want = Cluster.exhaustive(user: 7, k: 240, excluding: []).filter { [1005, 1100, 1200, 1033].contains($0) }
        #expect(r.items.map(\.itemID) == want)
        #expect(r.coverage?.degradedReasons.contains { $0.contains("not found") } == true)
        let s = try await c.recommender.similar(SimilarRequest(itemID: 1010, k: 5), context: Cluster.context())
        #expect(s.items.count == 5)
        #expect(!s.items.contains { $0.itemID == 1010 })
        #expect(s.items.allSatisfy { $0.sources == [.search] })
    }

    @Test func topologyParsingErrorsNameTheKey() throws {
        let good = #"{"tables": "/t", "shards": [["127.0.0.1:1", "127.0.0.1:2"], ["h:3"]], "coordinators": ["127.0.0.1:7000"], "coordinator": {"search_budget": 300}}"#
        let t = try Topology.parse(Data(good.utf8))
        #expect(t.shardCount == 2 && t.shards[0].count == 2 && t.settings.searchBudget == 300)
        let cases: [(String, String)] = [
            (#"{"shards": []}"#, "shards"), (#"{"shards": [["nohost"]]}"#, "shards[0][0]"), (#"[1]"#, "object"),
            (#"{"shards": [["a:1"]], "bogus": 1}"#, "bogus"), (#"{"shards": [["a:1"]], "coordinator": {"search_budget": -1}}"#, "search_budget"),
            ("not json", "JSON"), ("{\n  \"shards\": [[\"a:1\"],,]\n}", "line 2, column"),
            (#"{"shards": [["a:1"]], "rankers": {"x": 1}}"#, "rankers"),
        ]
        for (text, word) in cases {
            do {
                _ = try Topology.parse(Data(text.utf8))
                Issue.record("accepted \(text)")
            } catch {
                #expect("\(error)".contains(word), "\(error)")
            }
        }
    }
}

@Suite(.serialized) struct ShardClusterTests {
    /// Every call to a shard with one dead replica succeeds (retried or hedged to the live one).
    @Test func callsSurviveADeadReplica() async throws {
        let c = try await Cluster(shards: 1, replicas: 2, sockets: true)
        defer { Task { await c.stop() } }
        await c.servers[0][0].shutdownGracefully()
        var failures: [String] = []
        for i in 0 ..< 60 {
            do {
                _ = try await c.cluster!.call(shard: 0, deadline: ContinuousClock.now.advanced(by: .seconds(1))) { client, t throws(RPCError) in
                    try await client.lists(ListsRequest(table: "popular", keys: ["all"], limit: 5), timeout: t)
                }
            } catch {
                failures.append("\(i): \(error)")
            }
        }
        #expect(failures.isEmpty, "\(failures)")
    }
}
