public import ShardRankWire
public import RPCCore
public import RPCTransport

/// Open loop at a rate, or closed loop at a concurrency.
public enum LoadMode: Sendable, Equatable {
    /// `rate` requests per second in total, spread over the workers.
    case open(rate: Double, arrivals: Arrivals)
    /// `concurrency` requests in flight in total, each sent as soon as the previous one ended.
    case closed(concurrency: Int)
}

/// Everything one run needs; built once by the command line (or a test) and validated by `validate()`.
public struct LoadTestConfiguration: Sendable {
    /// `host:port` of a shard or a coordinator.
    public var target: String
    public var mode: LoadMode = .closed(concurrency: 8)
    /// Worker threads, each with its own event loop and its own connections (h2load's `-t`).
    public var threads = 1
    /// Connections in total, spread over the workers (at least one each; h2load's `-c`).
    public var connections = 2
    public var warmup: Duration = .seconds(1)
    public var duration: Duration = .seconds(10)
    public var mix: RequestMix = RequestMix([(.lookup, 1)])
    /// Per-request deadline (sent as `grpc-timeout`, enforced locally too). Bounds the drain at the end.
    public var timeout: Duration = .seconds(5)
    /// Open loop: most requests in flight at once; beyond it sends wait (and their latency grows).
    public var maxInFlight = 10_000
    public var seed: UInt64 = 1
    /// Keep one (operation, intended offset, latency, status) record per measured request.
    public var keepLatencyLog = false

    // Shard targets.
    public var table = "items"
    /// Ids per Lookup.
    public var batch = 256
    /// Wanted dtype of Lookup rows (`.unspecified`: the table's own).
    public var dtype: DType = .unspecified
    /// Search: top-k; Recommend/Rank/Similar: items wanted. nil: 100 for Search, 10 otherwise.
    public var k: Int?
    /// Query vectors per Search call.
    public var queries = 1
    /// Search mode asked for (`.unspecified`: the table set's default).
    public var searchMode: SearchMode = .unspecified
    /// Query dimension; nil: the table's, from `Info`.
    public var dim: Int?
    /// Zipf exponent of item and user ids (0: uniform).
    public var zipf = 0.99
    /// Item ids are the range of `idSpace` ids from 0 (a shard: a synthetic shard's ids) or from 1
    /// (a coordinator), the first the hottest. nil (and no `ids`): the ids the target holds — a
    /// shard's own ids of `table` (its `Info` and `Ids`), a coordinator's items table's id range
    /// (its `Info`).
    public var idSpace: Int?
    /// Item ids to draw from instead (the first is the hottest).
    public var ids: [UInt64]?

    // Coordinator targets.
    /// User ids are `1 ... users`, Zipf-skewed; nil: the id range of the coordinator's users
    /// table (its `Info`).
    public var users: Int?
    /// Candidate ids per Rank call.
    public var candidates = 100
    /// Recommend/Rank: the ranking model ("" = the coordinator's default, dot).
    public var model = ""
    /// Recommend: which user vector to ask for (`auto`: the coordinator decides).
    public var userVector: UserVectorMode = .auto
    /// Record: users per call; 1 sends RecordEvents, more sends RecordEventsBatch (one view each).
    public var recordBatch = 1

    /// TLS for every connection (nil: cleartext), and metadata sent with every call (a token).
    public var tls: TLSContextSource?
    public var tlsServerName: String?
    public var metadata = Metadata()

    public init(target: String) { self.target = target }

    /// A client configuration with this run's TLS and metadata.
    func clientConfiguration() -> ClientConfiguration {
        var cc = ClientConfiguration()
        cc.tls = tls
        cc.tlsServerName = tlsServerName
        cc.metadata = metadata
        return cc
    }

    /// The addresses `target` names: one, or (coordinators only) several separated by commas,
    /// over which users are routed with `CoordinatorRing` (a user's requests always reach the
    /// same coordinator, which holds the user's session).
    public var targets: [String] { target.split(separator: ",").map { String($0.filter { $0 != " " }) } }

    /// Checks every value; the message names the flag.
    public func validate() throws(LoadTestError) {
        func need(_ ok: Bool, _ m: @autoclosure () -> String) throws(LoadTestError) { if !ok { throw LoadTestError(m()) } }
        try need(!targets.isEmpty && targets.allSatisfy { $0.contains(":") }, "--target '\(target)' is not HOST:PORT[,HOST:PORT...]")
        try need(targets.count == 1 || !mix.targetsShard, "--target names \(targets.count) servers: several targets are for coordinators only")
        switch mode {
        case .open(let rate, _):
            try need(rate.isFinite && rate > 0, "--rate must be a positive number of requests per second (got \(rate))")
            try need(rate <= 10_000_000, "--rate \(rate) is more than 10M requests/s")
        case .closed(let c):
            try need(c >= 1 && c <= 100_000, "--concurrency must be 1...100000 (got \(c))")
            try need(c >= threads, "--concurrency \(c) is less than --threads \(threads): every worker needs at least one request in flight")
        }
        try need(threads >= 1 && threads <= 256, "--threads must be 1...256 (got \(threads))")
        try need(connections >= threads, "--connections \(connections) is less than --threads \(threads): every worker needs a connection")
        try need(connections <= 10_000, "--connections must be at most 10000")
        try need(warmup >= .zero, "--warmup must be ≥ 0 s")
        try need(duration > .zero, "--duration must be > 0 s")
        try need(duration <= .seconds(24 * 3600), "--duration must be at most a day")
        try need(timeout > .zero, "--timeout-ms must be > 0")
        try need(maxInFlight >= 1, "--max-in-flight must be ≥ 1")
        try need(zipf.isFinite && zipf >= 0 && zipf <= 10, "--zipf must be in 0...10 (got \(zipf))")
        if let k { try need(k >= 1 && k <= 10_000, "--k must be 1...10000 (got \(k))") }
        if mix.targetsShard {
            try need(!table.isEmpty, "--table is empty")
            if mix.contains(.lookup) { try need(batch >= 1 && batch <= 100_000, "--batch must be 1...100000 ids per Lookup (got \(batch))") }
            if mix.contains(.search) { try need(queries >= 1 && queries <= 1024, "--queries must be 1...1024 (got \(queries))") }
            if let dim { try need(dim >= 1 && dim <= 65_536, "--dim must be 1...65536 (got \(dim))") }
        } else {
            if let users { try need(users >= 1, "--user-space must be ≥ 1 (got \(users))") }
            if mix.contains(.rank) { try need(candidates >= 1 && candidates <= 100_000, "--candidates must be 1...100000 (got \(candidates))") }
            try need(recordBatch >= 1 && recordBatch <= 1000, "--record-batch must be 1...1000 users per call (got \(recordBatch))")
            try need(recordBatch == 1 || targets.count == 1,
                     "--record-batch \(recordBatch) sends each batch to one coordinator: give one --target (users of a batch are not routed over several)")
        }
        if let idSpace { try need(idSpace >= 1, "--id-space must be ≥ 1 (got \(idSpace))") }
        if let ids { try need(!ids.isEmpty, "--ids-from holds no ids") }
        try need(!(idSpace != nil && ids != nil), "--id-space and --ids-from are exclusive")
    }

    /// Parses the lines of an ids file: one unsigned id per line (or separated by commas or
    /// spaces); `#` starts a comment. Throws naming the line of a bad token.
    public static func parseIDs(_ text: String, file: String) throws(LoadTestError) -> [UInt64] {
        var out: [UInt64] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let body = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            for tok in body.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" || $0 == "\r" }) {
                guard let v = UInt64(tok) else { throw LoadTestError("\(file):\(n + 1): '\(tok)' is not an unsigned integer id") }
                out.append(v)
            }
        }
        if out.isEmpty { throw LoadTestError("\(file): no ids") }
        return out
    }
}
