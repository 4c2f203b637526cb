import ShardRankIDs
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
        // Seen items: a binary search in the plan's sorted seen set (thousands of history items
        // cost no per-request index build).
        let seen = plan.seenSorted
        let total = similar.reduce(0) { $0 + min($1.ids.count, plan.similarPerItem) } + genre.count * plan.perGenre
            + country.count * plan.countryBudget + popular.count * plan.popularBudget + search.count
        var merged: [MergedCandidate] = []
        merged.reserveCapacity(total)
        var index = IDIndex(capacity: total)
        @inline(__always) func offer(_ id: UInt64, _ score: Float, _ bit: UInt8) {
            let (at, inserted) = index.insert(id, merged.count)
            if inserted {
                merged.append(MergedCandidate(id: id, score: score, sources: bit))
            } else {
                merged[at].sources |= bit
                if score > merged[at].score || merged[at].score.isNaN { merged[at].score = score }
            }
        }
        // Each list: its first `cap` items that are not seen (lists may be longer than asked).
        func take(_ ls: [RankedList], cap: Int, bit: UInt8) {
            guard cap > 0 else { return }
            for l in ls {
                var n = 0
                for i in 0 ..< min(l.ids.count, l.scores.count) where !SortedIDs.contains(seen, l.ids[i]) {
                    if n >= cap { break }
                    offer(l.ids[i], l.scores[i], bit)
                    n += 1
                }
            }
        }
        take(similar, cap: plan.similarPerItem, bit: 1 << 0)
        take(genre, cap: plan.perGenre, bit: 1 << 1)
        take(country, cap: plan.countryBudget, bit: 1 << 2)
        take(popular, cap: plan.popularBudget, bit: 1 << 3)
        for it in search where !SortedIDs.contains(seen, it.id) { offer(it.id, it.score, 1 << 4) }
        merged.sort { ShardRankKernels.ScoredItem.ranksBefore($0.item, $1.item) }
        return merged
    }

    /// The sources a merged candidate's mask names.
    static func sources(_ mask: UInt8) -> [Source] {
        sourceOrder.enumerated().compactMap { bit, s in mask & (1 << bit) != 0 ? s : nil }
    }
}
