import Foundation
import ArgumentParser
import RPCCore
import RPCTransport
import ShardRankClient
import ShardRankWire

/// `shardrank recommend`: the CLI client of `Recommender/Recommend`.
struct RecommendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "recommend", abstract: "Ask a coordinator for recommendations.")

    @Option(help: "Coordinator address HOST:PORT.")
    var target: String

    @Option(help: "User id.")
    var user: UInt64

    @Option(help: "How many items.")
    var k: UInt32 = 10

    @Option(help: "Ranking model NAME: dot, mlp or a learned ranker the coordinator serves (default: the coordinator's, dot).")
    var model: String?

    @Option(help: "MMR trade-off in (0, 1], 1 = relevance only (default: the coordinator's diversity_lambda).")
    var lambda: Float?

    @Option(help: "At most this many items per genre (0 = no cap).")
    var genreCap: UInt32 = 0

    @Option(help: "Freshness boost: add W * 2^(-age / half-life) to each score (0 = off).")
    var freshnessWeight: Float = 0

    @Option(help: "Half-life of the freshness boost in seconds (default: the coordinator's freshness_half_life_s, 7 days).")
    var freshnessHalfLifeS: UInt32?

    @Option(help: "'Now' for item ages in Unix seconds (default: the coordinator's clock).")
    var now: Int64?

    @Option(name: .customLong("recent-ids"), help: "Comma-separated recent item ids (overrides the stored profile).")
    var recent: String?

    @Option(name: .customLong("exclude-ids"), help: "Comma-separated item ids never to return.")
    var exclude: String?

    @Option(help: "User vector: auto (the query tower's for a user with session events or without a stored vector), stored or tower.")
    var userVector: String = "auto"

    @Option(help: timeoutHelp)
    var timeoutMs: Int = clientTimeoutMs

    @OptionGroup var security: ClientSecurityOptions

    @Flag(help: "Send a sampled W3C traceparent with a new trace id and print 'trace_id ID' on stderr, to find this request's spans in the logs of processes with tracing on (docs/operations.md, Tracing).")
    var trace = false

    @Flag(help: "Print JSON.")
    var json = false

    @Option(name: .customLong("items-csv"), help: ArgumentHelp("items.csv (item_id,genres,timestamp[,title]) to show each item's genres and title.", valueName: "file"))
    var items: String?

    func validate() throws {
        guard timeoutMs >= 1 else { throw ValidationError("--timeout-ms must be ≥ 1 (got \(timeoutMs))") }
    }

    func run() async throws {
        func ids(_ s: String?, _ flag: String) throws -> [UInt64] {
            guard let s else { return [] }
            return try s.split(separator: ",").map {
                guard let v = UInt64($0.trimmingCharacters()) else { throw ValidationError("\(flag): '\($0)' is not an unsigned integer") }
                return v
            }
        }
        let ctx = RecommendContext(recentItemIDs: try ids(recent, "--recent-ids"), excludeIDs: try ids(exclude, "--exclude-ids"))
        guard let mode = UserVectorMode.allCases.first(where: { $0.description == userVector }) else {
            throw ValidationError("--user-vector: '\(userVector)' is not auto, stored or tower")
        }
        let req = RecommendRequest(userID: user, context: ctx, k: k, model: model ?? "", diversityLambda: lambda ?? 0, genreCap: genreCap,
                                   freshnessWeight: freshnessWeight, freshnessHalfLifeSeconds: freshnessHalfLifeS ?? 0, nowUnixSeconds: now ?? 0,
                                   userVector: mode)
        let timeout = Duration.milliseconds(timeoutMs)
        var metadata = Metadata()
        if trace {
            let ids = Tracer(sampleRate: 1, service: "recommend", emit: { _ in })
            let parent = TraceParent(traceID: ids.newTraceID(), parentID: ids.newSpanID(), sampled: true)
            metadata.add("traceparent", parent.header)
            Tracer.stderr("trace_id \(parent.traceID.hex)")
        }
        let r = try await withChannel(clientOptions(target: target, timeoutMs: timeoutMs, security: security)) { [metadata] (ch) throws(RPCError) in
            try await RecommenderClient(channel: ch).recommend(req, metadata: metadata, timeout: timeout)
        }
        if json {
            let items = r.items.map { "{\"item_id\":\($0.itemID),\"score\":\($0.score),\"sources\":[\($0.sources.map { "\"\($0)\"" }.joined(separator: ","))]}" }
            let cov = r.coverage ?? Coverage()
            let t = r.timings ?? StageTimings()
            print("{\"user_id\":\(user),\"version\":\(r.version),\"cold_start\":\(r.coldStart),\"candidates\":\(r.candidates),"
                + "\"user_vector_source\":\"\(r.userVectorSource)\",\"session_events\":\(r.sessionEvents),\"items\":[\(items.joined(separator: ","))],"
                + "\"timings_us\":{\"retrieve\":\(t.retrieveMicros),\"filter\":\(t.filterMicros),\"gather\":\(t.gatherMicros),\"rank\":\(t.rankMicros),\"post_rank\":\(t.postRankMicros),\"total\":\(t.totalMicros)},"
                + "\"coverage\":{\"shards_asked\":\(cov.shardsAsked),\"shards_answered\":\(cov.shardsAnswered),\"degraded\":\(cov.degraded),\"reasons\":[\(cov.degradedReasons.map { "\"\($0.replacingOccurrences(of: "\"", with: "'"))\"" }.joined(separator: ","))]}}")
            try Self.exitForIncomplete(r)
            return
        }
        let info = try items.map { try Self.itemInfo(path: $0, ids: Set(r.items.map(\.itemID))) } ?? [:]
        print("user \(user)  version \(r.version)  candidates \(r.candidates)  user vector \(r.userVectorSource)"
            + "\(r.sessionEvents > 0 ? "  session events \(r.sessionEvents)" : "")\(r.coldStart ? "  (cold start)" : "")")
        let srcWidth = 28
        let head: [String] = ["rank".leftPadded(4), "item".leftPadded(10), "score".leftPadded(9), "sources".padding(srcWidth)]
        let tail: String = items == nil ? "" : "  genres / title"
        print(head.joined(separator: "  ") + tail)
        for (i, it) in r.items.enumerated() {
            let extra = info[it.itemID].map { "  \($0.genres)\($0.title.isEmpty ? "" : "  \($0.title)")" } ?? ""
            let cells: [String] = [String(i + 1).leftPadded(4), String(it.itemID).leftPadded(10), format3(it.score).leftPadded(9),
                                   it.sources.map(\.description).joined(separator: ",").padding(srcWidth)]
            print(cells.joined(separator: "  ") + extra)
        }
        if let t = r.timings {
            print("timings µs: retrieve \(t.retrieveMicros)  filter \(t.filterMicros)  gather \(t.gatherMicros)  rank \(t.rankMicros)  post-rank \(t.postRankMicros)  total \(t.totalMicros)")
        }
        if let c = r.coverage, c.degraded || c.shardsAnswered < c.shardsAsked {
            print("DEGRADED: \(c.shardsAnswered)/\(c.shardsAsked) shards answered; " + c.degradedReasons.joined(separator: "; "))
        }
        try Self.exitForIncomplete(r)
    }

    /// The answer is printed either way; a degraded answer exits 4, an empty one 5 (scripts must
    /// not take either for a full recommendation).
    static func exitForIncomplete(_ r: RecommendResponse) throws {
        if let c = r.coverage, c.degraded || c.shardsAnswered < c.shardsAsked {
            FileHandleStderr.write("shardrank recommend: the answer is degraded (\(c.shardsAnswered) of \(c.shardsAsked) shards answered)\n")
            throw ExitCode(4)
        }
        if r.items.isEmpty {
            FileHandleStderr.write("shardrank recommend: the answer is empty (version \(r.version), \(r.candidates) candidates)\n")
            throw ExitCode(5)
        }
    }
}

extension RecommendCommand {
    /// Genres and title of `ids` from an items.csv (read line by line; only the wanted rows kept).
    static func itemInfo(path: String, ids: Set<UInt64>) throws -> [UInt64: (genres: String, title: String)] {
        guard let f = fopen(path, "r") else { throw ValidationError("--items-csv: cannot open \(path)") }
        defer { fclose(f) }
        var out: [UInt64: (genres: String, title: String)] = [:]
        var line: UnsafeMutablePointer<CChar>?
        var cap = 0
        var header: [String] = []
        while getline(&line, &cap, f) > 0 {
            let text = String(cString: line!).trimmingCharacters(in: .newlines)
            let fields = text.split(separator: ",", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
            if header.isEmpty { header = fields; continue }
            guard let iid = header.firstIndex(of: "item_id"), iid < fields.count, let id = UInt64(fields[iid]), ids.contains(id) else { continue }
            let g = header.firstIndex(of: "genres").flatMap { $0 < fields.count ? fields[$0] : nil } ?? ""
            let t = header.firstIndex(of: "title").flatMap { $0 < fields.count ? fields[$0] : nil } ?? ""
            out[id] = (g, t)
        }
        free(line)
        return out
    }
}
