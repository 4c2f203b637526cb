import ShardRankKernels
import RPCCore

/// Stage 3 — scores for the candidates' rows: `dot` (V_u · V_m with the SIMD kernels) or the
/// learned `mlp`; without a user vector (cold start) the best retrieval score. Pure apart from
/// the MLP's use of the kernel pool for large batches.
enum Ranking {
    static let models: Set<String> = ["", "dot", "mlp"]

    /// Scores the rows of `rows` with model `name` (none when `rows` is nil: no candidates).
    /// - Throws: INVALID_ARGUMENT for an unknown or unloaded model; FAILED_PRECONDITION when the
    ///   MLP's item width is not the tables'.
    static func scores(model name: String, mlp: MLPModel?, user: [Float]?, rows: RowMatrix?, pool: WorkerPool) throws(RPCError) -> [Float] {
        switch name {
        case "", "dot", "mlp": break
        default: throw RPCError(.invalidArgument, "unknown model '\(name)' (known: dot, mlp)")
        }
        guard let rows, rows.count > 0 else { return [] }
        let count = rows.count, dim = rows.dimension
        var scores = [Float](repeating: 0, count: count)
        if name == "mlp" {
            guard let model = mlp else { throw RPCError(.invalidArgument, "model 'mlp' is not loaded (start the coordinator with --mlp FILE)") }
            guard model.itemDimension == 0 || model.itemDimension == dim else {
                throw RPCError(.failedPrecondition, "the MLP expects item vectors of dim \(model.itemDimension), the tables have \(dim)")
            }
            // Cold start (no user vector, or one of another width): retrieval order stays.
            guard let user, model.userDimension == 0 || model.userDimension == user.count else { return scores }
            user.withUnsafeBufferPointer { u in
                scores.withUnsafeMutableBufferPointer { s in
                    model.score(user: u.baseAddress!, items: rows, count: count, scores: s.baseAddress!, pool: pool)
                }
            }
            return scores
        }
        guard let user else { return scores }
        guard user.count == dim else {
            throw RPCError(.failedPrecondition, "the user vector has dim \(user.count), the item vectors \(dim): the users and items tables do not match")
        }
        user.withUnsafeBufferPointer { u in
            scores.withUnsafeMutableBufferPointer { s in InnerProducts.dot(query: u.baseAddress!, rows: rows, scores: s.baseAddress!) }
        }
        return scores
    }

    /// Cold start: each candidate's best retrieval score (ids in `ids` order).
    static func retrievalScores(ids: [UInt64], merged: [MergedCandidate]) -> [Float] {
        let index = IDIndex(capacity: merged.count)
        for (i, m) in merged.enumerated() { index.insert(m.id, i) }
        return ids.map { id in index.get(id).map { merged[$0].score } ?? 0 }
    }
}
