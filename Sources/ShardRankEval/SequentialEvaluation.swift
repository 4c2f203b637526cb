import Foundation
import RPCCore
public import RPCTransport
import ShardRankWire
public import ShardRankClient

/// The sequential protocol: each test user's held-out events are replayed one at a time —
/// recommend, score against the events still to come, then record the next event (RecordEvents)
/// — so the effect of fresh events on the answer is measured. Configurations: the stored (MF)
/// vector with and without events, the query tower with and without events, and brand-new users
/// who only have a few recorded events, beside popularity for the same new users.
public struct SequentialEvaluation: Sendable {
    /// One channel per coordinator; with several, each user goes to the one `ring` picks (the
    /// coordinator holding the user's session).
    public var channels: [RPCChannel]
    public var ring: CoordinatorRing?
    public var k: Int
    public var ks: [Int]
    public var budget: Int
    public var model: String
    public var now: Int64
    public var concurrency: Int
    public var timeout: Duration
    /// Events a simulated new user records before being asked (their last training items).
    public var newUserEvents: Int
    /// New users get the id `newUserBase + user` (an id the tables do not hold).
    public var newUserBase: UInt64

    public init(channels: [RPCChannel], ring: CoordinatorRing?, ks: [Int], budget: Int, model: String = "dot", now: Int64 = 0,
                concurrency: Int = 4, timeout: Duration = .seconds(2), newUserEvents: Int = 3, newUserBase: UInt64 = 1 << 40) {
        precondition(!channels.isEmpty && (ring == nil || ring!.addresses.count == channels.count))
        self.channels = channels; self.ring = ring; self.ks = ks; self.k = ks.max() ?? 10; self.budget = budget; self.model = model; self.now = now
        self.concurrency = concurrency; self.timeout = timeout; self.newUserEvents = newUserEvents; self.newUserBase = newUserBase
    }

    struct Config: Sendable {
        let name: String
        let vector: UserVectorMode
        let events: Bool
        let newUser: Bool
        let sources: [Source]
    }

    /// Rows in this order: stored, tower, stored + events, tower + events, new user (tower +
    /// events), new user (popularity). The tower rows are left out when the coordinator has no
    /// query tower (FAILED_PRECONDITION).
    public func run(heldOut: Interactions, train: Interactions, users: [UInt64],
                    progress: (@Sendable (String) -> Void)? = nil) async -> [EvalRow] {
        var configs: [Config] = [
            Config(name: "stored", vector: .stored, events: false, newUser: false, sources: []),
            Config(name: "tower", vector: .tower, events: false, newUser: false, sources: []),
            Config(name: "stored+events", vector: .stored, events: true, newUser: false, sources: []),
            Config(name: "tower+events", vector: .tower, events: true, newUser: false, sources: []),
            Config(name: "new-user+events", vector: .auto, events: true, newUser: true, sources: []),
            Config(name: "new-user-popularity", vector: .auto, events: true, newUser: true, sources: [.popular]),
        ]
        if let first = users.first, !(await hasTower(first)) {
            progress?("eval: the coordinator has no query tower: the tower rows are skipped")
            configs.removeAll { $0.vector == .tower }
        }
        var rows: [EvalRow] = []
        for c in configs {
            progress?("eval: sequential \(c.name) over \(users.count) users")
            rows.append(await evaluate(c, heldOut: heldOut, train: train, users: users))
        }
        return rows
    }

    func channel(of user: UInt64) -> RPCChannel { ring.map { channels[$0.index(of: user)] } ?? channels[0] }

    func hasTower(_ user: UInt64) async -> Bool {
        do {
            _ = try await RecommenderClient(channel: channel(of: user)).recommend(RecommendRequest(userID: user, k: 1, userVector: .tower), timeout: timeout)
            return true
        } catch {
            return error.code != .failedPrecondition
        }
    }

    typealias Outcome = (items: [[UInt64]], relevant: [Set<UInt64>], ms: [Double], failed: Int, degraded: Int, candidates: Int, recordedReturned: Int)

    /// One user's replay: a list per step (nil on failure) and what was relevant then.
    func replay(_ c: Config, user: UInt64, held: [(item: UInt64, time: Int64)], train: [(item: UInt64, time: Int64)]) async -> Outcome {
        let id = c.newUser ? newUserBase + user : user
        let client = RecommenderClient(channel: channel(of: id))
        var out: Outcome = ([], [], [], 0, 0, 0, 0)
        var recorded = Set<UInt64>()
        let budgets = Evaluation.split(budget)
        // A clean session for this user on this coordinator: earlier configurations' events gone.
        do {
            _ = try await client.recordEvents(RecordEventsRequest(userID: id, events: [], replace: true), timeout: timeout)
        } catch {
            out.failed += 1
            return out
        }
        if c.newUser {
            // A brand-new user: only their last few training items, recorded as events.
            // Stamped 0 (the coordinator's clock): a replayed historical time would be past the
            // session TTL at once.
            let seed = train.suffix(newUserEvents).map { Event(itemID: $0.item, kind: .view, timestampUnixSeconds: 0) }
            guard !seed.isEmpty else { return out }
            do { _ = try await client.recordEvents(RecordEventsRequest(userID: id, events: seed), timeout: timeout) } catch {
                out.failed += 1
                return out
            }
            recorded.formUnion(seed.map(\.itemID))
            await ask(client, c, id, budgets, Set(held.map(\.item)), recorded, &out)
            return out
        }
        for t in 0 ..< held.count {
            await ask(client, c, id, budgets, Set(held[t...].map(\.item)), recorded, &out)
            if c.events {
                let e = held[t]
                recorded.insert(e.item)
                do {
                    _ = try await client.recordEvents(RecordEventsRequest(userID: id, events: [Event(itemID: e.item, kind: .view, timestampUnixSeconds: 0)]),
                                                      timeout: timeout)
                } catch {
                    out.failed += 1
                    return out
                }
            }
        }
        return out
    }

    /// One Recommend, scored against `relevant`; answers holding a `recorded` item are counted.
    private func ask(_ client: RecommenderClient, _ c: Config, _ id: UInt64, _ budgets: Budgets, _ relevant: Set<UInt64>,
                     _ recorded: Set<UInt64>, _ out: inout Outcome) async {
        let budgets = c.sources == [.popular] ? Budgets(popular: UInt32(k)) : budgets
        let req = RecommendRequest(userID: id, k: UInt32(k), budgets: budgets, model: c.sources.isEmpty ? model : "dot", diversityLambda: 1,
                                   sources: c.sources, nowUnixSeconds: now, userVector: c.vector)
        let t0 = ContinuousClock.now
        do {
            let r = try await client.recommend(req, timeout: timeout)
            let d = ContinuousClock.now - t0
            out.items.append(r.items.map(\.itemID))
            out.relevant.append(relevant)
            out.ms.append(d.millisecondsValue)
            out.candidates += Int(r.candidates)
            out.recordedReturned += r.items.reduce(0) { $0 + (recorded.contains($1.itemID) ? 1 : 0) }
            if r.coverage?.degraded ?? false { out.degraded += 1 }
        } catch {
            out.failed += 1
        }
    }

    func evaluate(_ c: Config, heldOut: Interactions, train: Interactions, users: [UInt64]) async -> EvalRow {
        let all = await Evaluation.forEach(users, concurrency: concurrency) { u in
            await self.replay(c, user: u, held: heldOut.byUser[u] ?? [], train: train.byUser[u] ?? [])
        }
        var sums: [Int: [String: Double]] = [:]
        var latencies: [Double] = []
        var steps = 0, failed = 0, degraded = 0, candidates = 0, seenReturned = 0
        var distinct = Set<UInt64>()
        for o in all {
            seenReturned += o.recordedReturned
            failed += o.failed
            degraded += o.degraded
            candidates += o.candidates
            latencies += o.ms
            for (items, relevant) in zip(o.items, o.relevant) {
                steps += 1
                RankingMetrics.accumulate(items, relevant: relevant, ks: ks, into: &sums, distinct: &distinct)
            }
        }
        var metrics: [String: [String: Double]] = [:]
        for (kk, m) in sums { metrics[String(kk)] = m.mapValues { steps > 0 ? $0 / Double(steps) : 0 } }
        return EvalRow(name: c.name, model: c.sources.isEmpty ? model : "dot", budget: c.sources.isEmpty ? budget : 0, users: steps,
                       failed: failed, degraded: degraded, metrics: metrics, catalogCoverage: nil, distinctItems: distinct.count,
                       seenReturned: seenReturned, candidatesMean: steps > 0 ? Double(candidates) / Double(steps) : 0,
                       latencyP50Ms: RankingMetrics.quantile(latencies, 0.5), latencyP99Ms: RankingMetrics.quantile(latencies, 0.99))
    }
}
