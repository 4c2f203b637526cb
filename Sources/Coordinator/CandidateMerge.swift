import ShardRankKernels
import ShardRankWire

/// Stage 2 — the retrieved lists and search hits become one candidate list: each source capped
/// at its budget after dropping seen items, duplicates merged (an item keeps its best retrieval
/// score and the mask of every source that proposed it), best first. Pure.
enum CandidateMerge {
    /// Bits of `MergedCandidate.sources`, in this order.
    static let sourceOrder: [Source] = [.similar, .genre, .country, .popular, .search, .caller]

    static func merge(plan: RetrievalPlan, similar: [RankedList], genre: [RankedList], country: [RankedList], popular: [RankedList],
                      search: [ScoredID]) -> [MergedCandidate] {
        let total = similar.reduce(0) { $0 + min($1.ids.count, plan.similarPerItem) } + genre.count * plan.perGenre
            + country.count * plan.countryBudget + popular.count * plan.popularBudget + search.count
        guard total > 0 else { return [] }
        let index = IDIndex(capacity: total)
        // One pass over raw buffers: this runs on every request over hundreds of candidates.
        let unsorted = plan.seenSorted.withUnsafeBufferPointer { seen in
            [MergedCandidate](unsafeUninitializedCapacity: total) { out, count in
                // Seen items: a binary search in the plan's sorted seen set (thousands of history
                // items cost no per-request index build).
                @inline(__always) func isSeen(_ id: UInt64) -> Bool {
                    var lo = 0, hi = seen.count
                    while lo < hi {
                        let mid = (lo + hi) >> 1
                        if seen[mid] < id { lo = mid + 1 } else { hi = mid }
                    }
                    return lo < seen.count && seen[lo] == id
                }
                @inline(__always) func offer(_ id: UInt64, _ score: Float, _ bit: UInt8) {
                    let (at, inserted) = index.insert(id, count)
                    if inserted {
                        (out.baseAddress! + count).initialize(to: MergedCandidate(id: id, score: score, sources: bit))
                        count += 1
                    } else {
                        out[at].sources |= bit
                        if score > out[at].score || out[at].score.isNaN { out[at].score = score }
                    }
                }
                // Each list: its first `cap` items that are not seen (lists may be longer than asked).
                func take(_ ls: [RankedList], cap: Int, bit: UInt8) {
                    guard cap > 0 else { return }
                    for l in ls {
                        l.ids.withUnsafeBufferPointer { ids in
                            l.scores.withUnsafeBufferPointer { scores in
                                let m = min(ids.count, scores.count)
                                var n = 0, i = 0
                                while i < m && n < cap {
                                    if !isSeen(ids[i]) { offer(ids[i], scores[i], bit); n += 1 }
                                    i += 1
                                }
                            }
                        }
                    }
                }
                take(similar, cap: plan.similarPerItem, bit: 1 << 0)
                take(genre, cap: plan.perGenre, bit: 1 << 1)
                take(country, cap: plan.countryBudget, bit: 1 << 2)
                take(popular, cap: plan.popularBudget, bit: 1 << 3)
                search.withUnsafeBufferPointer { hits in
                    for it in hits where !isSeen(it.id) { offer(it.id, it.score, 1 << 4) }
                }
            }
        }
        // Best first.
        return unsorted.withUnsafeBufferPointer { m in
            let order = RankOrder.order(count: m.count, score: { m[$0].score }, id: { m[$0].id })
            return [MergedCandidate](unsafeUninitializedCapacity: m.count) { out, n in
                for (i, j) in order.enumerated() { (out.baseAddress! + i).initialize(to: m[j]) }
                n = m.count
            }
        }
    }

    /// The sources a merged candidate's mask names.
    static func sources(_ mask: UInt8) -> [Source] {
        sourceOrder.enumerated().compactMap { bit, s in mask & (1 << bit) != 0 ? s : nil }
    }
}
