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
    /// Item ids are `0 ..< idSpace` unless `ids` is given.
    public var idSpace: Int
    public var ids: [UInt64]?
    public var users: Int
    public var candidates: Int
    public var model: String
    public var userVector: UserVectorMode
    public var recordBatch: Int

    public init(configuration c: LoadTestConfiguration, dim: Int, idSpace: Int) {
        mix = c.mix; table = c.table; batch = c.batch; dtype = c.dtype; k = c.k; queries = c.queries; searchMode = c.searchMode
        self.dim = dim; zipf = c.zipf; self.idSpace = c.ids?.count ?? idSpace; ids = c.ids
        users = c.users; candidates = c.candidates; model = c.model; userVector = c.userVector; recordBatch = c.recordBatch
    }
}

/// Draws requests: the operation from the mix, item and user ids Zipf-skewed (rank 1 → id 0,
/// or the first id of `ids`), Search queries uniform in [-1, 1). Not thread-safe: one per task.
public struct RequestGenerator: Sendable {
    public let shape: RequestShape
    private var rng: Xoshiro256
    private let items: ZipfSampler
    private let userSampler: ZipfSampler

    public init(shape: RequestShape, seed: UInt64) {
        self.shape = shape
        rng = Xoshiro256(seed: seed)
        items = ZipfSampler(count: max(1, shape.idSpace), exponent: shape.zipf)
        userSampler = ZipfSampler(count: max(1, shape.users), exponent: shape.zipf)
    }

    public mutating func itemID() -> UInt64 {
        let r = items.sample(using: &rng) - 1
        if let ids = shape.ids { return ids[r] }
        return UInt64(r)
    }

    public mutating func userID() -> UInt64 { UInt64(userSampler.sample(using: &rng) - 1) }

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
            // Item ids are ranks from 0; an event's item id must not be 0.
            if shape.recordBatch == 1 {
                return .record(RecordEventsRequest(userID: userID() + 1, events: [Event(itemID: itemID() + 1, kind: .view)]))
            }
            var users: [RecordEventsRequest] = []
            users.reserveCapacity(shape.recordBatch)
            for _ in 0 ..< shape.recordBatch {
                users.append(RecordEventsRequest(userID: userID() + 1, events: [Event(itemID: itemID() + 1, kind: .view)]))
            }
            return .recordBatch(RecordEventsBatchRequest(users: users))
        }
    }
}
