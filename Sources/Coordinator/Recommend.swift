public import RPCCore
public import ShardRankWire
import ShardRankKernels

/// The RPCs: `Recommend` runs the stages in order; `Rank` and `Similar` reuse them.
extension Recommender {
    /// Validates what a caller can get wrong, with INVALID_ARGUMENT naming the field.
    func validate(_ req: RecommendRequest) throws(RPCError) {
        guard req.k >= 1 && Int(req.k) <= settings.maxK else {
            throw RPCError(.invalidArgument, "k=\(req.k) is out of range 1...\(settings.maxK)")
        }
        if let b = req.budgets {
            for (name, v) in [("similar_per_item", b.similarPerItem), ("genre", b.genre), ("country", b.country),
                              ("popular", b.popular), ("search", b.search)] where Int(v) > settings.maxBudget {
                throw RPCError(.invalidArgument, "budgets.\(name)=\(v) exceeds the limit of \(settings.maxBudget)")
            }
        }
        guard Ranking.models.contains(req.model) || rankers[req.model] != nil else {
            throw RPCError(.invalidArgument, "unknown model '\(req.model)' (known: \(knownModels))")
        }
        if req.model == "mlp" && model == nil {
            throw RPCError(.invalidArgument, "model 'mlp' is not loaded (start the coordinator with --mlp FILE)")
        }
        guard req.diversityLambda.isFinite, req.diversityLambda >= 0, req.diversityLambda <= 1 else {
            throw RPCError(.invalidArgument, "diversity_lambda=\(req.diversityLambda) is out of range [0, 1]")
        }
        guard req.freshnessWeight.isFinite, req.freshnessWeight >= 0 else {
            throw RPCError(.invalidArgument, "freshness_weight=\(req.freshnessWeight) must be finite and >= 0")
        }
        guard req.minCoverage.isFinite, req.minCoverage >= 0, req.minCoverage <= 1 else {
            throw RPCError(.invalidArgument, "min_coverage=\(req.minCoverage) is out of range [0, 1]")
        }
        guard let mode = req.userVector else {
            throw RPCError(.invalidArgument, "user_vector is not a UserVectorMode (AUTO, STORED, TOWER)")
        }
        if mode == .tower && tower == nil {
            throw RPCError(.failedPrecondition, "user_vector TOWER: this coordinator has no query tower (start it with --query-tower FILE)")
        }
        try RetrievalPlan.validateContext(req.context)
        for s in req.sources where ![.similar, .genre, .country, .popular, .search].contains(s) {
            throw RPCError(.invalidArgument, "sources: \(s) is not a retrieval source (similar, genre, country, popular, search)")
        }
    }

    /// The model names a request may give, for error messages.
    var knownModels: String { (["dot", "mlp"] + rankers.keys.sorted()).joined(separator: ", ") }

    /// `Recommend`: the whole two-stage pipeline, in at most three rounds of shard calls: the
    /// profile and user vector (one shard; none for a user already cached); the lists the cache
    /// lacks and the search (which brings its hits' rows); the rows of list candidates not
    /// already cached. With the query tower's vector, one more before the search: the rows of
    /// the user's latest items the row cache lacks. The user's session (this coordinator's
    /// memory, no call) joins the seen set and leads the latest items.
    public func recommend(_ req: RecommendRequest, context ctx: ServerContext) async throws(RPCError) -> RecommendResponse {
        try validate(req)
        let trace = makeTrace(ctx)
        let response = try await traced(trace) { () async throws(RPCError) in try await recommend(req, trace: trace) }
        // Metrics count answers the caller got: once the call has ended OK (an answer computed
        // but never delivered — reset, deadline, a peer that stopped reading — is not one).
        if let observer { ctx.whenFinished { status in if status == .ok { observer.answered(response) } } }
        return response
    }

    /// The stages of `recommend` (validated request, trace made).
    func recommend(_ req: RecommendRequest, trace: Trace) async throws(RPCError) -> RecommendResponse {
        let t0 = ContinuousClock.now
        // What the user did on this coordinator in the last `session_ttl_s`: excluded, and the
        // first of the latest items.
        let session = sessions?.session(of: req.userID) ?? SessionStore.Session()

        // --- Round 1: profile and user vector — from the user cache when this user was seen
        // under the pinned version. The profile is always needed: its whole history is part of
        // the seen set whatever the context gives.
        var storedProfile: UserProfile?, storedVec: [Float]?, userVecFailed = false
        if let e = userCache.get(version: trace.version, user: req.userID) {
            storedProfile = e.profile
            storedVec = e.vector
        } else {
            let profileDeadline = trace.stageDeadline(0.3)
            async let profileTask = profile(req.userID, trace: trace, deadline: profileDeadline)
            async let vectorTask = userVector(req.userID, trace: trace, deadline: profileDeadline)
            let (p, profileFailed) = await profileTask
            (storedVec, userVecFailed) = await vectorTask
            storedProfile = p
            if !profileFailed && !userVecFailed { userCache.put(version: trace.version, user: req.userID, .init(vector: storedVec, profile: p)) }
        }
        let plan = RetrievalPlan(req, settings: settings, profile: storedProfile, session: session.items)

        // --- The user vector: stored, or the query tower's (its items' rows from the row cache,
        // else one Lookup round).
        let vectorSource = Self.chooseVector(mode: req.userVector ?? .auto, towerLoaded: tower != nil, hasStored: storedVec != nil,
                                             sessionEvents: session.events, towerHasInput: Self.towerHasInput(plan))
        let userVec: [Float]?
        switch vectorSource {
        case .none: userVec = nil
        case .stored: userVec = storedVec
        case .tower: userVec = try await towerVector(tower!, plan: plan, trace: trace, deadline: trace.stageDeadline(0.3))
        }
        let coldStart = vectorSource == .none && storedProfile == nil && session.events == 0 && !userVecFailed

        // --- Round 2: every source in parallel (lists mostly from the cache), one flat group.
        let (lists, srch) = await retrieve(plan: plan, user: userVec, trace: trace, deadline: trace.stageDeadline(0.6))
        let t1 = ContinuousClock.now

        // --- Merge, dedupe (remembering sources) and filter seen items.
        let merged = CandidateMerge.merge(plan: plan, similar: lists[0], genre: lists[1], country: lists[2], popular: lists[3], search: srch.items)
        let t2 = ContinuousClock.now

        // --- Round 3: the rows retrieval did not bring (and the attributes post-ranking needs).
        let gatherDeadline = trace.stageDeadline(0.85)
        let ranker = rankers[req.model]
        let needFeatures = req.returnFeatures || ranker != nil
        let gathered: (ids: [UInt64], rows: CandidateRows), attributes: [UInt64: ItemAttributes]?
        var genreVocabulary: [String] = []
        if req.genreCap > 0 || req.freshnessWeight > 0 || needFeatures {
            async let attributesTask = itemAttributes(merged.map(\.id), trace: trace, deadline: gatherDeadline)
            gathered = await assemble(merged.map(\.id), search: srch, dim: userVec?.count, trace: trace, deadline: gatherDeadline)
            (attributes, genreVocabulary) = await attributesTask
        } else {
            gathered = await assemble(merged.map(\.id), search: srch, dim: userVec?.count, trace: trace, deadline: gatherDeadline)
            attributes = nil
        }
        let t3 = ContinuousClock.now

        // --- Rank.
        let ids = gathered.ids
        let matrix = ids.isEmpty ? nil : gathered.rows.matrix
        let now = req.nowUnixSeconds != 0 ? Double(req.nowUnixSeconds) : PostRanking.unixNow()
        // The model's scores; a learned ranker scores the features, whose `dot` column is the
        // dot model's score (so that is computed once either way). Without a user vector (cold
        // start), the best retrieval score, whatever the model.
        let base = userVec == nil ? nil
            : try Ranking.scores(model: ranker == nil ? req.model : "dot", mlp: model, user: userVec, rows: matrix, pool: pool)
        var scores = base ?? Ranking.retrievalScores(ids: ids, merged: merged)
        var features: CandidateFeatures?
        if needFeatures {
            let dot = req.model == "mlp" && base != nil ? try Ranking.scores(model: "dot", mlp: nil, user: userVec, rows: matrix, pool: pool) : base
            let values = RankingFeatures.compute(ids: ids, dot: dot, plan: plan, lists: lists, search: srch.items, attributes: attributes,
                                                 genres: genreVocabulary, now: now)
            if let ranker, base != nil { scores = ranker.scores(values, rows: ids.count, pool: pool) }
            if req.returnFeatures { features = CandidateFeatures(names: RankingFeatures.names, itemIDs: ids, values: values) }
        }
        let t4 = ContinuousClock.now

        // --- Post-rank: freshness boost, MMR (λ) and an optional per-genre cap.
        var options = PostRanking.Options(k: plan.k)
        options.lambda = req.diversityLambda == 0 ? settings.diversityLambda : req.diversityLambda
        options.genreCap = Int(req.genreCap)
        options.freshnessWeight = req.freshnessWeight
        options.now = now
        options.halfLife = req.freshnessHalfLifeSeconds != 0 ? Double(req.freshnessHalfLifeSeconds) : settings.freshnessHalfLifeSeconds
        let order = PostRanking.order(scores: &scores, ids: ids, rows: matrix, attributes: attributes, options: options)
        let t5 = ContinuousClock.now

        // `ids` is `merged` in order, less the candidates without a row: walk both once.
        var sourceMask = [UInt8](repeating: 0, count: ids.count)
        var j = 0
        for (i, id) in ids.enumerated() {
            while j < merged.count && merged[j].id != id { j += 1 }
            if j < merged.count { sourceMask[i] = merged[j].sources; j += 1 }
        }
        let out = order.map { i in ScoredItem(itemID: ids[i], score: scores[i], sources: CandidateMerge.sources(sourceMask[i])) }
        var coverage = trace.coverage()
        // Every shard call counts, the user's own profile/vector call too: a user whose shard is
        // down gets no vector, and `min_coverage` must still refuse that answer.
        if coverage.shardsAsked > 0 {
            let share = Float(coverage.shardsAnswered) / Float(coverage.shardsAsked)
            if share < req.minCoverage {
                throw RPCError(.unavailable, "only \(coverage.shardsAnswered) of \(coverage.shardsAsked) shards answered (min_coverage \(req.minCoverage)): \(coverage.degradedReasons.joined(separator: "; "))")
            }
        }
        if coldStart { coverage.degradedReasons.append("cold start: user \(req.userID) has no stored vector, profile or session") }
        trace.span?.setStages([t0, t1, t2, t3, t4, t5])
        let timings = StageTimings(retrieveMicros: Self.micros(t1 - t0), filterMicros: Self.micros(t2 - t1), gatherMicros: Self.micros(t3 - t2),
                                   rankMicros: Self.micros(t4 - t3), postRankMicros: Self.micros(t5 - t4),
                                   totalMicros: Self.micros(ContinuousClock.now - trace.start))
        let response = RecommendResponse(items: out, version: trace.answerVersion, timings: timings, coverage: coverage,
                                         candidates: UInt32(merged.count), coldStart: coldStart, features: features,
                                         userVectorSource: vectorSource, sessionEvents: UInt32(session.events))
        return response
    }

    /// `Rank`: scores caller-supplied candidates for a user.
    public func rank(_ req: RankRequest, context ctx: ServerContext) async throws(RPCError) -> ItemsResponse {
        guard !req.candidateIDs.isEmpty else { throw RPCError(.invalidArgument, "candidate_ids is empty") }
        guard req.candidateIDs.count <= settings.maxBudget else {
            throw RPCError(.invalidArgument, "\(req.candidateIDs.count) candidates exceed the limit of \(settings.maxBudget)")
        }
        if rankers[req.model] != nil {
            throw RPCError(.invalidArgument, "model '\(req.model)' is a learned ranker over retrieval features, which Rank's caller-supplied candidates lack: use dot or mlp")
        }
        guard Ranking.models.contains(req.model) else { throw RPCError(.invalidArgument, "unknown model '\(req.model)' (known: \(knownModels))") }
        let trace = makeTrace(ctx)
        return try await traced(trace) { () async throws(RPCError) in try await rank(req, trace: trace) }
    }

    func rank(_ req: RankRequest, trace: Trace) async throws(RPCError) -> ItemsResponse {
        let (userVec, failed) = await userVector(req.userID, trace: trace, deadline: trace.stageDeadline(0.4))
        guard let userVec else {
            throw failed ? RPCError(.unavailable, "the user's shard did not answer")
                         : RPCError(.notFound, "user \(req.userID) has no stored vector")
        }
        var unique: [UInt64] = []
        var seenIDs = Set<UInt64>()
        for id in req.candidateIDs where seenIDs.insert(id).inserted { unique.append(id) }
        let g = await assemble(unique, dim: userVec.count, trace: trace, deadline: trace.stageDeadline(0.8))
        let scores = try Ranking.scores(model: req.model, mlp: model, user: userVec, rows: g.ids.isEmpty ? nil : g.rows.matrix, pool: pool)
        var order = Array(0 ..< g.ids.count).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && g.ids[$0] < g.ids[$1]) }
        if req.k > 0 { order = Array(order.prefix(Int(req.k))) }
        var coverage = trace.coverage()
        let missing = unique.count - g.ids.count
        if missing > 0 && !coverage.degraded { coverage.degradedReasons.append("\(missing) candidates not found in table '\(settings.itemsTable)'") }
        return ItemsResponse(items: order.map { ScoredItem(itemID: g.ids[$0], score: scores[$0], sources: [.caller]) },
                             version: trace.answerVersion, coverage: coverage)
    }

    /// `Similar`: the precomputed item→similar list, or an inner-product search with the item's
    /// vector when the table set has no `similar` list for it.
    public func similar(_ req: SimilarRequest, context ctx: ServerContext) async throws(RPCError) -> ItemsResponse {
        let k = req.k == 0 ? 10 : Int(req.k)
        guard k <= settings.maxK else { throw RPCError(.invalidArgument, "k=\(req.k) is out of range 1...\(settings.maxK)") }
        let trace = makeTrace(ctx)
        return try await traced(trace) { () async throws(RPCError) in try await similar(req, k: k, trace: trace) }
    }

    func similar(_ req: SimilarRequest, k: Int, trace: Trace) async throws(RPCError) -> ItemsResponse {
        let l = await lists(table: "similar", keys: [String(req.itemID)], limit: k, source: .similar, trace: trace,
                            deadline: trace.stageDeadline(0.4))
        if let first = l.first, !first.ids.isEmpty {
            let items = zip(first.ids, first.scores).prefix(k).map { ScoredItem(itemID: $0, score: $1, sources: [.similar]) }
            return ItemsResponse(items: Array(items), version: trace.version, coverage: trace.coverage())
        }
        let g = await assemble([req.itemID], dim: nil, trace: trace, deadline: trace.stageDeadline(0.3))
        guard g.ids.count == 1 else { throw RPCError(.notFound, "item \(req.itemID) is not in table '\(settings.itemsTable)'") }
        let query = Array(UnsafeBufferPointer(start: g.rows.base, count: g.rows.dim))
        let hits = await search(query: query, k: k, exclude: [req.itemID], trace: trace, deadline: trace.stageDeadline(0.9)).items
        return ItemsResponse(items: hits.map { ScoredItem(itemID: $0.id, score: $0.score, sources: [.search]) },
                             version: trace.answerVersion, coverage: trace.coverage())
    }
}

extension Recommender {
    /// Most events one RecordEvents call may carry.
    public static let maxEventsPerCall = 1000

    /// `RecordEvents`'s input rules, with INVALID_ARGUMENT naming the field (and the event's
    /// index): a user id; 1...`maxEventsPerCall` events; each with an item id, a known kind and
    /// a timestamp in 0...`SessionStore.maxTimestamp` (0 = now).
    static func validate(_ req: RecordEventsRequest, field prefix: String = "") throws(RPCError) {
        guard req.userID != 0 else { throw RPCError(.invalidArgument, "\(prefix)user_id is required (got 0)") }
        guard (req.replace || !req.events.isEmpty), req.events.count <= maxEventsPerCall else {
            throw RPCError(.invalidArgument, "\(prefix)events has \(req.events.count) entries: 1...\(maxEventsPerCall) per call (0 only with replace)")
        }
        for (i, e) in req.events.enumerated() {
            guard e.itemID != 0 else { throw RPCError(.invalidArgument, "\(prefix)events[\(i)].item_id is 0") }
            guard e.timestampUnixSeconds >= 0 else {
                throw RPCError(.invalidArgument, "\(prefix)events[\(i)].timestamp_unix_s is \(e.timestampUnixSeconds): it must be >= 0 (0 = now)")
            }
            guard e.timestampUnixSeconds <= SessionStore.maxTimestamp else {
                throw RPCError(.invalidArgument, "\(prefix)events[\(i)].timestamp_unix_s is \(e.timestampUnixSeconds), past the limit of \(SessionStore.maxTimestamp)")
            }
            guard e.kind != nil else { throw RPCError(.invalidArgument, "\(prefix)events[\(i)].kind is \(e.kindValue), not an EventKind (0...4)") }
        }
    }

    /// Most entries (users) and events one RecordEventsBatch call may carry.
    public static let maxBatchUsers = 1000
    public static let maxBatchEvents = 10_000

    /// `RecordEventsBatch`'s input rules: 1...`maxBatchUsers` entries, at most `maxBatchEvents`
    /// events in all, each entry valid as a RecordEvents request (the message names `users[i]`).
    static func validate(_ req: RecordEventsBatchRequest) throws(RPCError) {
        guard !req.users.isEmpty, req.users.count <= maxBatchUsers else {
            throw RPCError(.invalidArgument, "users has \(req.users.count) entries: 1...\(maxBatchUsers) per call")
        }
        var total = 0
        for (i, u) in req.users.enumerated() {
            try validate(u, field: "users[\(i)].")
            total += u.events.count
        }
        guard total <= maxBatchEvents else {
            throw RPCError(.invalidArgument, "the batch holds \(total) events: at most \(maxBatchEvents) per call")
        }
    }

    /// `RecordEvents`: appends the events to the user's session on this coordinator (events
    /// stamped 0 get the coordinator's clock); answers how many it took and how many live
    /// events it now holds for the user. Runs inline: a hash, a lock and a few stores.
    public func recordEvents(_ req: RecordEventsRequest, context ctx: ServerContext) throws(RPCError) -> RecordEventsResponse {
        try Self.validate(req)
        guard let sessions else {
            throw RPCError(.failedPrecondition, "sessions are off on this coordinator (coordinator.session_users is 0)")
        }
        let held = sessions.record(user: req.userID, events: req.events, replace: req.replace)
        return RecordEventsResponse(accepted: UInt32(req.events.count), sessionEvents: UInt32(held))
    }

    /// `RecordEventsBatch`: every entry checked first (one bad entry refuses the whole batch, so
    /// none of it is applied), then each applied in order as `recordEvents` would.
    public func recordEventsBatch(_ req: RecordEventsBatchRequest, context ctx: ServerContext) throws(RPCError) -> RecordEventsBatchResponse {
        try Self.validate(req)
        guard let sessions else {
            throw RPCError(.failedPrecondition, "sessions are off on this coordinator (coordinator.session_users is 0)")
        }
        var accepted = 0
        for u in req.users {
            sessions.record(user: u.userID, events: u.events, replace: u.replace)
            accepted += u.events.count
        }
        return RecordEventsBatchResponse(accepted: UInt32(accepted), users: UInt32(req.users.count))
    }
}

/// `shardrank.v1.Recommender` on the RPC server. Placed `.inline`: each call runs on its
/// connection's event loop (thread-per-core; see `Recommender`).
public struct RecommenderService: RPCService {
    public let serviceName = "shardrank.v1.Recommender"
    public let recommender: Recommender
    public init(recommender: Recommender) { self.recommender = recommender }

    public var methods: [RPCMethod] {
        let r = recommender
        return [
            .asyncUnary(RecommenderMethods.recommend, placement: .inline) { req, ctx throws(RPCError) in try await r.recommend(req, context: ctx) },
            .asyncUnary(RecommenderMethods.rank, placement: .inline) { req, ctx throws(RPCError) in try await r.rank(req, context: ctx) },
            .asyncUnary(RecommenderMethods.similar, placement: .inline) { req, ctx throws(RPCError) in try await r.similar(req, context: ctx) },
            .unary(RecommenderMethods.recordEvents, placement: .inline) { req, ctx throws(RPCError) in try r.recordEvents(req, context: ctx) },
            .unary(RecommenderMethods.recordEventsBatch, placement: .inline) { req, ctx throws(RPCError) in try r.recordEventsBatch(req, context: ctx) },
            .asyncUnary(RecommenderMethods.info, placement: .inline) { _, ctx throws(RPCError) in try await r.info(context: ctx) },
        ]
    }
}
