import Foundation
import RPCCore
public import RPCTransport
public import ShardRankWire
import ShardRankClient

/// The held-out interactions: user → the items they interacted with after the training cut.
public struct HeldOut: Sendable {
    public var relevant: [UInt64: Set<UInt64>]

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Reads `user_id,item_id,timestamp[,rating]` CSV (header required).
    /// - Throws: `ParseError` naming the file and the 1-based line.
    public static func read(path: String) throws -> HeldOut {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ParseError(description: "\(path): cannot read")
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last == "" { lines.removeLast() }
        guard let header = lines.first?.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) else {
            throw ParseError(description: "\(path):1: empty file")
        }
        guard let u = header.firstIndex(of: "user_id"), let i = header.firstIndex(of: "item_id") else {
            throw ParseError(description: "\(path):1: header must name user_id and item_id, got \(header.joined(separator: ","))")
        }
        var relevant: [UInt64: Set<UInt64>] = [:]
        for (n, line) in lines.enumerated().dropFirst() {
            let f = line.split(separator: ",", omittingEmptySubsequences: false)
            guard f.count == header.count else {
                throw ParseError(description: "\(path):\(n + 1): expected \(header.count) fields, got \(f.count)")
            }
            guard let user = UInt64(f[u].trimmingCharacters(in: .whitespaces)), let item = UInt64(f[i].trimmingCharacters(in: .whitespaces)) else {
                throw ParseError(description: "\(path):\(n + 1): user_id and item_id must be unsigned integers")
            }
            relevant[user, default: []].insert(item)
        }
        guard !relevant.isEmpty else { throw ParseError(description: "\(path): no interactions") }
        return HeldOut(relevant: relevant)
    }
}

/// What one evaluated configuration (a budget, or a baseline) scored, averaged over users.
public struct EvalRow: Codable, Sendable {
    public var name: String
    /// Total retrieval budget (0 for baselines).
    public var budget: Int
    public var users: Int
    public var failed: Int
    public var degraded: Int
    /// Per K: precision, recall, MAP (common), MAP (course), NDCG.
    public var metrics: [String: [String: Double]]
    public var catalogCoverage: Double?
    public var distinctItems: Int
    public var latencyP50Ms: Double
    public var latencyP99Ms: Double
}

public struct EvalReport: Codable, Sendable {
    public var kind = "eval"
    public var coordinator: String
    public var heldout: String
    public var model: String
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
    ]

    public init(coordinator: String, heldout: String, model: String, ks: [Int], catalogSize: Int?, rows: [EvalRow]) {
        self.coordinator = coordinator; self.heldout = heldout; self.model = model; self.ks = ks
        self.catalogSize = catalogSize; self.rows = rows
    }
}

/// Replays held-out users against a coordinator, per retrieval budget and for the baselines.
public struct Evaluation: Sendable {
    public var channel: RPCChannel
    public var ks: [Int]
    public var budgets: [Int]
    public var model: String
    public var concurrency: Int
    public var timeout: Duration
    public var catalogSize: Int?

    public init(channel: RPCChannel, ks: [Int], budgets: [Int], model: String = "dot", concurrency: Int = 4,
                timeout: Duration = .seconds(2), catalogSize: Int? = nil) {
        self.channel = channel; self.ks = ks; self.budgets = budgets; self.model = model
        self.concurrency = concurrency; self.timeout = timeout; self.catalogSize = catalogSize
    }

    /// Per-source budgets for a total retrieval budget `b`.
    public static func split(_ b: Int) -> Budgets {
        Budgets(similarPerItem: UInt32(max(1, Int(Double(b) * 0.15 / 10))), genre: UInt32(max(1, Int(Double(b) * 0.15))),
                country: UInt32(max(1, Int(Double(b) * 0.1))), popular: UInt32(max(1, Int(Double(b) * 0.1))),
                search: UInt32(max(1, b / 2)))
    }

    struct Config: Sendable {
        let name: String
        let budget: Int
        let budgets: Budgets?
        let sources: [Source]
    }

    public func run(heldOut: HeldOut, users: [UInt64], progress: (@Sendable (String) -> Void)? = nil) async -> [EvalRow] {
        let maxK = ks.max() ?? 10
        var configs: [Config] = budgets.map { Config(name: "two-stage", budget: $0, budgets: Self.split($0), sources: []) }
        configs.append(Config(name: "exhaustive", budget: 0, budgets: Budgets(search: UInt32(maxK)), sources: [.search]))
        configs.append(Config(name: "popularity", budget: 0, budgets: Budgets(popular: UInt32(maxK)), sources: [.popular]))
        var rows: [EvalRow] = []
        for c in configs {
            progress?("eval: \(c.name)\(c.budget > 0 ? " budget \(c.budget)" : "") over \(users.count) users")
            rows.append(await evaluate(c, heldOut: heldOut, users: users, k: maxK))
        }
        return rows
    }

    func evaluate(_ c: Config, heldOut: HeldOut, users: [UInt64], k: Int) async -> EvalRow {
        let client = RecommenderClient(channel: channel)
        let model = self.model, timeout = self.timeout
        typealias Outcome = (user: UInt64, items: [UInt64]?, ms: Double, degraded: Bool)
        var outcomes: [Outcome] = []
        await withTaskGroup(of: Outcome.self) { group in
            var next = 0
            func add() {
                guard next < users.count else { return }
                let u = users[next]
                next += 1
                group.addTask {
                    let t0 = ContinuousClock.now
                    let req = RecommendRequest(userID: u, k: UInt32(k), budgets: c.budgets, model: model, diversityLambda: 1, sources: c.sources)
                    do {
                        let r = try await client.recommend(req, timeout: timeout)
                        let d = ContinuousClock.now - t0
                        return (u, r.items.map(\.itemID), Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1000,
                                r.coverage?.degraded ?? false)
                    } catch {
                        return (u, nil, 0, false)
                    }
                }
            }
            for _ in 0 ..< max(1, concurrency) { add() }
            while let o = await group.next() {
                outcomes.append(o)
                add()
            }
        }
        var sums: [Int: [String: Double]] = [:]
        var latencies: [Double] = []
        var distinct = Set<UInt64>()
        var ok = 0
        for o in outcomes {
            guard let items = o.items else { continue }
            ok += 1
            latencies.append(o.ms)
            let relevant = heldOut.relevant[o.user] ?? []
            let rel = RankingMetrics.relevance(items, relevant: relevant)
            for kk in ks {
                distinct.formUnion(items.prefix(kk))
                var m = sums[kk] ?? [:]
                m["precision", default: 0] += RankingMetrics.precision(rel, k: kk)
                m["recall", default: 0] += RankingMetrics.recall(rel, k: kk, relevantCount: relevant.count)
                m["map_common", default: 0] += RankingMetrics.averagePrecision(rel, k: kk, relevantCount: relevant.count)
                m["map_course", default: 0] += RankingMetrics.averagePrecisionCourse(rel, n: kk)
                m["ndcg", default: 0] += RankingMetrics.ndcg(rel, k: kk, relevantCount: relevant.count)
                sums[kk] = m
            }
        }
        var metrics: [String: [String: Double]] = [:]
        for (kk, m) in sums { metrics[String(kk)] = m.mapValues { ok > 0 ? $0 / Double(ok) : 0 } }
        return EvalRow(name: c.name, budget: c.budget, users: ok, failed: outcomes.count - ok, degraded: outcomes.filter(\.degraded).count,
                       metrics: metrics, catalogCoverage: catalogSize.map { Double(distinct.count) / Double($0) },
                       distinctItems: distinct.count, latencyP50Ms: RankingMetrics.quantile(latencies, 0.5),
                       latencyP99Ms: RankingMetrics.quantile(latencies, 0.99))
    }
}
