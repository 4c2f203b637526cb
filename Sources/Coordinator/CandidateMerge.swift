import ShardRankKernels
import ShardRankWire

/// Stage 2 — the retrieved lists and search hits become one candidate list: each source capped
/// at its budget after dropping seen items, duplicates merged (an item keeps its best retrieval
/// score and the mask of every source that proposed it), best first. Pure.
enum CandidateMerge {
    /// Bits of `MergedCandidate.sources`, in this order.
    static let sourceOrder: [Source] = [.similar, .genre, .country, .popular, .search, .caller]

    static func merge(plan: RetrievalPlan, similar: [RankedList], genre: [RankedList], country: [RankedList], popular: [RankedList],
                      search: [ShardRankKernels.ScoredItem]) -> [MergedCandidate] {
        let seen = plan.seen
        func items(_ ls: [RankedList], cap: Int) -> [ShardRankKernels.ScoredItem] {
            var out: [ShardRankKernels.ScoredItem] = []
            for l in ls {
                var n = 0
                for (id, s) in zip(l.ids, l.scores) where !seen.contains(id) {
                    if n >= cap { break }
                    out.append(ShardRankKernels.ScoredItem(id: id, score: s))
                    n += 1
                }
            }
            return out
        }
        return TopK.mergeCandidates([
            items(similar, cap: plan.similarPerItem), items(genre, cap: plan.perGenre), items(country, cap: plan.countryBudget),
            items(popular, cap: plan.popularBudget), search.filter { !seen.contains($0.id) },
        ])
    }

    /// The sources a merged candidate's mask names.
    static func sources(_ mask: UInt8) -> [Source] {
        sourceOrder.enumerated().compactMap { bit, s in mask & (1 << bit) != 0 ? s : nil }
    }
}
