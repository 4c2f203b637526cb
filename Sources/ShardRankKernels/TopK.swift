internal import CShardRankKernels

/// An item id with its score (a search hit, a candidate): the kernels' unit of ranking. Higher
/// score first, ties towards the lower id. (The API's `ScoredItem` message, with sources, is
/// ShardRankWire's.)
public struct ScoredID: Sendable, Hashable, CustomStringConvertible {
    public var id: UInt64
    public var score: Float

    public init(id: UInt64, score: Float) {
        self.id = id
        self.score = score
    }

    /// True if `a` ranks before `b` (higher score, or equal score and lower id).
    @inlinable
    public static func ranksBefore(_ a: ScoredID, _ b: ScoredID) -> Bool {
        a.score > b.score || (a.score == b.score && a.id < b.id)
    }

    public var description: String { "\(id):\(score)" }
}

/// A bounded heap that keeps the `capacity` best items offered to it (see `ScoredID`
/// for the order). Storage is allocated once in `init` and reused across `reset()`s;
/// offering items allocates nothing. NaN scores are ignored.
///
/// Not thread-safe: one thread at a time (give each thread its own heap).
public final class TopKHeap {
    public let capacity: Int
    let heap: UnsafeMutablePointer<srk_topk>

    /// - Parameter capacity: k, the number of items kept (≥ 0).
    public init(capacity: Int) {
        precondition(capacity >= 0)
        self.capacity = capacity
        heap = .allocate(capacity: 1)
        heap.initialize(to: srk_topk(scores: .allocate(capacity: max(capacity, 1)),
                                     ids: .allocate(capacity: max(capacity, 1)),
                                     count: 0, capacity: Int64(capacity)))
    }

    deinit {
        heap.pointee.scores!.deallocate()
        heap.pointee.ids!.deallocate()
        heap.deallocate()
    }

    /// Number of items held (≤ capacity).
    public var count: Int { Int(heap.pointee.count) }

    /// The score an item must beat to enter, once full; nil while not full.
    public var threshold: Float? { count < capacity || capacity == 0 ? nil : heap.pointee.scores![0] }

    /// Empties the heap, keeping its storage.
    public func reset() { heap.pointee.count = 0 }

    /// Offers one item.
    public func push(score: Float, id: UInt64) { srk_topk_push(heap, score, id) }

    /// Offers `scores.count` items with ids `ids[i]` (or `firstID + i` when `ids` is nil),
    /// skipping ids in `excluding`, which must be sorted ascending.
    /// - Parameter ids: nil or `scores.count` ids.
    public func push(scores: UnsafeBufferPointer<Float>, ids: UnsafeBufferPointer<UInt64>? = nil,
                     firstID: UInt64 = 0, excluding: UnsafeBufferPointer<UInt64>? = nil) {
        precondition(ids == nil || ids!.count >= scores.count)
        guard let s = scores.baseAddress else { return }
        srk_topk_push_many(heap, s, ids?.baseAddress, firstID, Int64(scores.count),
                           excluding?.baseAddress, Int64(excluding?.count ?? 0))
    }

    /// The held items, best first. The heap keeps its contents.
    public func sortedItems() -> [ScoredID] {
        [ScoredID](unsafeUninitializedCapacity: count) { buffer, initialized in
            let s = heap.pointee.scores!, ids = heap.pointee.ids!
            initialized = withSortedContents { n in
                for i in 0..<n { (buffer.baseAddress! + i).initialize(to: ScoredID(id: ids[i], score: s[i])) }
                return n
            }
        }
    }

    /// Writes the held items best first into `ids` and `scores` (each with room for `count`
    /// elements) without allocating, and returns how many were written. The heap keeps its
    /// contents.
    public func sorted(ids outIDs: UnsafeMutablePointer<UInt64>, scores outScores: UnsafeMutablePointer<Float>) -> Int {
        let s = heap.pointee.scores!, ids = heap.pointee.ids!
        return withSortedContents { n in
            outIDs.update(from: ids, count: n)
            outScores.update(from: s, count: n)
            return n
        }
    }

    /// Sorts the storage best first, runs `body(count)`, then restores the heap order
    /// (a list sorted worst-first is a valid heap, so reversing suffices).
    private func withSortedContents(_ body: (Int) -> Int) -> Int {
        let n = count
        srk_topk_sort(heap)
        let result = body(n)
        let s = heap.pointee.scores!, ids = heap.pointee.ids!
        var lo = 0, hi = n - 1
        while lo < hi {
            swap(&s[lo], &s[hi]); swap(&ids[lo], &ids[hi])
            lo += 1; hi -= 1
        }
        return result
    }
}

/// Top-k selection and merging of ranked lists.
public enum TopK {
    /// The best `k` of `scores` (ids `ids[i]`, or `firstID + i` when `ids` is nil), best
    /// first, skipping ids in `excluding` (sorted ascending).
    public static func select(scores: UnsafeBufferPointer<Float>, ids: UnsafeBufferPointer<UInt64>? = nil,
                              firstID: UInt64 = 0, k: Int,
                              excluding: UnsafeBufferPointer<UInt64>? = nil) -> [ScoredID] {
        let heap = TopKHeap(capacity: k)
        heap.push(scores: scores, ids: ids, firstID: firstID, excluding: excluding)
        return heap.sortedItems()
    }

    /// k-way merge of lists each sorted best first (e.g. per-shard top-k results) into the
    /// best `k` overall, best first. Ids are assumed distinct across lists (shards partition
    /// the rows); use `mergeCandidates` when they are not. A list out of order (or holding a
    /// NaN score) is tolerated: then every item is ranked in full.
    public static func merge(_ lists: [[ScoredID]], k: Int) -> [ScoredID] {
        if let positions = mergePositions(counts: lists.map(\.count), k: k, item: { lists[$0][$1] }) {
            return positions.map { lists[$0.list][$0.index] }
        }
        let all = lists.flatMap { $0 }
        return RankOrder.order(count: all.count, limit: k, score: { all[$0].score }, id: { all[$0].id }).map { all[$0] }
    }

    /// The k-way merge itself, for lists the caller holds in any form: list `l` has `counts[l]`
    /// items, its `i`-th is `item(l, i)`, each list best first (a shard's contract). Returns the
    /// (list, index) of the `k` best items overall, best first (ties to the lower id), so a
    /// caller can find what else it holds for each (a row, a source); nil as soon as a list is
    /// found out of order or a NaN score comes up, for the caller to rank everything instead.
    /// A heap of the lists' heads: O(k log m) comparisons for m lists.
    @inlinable
    public static func mergePositions(counts: [Int], k: Int, item: (_ list: Int, _ index: Int) -> ScoredID) -> [(list: Int, index: Int)]? {
        var out: [(list: Int, index: Int)] = []
        guard k > 0 else { return out }
        out.reserveCapacity(min(k, counts.reduce(0, +)))
        // Heads: (list, position, its item), the best at the root.
        var storage = [(list: Int, pos: Int, item: ScoredID)](repeating: (0, 0, ScoredID(id: 0, score: 0)), count: counts.count)
        let complete = storage.withUnsafeMutableBufferPointer { heads -> Bool in
            var n = 0
            for (l, c) in counts.enumerated() where c > 0 {
                let it = item(l, 0)
                if it.score.isNaN { return false }
                heads[n] = (l, 0, it); n += 1
            }
            func siftDown(_ start: Int) {
                var i = start
                let x = heads[i]
                while true {
                    let l = 2 * i + 1
                    if l >= n { break }
                    var c = l
                    if l + 1 < n && ScoredID.ranksBefore(heads[l + 1].item, heads[l].item) { c = l + 1 }
                    if !ScoredID.ranksBefore(heads[c].item, x.item) { break }
                    heads[i] = heads[c]; i = c
                }
                heads[i] = x
            }
            for i in stride(from: n / 2 - 1, through: 0, by: -1) { siftDown(i) }
            while out.count < k && n > 0 {
                let top = heads[0]
                out.append((top.list, top.pos))
                let next = top.pos + 1
                if next < counts[top.list] {
                    let it = item(top.list, next)
                    // Out of order (or NaN, which ranks before nothing): the caller sorts instead.
                    if it.score.isNaN || ScoredID.ranksBefore(it, top.item) { return false }
                    heads[0] = (top.list, next, it)
                } else {
                    n -= 1
                    heads[0] = heads[n]
                }
                if n > 0 { siftDown(0) }
            }
            return true
        }
        return complete ? out : nil
    }

    /// Merges candidate lists from up to 8 sources, removing duplicate ids. Each result keeps
    /// the best score any source gave it and `sources`, a bitmask with bit `s` set when list
    /// `s` proposed the id. Results are ranked best first; the input lists need not be sorted.
    public static func mergeCandidates(_ lists: [[ScoredID]]) -> [MergedCandidate] {
        precondition(lists.count <= 8, "mergeCandidates: at most 8 sources")
        let total = lists.reduce(0) { $0 + $1.count }
        var merged: [MergedCandidate] = []
        merged.reserveCapacity(total)
        let index = IDIndex(capacity: total)
        for (s, l) in lists.enumerated() {
            for it in l {
                let (at, inserted) = index.insert(it.id, merged.count)
                if inserted {
                    merged.append(MergedCandidate(id: it.id, score: it.score, sources: UInt8(1) << s))
                } else {
                    merged[at].sources |= UInt8(1) << s
                    if it.score > merged[at].score || merged[at].score.isNaN { merged[at].score = it.score }
                }
            }
        }
        merged.sort { ScoredID.ranksBefore($0.item, $1.item) }
        return merged
    }
}

/// A deduplicated candidate: its best score and which sources (bit per source list) proposed it.
public struct MergedCandidate: Sendable, Hashable {
    public var id: UInt64
    public var score: Float
    public var sources: UInt8

    public init(id: UInt64, score: Float, sources: UInt8) {
        self.id = id
        self.score = score
        self.sources = sources
    }

    public var item: ScoredID { ScoredID(id: id, score: score) }
}
