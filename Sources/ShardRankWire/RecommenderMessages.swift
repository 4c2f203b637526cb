internal import CProtobufC
internal import CShardRankProto
public import RPCCore

// Swift values of the `shardrank.v1.Recommender` messages.

/// A retrieval source (proto `shardrank.v1.Source`).
public enum Source: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case unspecified = 0, similar = 1, genre = 2, country = 3, popular = 4, search = 5, caller = 6
    public var description: String {
        switch self {
        case .unspecified: "unspecified"
        case .similar: "similar"
        case .genre: "genre"
        case .country: "country"
        case .popular: "popular"
        case .search: "search"
        case .caller: "caller"
        }
    }
}

/// Which user vector a Recommend searches and ranks with (proto `shardrank.v1.UserVectorMode`).
public enum UserVectorMode: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The query tower's when the coordinator has one and the user has session events, or has no
    /// stored vector but something for the tower to read; else the stored one.
    case auto = 0
    /// The users table's vector (built offline).
    case stored = 1
    /// Computed now by the coordinator's query tower (FAILED_PRECONDITION without one).
    case tower = 2
    public var description: String {
        switch self {
        case .auto: "auto"
        case .stored: "stored"
        case .tower: "tower"
        }
    }
}

/// Which user vector an answer used (proto `shardrank.v1.UserVectorSource`).
public enum UserVectorSource: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// None: cold start, ranked by retrieval scores.
    case none = 0
    case stored = 1
    case tower = 2
    public var description: String {
        switch self {
        case .none: "none"
        case .stored: "stored"
        case .tower: "tower"
        }
    }
}

public struct RecommendContext: Sendable, Hashable {
    public var recentItemIDs: [UInt64] = []
    public var country: String = ""
    public var genres: [String] = []
    public var excludeIDs: [UInt64] = []
    public init(recentItemIDs: [UInt64] = [], country: String = "", genres: [String] = [], excludeIDs: [UInt64] = []) {
        self.recentItemIDs = recentItemIDs; self.country = country; self.genres = genres; self.excludeIDs = excludeIDs
    }
}

public struct Budgets: Sendable, Hashable {
    public var similarPerItem: UInt32 = 0, genre: UInt32 = 0, country: UInt32 = 0, popular: UInt32 = 0, search: UInt32 = 0
    public init(similarPerItem: UInt32 = 0, genre: UInt32 = 0, country: UInt32 = 0, popular: UInt32 = 0, search: UInt32 = 0) {
        self.similarPerItem = similarPerItem; self.genre = genre; self.country = country; self.popular = popular; self.search = search
    }
}

public struct RecommendRequest: Sendable, Hashable {
    public var userID: UInt64
    public var context: RecommendContext?
    public var k: UInt32
    public var budgets: Budgets?
    public var model: String
    public var diversityLambda: Float
    public var minCoverage: Float
    public var genreCap: UInt32
    /// Only these retrieval sources (all when empty).
    public var sources: [Source]
    /// Freshness boost: `freshnessWeight * 2^(-age / halfLife)` added to each score (0 = off).
    public var freshnessWeight: Float
    /// Half-life of the boost in seconds (0 = the server default).
    public var freshnessHalfLifeSeconds: UInt32
    /// "Now" for item ages in Unix seconds (0 = the coordinator's clock).
    public var nowUnixSeconds: Int64
    /// Also return every candidate's ranking features (`RecommendResponse.features`).
    public var returnFeatures: Bool
    /// Which user vector to search and rank with. A value this build does not know decodes as
    /// `nil` (the coordinator refuses it, naming the field).
    public var userVector: UserVectorMode?

    public init(userID: UInt64, context: RecommendContext? = nil, k: UInt32 = 10, budgets: Budgets? = nil, model: String = "",
                diversityLambda: Float = 0, minCoverage: Float = 0, genreCap: UInt32 = 0, sources: [Source] = [],
                freshnessWeight: Float = 0, freshnessHalfLifeSeconds: UInt32 = 0, nowUnixSeconds: Int64 = 0, returnFeatures: Bool = false,
                userVector: UserVectorMode? = .auto) {
        self.userID = userID; self.context = context; self.k = k; self.budgets = budgets; self.model = model
        self.diversityLambda = diversityLambda; self.minCoverage = minCoverage; self.genreCap = genreCap; self.sources = sources
        self.freshnessWeight = freshnessWeight; self.freshnessHalfLifeSeconds = freshnessHalfLifeSeconds; self.nowUnixSeconds = nowUnixSeconds
        self.returnFeatures = returnFeatures; self.userVector = userVector
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> RecommendRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.RecommendRequest", unpack: shardrank__v1__recommend_request__unpack,
                          free: shardrank__v1__recommend_request__free_unpacked) { m in
            let p = m.pointee
            var ctx: RecommendContext?
            if let c = p.context?.pointee {
                ctx = RecommendContext(recentItemIDs: ProtoC.array(c.recent_item_ids, c.n_recent_item_ids), country: ProtoC.string(c.country),
                                       genres: (0 ..< c.n_genres).map { ProtoC.string(c.genres[$0]) },
                                       excludeIDs: ProtoC.array(c.exclude_ids, c.n_exclude_ids))
            }
            var budgets: Budgets?
            if let b = p.budgets?.pointee {
                budgets = Budgets(similarPerItem: b.similar_per_item, genre: b.genre, country: b.country, popular: b.popular, search: b.search)
            }
            return RecommendRequest(userID: p.user_id, context: ctx, k: p.k, budgets: budgets, model: ProtoC.string(p.model),
                                    diversityLambda: p.diversity_lambda, minCoverage: p.min_coverage, genreCap: p.genre_cap,
                                    sources: ProtoC.array(p.sources, p.n_sources).map { Source(rawValue: $0.rawValue) ?? .unspecified },
                                    freshnessWeight: p.freshness_weight, freshnessHalfLifeSeconds: p.freshness_half_life_s,
                                    nowUnixSeconds: p.now_unix_s, returnFeatures: p.return_features != 0,
                                    userVector: UserVectorMode(rawValue: p.user_vector.rawValue))
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__RecommendRequest()
        shardrank__v1__recommend_request__init(&m)
        m.user_id = userID
        m.k = k
        m.model = arena.string(model)
        m.diversity_lambda = diversityLambda
        m.min_coverage = minCoverage
        m.genre_cap = genreCap
        m.freshness_weight = freshnessWeight
        m.freshness_half_life_s = freshnessHalfLifeSeconds
        m.now_unix_s = nowUnixSeconds
        m.return_features = returnFeatures ? 1 : 0
        m.user_vector = Shardrank__V1__UserVectorMode(rawValue: (userVector ?? .auto).rawValue)
        m.n_sources = sources.count
        m.sources = arena.array(sources.map { Shardrank__V1__Source(rawValue: $0.rawValue) })
        if let c = context {
            var cc = Shardrank__V1__Context()
            shardrank__v1__context__init(&cc)
            cc.n_recent_item_ids = c.recentItemIDs.count
            cc.recent_item_ids = arena.array(c.recentItemIDs)
            cc.country = arena.string(c.country)
            cc.n_genres = c.genres.count
            cc.genres = arena.array(c.genres.map { Optional(arena.string($0)) })
            cc.n_exclude_ids = c.excludeIDs.count
            cc.exclude_ids = arena.array(c.excludeIDs)
            m.context = arena.object(cc)
        }
        if let b = budgets {
            var cb = Shardrank__V1__Budgets()
            shardrank__v1__budgets__init(&cb)
            cb.similar_per_item = b.similarPerItem
            cb.genre = b.genre
            cb.country = b.country
            cb.popular = b.popular
            cb.search = b.search
            m.budgets = arena.object(cb)
        }
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct ScoredItem: Sendable, Hashable {
    public var itemID: UInt64
    public var score: Float
    public var sources: [Source]
    public init(itemID: UInt64, score: Float, sources: [Source] = []) { self.itemID = itemID; self.score = score; self.sources = sources }
}

public struct StageTimings: Sendable, Hashable {
    public var retrieveMicros: UInt64 = 0, filterMicros: UInt64 = 0, gatherMicros: UInt64 = 0, rankMicros: UInt64 = 0
    public var postRankMicros: UInt64 = 0, totalMicros: UInt64 = 0
    public init(retrieveMicros: UInt64 = 0, filterMicros: UInt64 = 0, gatherMicros: UInt64 = 0, rankMicros: UInt64 = 0,
                postRankMicros: UInt64 = 0, totalMicros: UInt64 = 0) {
        self.retrieveMicros = retrieveMicros; self.filterMicros = filterMicros; self.gatherMicros = gatherMicros
        self.rankMicros = rankMicros; self.postRankMicros = postRankMicros; self.totalMicros = totalMicros
    }
}

public struct Coverage: Sendable, Hashable {
    public var shardsAsked: UInt32 = 0, shardsAnswered: UInt32 = 0
    public var sourcesFailed: [Source] = []
    public var degraded = false
    public var degradedReasons: [String] = []
    public init(shardsAsked: UInt32 = 0, shardsAnswered: UInt32 = 0, sourcesFailed: [Source] = [], degraded: Bool = false,
                degradedReasons: [String] = []) {
        self.shardsAsked = shardsAsked; self.shardsAnswered = shardsAnswered; self.sourcesFailed = sourcesFailed
        self.degraded = degraded; self.degradedReasons = degradedReasons
    }
}

/// Every candidate's ranking features (proto `CandidateFeatures`): `itemIDs.count` rows of
/// `names.count` values, row-major, NaN = missing.
public struct CandidateFeatures: Sendable, Hashable {
    public var names: [String]
    public var itemIDs: [UInt64]
    public var values: [Float]
    public init(names: [String], itemIDs: [UInt64], values: [Float]) { self.names = names; self.itemIDs = itemIDs; self.values = values }

    public static func == (a: Self, b: Self) -> Bool {
        a.names == b.names && a.itemIDs == b.itemIDs && a.values.count == b.values.count
            && zip(a.values, b.values).allSatisfy { $0.bitPattern == $1.bitPattern }
    }
    public func hash(into h: inout Hasher) { h.combine(names); h.combine(itemIDs); h.combine(values.count) }
}

/// The shape shared by RecommendResponse, RankResponse and SimilarResponse.
public struct RecommendResponse: Sendable, Hashable {
    public var items: [ScoredItem]
    public var version: UInt64
    public var timings: StageTimings?
    public var coverage: Coverage?
    public var candidates: UInt32
    public var coldStart: Bool
    public var features: CandidateFeatures?
    /// Which user vector the answer was searched and ranked with.
    public var userVectorSource: UserVectorSource
    /// The user's session events (RecordEvents) this coordinator held and used.
    public var sessionEvents: UInt32

    public init(items: [ScoredItem], version: UInt64, timings: StageTimings? = nil, coverage: Coverage? = nil, candidates: UInt32 = 0,
                coldStart: Bool = false, features: CandidateFeatures? = nil, userVectorSource: UserVectorSource = .none,
                sessionEvents: UInt32 = 0) {
        self.items = items; self.version = version; self.timings = timings; self.coverage = coverage; self.candidates = candidates
        self.coldStart = coldStart; self.features = features; self.userVectorSource = userVectorSource; self.sessionEvents = sessionEvents
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> RecommendResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.RecommendResponse", unpack: shardrank__v1__recommend_response__unpack,
                          free: shardrank__v1__recommend_response__free_unpacked) { m in
            let p = m.pointee
            return RecommendResponse(items: decodeItems(p.items, p.n_items), version: p.version,
                                     timings: p.timings.map { t in
                                         let x = t.pointee
                                         return StageTimings(retrieveMicros: x.retrieve_us, filterMicros: x.filter_us, gatherMicros: x.gather_us,
                                                             rankMicros: x.rank_us, postRankMicros: x.post_rank_us, totalMicros: x.total_us)
                                     },
                                     coverage: p.coverage.map { decodeCoverage($0.pointee) }, candidates: p.candidates,
                                     coldStart: p.cold_start != 0,
                                     features: p.features.map { f in
                                         let x = f.pointee
                                         return CandidateFeatures(names: (0 ..< x.n_names).map { ProtoC.string(x.names[$0]) },
                                                                  itemIDs: ProtoC.array(x.item_ids, x.n_item_ids), values: ProtoC.array(x.values, x.n_values))
                                     },
                                     userVectorSource: UserVectorSource(rawValue: p.user_vector_source.rawValue) ?? .none,
                                     sessionEvents: p.session_events)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__RecommendResponse()
        shardrank__v1__recommend_response__init(&m)
        m.n_items = items.count
        m.items = encodeItems(items, arena)
        m.version = version
        if let t = timings {
            var ct = Shardrank__V1__StageTimings()
            shardrank__v1__stage_timings__init(&ct)
            ct.retrieve_us = t.retrieveMicros; ct.filter_us = t.filterMicros; ct.gather_us = t.gatherMicros
            ct.rank_us = t.rankMicros; ct.post_rank_us = t.postRankMicros; ct.total_us = t.totalMicros
            m.timings = arena.object(ct)
        }
        if let c = coverage { m.coverage = encodeCoverage(c, arena) }
        m.candidates = candidates
        m.cold_start = coldStart ? 1 : 0
        m.user_vector_source = Shardrank__V1__UserVectorSource(rawValue: userVectorSource.rawValue)
        m.session_events = sessionEvents
        if let f = features {
            var cf = Shardrank__V1__CandidateFeatures()
            shardrank__v1__candidate_features__init(&cf)
            cf.n_names = f.names.count
            cf.names = arena.array(f.names.map { Optional(arena.string($0)) })
            cf.n_item_ids = f.itemIDs.count
            cf.item_ids = arena.array(f.itemIDs)
            cf.n_values = f.values.count
            cf.values = arena.array(f.values)
            m.features = arena.object(cf)
        }
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

/// What a user did (proto `shardrank.v1.EventKind`).
public enum EventKind: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case unspecified = 0, view = 1, click = 2, purchase = 3, rating = 4
    public var description: String {
        switch self {
        case .unspecified: "unspecified"
        case .view: "view"
        case .click: "click"
        case .purchase: "purchase"
        case .rating: "rating"
        }
    }
}

/// One event of a user's session (proto `Event`).
public struct Event: Sendable, Hashable {
    public var itemID: UInt64
    /// The kind as sent: a value outside `EventKind` is kept as is (the coordinator refuses it,
    /// naming the event).
    public var kindValue: UInt32
    /// When it happened, Unix seconds; 0 = when the coordinator receives it.
    public var timestampUnixSeconds: Int64

    public var kind: EventKind? { EventKind(rawValue: kindValue) }

    public init(itemID: UInt64, kind: EventKind = .view, timestampUnixSeconds: Int64 = 0) {
        self.itemID = itemID; self.kindValue = kind.rawValue; self.timestampUnixSeconds = timestampUnixSeconds
    }
    public init(itemID: UInt64, kindValue: UInt32, timestampUnixSeconds: Int64) {
        self.itemID = itemID; self.kindValue = kindValue; self.timestampUnixSeconds = timestampUnixSeconds
    }
}

public struct RecordEventsRequest: Sendable, Hashable {
    public var userID: UInt64
    /// In the order they happened (oldest first).
    public var events: [Event]
    /// Replace the user's session with `events` instead of appending (none: clear it).
    public var replace: Bool
    public init(userID: UInt64, events: [Event], replace: Bool = false) { self.userID = userID; self.events = events; self.replace = replace }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> RecordEventsRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.RecordEventsRequest", unpack: shardrank__v1__record_events_request__unpack,
                          free: shardrank__v1__record_events_request__free_unpacked) { m in RecordEventsRequest(m.pointee) }
    }

    init(_ p: Shardrank__V1__RecordEventsRequest) {
        var events: [Event] = []
        events.reserveCapacity(p.n_events)
        for i in 0 ..< p.n_events {
            let e = p.events[i]!.pointee
            events.append(Event(itemID: e.item_id, kindValue: e.kind.rawValue, timestampUnixSeconds: e.timestamp_unix_s))
        }
        self.init(userID: p.user_id, events: events, replace: p.replace != 0)
    }

    /// The C message, its events held by `arena`.
    func cMessage(in arena: CArena) -> Shardrank__V1__RecordEventsRequest {
        var m = Shardrank__V1__RecordEventsRequest()
        shardrank__v1__record_events_request__init(&m)
        m.user_id = userID
        m.replace = replace ? 1 : 0
        m.n_events = events.count
        m.events = arena.pointerArray(events.map { e in
            var c = Shardrank__V1__Event()
            shardrank__v1__event__init(&c)
            c.item_id = e.itemID
            c.kind = Shardrank__V1__EventKind(rawValue: e.kindValue)
            c.timestamp_unix_s = e.timestampUnixSeconds
            return c
        })
        return m
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = cMessage(in: arena)
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

/// Many users' events in one call (`RecordEventsBatch`): entries apply in order.
public struct RecordEventsBatchRequest: Sendable, Hashable {
    public var users: [RecordEventsRequest]
    public init(users: [RecordEventsRequest]) { self.users = users }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> RecordEventsBatchRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.RecordEventsBatchRequest", unpack: shardrank__v1__record_events_batch_request__unpack,
                          free: shardrank__v1__record_events_batch_request__free_unpacked) { m in
            let p = m.pointee
            var users: [RecordEventsRequest] = []
            users.reserveCapacity(p.n_users)
            for i in 0 ..< p.n_users { users.append(RecordEventsRequest(p.users[i]!.pointee)) }
            return RecordEventsBatchRequest(users: users)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__RecordEventsBatchRequest()
        shardrank__v1__record_events_batch_request__init(&m)
        m.n_users = users.count
        m.users = arena.pointerArray(users.map { $0.cMessage(in: arena) })
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct RecordEventsBatchResponse: Sendable, Hashable {
    /// Events taken, over all entries.
    public var accepted: UInt32
    /// Entries applied (all of the request's).
    public var users: UInt32
    public init(accepted: UInt32, users: UInt32) { self.accepted = accepted; self.users = users }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> RecordEventsBatchResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.RecordEventsBatchResponse", unpack: shardrank__v1__record_events_batch_response__unpack,
                          free: shardrank__v1__record_events_batch_response__free_unpacked) { m in
            RecordEventsBatchResponse(accepted: m.pointee.accepted, users: m.pointee.users)
        }
    }

    public func encoded() -> FramedMessage {
        var m = Shardrank__V1__RecordEventsBatchResponse()
        shardrank__v1__record_events_batch_response__init(&m)
        m.accepted = accepted
        m.users = users
        return ProtoC.pack(&m)
    }
}

public struct RecordEventsResponse: Sendable, Hashable {
    /// Events taken (all of the request's).
    public var accepted: UInt32
    /// Events the coordinator now holds for the user (bounded per user; the oldest go first).
    public var sessionEvents: UInt32
    public init(accepted: UInt32, sessionEvents: UInt32) { self.accepted = accepted; self.sessionEvents = sessionEvents }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> RecordEventsResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.RecordEventsResponse", unpack: shardrank__v1__record_events_response__unpack,
                          free: shardrank__v1__record_events_response__free_unpacked) { m in
            RecordEventsResponse(accepted: m.pointee.accepted, sessionEvents: m.pointee.session_events)
        }
    }

    public func encoded() -> FramedMessage {
        var m = Shardrank__V1__RecordEventsResponse()
        shardrank__v1__record_events_response__init(&m)
        m.accepted = accepted
        m.session_events = sessionEvents
        return ProtoC.pack(&m)
    }
}

public struct RankRequest: Sendable, Hashable {
    public var userID: UInt64
    public var candidateIDs: [UInt64]
    public var model: String
    public var k: UInt32
    public init(userID: UInt64, candidateIDs: [UInt64], model: String = "", k: UInt32 = 0) {
        self.userID = userID; self.candidateIDs = candidateIDs; self.model = model; self.k = k
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> RankRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.RankRequest", unpack: shardrank__v1__rank_request__unpack,
                          free: shardrank__v1__rank_request__free_unpacked) { m in
            RankRequest(userID: m.pointee.user_id, candidateIDs: ProtoC.array(m.pointee.candidate_ids, m.pointee.n_candidate_ids),
                        model: ProtoC.string(m.pointee.model), k: m.pointee.k)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__RankRequest()
        shardrank__v1__rank_request__init(&m)
        m.user_id = userID
        m.n_candidate_ids = candidateIDs.count
        m.candidate_ids = arena.array(candidateIDs)
        m.model = arena.string(model)
        m.k = k
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct SimilarRequest: Sendable, Hashable {
    public var itemID: UInt64
    public var k: UInt32
    public init(itemID: UInt64, k: UInt32 = 10) { self.itemID = itemID; self.k = k }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> SimilarRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.SimilarRequest", unpack: shardrank__v1__similar_request__unpack,
                          free: shardrank__v1__similar_request__free_unpacked) { m in
            SimilarRequest(itemID: m.pointee.item_id, k: m.pointee.k)
        }
    }

    public func encoded() -> FramedMessage {
        var m = Shardrank__V1__SimilarRequest()
        shardrank__v1__similar_request__init(&m)
        m.item_id = itemID
        m.k = k
        return ProtoC.pack(&m)
    }
}

/// RankResponse and SimilarResponse: items, version, coverage.
public struct ItemsResponse: Sendable, Hashable {
    public var items: [ScoredItem]
    public var version: UInt64
    public var coverage: Coverage?
    public init(items: [ScoredItem], version: UInt64, coverage: Coverage? = nil) {
        self.items = items; self.version = version; self.coverage = coverage
    }

    public static func decodeRank(_ bytes: [UInt8]) throws(RPCError) -> ItemsResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.RankResponse", unpack: shardrank__v1__rank_response__unpack,
                          free: shardrank__v1__rank_response__free_unpacked) { m in
            ItemsResponse(items: decodeItems(m.pointee.items, m.pointee.n_items), version: m.pointee.version,
                          coverage: m.pointee.coverage.map { decodeCoverage($0.pointee) })
        }
    }

    public static func decodeSimilar(_ bytes: [UInt8]) throws(RPCError) -> ItemsResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.SimilarResponse", unpack: shardrank__v1__similar_response__unpack,
                          free: shardrank__v1__similar_response__free_unpacked) { m in
            ItemsResponse(items: decodeItems(m.pointee.items, m.pointee.n_items), version: m.pointee.version,
                          coverage: m.pointee.coverage.map { decodeCoverage($0.pointee) })
        }
    }

    public func encodedAsRank() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__RankResponse()
        shardrank__v1__rank_response__init(&m)
        m.n_items = items.count
        m.items = encodeItems(items, arena)
        m.version = version
        if let c = coverage { m.coverage = encodeCoverage(c, arena) }
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }

    public func encodedAsSimilar() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__SimilarResponse()
        shardrank__v1__similar_response__init(&m)
        m.n_items = items.count
        m.items = encodeItems(items, arena)
        m.version = version
        if let c = coverage { m.coverage = encodeCoverage(c, arena) }
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

private func decodeItems(_ p: UnsafeMutablePointer<UnsafeMutablePointer<Shardrank__V1__ScoredItem>?>?, _ n: Int) -> [ScoredItem] {
    (0 ..< n).map { i in
        let it = p![i]!.pointee
        return ScoredItem(itemID: it.item_id, score: it.score,
                          sources: ProtoC.array(it.sources, it.n_sources).map { Source(rawValue: $0.rawValue) ?? .unspecified })
    }
}

private func encodeItems(_ items: [ScoredItem], _ arena: CArena) -> UnsafeMutablePointer<UnsafeMutablePointer<Shardrank__V1__ScoredItem>?>? {
    arena.pointerArray(items.map { it in
        var c = Shardrank__V1__ScoredItem()
        shardrank__v1__scored_item__init(&c)
        c.item_id = it.itemID
        c.score = it.score
        c.n_sources = it.sources.count
        c.sources = arena.array(it.sources.map { Shardrank__V1__Source(rawValue: $0.rawValue) })
        return c
    })
}

private func decodeCoverage(_ c: Shardrank__V1__Coverage) -> Coverage {
    Coverage(shardsAsked: c.shards_asked, shardsAnswered: c.shards_answered,
             sourcesFailed: ProtoC.array(c.sources_failed, c.n_sources_failed).map { Source(rawValue: $0.rawValue) ?? .unspecified },
             degraded: c.degraded != 0, degradedReasons: (0 ..< c.n_degraded_reasons).map { ProtoC.string(c.degraded_reasons[$0]) })
}

private func encodeCoverage(_ c: Coverage, _ arena: CArena) -> UnsafeMutablePointer<Shardrank__V1__Coverage> {
    var cc = Shardrank__V1__Coverage()
    shardrank__v1__coverage__init(&cc)
    cc.shards_asked = c.shardsAsked
    cc.shards_answered = c.shardsAnswered
    cc.n_sources_failed = c.sourcesFailed.count
    cc.sources_failed = arena.array(c.sourcesFailed.map { Shardrank__V1__Source(rawValue: $0.rawValue) })
    cc.degraded = c.degraded ? 1 : 0
    cc.n_degraded_reasons = c.degradedReasons.count
    cc.degraded_reasons = arena.array(c.degradedReasons.map { Optional(arena.string($0)) })
    return arena.object(cc)
}
