import Foundation
import Logging
import Testing
import RPCCore
import ShardRankKernels
import ShardRankWire
@testable import Coordinator

/// A query tower for the `Cluster` world (dim 8, its genres and countries) with fixed
/// pseudo-random weights, written to bytes and loaded as the coordinator loads one.
enum TestTower {
    static func make(dim: Int = Cluster.dim, residual: Bool = true, recent: Int = 4) throws -> QueryTower {
        let config = QueryTowerConfig(dim: dim, recent: recent, recencyDecay: 0.6, residual: residual, genreDim: 3, countryDim: 2, hidden: 7,
                                      genres: Cluster.genres, countries: ["DE", "FR"])
        var rng = SplitMix64(seed: 77)
        func random(_ shape: [Int]) -> [Float] {
            (0 ..< shape.reduce(1, *)).map { _ in Float(Int64(rng.next() >> 40) - (1 << 23)) / Float(1 << 23) }
        }
        let shapes: [(String, [Int])] = [("genre_embedding", [4, 3]), ("country_embedding", [3, 2]), ("layer0.weight", [7, config.inputDimension]),
                                         ("layer0.bias", [7]), ("layer1.weight", [dim, 7]), ("layer1.bias", [dim])]
        let tensors = shapes.map { (name: $0.0, shape: $0.1, values: random($0.1)) }
        return try QueryTower(weights: SafeTensors.serialize(tensors), config: Array(JSONEncoder().encode(config)))
    }

    /// What the tower should compute for `latest` (most recent first), genres and country, from
    /// the world's item vectors.
    static func expected(_ tower: QueryTower, latest: [UInt64], genres: [String], country: String) -> [Float] {
        let known = Set(Cluster.itemIDs)
        return tower.userVector(recent: latest, itemVector: { known.contains($0) ? Cluster.itemVector($0) : nil }, genres: genres, country: country)
    }

    /// A Cluster user's stored profile as the tower reads it: its genre and country.
    static func profileGenres(_ user: UInt64) -> [String] { [Cluster.genres[Int(user) % 3]] }

    /// Exhaustive top k of `vector · V_m` over the items not in `seen`.
    static func exhaustive(_ vector: [Float], k: Int, excluding seen: Set<UInt64>) -> [UInt64] {
        let scored = Cluster.itemIDs.filter { !seen.contains($0) }.map { id -> (UInt64, Float) in
            let v = Cluster.itemVector(id)
            var s: Float = 0
            for j in 0 ..< vector.count { s += vector[j] * v[j] }
            return (id, s)
        }
        return scored.sorted { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }.prefix(k).map(\.0)
    }

    static func dot(_ a: [Float], _ id: UInt64) -> Float { zip(a, Cluster.itemVector(id)).reduce(0) { $0 + $1.0 * $1.1 } }
}

extension CoordinatorTests {
    @Suite(.serialized) struct TowerRecommendTests {
        /// A Recommender over the cluster's shards with a query tower.
        static func recommender(_ c: Cluster, tower: QueryTower) -> Recommender {
            Recommender(fetcher: c.local!, settings: c.recommender.settings, tower: tower, pool: WorkerPool(threadCount: 1), logger: Logger(label: "test"))
        }

        @Test func towerModeSearchesAndRanksWithTheTowersVector() async throws {
            let c = try await Cluster(settings: searchOnly)
            defer { Task { await c.stop() } }
            let tower = try TestTower.make()
            let r = Self.recommender(c, tower: tower)
            // User 3: events (the most recent first in the tower's input), then the stored recent items.
            _ = try r.recordEvents(RecordEventsRequest(userID: 3, events: views([1100, 1200])), context: Cluster.context())
            let vu = TestTower.expected(tower, latest: [1200, 1100] + Cluster.recentItems(3), genres: TestTower.profileGenres(3), country: "DE")
            let seen = Set(Cluster.recentItems(3) + [1100, 1200])
            let a = try await r.recommend(RecommendRequest(userID: 3, k: 10, diversityLambda: 1, userVector: .tower), context: Cluster.context())
            #expect(a.userVectorSource == .tower && a.sessionEvents == 2 && !a.coldStart)
            #expect(a.items.map(\.itemID) == TestTower.exhaustive(vu, k: 10, excluding: seen), "the search is the exhaustive top k for the tower's V_u")
            for it in a.items { #expect(abs(it.score - TestTower.dot(vu, it.itemID)) <= 1e-4, "item \(it.itemID): ranked by V_u · V_m") }
            #expect(a.coverage?.degraded == false, "\(a.coverage?.degradedReasons ?? [])")
            // The stored vector gives another answer (so the comparison above can tell them apart).
            let stored = try await r.recommend(RecommendRequest(userID: 3, k: 10, diversityLambda: 1, userVector: .stored), context: Cluster.context())
            #expect(stored.userVectorSource == .stored && stored.items.map(\.itemID) == Cluster.exhaustive(user: 3, k: 10, excluding: seen))
            #expect(stored.items.map(\.itemID) != a.items.map(\.itemID))
            // Without events the tower reads the stored recent items alone.
            let b = try await r.recommend(RecommendRequest(userID: 5, k: 10, diversityLambda: 1, userVector: .tower), context: Cluster.context())
            let vu5 = TestTower.expected(tower, latest: Cluster.recentItems(5), genres: TestTower.profileGenres(5), country: "DE")
            #expect(b.items.map(\.itemID) == TestTower.exhaustive(vu5, k: 10, excluding: Set(Cluster.recentItems(5))))
            // The `dot` feature is V_u · V_m with the vector used.
            let f = try #require(try await r.recommend(RecommendRequest(userID: 5, k: 10, diversityLambda: 1, returnFeatures: true, userVector: .tower),
                                                       context: Cluster.context()).features)
            for (row, id) in f.itemIDs.enumerated().prefix(5) {
                #expect(abs(f.values[row * f.names.count] - TestTower.dot(vu5, id)) <= 1e-4)
            }
        }

        @Test func autoPicksTheTowerForSessionsAndUsersWithoutAStoredVector() async throws {
            let c = try await Cluster(settings: searchOnly)
            defer { Task { await c.stop() } }
            let tower = try TestTower.make()
            let r = Self.recommender(c, tower: tower)
            func ask(_ user: UInt64, _ mode: UserVectorMode = .auto, context: RecommendContext? = nil) async throws -> RecommendResponse {
                try await r.recommend(RecommendRequest(userID: user, context: context, k: 10, diversityLambda: 1, userVector: mode), context: Cluster.context())
            }
            // A stored user without events: the stored vector.
            let plain = try await ask(4)
            #expect(plain.userVectorSource == .stored && plain.sessionEvents == 0)
            #expect(plain.items.map(\.itemID) == Cluster.exhaustive(user: 4, k: 10, excluding: Set(Cluster.recentItems(4))))
            // After an event: the tower (the stored vector does not know it).
            _ = try r.recordEvents(RecordEventsRequest(userID: 4, events: views([1150])), context: Cluster.context())
            let seen = Set(Cluster.recentItems(4) + [1150])
            let moved = try await ask(4)
            let vu = TestTower.expected(tower, latest: [1150] + Cluster.recentItems(4), genres: TestTower.profileGenres(4), country: "DE")
            #expect(moved.userVectorSource == .tower && moved.sessionEvents == 1)
            #expect(moved.items.map(\.itemID) == TestTower.exhaustive(vu, k: 10, excluding: seen))
            // STORED keeps the stored vector, events or not (they are still excluded).
            let stored = try await ask(4, .stored)
            #expect(stored.userVectorSource == .stored && stored.items.map(\.itemID) == Cluster.exhaustive(user: 4, k: 10, excluding: seen))
            // A user the build never saw, with events: the tower, and no cold start.
            _ = try r.recordEvents(RecordEventsRequest(userID: 777, events: views([1003, 1050, 1077])), context: Cluster.context())
            let new = try await ask(777)
            let vuNew = TestTower.expected(tower, latest: [1077, 1050, 1003], genres: [], country: "")
            #expect(new.userVectorSource == .tower && !new.coldStart && new.sessionEvents == 3)
            #expect(new.items.map(\.itemID) == TestTower.exhaustive(vuNew, k: 10, excluding: [1003, 1050, 1077]))
            #expect(new.items.allSatisfy { $0.sources.contains(.search) })
            // A new user with only the context's recent items: the tower too.
            let ctx = try await ask(778, context: RecommendContext(recentItemIDs: [1010, 1020], country: "FR", genres: ["Drama"]))
            let vuCtx = TestTower.expected(tower, latest: [1010, 1020], genres: ["Drama"], country: "FR")
            #expect(ctx.userVectorSource == .tower && !ctx.coldStart)
            #expect(ctx.items.map(\.itemID) == TestTower.exhaustive(vuCtx, k: 10, excluding: [1010, 1020]))
            // A new user with nothing at all: cold start, no vector.
            let cold = try await ask(779)
            #expect(cold.userVectorSource == .none && cold.coldStart)
        }

        @Test func withoutATowerTowerIsRefusedAndAutoUsesTheStoredVector() async throws {
            let c = try await Cluster(settings: searchOnly)
            defer { Task { await c.stop() } }
            let r = c.recommender
            do {
                _ = try await r.recommend(RecommendRequest(userID: 3, userVector: .tower), context: Cluster.context())
                Issue.record("TOWER without a tower was answered")
            } catch {
                #expect(error.code == .failedPrecondition && error.message.contains("--query-tower"), "\(error)")
            }
            do {
                _ = try await r.recommend(RecommendRequest(userID: 3, userVector: nil), context: Cluster.context())
                Issue.record("an unknown user_vector mode was answered")
            } catch {
                #expect(error.code == .invalidArgument && error.message.contains("user_vector"), "\(error)")
            }
            _ = try r.recordEvents(RecordEventsRequest(userID: 3, events: views([1100])), context: Cluster.context())
            let a = try await r.recommend(RecommendRequest(userID: 3, k: 10, diversityLambda: 1), context: Cluster.context())
            #expect(a.userVectorSource == .stored && a.sessionEvents == 1)
            _ = try r.recordEvents(RecordEventsRequest(userID: 700, events: views([1100])), context: Cluster.context())
            let b = try await r.recommend(RecommendRequest(userID: 700, k: 10, diversityLambda: 1), context: Cluster.context())
            #expect(b.userVectorSource == .none && !b.coldStart, "a session is something to go on")
            // The wire carries the mode and the answer's source (decoded, a value this build does
            // not know is nil).
            let wire = try RecommendRequest.decode(Array(RecommendRequest(userID: 1, userVector: .tower).encoded().payload))
            #expect(wire.userVector == .tower)
        }

        @Test func aTowerOfAnotherWidthThanTheItemsIsFailedPrecondition() async throws {
            let c = try await Cluster(settings: searchOnly)
            defer { Task { await c.stop() } }
            let r = Self.recommender(c, tower: try TestTower.make(dim: 4))
            do {
                _ = try await r.recommend(RecommendRequest(userID: 3, userVector: .tower), context: Cluster.context())
                Issue.record("a 4-dim tower was used over 8-dim items")
            } catch {
                #expect(error.code == .failedPrecondition && error.message.contains("dim 4") && error.message.contains("dim 8"), "\(error)")
            }
        }

        @Test func theChoiceRule() {
            func pick(_ mode: UserVectorMode, tower: Bool = true, stored: Bool, events: Int, input: Bool = true) -> UserVectorSource {
                Recommender.chooseVector(mode: mode, towerLoaded: tower, hasStored: stored, sessionEvents: events, towerHasInput: input)
            }
            #expect(pick(.auto, stored: true, events: 0) == .stored)
            #expect(pick(.auto, stored: true, events: 2) == .tower)
            #expect(pick(.auto, stored: false, events: 0) == .tower)
            #expect(pick(.auto, stored: false, events: 0, input: false) == .none)
            #expect(pick(.auto, tower: false, stored: true, events: 2) == .stored)
            #expect(pick(.auto, tower: false, stored: false, events: 2) == .none)
            #expect(pick(.stored, stored: true, events: 2) == .stored && pick(.stored, stored: false, events: 2) == .none)
            #expect(pick(.tower, stored: true, events: 0) == .tower)
        }
    }
}
