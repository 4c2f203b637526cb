public import ShardRankWire

/// One request, ready to send.
public enum PlannedRequest: Sendable {
    case lookup(LookupRequest)
    case search(SearchRequest)
    case recommend(RecommendRequest)
    case rank(RankRequest)
    case similar(SimilarRequest)
    case record(RecordEventsRequest)
    case recordBatch(RecordEventsBatchRequest)

    public var operation: LoadOperation {
        switch self {
        case .lookup: .lookup
        case .search: .search
        case .recommend: .recommend
        case .rank: .rank
        case .similar: .similar
        case .record, .recordBatch: .record
        }
    }
}

/// The ids a run draws from, Zipf-ranked: a list (rank 1 = its first id) or a range
/// `first ... first + count - 1` (rank 1 = `first`), with a line saying where they come from.
public struct IDSpace: Sendable, Equatable {
    /// Draw from these ids instead of a range (the first is the hottest).
    public var ids: [UInt64]?
    /// The range's first id (unused with `ids`).
    public var first: UInt64
    /// How many ids (ranks).
    public var count: Int
    /// Where they come from, for the report (e.g. "2503 ids of table 'items' held by shard 0 of 2").
    public var source: String

    public init(first: UInt64, count: Int, source: String) {
        self.ids = nil; self.first = first; self.count = max(1, count); self.source = source
    }

    public init(ids: [UInt64], source: String) {
        self.ids = ids; self.first = ids.first ?? 0; self.count = max(1, ids.count); self.source = source
    }

    /// The id of 0-based rank `r` (< `count`).
    @inline(__always) public func id(rank r: Int) -> UInt64 {
        if let ids { return ids[r] }
        return first &+ UInt64(r)
    }

    /// `first...last` of a range ("" for a list).
    public var rangeText: String { ids == nil ? "\(first)...\(first &+ UInt64(count - 1))" : "" }
}

/// What the generator needs to know about the target, resolved once before the run.
public struct RequestShape: Sendable {
    public var mix: RequestMix
    public var table: String
    public var batch: Int
    public var dtype: DType
    public var k: Int?
    public var queries: Int
    public var searchMode: SearchMode
    /// Search query dimension.
    public var dim: Int
    public var zipf: Double
    /// Item ids (Lookup, Rank candidates, Similar, Record).
    public var items: IDSpace
    /// User ids (Recommend, Rank, Record).
    public var users: IDSpace
    public var candidates: Int
    public var model: String
    public var userVector: UserVectorMode
    public var recordBatch: Int

    public init(configuration c: LoadTestConfiguration, dim: Int, items: IDSpace, users: IDSpace) {
        mix = c.mix; table = c.table; batch = c.batch; dtype = c.dtype; k = c.k; queries = c.queries; searchMode = c.searchMode
        self.dim = dim; zipf = c.zipf; self.items = items; self.users = users
        candidates = c.candidates; model = c.model; userVector = c.userVector; recordBatch = c.recordBatch
    }

    /// Spaces from counts alone (tests, tools): item ids are `c.ids`, else `idSpace` ids from 0
    /// against a shard and from 1 against a coordinator; users are `1...c.users` (else `1...idSpace`).
    public init(configuration c: LoadTestConfiguration, dim: Int, idSpace: Int) {
        let items = c.ids.map { IDSpace(ids: $0, source: "--ids-from") }
            ?? IDSpace(first: c.mix.targetsShard ? 0 : 1, count: idSpace, source: "\(c.mix.targetsShard ? 0 : 1)...\((c.mix.targetsShard ? 0 : 1) + idSpace - 1) (--id-space \(idSpace))")
        let n = c.users ?? idSpace
        self.init(configuration: c, dim: dim, items: items, users: IDSpace(first: 1, count: n, source: "1...\(n) (--user-space \(n))"))
    }

    /// Item ids: the table's for Lookup; the items' for Rank, Similar and Record.
    public var usesItemIDs: Bool { mix.entries.contains { $0.operation != .search && $0.operation != .recommend } }
    /// User ids: Recommend, Rank, Record.
    public var usesUsers: Bool { mix.entries.contains { [.recommend, .rank, .record].contains($0.operation) } }
}

/// Draws requests: the operation from the mix, item and user ids Zipf-skewed over their
/// `IDSpace`s (rank 1 the hottest), Search queries uniform in [-1, 1). Not thread-safe: one per task.
public struct RequestGenerator: Sendable {
    public let shape: RequestShape
    private var rng: Xoshiro256
    private let items: ZipfSampler
    private let userSampler: ZipfSampler

    public init(shape: RequestShape, seed: UInt64) {
        self.shape = shape
        rng = Xoshiro256(seed: seed)
        items = ZipfSampler(count: max(1, shape.items.count), exponent: shape.zipf)
        userSampler = ZipfSampler(count: max(1, shape.users.count), exponent: shape.zipf)
    }

    public mutating func itemID() -> UInt64 { shape.items.id(rank: items.sample(using: &rng) - 1) }

    public mutating func userID() -> UInt64 { shape.users.id(rank: userSampler.sample(using: &rng) - 1) }

    public mutating func next() -> PlannedRequest {
        let op = shape.mix.entries.count == 1 ? shape.mix.entries[0].operation : shape.mix.pick(rng.nextUnit())
        switch op {
        case .lookup:
            var ids = [UInt64](); ids.reserveCapacity(shape.batch)
            for _ in 0 ..< shape.batch { ids.append(itemID()) }
            return .lookup(LookupRequest(table: shape.table, ids: ids, dtype: shape.dtype))
        case .search:
            let n = shape.queries * shape.dim
            var q = [Float](); q.reserveCapacity(n)
            for _ in 0 ..< n { q.append(Float(rng.nextUnit() * 2 - 1)) }
            return .search(SearchRequest(table: shape.table, queries: q, dim: UInt32(shape.dim), k: UInt32(shape.k ?? 100),
                                         mode: shape.searchMode))
        case .recommend:
            return .recommend(RecommendRequest(userID: userID(), k: UInt32(shape.k ?? 10), model: shape.model, userVector: shape.userVector))
        case .rank:
            var c = [UInt64](); c.reserveCapacity(shape.candidates)
            for _ in 0 ..< shape.candidates { c.append(itemID()) }
            return .rank(RankRequest(userID: userID(), candidateIDs: c, model: shape.model, k: UInt32(shape.k ?? 10)))
        case .similar:
            return .similar(SimilarRequest(itemID: itemID(), k: UInt32(shape.k ?? 10)))
        case .record:
            // The coordinator refuses user 0 and item 0 (INVALID_ARGUMENT, counted like any error).
            if shape.recordBatch == 1 {
                return .record(RecordEventsRequest(userID: userID(), events: [Event(itemID: itemID(), kind: .view)]))
            }
            var users: [RecordEventsRequest] = []
            users.reserveCapacity(shape.recordBatch)
            for _ in 0 ..< shape.recordBatch {
                users.append(RecordEventsRequest(userID: userID(), events: [Event(itemID: itemID(), kind: .view)]))
            }
            return .recordBatch(RecordEventsBatchRequest(users: users))
        }
    }
}
