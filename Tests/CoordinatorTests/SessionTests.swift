import Foundation
import Logging
import Synchronization
import Testing
import RPCCore
import ShardRankClient
import ShardRankKernels
import ShardRankWire
@testable import Coordinator

/// A clock the test moves (Unix seconds).
final class TestClock: Sendable {
    let seconds: Atomic<Int64>
    init(_ start: Int64) { seconds = Atomic(start) }
    func advance(_ s: Int64) { seconds.add(s, ordering: .relaxed) }
    var now: @Sendable () -> Int64 { { [self] in seconds.load(ordering: .relaxed) } }
}

/// Messages from concurrent tasks.
final class Problems: Sendable {
    private let list = Mutex<[String]>([])
    func add(_ s: String) { list.withLock { $0.append(s) } }
    var all: [String] { list.withLock { $0 } }
}

func views(_ ids: [UInt64], at t: Int64 = 0) -> [Event] { ids.map { Event(itemID: $0, kind: .view, timestampUnixSeconds: t) } }

/// The session store alone: its bounds per user, in total (least recently updated out first) and
/// in time, under concurrent writers and readers.
@Suite struct SessionStoreTests {
    @Test func eachUserKeepsItsLatestEventsAndReadsThemMostRecentFirst() {
        let clock = TestClock(1_000_000)
        let s = SessionStore(eventsPerUser: 5, users: 10, ttlSeconds: 3600, clock: clock.now)
        #expect(s.record(user: 1, events: views([11, 12, 13])) == 3)
        #expect(s.session(of: 1) == SessionStore.Session(items: [13, 12, 11], events: 3))
        // 4 more: the ring holds 5, the oldest two went first.
        #expect(s.record(user: 1, events: views([14, 12, 16, 17])) == 5)
        #expect(s.events(of: 1).map(\.itemID) == [13, 14, 12, 16, 17])
        #expect(s.session(of: 1) == SessionStore.Session(items: [17, 16, 12, 14, 13], events: 5))
        // A repeat counts as an event but the items are distinct, most recent first.
        s.record(user: 1, events: views([14]))
        #expect(s.session(of: 1) == SessionStore.Session(items: [14, 17, 16, 12], events: 5))
        // One call larger than the ring: its last 5 stay.
        s.record(user: 2, events: views((100 ..< 1100).map(UInt64.init)))
        #expect(s.events(of: 2).map(\.itemID) == [1095, 1096, 1097, 1098, 1099])
        // Stamps and kinds are kept; 0 is the clock.
        s.record(user: 3, events: [Event(itemID: 5, kind: .purchase, timestampUnixSeconds: 999_000), Event(itemID: 6, kind: .click)])
        #expect(s.events(of: 3) == [.init(itemID: 5, kind: .purchase, timestamp: 999_000), .init(itemID: 6, kind: .click, timestamp: 1_000_000)])
        #expect(s.session(of: 99) == SessionStore.Session(), "an unknown user has no session")
        #expect(s.usage.users == 3 && s.usage.events == 12)
        #expect(s.checkInvariants() == nil)
    }

    @Test func aFullStoreEvictsTheLeastRecentlyUpdatedUser() {
        let clock = TestClock(1_000_000)
        let s = SessionStore(eventsPerUser: 4, users: 3, ttlSeconds: 3600, stripes: 1, clock: clock.now)
        for u in UInt64(1) ... 3 { s.record(user: u, events: views([u * 10])) }
        s.record(user: 1, events: views([11]))   // user 1 updated: user 2 is now the oldest
        _ = s.session(of: 2)                      // reading is not an update
        s.record(user: 4, events: views([40]))
        #expect(s.session(of: 2).events == 0, "the least recently updated user was evicted")
        #expect(s.session(of: 1).items == [11, 10] && s.session(of: 3).items == [30] && s.session(of: 4).items == [40])
        #expect(s.usage.users == 3 && s.usage.evictions == 1)
        s.record(user: 5, events: views([50]))
        #expect(s.session(of: 3).events == 0, "then the next oldest")
        #expect(s.checkInvariants() == nil)
        // Striped (the default): never more than the bound in total, whatever the spread.
        let big = SessionStore(eventsPerUser: 3, users: 100, ttlSeconds: 3600, clock: clock.now)
        #expect(big.stripeCount == 64)
        for u in UInt64(1) ... 10_000 { big.record(user: u, events: views([u, u + 1])) }
        #expect(big.usage.users == 100 && big.usage.events == 200 && big.usage.evictions == 9900)
        #expect((UInt64(9_901) ... 10_000).filter { big.session(of: $0).events == 0 }.count <= 64,
                "the most recent users are kept (up to the per-stripe spread)")
        #expect(big.checkInvariants() == nil)
        #expect(SessionStore(eventsPerUser: 1, users: 5, ttlSeconds: 1).stripeCount == 4, "a power of two, each stripe holding one user or more")
    }

    @Test func expiredEventsAreIgnoredAndReclaimed() {
        let clock = TestClock(1_000_000)
        let s = SessionStore(eventsPerUser: 10, users: 100, ttlSeconds: 100, stripes: 1, clock: clock.now)
        s.record(user: 1, events: [Event(itemID: 7, kind: .view, timestampUnixSeconds: 999_950), Event(itemID: 8)])
        #expect(s.session(of: 1) == SessionStore.Session(items: [8, 7], events: 2))
        clock.advance(60)   // now − ttl = 999_960: item 7 (stamped 999_950) has expired, item 8 has not
        #expect(s.session(of: 1) == SessionStore.Session(items: [8], events: 1))
        #expect(s.events(of: 1).map(\.itemID) == [8])
        clock.advance(41)   // item 8 (1_000_000) expired too: the user is reclaimed when read
        #expect(s.session(of: 1) == SessionStore.Session())
        #expect(s.usage.users == 0 && s.usage.events == 0 && s.usage.expirations == 1)
        // An event stamped older than the TTL is taken and expired at once.
        #expect(s.record(user: 2, events: [Event(itemID: 9, kind: .view, timestampUnixSeconds: 1)]) == 0)
        // Expired users leave from the LRU tail when the stripe is written.
        s.record(user: 3, events: views([30]))
        clock.advance(500)
        s.record(user: 4, events: views([40]))
        #expect(s.usage.users == 1, "users 2 and 3 expired and were reclaimed by the write")
        // A user whose whole session expired starts afresh.
        s.record(user: 4, events: views([41]))
        clock.advance(200)
        #expect(s.record(user: 4, events: views([42])) == 1)
        #expect(s.events(of: 4).map(\.itemID) == [42] && s.usage.events == 1)
        #expect(s.checkInvariants() == nil)
    }

    /// Writers and readers on many tasks at once: every read sees a bounded, well-formed session,
    /// and afterwards the store is within its bounds with its structure intact.
    @Test func concurrentWritersAndReadersStayWithinTheBounds() async {
        let clock = TestClock(1_000_000)
        let s = SessionStore(eventsPerUser: 6, users: 300, ttlSeconds: 50, clock: clock.now)
        let problems = Problems()
        await withTaskGroup(of: Void.self) { group in
            for w in 0 ..< 6 {
                group.addTask {
                    var rng = SplitMix64(seed: UInt64(w) + 1)
                    for i in 0 ..< 4000 {
                        let user = rng.next() % 2000 + 1
                        let n = Int(rng.next() % 9) + 1
                        let held = s.record(user: user, events: (0 ..< n).map { _ in Event(itemID: rng.next() % 500 + 1, kind: .click, timestampUnixSeconds: 0) })
                        if held < min(n, 6) || held > 6 { problems.add("writer \(w): \(n) events, \(held) held") }
                        if i % 1000 == 0 { clock.advance(20) }   // some sessions expire meanwhile
                    }
                }
            }
            for r in 0 ..< 3 {
                group.addTask {
                    var rng = SplitMix64(seed: UInt64(r) + 100)
                    for _ in 0 ..< 8000 {
                        let session = s.session(of: rng.next() % 2000 + 1)
                        if session.events > 6 || session.items.count > session.events || Set(session.items).count != session.items.count {
                            problems.add("reader \(r): \(session)")
                        }
                    }
                }
            }
        }
        #expect(problems.all.isEmpty, "\(problems.all.prefix(5))")
        let usage = s.usage
        #expect(usage.users <= 300 && usage.events <= 300 * 6, "\(usage)")
        #expect(usage.evictions > 0)
        #expect(s.checkInvariants() == nil)
    }

    @Test func theRingSpreadsUsersAndMovesFewWhenACoordinatorGoes() {
        let three = CoordinatorRing(["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"])
        var counts = [0, 0, 0]
        for u in UInt64(1) ... 30_000 { counts[three.index(of: u)] += 1 }
        #expect(counts.allSatisfy { abs($0 - 10_000) < 600 }, "\(counts)")
        // Removing a coordinator moves only its users; the list order does not matter.
        let two = CoordinatorRing(["10.0.0.3:7000", "10.0.0.1:7000"])
        for u in UInt64(1) ... 5000 where three.coordinator(of: u) != "10.0.0.2:7000" {
            #expect(two.coordinator(of: u) == three.coordinator(of: u))
        }
        #expect(CoordinatorRing(["a:1"]).index(of: 42) == 0)
        // The documented hash: FNV-1a and the splitmix64 finalizer.
        #expect(CoordinatorRing.fnv1a64("") == 0xCBF2_9CE4_8422_2325 && CoordinatorRing.fnv1a64("a") == 0xAF63_DC4C_8601_EC8C)
        #expect(CoordinatorRing.mix64(1) == 0x5692_161D_100B_05E5)
    }
}

// Nested in the serialized `CoordinatorTests`, so these Recommend suites never run beside its
// deadline-bound tests.
extension CoordinatorTests {
    @Suite(.serialized) struct SessionRecommendTests {
        static let sourceSets: [[Source]] = [[.similar], [.genre], [.country], [.popular], [.search], []]

        /// The top items of an answer, recorded as watched, never come back on the next call —
        /// from any source, and for a user with a stored profile as for one without.
        @Test func recordedItemsAreNeverRecommendedAgain() async throws {
            let w = try HistoryWorld(ann: false)
            defer { w.stop() }
            let r = w.recommender
            for user in [HistoryWorld.light, 4242] {
                var recorded: [UInt64] = []
                // Something to key the similar source for the user without a profile.
                if user == 4242 {
                    let first = [HistoryWorld.itemIDs[2000]]
                    _ = try r.recordEvents(RecordEventsRequest(userID: user, events: views(first)), context: Cluster.context())
                    recorded += first
                }
                for sources in Self.sourceSets {
                    let what = "user \(user), sources \(sources.isEmpty ? "all" : "\(sources)")"
                    let req = RecommendRequest(userID: user, k: 20, diversityLambda: 1, sources: sources)
                    let before = try await r.recommend(req, context: Cluster.context())
                    if user == 4242 && [[Source.genre], [.country], [.search]].contains(sources) {
                        #expect(before.items.isEmpty, "\(what): no profile, no vector")
                        continue
                    }
                    #expect(before.items.count >= 10, "\(what): \(before.items.count) items")
                    let top = before.items.prefix(3).map(\.itemID)
                    #expect(!top.contains(where: recorded.contains), "\(what): a recorded item came back")
                    let ack = try r.recordEvents(RecordEventsRequest(userID: user, events: views(top)), context: Cluster.context())
                    recorded += top
                    #expect(ack.accepted == 3 && ack.sessionEvents == UInt32(min(recorded.count, 50)))
                    let after = try await r.recommend(req, context: Cluster.context())
                    #expect(after.sessionEvents == UInt32(min(recorded.count, 50)), "\(what)")
                    #expect(!after.items.isEmpty, "\(what)")
                    let back = after.items.map(\.itemID).filter(recorded.contains)
                    #expect(back.isEmpty, "\(what): recorded items came back: \(back)")
                    #expect(after.coverage?.degraded == false, "\(what): \(after.coverage?.degradedReasons ?? [])")
                }
            }
        }

        /// A recorded item keys the similar source first: its similar items (in this world the 40
        /// items after it) come in, with `similar_recency` 0, and the item itself does not.
        @Test func eventsKeyTheSimilarSource() async throws {
            let w = try HistoryWorld(ann: false)
            defer { w.stop() }
            let user = HistoryWorld.light, x = 1000
            let watched = HistoryWorld.itemIDs[x]
            let neighbours = Set(HistoryWorld.itemIDs[(x + 1) ... (x + 40)])
            let req = RecommendRequest(userID: user, k: 1000, budgets: Budgets(similarPerItem: 40), diversityLambda: 1, sources: [.similar],
                                       returnFeatures: true)
            let before = try await w.recommender.recommend(req, context: Cluster.context())
            #expect(before.items.allSatisfy { !neighbours.contains($0.itemID) }, "the stored recent items lead elsewhere")
            #expect(before.sessionEvents == 0)
            _ = try w.recommender.recordEvents(RecordEventsRequest(userID: user, events: views([watched])), context: Cluster.context())
            let after = try await w.recommender.recommend(req, context: Cluster.context())
            #expect(after.sessionEvents == 1)
            let fromEvent = after.items.filter { neighbours.contains($0.itemID) }
            #expect(fromEvent.count == 40, "all 40 similar items of the watched one: \(fromEvent.count)")
            #expect(!after.items.contains { $0.itemID == watched })
            let f = try #require(after.features)
            let recency = f.names.firstIndex(of: "similar_recency")!
            for (row, id) in f.itemIDs.enumerated() where neighbours.contains(id) {
                #expect(f.values[row * f.names.count + recency] == 0, "item \(id): keyed by the most recent item")
            }
            // The context's recent items still replace the stored ones, after the session's.
            let ctx = RecommendContext(recentItemIDs: [HistoryWorld.itemIDs[3000]])
            let withContext = try await w.recommender.recommend(RecommendRequest(userID: user, context: ctx, k: 100, budgets: Budgets(similarPerItem: 40),
                                                                                 diversityLambda: 1, sources: [.similar]), context: Cluster.context())
            let ids = Set(withContext.items.map(\.itemID))
            #expect(neighbours.isSubset(of: ids) && ids.contains(HistoryWorld.itemIDs[3001]))
        }

        @Test func recordEventsValidatesItsInput() async throws {
            let c = try await Cluster()
            defer { Task { await c.stop() } }
            let r = c.recommender
            let cases: [(RecordEventsRequest, String)] = [
                (RecordEventsRequest(userID: 0, events: views([1])), "user_id"),
                (RecordEventsRequest(userID: 1, events: []), "events has 0 entries"),
                (RecordEventsRequest(userID: 1, events: views((1 ... 1001).map(UInt64.init))), "events has 1001 entries: 1...1000"),
                (RecordEventsRequest(userID: 1, events: views([5, 6, 0])), "events[2].item_id"),
                (RecordEventsRequest(userID: 1, events: [Event(itemID: 5), Event(itemID: 6, kind: .view, timestampUnixSeconds: -1)]),
                 "events[1].timestamp_unix_s"),
                (RecordEventsRequest(userID: 1, events: [Event(itemID: 5, kindValue: 9, timestampUnixSeconds: 0)]), "events[0].kind"),
                (RecordEventsRequest(userID: 1, events: [Event(itemID: 5, kind: .view, timestampUnixSeconds: .max)]), "events[0].timestamp_unix_s"),
            ]
            for (req, field) in cases {
                do {
                    _ = try r.recordEvents(req, context: Cluster.context())
                    Issue.record("accepted: \(field)")
                } catch {
                    #expect(error.code == .invalidArgument && error.message.contains(field), "\(error)")
                }
            }
            #expect(r.sessions?.usage.users == 0, "nothing was recorded by a refused call")
            let ok = try r.recordEvents(RecordEventsRequest(userID: 1, events: views((1 ... 1000).map(UInt64.init))), context: Cluster.context())
            #expect(ok.accepted == 1000 && ok.sessionEvents == 50, "the default bound: 50 per user")
            // replace: the session becomes the request's events; none clears it.
            let replaced = try r.recordEvents(RecordEventsRequest(userID: 1, events: views([7, 8]), replace: true), context: Cluster.context())
            #expect(replaced.sessionEvents == 2 && r.sessions?.session(of: 1).items == [8, 7])
            let cleared = try r.recordEvents(RecordEventsRequest(userID: 1, events: [], replace: true), context: Cluster.context())
            #expect(cleared.accepted == 0 && cleared.sessionEvents == 0 && r.sessions?.session(of: 1).items == [])
            // Sessions off: FAILED_PRECONDITION.
            let off = try await Cluster(settings: { $0.sessionUsers = 0 })
            defer { Task { await off.stop() } }
            #expect(off.recommender.sessions == nil)
            do {
                _ = try off.recommender.recordEvents(RecordEventsRequest(userID: 1, events: views([1000])), context: Cluster.context())
                Issue.record("sessions off, yet accepted")
            } catch {
                #expect(error.code == .failedPrecondition && error.message.contains("session_users"))
            }
        }

        /// A batch applies its entries in order, as one call each would; one bad entry (or too
        /// many entries or events) refuses the whole batch, naming the entry, and records nothing.
        @Test func recordEventsBatchAppliesAllOrNothing() async throws {
            let c = try await Cluster()
            defer { Task { await c.stop() } }
            let r = c.recommender
            let good = RecordEventsRequest(userID: 11, events: views([1001, 1002]))
            let refused: [(RecordEventsBatchRequest, String)] = [
                (RecordEventsBatchRequest(users: []), "users has 0 entries: 1...1000"),
                (RecordEventsBatchRequest(users: Array(repeating: good, count: 1001)), "users has 1001 entries"),
                (RecordEventsBatchRequest(users: [good, RecordEventsRequest(userID: 12, events: views([5])),
                                                  RecordEventsRequest(userID: 13, events: views([6, 0]))]), "users[2].events[1].item_id is 0"),
                (RecordEventsBatchRequest(users: [good, RecordEventsRequest(userID: 0, events: views([5]))]), "users[1].user_id"),
                (RecordEventsBatchRequest(users: Array(repeating: RecordEventsRequest(userID: 14, events: views((1 ... 1000).map(UInt64.init))), count: 11)),
                 "holds 11000 events: at most 10000"),
            ]
            for (req, message) in refused {
                do {
                    _ = try r.recordEventsBatch(req, context: Cluster.context())
                    Issue.record("accepted: \(message)")
                } catch {
                    #expect(error.code == .invalidArgument && error.message.contains(message), "\(error)")
                }
            }
            #expect(r.sessions?.usage.users == 0, "a refused batch records nothing, not even its good entries")
            let batch = RecordEventsBatchRequest(users: [good, RecordEventsRequest(userID: 12, events: views([1003])),
                                                         RecordEventsRequest(userID: 11, events: views([1004])),
                                                         RecordEventsRequest(userID: 12, events: views([1005]), replace: true)])
            let ack = try r.recordEventsBatch(batch, context: Cluster.context())
            #expect(ack == RecordEventsBatchResponse(accepted: 5, users: 4))
            #expect(r.sessions?.session(of: 11).items == [1004, 1002, 1001], "in order, the latest first")
            #expect(r.sessions?.session(of: 12).items == [1005], "the later replace wins")
            let next = try await r.recommend(RecommendRequest(userID: 11, k: 240, diversityLambda: 1), context: Cluster.context())
            #expect(next.sessionEvents == 3 && !next.items.contains { [1001, 1002, 1004].contains($0.itemID) })
            // Through the service's handler, registered inline.
            let service = RecommenderService(recommender: r)
            let method = try #require(service.methods.first { $0.path == "/shardrank.v1.Recommender/RecordEventsBatch" })
            #expect(method.placement == .inline)
            guard case .unary(let handler) = method.handler else { Issue.record("not a unary handler"); return }
            let bytes = Array(RecordEventsBatchRequest(users: [RecordEventsRequest(userID: 15, events: views([1010]))]).encoded().payload)
            #expect(try RecordEventsBatchResponse.decode(Array(try handler(bytes, Cluster.context()).payload)) == RecordEventsBatchResponse(accepted: 1, users: 1))
            #expect(r.sessions?.session(of: 15).items == [1010])
        }

        /// The service registers RecordEvents inline, and its handler decodes, records and encodes.
        @Test func theServiceAnswersRecordEvents() async throws {
            let c = try await Cluster()
            defer { Task { await c.stop() } }
            let service = RecommenderService(recommender: c.recommender)
            let method = try #require(service.methods.first { $0.path == "/shardrank.v1.Recommender/RecordEvents" })
            #expect(method.placement == .inline)
            guard case .unary(let handler) = method.handler else { Issue.record("not a unary handler"); return }
            let bytes = Array(RecordEventsRequest(userID: 3, events: views([1010, 1011])).encoded().payload)
            let answer = try RecordEventsResponse.decode(Array(try handler(bytes, Cluster.context()).payload))
            #expect(answer == RecordEventsResponse(accepted: 2, sessionEvents: 2))
            // The next Recommend of that user excludes them, and says it used 2 events.
            let r = try await c.recommender.recommend(RecommendRequest(userID: 3, k: 240, diversityLambda: 1), context: Cluster.context())
            #expect(r.sessionEvents == 2 && !r.items.contains { [1010, 1011].contains($0.itemID) })
        }
    }
}

@Suite struct SessionPlanTests {
    @Test func theSessionComesFirstAndJoinsTheSeenSet() {
        var s = CoordinatorSettings()
        s.recentItems = 4
        let profile = UserProfile(userID: 7, recentItemIDs: [1, 2, 3, 4, 5], topGenres: ["Drama"], country: "DE")
        let p = RetrievalPlan(RecommendRequest(userID: 7), settings: s, profile: profile, session: [9, 3, 8])
        #expect(p.latest == [9, 3, 8, 1, 2, 4, 5], "the session's items, then the stored ones without repeats")
        #expect(p.recent == [9, 3, 8, 1], "the similar source reads the first recentItems")
        #expect(p.seenSorted == [1, 2, 3, 4, 5, 8, 9])
        #expect(p.seenPacked.decoded() == p.seenSorted)
        // The context's recent items replace the stored ones, after the session.
        let ctx = RecommendContext(recentItemIDs: [20, 9])
        let q = RetrievalPlan(RecommendRequest(userID: 7, context: ctx), settings: s, profile: profile, session: [9])
        #expect(q.latest == [9, 20] && q.seenSorted == [1, 2, 3, 4, 5, 9, 20])
        // Without a session, nothing changes.
        let none = RetrievalPlan(RecommendRequest(userID: 7), settings: s, profile: profile)
        #expect(none.latest == [1, 2, 3, 4, 5] && none.recent == [1, 2, 3, 4] && none.seenSorted == [1, 2, 3, 4, 5])
    }
}

@Suite struct SessionTopologyTests {
    @Test func sessionSettingsAndTheQueryTowerKeyParse() throws {
        let t = try Topology.parse(Data(#"{"shards": [["a:1"]], "query_tower": "tower/T.safetensors", "coordinator": {"session_events_per_user": 20, "session_users": 5000, "session_ttl_s": 600}}"#.utf8))
        #expect(t.settings.sessionEventsPerUser == 20 && t.settings.sessionUsers == 5000 && t.settings.sessionTTLSeconds == 600)
        let d = CoordinatorSettings()
        #expect(d.sessionEventsPerUser == 50 && d.sessionUsers == 1_000_000 && d.sessionTTLSeconds == 86_400, "the documented defaults")
        let store = SessionStore(settings: t.settings)
        #expect(store.eventsPerUser == 20 && store.users == 5000 && store.ttlSeconds == 600)
        #expect(SessionStore(settings: d).maxBytes == 920_000_000, "the documented bound: 1M users x (120 + 16 x 50) bytes")
        let cases: [(String, String)] = [
            (#"{"shards": [["a:1"]], "coordinator": {"session_events_per_user": 0}}"#, "session_events_per_user"),
            (#"{"shards": [["a:1"]], "coordinator": {"session_events_per_user": 20000}}"#, "session_events_per_user"),
            (#"{"shards": [["a:1"]], "coordinator": {"session_ttl_s": 0}}"#, "session_ttl_s"),
            (#"{"shards": [["a:1"]], "coordinator": {"session_users": -1}}"#, "session_users"),
            (#"{"shards": [["a:1"]], "query_tower": 3}"#, "query_tower"),
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
