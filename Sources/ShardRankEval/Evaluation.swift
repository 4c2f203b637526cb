import Foundation
import RPCCore
public import RPCTransport
public import ShardRankWire
public import ShardRankClient

/// The held-out interactions: user → the items they interacted with after the training cut.
public struct HeldOut: Sendable {
    public var relevant: [UInt64: Set<UInt64>]
    /// Each user's training interactions (what an answer must never contain), when known.
    public var seen: [UInt64: Set<UInt64>] = [:]

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public init(relevant: [UInt64: Set<UInt64>], seen: [UInt64: Set<UInt64>] = [:]) { self.relevant = relevant; self.seen = seen }

    /// Reads `user_id,item_id[,timestamp][,rating]` CSV (header required).
    /// - Throws: `ParseError` naming the file and the 1-based line.
    public static func read(path: String) throws -> HeldOut {
        try HeldOut(path: path, Interactions.read(path: path))
    }

    /// The held-out sets of an interactions file already read from `path`.
    /// - Throws: `ParseError` when it holds no interaction.
    public init(path: String, _ file: Interactions) throws {
        guard !file.byUser.isEmpty else { throw ParseError(description: "\(path): no interactions") }
        self.init(relevant: file.itemSets)
    }
}

/// An interactions CSV (`user_id,item_id[,timestamp][,rating]`, header required): each user's
/// interactions in time order (equal times, or no timestamp column: file order), and the latest
/// timestamp. The one reader of the evaluation's held-out and training files.
public struct Interactions: Sendable {
    public var byUser: [UInt64: [(item: UInt64, time: Int64)]]
    /// The latest timestamp (the moment a split was cut); nil without a timestamp column.
    public var latest: Int64?

    public var itemSets: [UInt64: Set<UInt64>] { byUser.mapValues { Set($0.map(\.item)) } }

    /// - Throws: `HeldOut.ParseError` naming the file and the 1-based line (an unreadable file,
    ///   a header without user_id and item_id, or without timestamp when `requireTimestamp`, a
    ///   row with another number of fields than the header, a field that is not an integer).
    public static func read(path: String, requireTimestamp: Bool = false) throws -> Interactions {
        guard let data = FileManager.default.contents(atPath: path) else { throw HeldOut.ParseError(description: "\(path): cannot read") }
        var byUser: [UInt64: [(item: UInt64, time: Int64)]] = [:]
        var header: [String] = [], cu = 0, ci = 0, ct: Int?, latest: Int64?, line = 0
        for raw in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            line += 1
            if raw.isEmpty { continue }
            let f = raw.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
                .map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
            if header.isEmpty {
                header = f
                guard let u = f.firstIndex(of: "user_id"), let i = f.firstIndex(of: "item_id") else {
                    throw HeldOut.ParseError(description: "\(path):\(line): header must name user_id and item_id, got \(f.joined(separator: ","))")
                }
                (cu, ci, ct) = (u, i, f.firstIndex(of: "timestamp"))
                if requireTimestamp && ct == nil { throw HeldOut.ParseError(description: "\(path):\(line): header must name timestamp") }
                continue
            }
            guard f.count == header.count else {
                throw HeldOut.ParseError(description: "\(path):\(line): expected \(header.count) fields, got \(f.count)")
            }
            guard let u = UInt64(f[cu]), let i = UInt64(f[ci]) else {
                throw HeldOut.ParseError(description: "\(path):\(line): user_id and item_id must be unsigned integers")
            }
            var t: Int64 = 0
            if let ct {
                guard let v = Int64(f[ct]) else { throw HeldOut.ParseError(description: "\(path):\(line): timestamp must be an integer") }
                t = v
                latest = max(latest ?? v, v)
            }
            byUser[u, default: []].append((i, t))
        }
        guard !header.isEmpty else { throw HeldOut.ParseError(description: "\(path):1: empty file") }
        if ct != nil {
            // Time order; equal times keep file order (a stable sort).
            for (u, list) in byUser where zip(list, list.dropFirst()).contains(where: { $0.time > $1.time }) {
                byUser[u] = list.enumerated().sorted { ($0.element.time, $0.offset) < ($1.element.time, $1.offset) }.map(\.element)
            }
        }
        return Interactions(byUser: byUser, latest: latest)
    }
}

/// What one evaluated configuration (a budget, or a baseline) scored, averaged over users.
public struct EvalRow: Codable, Sendable {
    public var name: String
    /// The ranking model the requests named ("dot" for the baselines).
    public var model: String
    /// Total retrieval budget (0 for baselines).
    public var budget: Int
    public var users: Int
    public var failed: Int
    public var degraded: Int
    /// Per K: precision, recall, MAP (common), MAP (course), NDCG.
    public var metrics: [String: [String: Double]]
    public var catalogCoverage: Double?
    public var distinctItems: Int
    /// Answer items the user already had in training (must be 0; counted when the training
    /// interactions are known).
    public var seenReturned: Int
    /// Mean distinct candidates the ranker scored per request (after merge and the seen filter).
    public var candidatesMean: Double
    public var latencyP50Ms: Double
    public var latencyP99Ms: Double
}

public struct EvalReport: Codable, Sendable {
    public var kind = "eval"
    /// "budgets" (every model at every retrieval budget) or "sequential" (held-out events replayed
    /// one at a time through RecordEvents).
    public var `protocol` = "budgets"
    public var coordinator: String
    public var heldout: String
    public var models: [String]
    /// "Now" sent with every request (Unix seconds; 0 = the coordinator's clock).
    public var nowUnixS: Int64
    public var ks: [Int]
    public var catalogSize: Int?
    public var rows: [EvalRow]
    /// Definitions, for the reader of the JSON.
    public var definitions: [String: String] = [
        "map_common": "AP@K = sum_{k<=K} P(k)*rel(k) / min(K, #relevant), averaged over users",
        "map_course": "AP@N = (1/N) * sum_{k=1}^{N} P(k)*rel(k) with N = K, averaged over users",
        "budget": "total retrieval budget B split as search B/2, genre 0.15B (over the top 3 genres), country 0.1B, popular 0.1B, similar 0.15B over the last 10 items",
        "exhaustive": "every item scored by V_u . V_m (exact top-K search over all shards, seen items excluded): the ceiling",
        "popularity": "the global popular list, seen items excluded",
        "sequential": "each test user's held-out events in time order: recommend, score against the events still to come, record the next one (RecordEvents); metrics averaged over (user, step). stored / tower = the users table's vector / the query tower's, without events; +events = the same with the events recorded; new-user = an id the tables do not hold with the user's last 3 training items recorded, scored on all the held-out items, beside popularity for the same new users. seen_returned counts answers holding a recorded item",
        "model": "the ranking model of the two-stage rows: dot = V_u . V_m; any other name = a learned ranker the coordinator serves",
    ]

    public init(coordinator: String, heldout: String, models: [String], nowUnixS: Int64, ks: [Int], catalogSize: Int?, rows: [EvalRow]) {
        self.coordinator = coordinator; self.heldout = heldout; self.models = models; self.nowUnixS = nowUnixS; self.ks = ks
        self.catalogSize = catalogSize; self.rows = rows
    }
}

/// Replays held-out users against a coordinator, per retrieval budget and for the baselines.
public struct Evaluation: Sendable {
    /// One channel per coordinator; with several, each user is sent to the one `ring` picks (the
    /// coordinator that holds the user's session).
    public var channels: [RPCChannel]
    public var ring: CoordinatorRing?
    public var ks: [Int]
    public var budgets: [Int]
    public var models: [String]
    public var now: Int64
    public var concurrency: Int
    public var timeout: Duration
    public var catalogSize: Int?

    public init(channel: RPCChannel, ks: [Int], budgets: [Int], models: [String] = ["dot"], now: Int64 = 0, concurrency: Int = 4,
                timeout: Duration = .seconds(2), catalogSize: Int? = nil) {
        self.init(channels: [channel], ring: nil, ks: ks, budgets: budgets, models: models, now: now, concurrency: concurrency, timeout: timeout,
                  catalogSize: catalogSize)
    }

    /// Several coordinators: `channels[i]` to `ring.addresses[i]`.
    public init(channels: [RPCChannel], ring: CoordinatorRing?, ks: [Int], budgets: [Int], models: [String] = ["dot"], now: Int64 = 0,
                concurrency: Int = 4, timeout: Duration = .seconds(2), catalogSize: Int? = nil) {
        precondition(!channels.isEmpty && (ring == nil || ring!.addresses.count == channels.count))
        self.channels = channels; self.ring = ring; self.ks = ks; self.budgets = budgets; self.models = models; self.now = now
        self.concurrency = concurrency; self.timeout = timeout; self.catalogSize = catalogSize
    }

    /// `body` for every user with at most `concurrency` in flight; results in completion order.
    static func forEach<T: Sendable>(_ users: [UInt64], concurrency: Int, _ body: @escaping @Sendable (UInt64) async -> T) async -> [T] {
        var out: [T] = []
        out.reserveCapacity(users.count)
        await withTaskGroup(of: T.self) { group in
            var next = 0
            func add() {
                guard next < users.count else { return }
                let u = users[next]
                next += 1
                group.addTask { await body(u) }
            }
            for _ in 0 ..< max(1, concurrency) { add() }
            while let o = await group.next() {
                out.append(o)
                add()
            }
        }
        return out
    }

    /// Per-source budgets for a total retrieval budget `b`.
    public static func split(_ b: Int) -> Budgets {
        Budgets(similarPerItem: UInt32(max(1, Int(Double(b) * 0.15 / 10))), genre: UInt32(max(1, Int(Double(b) * 0.15))),
                country: UInt32(max(1, Int(Double(b) * 0.1))), popular: UInt32(max(1, Int(Double(b) * 0.1))),
                search: UInt32(max(1, b / 2)))
    }

    struct Config: Sendable {
        let name: String
        let model: String
        let budget: Int
        let budgets: Budgets?
        let sources: [Source]
    }

    public func run(heldOut: HeldOut, users: [UInt64], progress: (@Sendable (String) -> Void)? = nil) async -> [EvalRow] {
        let maxK = ks.max() ?? 10
        var configs: [Config] = models.flatMap { m in
            budgets.map { Config(name: "two-stage", model: m, budget: $0, budgets: Self.split($0), sources: []) }
        }
        configs.append(Config(name: "exhaustive", model: "dot", budget: 0, budgets: Budgets(search: UInt32(maxK)), sources: [.search]))
        configs.append(Config(name: "popularity", model: "dot", budget: 0, budgets: Budgets(popular: UInt32(maxK)), sources: [.popular]))
        var rows: [EvalRow] = []
        for c in configs {
            progress?("eval: \(c.name) \(c.model)\(c.budget > 0 ? " budget \(c.budget)" : "") over \(users.count) users")
            rows.append(await evaluate(c, heldOut: heldOut, users: users, k: maxK))
        }
        return rows
    }

    func evaluate(_ c: Config, heldOut: HeldOut, users: [UInt64], k: Int) async -> EvalRow {
        let clients = channels.map { RecommenderClient(channel: $0) }, ring = self.ring
        let model = c.model, timeout = self.timeout, now = self.now
        typealias Outcome = (user: UInt64, items: [UInt64]?, ms: Double, degraded: Bool, candidates: Int)
        let outcomes = await Self.forEach(users, concurrency: concurrency) { u -> Outcome in
            let t0 = ContinuousClock.now
            let req = RecommendRequest(userID: u, k: UInt32(k), budgets: c.budgets, model: model, diversityLambda: 1, sources: c.sources,
                                       nowUnixSeconds: now)
            do {
                let r = try await clients[ring?.index(of: u) ?? 0].recommend(req, timeout: timeout)
                let d = ContinuousClock.now - t0
                return (u, r.items.map(\.itemID), d.millisecondsValue,
                        r.coverage?.degraded ?? false, Int(r.candidates))
            } catch {
                return (u, nil, 0, false, 0)
            }
        }
        var sums: [Int: [String: Double]] = [:]
        var latencies: [Double] = []
        var distinct = Set<UInt64>()
        var ok = 0, candidates = 0, seenReturned = 0
        for o in outcomes {
            guard let items = o.items else { continue }
            ok += 1
            candidates += o.candidates
            if let seen = heldOut.seen[o.user] { seenReturned += items.reduce(0) { $0 + (seen.contains($1) ? 1 : 0) } }
            latencies.append(o.ms)
            RankingMetrics.accumulate(items, relevant: heldOut.relevant[o.user] ?? [], ks: ks, into: &sums, distinct: &distinct)
        }
        var metrics: [String: [String: Double]] = [:]
        for (kk, m) in sums { metrics[String(kk)] = m.mapValues { ok > 0 ? $0 / Double(ok) : 0 } }
        return EvalRow(name: c.name, model: c.model, budget: c.budget, users: ok, failed: outcomes.count - ok, degraded: outcomes.filter(\.degraded).count,
                       metrics: metrics, catalogCoverage: catalogSize.map { Double(distinct.count) / Double($0) },
                       distinctItems: distinct.count, seenReturned: seenReturned, candidatesMean: ok > 0 ? Double(candidates) / Double(ok) : 0, latencyP50Ms: RankingMetrics.quantile(latencies, 0.5),
                       latencyP99Ms: RankingMetrics.quantile(latencies, 0.99))
    }
}
