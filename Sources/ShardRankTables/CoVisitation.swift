internal import Synchronization
internal import ShardRankKernels
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// Item → top-k items by co-visitation (item-to-item collaborative filtering from the
/// interactions), the `similar` list table of `build --similar-source interactions`.
///
/// Each user's interactions are ordered by time (equal timestamps: input order) and a repeated
/// (user, item) counts once, at its first position. For every user and every two positions p ≠ q
/// of that sequence with |p − q| ≤ `window` (`window` 0: any two positions), the pair
/// (item at p, item at q) is counted once — in both orders, so the counts are symmetric. The
/// score of j for key i is the cosine `c_ij / √(n_i · n_j)`, with `c_ij` that count and `n` the
/// number of users who interacted with the item (so with `window` 0 it is the cosine of the two
/// items' binary user vectors, in (0, 1]). Each item keeps its k best (ties: lower item id); an
/// item is never its own neighbour, and an item without co-visits gets an empty list.
///
/// Cost: O(I · 2W) pair updates for I interactions and window W (O(Σ_u len_u²) for window 0),
/// plus a top-k per touched neighbour. Memory: the interactions twice (by user, by item) plus a
/// dense count array and a touched-list of `items` entries per worker; the output is `items · k`.
enum CoVisitation {
    /// - Parameters:
    ///   - itemIDs: the ids of item indices `0..<itemIDs.count` (the lists' keys and neighbours).
    ///   - userCount: users are indices `0..<userCount`.
    ///   - interUser, interItem, interTime: one interaction per index, in input order.
    ///   - k: neighbours kept per item (≥ 1).
    ///   - window: the largest distance between two positions of a user's sequence that counts
    ///     (≥ 0; 0 = the whole sequence).
    ///   - progress: `(itemsDone, items)`, called from worker threads (serialised).
    /// - Returns: one list per item, keyed by the decimal item id, in item order.
    static func compute(itemIDs: [UInt64], userCount: Int, interUser: [Int32], interItem: [Int32], interTime: [Int64],
                        k: Int, window: Int, workers: Int? = nil,
                        progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) -> [RankedListRecord] {
        precondition(k >= 1 && window >= 0)
        precondition(interUser.count == interItem.count && interItem.count == interTime.count)
        let itemCount = itemIDs.count
        let seq = sequences(userCount: userCount, itemCount: itemCount, interUser: interUser, interItem: interItem, interTime: interTime)

        // Inverted index: item → its positions in `seq.items` (ascending, so grouped by user).
        var occStart = [Int](repeating: 0, count: itemCount + 1)
        for i in seq.items { occStart[Int(i) + 1] += 1 }
        for i in 0..<itemCount { occStart[i + 1] += occStart[i] }
        var occPos = [Int32](repeating: 0, count: seq.items.count)
        var occUser = [Int32](repeating: 0, count: seq.items.count)
        var fill = occStart
        for u in 0..<userCount {
            for p in seq.start[u]..<seq.start[u + 1] {
                let i = Int(seq.items[p])
                occPos[fill[i]] = Int32(p)
                occUser[fill[i]] = Int32(u)
                fill[i] += 1
            }
        }
        // n_i: users per item (each user counts once after the dedupe).
        let users = (0..<itemCount).map { occStart[$0 + 1] - occStart[$0] }

        let outIDs = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: max(itemCount * k, 1))
        let outScores = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(itemCount * k, 1))
        let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: max(itemCount, 1))
        defer { outIDs.deallocate(); outScores.deallocate(); counts.deallocate() }
        counts.initialize(repeating: 0)

        let chunk = 256
        let chunks = (itemCount + chunk - 1) / chunk
        let threads = min(chunks, max(1, workers ?? Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        let nextChunk = Atomic<Int>(0)
        let done = Mutex(0)
        seq.items.withUnsafeBufferPointer { seqItems in
        seq.start.withUnsafeBufferPointer { seqStart in
        occStart.withUnsafeBufferPointer { occStart in
        occPos.withUnsafeBufferPointer { occPos in
        occUser.withUnsafeBufferPointer { occUser in
        users.withUnsafeBufferPointer { users in
        itemIDs.withUnsafeBufferPointer { ids in
            Parallel.forEach(threads) { _ in
                // Per worker: dense co-visit counts, reset through the list of touched items.
                let acc = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(itemCount, 1))
                acc.initialize(repeating: 0)
                let touched = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(itemCount, 1))
                defer { acc.deallocate(); touched.deallocate() }
                let heap = TopKHeap(capacity: k)
                while true {
                    let c = nextChunk.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard c < chunks else { break }
                    let range = (c * chunk)..<min(itemCount, (c + 1) * chunk)
                    for i in range {
                        var nTouched = 0
                        for o in occStart[i]..<occStart[i + 1] {
                            let p = Int(occPos[o]), u = Int(occUser[o])
                            let lo = window == 0 ? seqStart[u] : max(seqStart[u], p - window)
                            let hi = window == 0 ? seqStart[u + 1] : min(seqStart[u + 1], p + window + 1)
                            for q in lo..<hi where q != p {
                                let j = Int(seqItems[q])
                                if acc[j] == 0 {
                                    touched[nTouched] = Int32(j)
                                    nTouched += 1
                                }
                                acc[j] += 1
                            }
                        }
                        guard nTouched > 0 else { continue }
                        heap.reset()
                        let ni = Double(users[i])
                        for t in 0..<nTouched {
                            let j = Int(touched[t])
                            heap.push(score: Float(Double(acc[j]) / (ni * Double(users[j])).squareRoot()), id: ids[j])
                            acc[j] = 0
                        }
                        counts[i] = heap.sorted(ids: outIDs.baseAddress! + i * k, scores: outScores.baseAddress! + i * k)
                    }
                    done.withLock { d in
                        d += range.count
                        progress(d, itemCount)
                    }
                }
            }
        }
        }
        }
        }
        }
        }
        }
        return (0..<itemCount).map { i in
            RankedListRecord(key: String(itemIDs[i]), ids: Array(outIDs[(i * k)..<(i * k + counts[i])]),
                             scores: Array(outScores[(i * k)..<(i * k + counts[i])]))
        }
    }

    /// Per user, the distinct items in time order (equal timestamps: input order), each at its
    /// first interaction: user u's sequence is `items[start[u]..<start[u + 1]]`.
    static func sequences(userCount: Int, itemCount: Int, interUser: [Int32], interItem: [Int32],
                          interTime: [Int64]) -> (start: [Int], items: [Int32]) {
        // Bucket interactions by user (counting sort, input order inside a bucket).
        var bucket = [Int](repeating: 0, count: userCount + 1)
        for u in interUser { bucket[Int(u) + 1] += 1 }
        for u in 0..<userCount { bucket[u + 1] += bucket[u] }
        var fill = bucket
        var order = [Int](repeating: 0, count: interUser.count)
        for (x, u) in interUser.enumerated() {
            order[fill[Int(u)]] = x
            fill[Int(u)] += 1
        }
        // Time order per user, then drop repeats (a stamp per item: the last user that saw it).
        var start = [Int](repeating: 0, count: userCount + 1)
        var items: [Int32] = []
        items.reserveCapacity(interItem.count)
        var seenBy = [Int32](repeating: -1, count: itemCount)
        for u in 0..<userCount {
            let range = bucket[u]..<bucket[u + 1]
            order[range].sort { interTime[$0] != interTime[$1] ? interTime[$0] < interTime[$1] : $0 < $1 }
            for x in order[range] {
                let i = Int(interItem[x])
                if seenBy[i] != Int32(u) {
                    seenBy[i] = Int32(u)
                    items.append(Int32(i))
                }
            }
            start[u + 1] = items.count
        }
        return (start, items)
    }
}
