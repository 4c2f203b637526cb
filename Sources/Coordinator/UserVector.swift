import RPCCore
import ShardRankWire
import ShardRankKernels

/// Which user vector a Recommend searches and ranks with: the stored one (the users table,
/// built offline) or the query tower's, computed now from the user's latest items (the session
/// first), genres and country (docs/api.md, docs/ranking.md).
extension Recommender {
    /// The vector a request uses.
    /// - `stored`: the stored vector (none: cold start).
    /// - `tower`: the tower's (the caller checked that one is loaded).
    /// - `auto`: the tower's when one is loaded and the user has session events (the stored
    ///   vector does not know them), or has no stored vector but something the tower reads
    ///   (latest items, genres or a country); else the stored one.
    static func chooseVector(mode: UserVectorMode, towerLoaded: Bool, hasStored: Bool, sessionEvents: Int,
                             towerHasInput: Bool) -> UserVectorSource {
        switch mode {
        case .stored:
            return hasStored ? .stored : .none
        case .tower:
            return .tower
        case .auto:
            if towerLoaded && (sessionEvents > 0 || (!hasStored && towerHasInput)) { return .tower }
            return hasStored ? .stored : .none
        }
    }

    /// What the tower would read for `plan`: any latest item, genre or country.
    static func towerHasInput(_ plan: RetrievalPlan) -> Bool {
        !plan.latest.isEmpty || !plan.genres.isEmpty || !plan.country.isEmpty
    }

    /// The tower's vector for the plan's user: the first R of the plan's latest items (the
    /// session's first) that the items table holds — unknown items are skipped first, then R
    /// taken, as the trainer does — their rows from the row cache or one Lookup per shard (a
    /// shard that fails leaves its items out and flags the answer degraded), and the plan's
    /// genres and country.
    /// - Throws: FAILED_PRECONDITION when the items table's vectors are not the tower's width.
    func towerVector(_ tower: QueryTower, plan: RetrievalPlan, trace: Trace, deadline: ContinuousClock.Instant) async throws(RPCError) -> [Float] {
        var out = [Float](repeating: 0, count: tower.dimension)
        // A few more than R, so that R known items remain after the unknown ones are skipped.
        let ids = Array(plan.latest.prefix(tower.recentItems + max(8, tower.recentItems / 4)))
        let gathered = ids.isEmpty ? nil : await assemble(ids, dim: nil, trace: trace, deadline: deadline)
        if let g = gathered, !g.ids.isEmpty, g.rows.dim != tower.dimension {
            throw RPCError(.failedPrecondition, "the query tower reads item vectors of dim \(tower.dimension), table '\(settings.itemsTable)' has dim \(g.rows.dim)")
        }
        out.withUnsafeMutableBufferPointer { o in
            if let g = gathered, !g.ids.isEmpty {
                tower.userVector(recentRows: UnsafePointer(g.rows.base), count: min(g.ids.count, tower.recentItems), genres: plan.genres,
                                 country: plan.country, into: o.baseAddress!)
            } else {
                tower.userVector(recentRows: nil, count: 0, genres: plan.genres, country: plan.country, into: o.baseAddress!)
            }
        }
        return out
    }
}
