/// The serving order of scored items — higher score first, equal scores to the lower id
/// (`ScoredID.ranksBefore`), NaN last — as a sort of packed 64-bit keys: the score's order
/// in the high 32 bits, the item's position in the low 32. Sorting plain integers is several
/// times cheaper than a comparator closure over structs, and the per-request candidate lists
/// (hundreds of items) are sorted this way on every request.
public enum RankOrder {
    /// A key that sorts ascending in serving order of `score` (NaN last, -0 == +0).
    @inlinable @inline(__always) public static func key(_ score: Float) -> UInt32 {
        if score.isNaN { return .max }
        let b = (score == 0 ? Float(0) : score).bitPattern
        let ascending = b & 0x8000_0000 != 0 ? ~b : b | 0x8000_0000
        return ~ascending
    }

    /// Within each run of equal keys (equal scores) of sorted packed values, the lower id first
    /// (then the lower position), for the runs that start before `through`. Runs are rare and short.
    @inlinable
    static func sortTiesByID(_ p: UnsafeMutableBufferPointer<UInt64>, through: Int, id: (Int) -> UInt64) {
        var start = 0
        while start < p.count && start < through {
            var end = start + 1
            while end < p.count && p[end] >> 32 == p[start] >> 32 { end += 1 }
            if end - start > 1 {
                var run = UnsafeMutableBufferPointer(rebasing: p[start ..< end])
                run.sort { a, b in
                    let x = id(Int(truncatingIfNeeded: a & 0xFFFF_FFFF)), y = id(Int(truncatingIfNeeded: b & 0xFFFF_FFFF))
                    return x < y || (x == y && a < b)
                }
            }
            start = end
        }
    }

    /// The best `limit` of a longer list without sorting all of it: a sorted window of packed
    /// keys, each position inserted by a binary search (most are rejected by one compare).
    /// Nil when equal scores straddle the cut (the caller sorts everything then, so ties still
    /// go to the lower id).
    @inlinable
    static func select(count: Int, limit: Int, score: (Int) -> Float, id: (Int) -> UInt64) -> [Int]? {
        // A heap array, not `withUnsafeTemporaryAllocation`: this is inlined into async callers,
        // where a stack allocation corrupted memory (seen with Swift 6.3's release builds).
        var window = [UInt64](repeating: 0, count: limit + 1)
        return window.withUnsafeMutableBufferPointer { top -> [Int]? in
            var n = 0
            var tieAtCut = false
            for i in 0 ..< count {
                let key = UInt64(key(score(i))) << 32 | UInt64(i)
                if n == limit {
                    let last = top[n - 1]
                    if key >> 32 == last >> 32 { tieAtCut = true }
                    if key > last { continue }
                }
                var lo = 0, hi = n
                while lo < hi {
                    let mid = (lo + hi) >> 1
                    if top[mid] < key { lo = mid + 1 } else { hi = mid }
                }
                var j = n
                while j > lo { top[j] = top[j - 1]; j -= 1 }
                top[lo] = key
                if n < limit { n += 1 } else if top[limit] >> 32 == top[limit - 1] >> 32 { tieAtCut = true }
            }
            if tieAtCut { return nil }
            sortTiesByID(UnsafeMutableBufferPointer(rebasing: top[0 ..< n]), through: n, id: id)
            return (0 ..< n).map { Int(truncatingIfNeeded: top[$0] & 0xFFFF_FFFF) }
        }
    }

    /// The positions 0 ..< `count` in serving order of (`score(i)`, `id(i)`); at most `limit`
    /// of them (the best).
    @inlinable
    public static func order(count: Int, limit: Int = .max, score: (Int) -> Float, id: (Int) -> UInt64) -> [Int] {
        precondition(count < Int(UInt32.max))
        guard count > 0, limit > 0 else { return [] }
        if limit <= 64 && limit * 4 <= count, let top = select(count: count, limit: limit, score: score, id: id) { return top }
        var packed = [UInt64](unsafeUninitializedCapacity: count) { buf, n in
            for i in 0 ..< count { buf[i] = UInt64(key(score(i))) << 32 | UInt64(i) }
            n = count
        }
        packed.sort()
        return packed.withUnsafeMutableBufferPointer { p -> [Int] in
            sortTiesByID(p, through: limit, id: id)
            let n = Swift.min(limit, count)
            return [Int](unsafeUninitializedCapacity: n) { out, m in
                for i in 0 ..< n { out[i] = Int(truncatingIfNeeded: p[i] & 0xFFFF_FFFF) }
                m = n
            }
        }
    }
}
