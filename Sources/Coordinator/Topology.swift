public import Foundation

/// The topology file (JSON, documented in docs/operations.md): where the table set
/// lives, the replicas of every shard, the coordinators, and optional coordinator settings.
///
/// ```json
/// { "tables": "/path/to/ROOT",
///   "shards": [ ["127.0.0.1:7101", "127.0.0.1:7201"], ["127.0.0.1:7102", "127.0.0.1:7202"] ],
///   "coordinators": ["127.0.0.1:7000"] }
/// ```
public struct Topology: Sendable, Equatable {
    public var tables: String?
    /// `shards[i]` = the replicas (`host:port`) of shard i.
    public var shards: [[String]]
    public var coordinators: [String]
    /// Optional coordinator settings (`"coordinator": {...}`); absent keys keep their defaults.
    public var settings: CoordinatorSettings

    public var shardCount: Int { shards.count }

    public init(tables: String? = nil, shards: [[String]], coordinators: [String] = [], settings: CoordinatorSettings = CoordinatorSettings()) {
        self.tables = tables; self.shards = shards; self.coordinators = coordinators; self.settings = settings
    }

    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Reads and validates a topology file.
    /// - Throws: `Topology.Error` naming the file and the offending key.
    public static func load(path: String) throws -> Topology {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Error(description: "\(path): cannot read the topology file")
        }
        do { return try parse(data) } catch let e as Error {
            throw Error(description: "\(path): \(e.description)")
        }
    }

    public static func parse(_ data: Data) throws -> Topology {
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: data) } catch {
            throw Error(description: "not valid JSON\(jsonErrorPosition(error, in: data))")
        }
        guard let obj = json as? [String: Any] else { throw Error(description: "the top level must be a JSON object") }
        let known: Set<String> = ["tables", "shards", "coordinators", "coordinator", "admin", "model", "rankers", "query_tower", "netns"]
        for k in obj.keys where !known.contains(k) {
            throw Error(description: "unknown key '\(k)' (known: \(known.sorted().joined(separator: ", ")))")
        }
        // "rankers": {"NAME": "FILE"}: the launch scripts pass them as --ranker NAME=FILE.
        if let r = obj["rankers"], !(r is [String: String]) {
            throw Error(description: "'rankers' must be an object of NAME: \"model file\" strings")
        }
        // "query_tower": the tower's weights; the launch scripts pass it as --query-tower FILE.
        if let q = obj["query_tower"], !(q is String) {
            throw Error(description: "'query_tower' must be the path of the query tower's weights (.safetensors)")
        }
        let tables = obj["tables"] as? String
        if obj["tables"] != nil && tables == nil { throw Error(description: "'tables' must be a string path") }
        guard let rawShards = obj["shards"] as? [Any], !rawShards.isEmpty else {
            throw Error(description: "'shards' must be a non-empty array of replica lists")
        }
        var shards: [[String]] = []
        for (i, r) in rawShards.enumerated() {
            guard let replicas = r as? [String], !replicas.isEmpty else {
                throw Error(description: "shards[\(i)] must be a non-empty array of \"host:port\" strings")
            }
            for (j, a) in replicas.enumerated() where !isHostPort(a) {
                throw Error(description: "shards[\(i)][\(j)] = '\(a)' is not host:port")
            }
            shards.append(replicas)
        }
        let coordinators = obj["coordinators"] as? [String] ?? []
        for (j, a) in coordinators.enumerated() where !isHostPort(a) {
            throw Error(description: "coordinators[\(j)] = '\(a)' is not host:port")
        }
        var settings = CoordinatorSettings()
        if let c = obj["coordinator"] {
            guard let c = c as? [String: Any] else { throw Error(description: "'coordinator' must be an object") }
            try settings.apply(c)
        }
        return Topology(tables: tables, shards: shards, coordinators: coordinators, settings: settings)
    }

    /// " at line L, column C: <what>" from Foundation's "… around character N." (a character
    /// offset into the text), or the error's own description when it names no position.
    static func jsonErrorPosition(_ error: any Swift.Error, in data: Data) -> String {
        let info = (error as NSError).userInfo["NSDebugDescription"] as? String ?? "\(error)"
        guard let r = info.range(of: "character "), let n = Int(info[r.upperBound...].prefix { $0.isNumber }) else { return " (\(info))" }
        var line = 1, column = 1
        for ch in String(decoding: data, as: UTF8.self).prefix(n) {
            if ch == "\n" { line += 1; column = 1 } else { column += 1 }
        }
        let what = info.components(separatedBy: " around").first ?? info
        return " at line \(line), column \(column): \(what)"
    }

    static func isHostPort(_ s: String) -> Bool {
        guard let colon = s.lastIndex(of: ":"), let p = Int(s[s.index(after: colon)...]) else { return false }
        return p > 0 && p < 65536 && colon != s.startIndex
    }
}

/// Coordinator settings with their defaults (overridable in the topology's `"coordinator"` object).
public struct CoordinatorSettings: Sendable, Equatable {
    /// Deadline when the caller sends no `grpc-timeout`.
    public var defaultDeadlineMs: Double = 200
    /// Default per-source budgets.
    public var similarPerItem = 10
    public var genreBudget = 60
    public var countryBudget = 50
    public var popularBudget = 50
    public var searchBudget = 200
    /// How many recent items feed the item→similar source.
    public var recentItems = 10
    /// Default MMR λ (1 = relevance only).
    public var diversityLambda: Float = 1.0
    /// Half-life of the freshness boost when a request sets none (seconds).
    public var freshnessHalfLifeSeconds: Double = 7 * 86_400
    /// Upper bounds accepted in requests.
    public var maxK = 1000
    public var maxBudget = 10_000
    /// Hedge a straggler after this quantile of the replica's recent latencies (and at least
    /// `minHedgeDelayMs`).
    public var hedgeQuantile = 0.95
    public var minHedgeDelayMs: Double = 2
    /// Eject a replica after this many consecutive failures, for `ejectionMs` (doubling while it
    /// keeps failing, up to 10 s); it comes back after a health check says SERVING.
    public var ejectAfterFailures = 3
    public var ejectionMs: Double = 1000
    /// The longest one shard call may take, whatever the caller's deadline (a long client deadline
    /// must not turn a stuck shard into a slow answer).
    public var maxShardCallMs: Double = 100
    /// How often replicas are health-checked (and their versions read).
    public var healthIntervalMs: Double = 250
    /// Table names.
    public var itemsTable = "items"
    public var usersTable = "users"
    public var profilesTable = "profiles"
    public var attributesTable = "attributes"
    /// Bytes of item rows the coordinator keeps from its Lookups (per table-set version; 0: off).
    public var rowCacheBytes = 64 << 20
    /// Each shard returns k/S + `searchShardSigma`·sqrt(k·(1/S)·(1−1/S)) hits (capped at k) of
    /// a Search for k: the global top k is hash-spread over S shards (binomial), so at 4σ a shard
    /// holds more than that with probability ~3e-5, and the search source then misses only its
    /// own tail. Negative: every shard returns k (exactly the global top k, always).
    public var searchShardSigma: Double = 4
    /// Ranked lists and users (vector + profile) the coordinator keeps per version (0: off).
    public var listCacheEntries = 200_000
    public var userCacheEntries = 200_000
    /// Bytes the user cache may hold (vectors, recent items, compact histories; 0: off): cleared
    /// when full, like `userCacheEntries`.
    public var userCacheBytes = 256 << 20
    /// Sessions (`RecordEvents`, `SessionStore`): the latest events kept per user (the oldest go
    /// first), the users kept (the least recently updated go first; 0: sessions off), and how
    /// long an event counts (seconds, by its timestamp).
    public var sessionEventsPerUser = 50
    public var sessionUsers = 1_000_000
    public var sessionTTLSeconds = 86_400

    public init() {}

    /// The most `session_events_per_user` accepted.
    public static let maxSessionEventsPerUser = 10_000

    mutating func apply(_ c: [String: Any]) throws {
        func num(_ k: String) throws -> Double? {
            guard let v = c[k] else { return nil }
            guard let d = (v as? NSNumber)?.doubleValue, d >= 0 else { throw Topology.Error(description: "coordinator.\(k) must be a non-negative number") }
            return d
        }
        func int(_ k: String) throws -> Int? { try num(k).map { Int($0) } }
        let known: Set<String> = ["default_deadline_ms", "similar_per_item", "genre_budget", "country_budget", "popular_budget",
                                  "search_budget", "recent_items", "diversity_lambda", "freshness_half_life_s", "hedge_quantile", "min_hedge_delay_ms",
                                  "eject_after_failures", "ejection_ms", "health_interval_ms", "max_shard_call_ms", "row_cache_mb",
                                  "list_cache_entries", "user_cache_entries", "user_cache_mb", "search_shard_sigma",
                                  "session_events_per_user", "session_users", "session_ttl_s"]
        for k in c.keys where !known.contains(k) {
            throw Topology.Error(description: "unknown key 'coordinator.\(k)' (known: \(known.sorted().joined(separator: ", ")))")
        }
        if let v = try num("default_deadline_ms") { defaultDeadlineMs = max(1, v) }
        if let v = try int("similar_per_item") { similarPerItem = v }
        if let v = try int("genre_budget") { genreBudget = v }
        if let v = try int("country_budget") { countryBudget = v }
        if let v = try int("popular_budget") { popularBudget = v }
        if let v = try int("search_budget") { searchBudget = v }
        if let v = try int("recent_items") { recentItems = v }
        if let v = try num("diversity_lambda") {
            guard v <= 1 else { throw Topology.Error(description: "coordinator.diversity_lambda must be in [0, 1]") }
            diversityLambda = Float(v)
        }
        if let v = try num("freshness_half_life_s") {
            guard v > 0 else { throw Topology.Error(description: "coordinator.freshness_half_life_s must be > 0") }
            freshnessHalfLifeSeconds = v
        }
        if let v = try num("hedge_quantile") { hedgeQuantile = min(1, v) }
        if let v = try num("min_hedge_delay_ms") { minHedgeDelayMs = v }
        if let v = try int("eject_after_failures") { ejectAfterFailures = max(1, v) }
        if let v = try num("ejection_ms") { ejectionMs = v }
        if let v = try num("health_interval_ms") { healthIntervalMs = max(10, v) }
        if let v = try num("max_shard_call_ms") { maxShardCallMs = max(1, v) }
        if let v = try num("row_cache_mb") { rowCacheBytes = Int(v * 1_048_576) }
        if let v = try int("list_cache_entries") { listCacheEntries = v }
        if let v = try int("user_cache_entries") { userCacheEntries = v }
        if let v = try num("user_cache_mb") { userCacheBytes = Int(v * 1_048_576) }
        if let v = try int("session_events_per_user") {
            guard v >= 1 && v <= Self.maxSessionEventsPerUser else {
                throw Topology.Error(description: "coordinator.session_events_per_user must be in 1...\(Self.maxSessionEventsPerUser)")
            }
            sessionEventsPerUser = v
        }
        if let v = try int("session_users") { sessionUsers = v }
        if let v = try int("session_ttl_s") {
            guard v >= 1 else { throw Topology.Error(description: "coordinator.session_ttl_s must be >= 1") }
            sessionTTLSeconds = v
        }
        if let v = c["search_shard_sigma"] {
            guard let d = (v as? NSNumber)?.doubleValue, d.isFinite else { throw Topology.Error(description: "coordinator.search_shard_sigma must be a number") }
            searchShardSigma = d
        }
    }
}
