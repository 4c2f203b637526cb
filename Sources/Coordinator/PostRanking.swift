#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import ShardRankKernels

/// What post-ranking reads of an item (the `attributes` table).
struct ItemAttributes: Sendable, Equatable {
    var genresMask: UInt64
    var timestamp: Int64
    var popularity: Float = 0
}

/// Stage 4 — the final order: a freshness boost, then MMR (λ < 1) or plain best-first, with an
/// optional cap per genre, cut to k. Pure.
enum PostRanking {
    struct Options: Sendable, Equatable {
        var k: Int
        /// MMR trade-off: 1 = relevance only.
        var lambda: Float = 1
        /// At most this many items per genre (0: no cap).
        var genreCap = 0
        var freshnessWeight: Float = 0
        /// Unix seconds "now" and the boost's half-life (seconds).
        var now: Double = 0
        var halfLife: Double = 7 * 86_400
    }

    /// Indices into `ids` (and `rows`), best first, at most `k`. `scores` get the freshness boost.
    static func order(scores: inout [Float], ids: [UInt64], rows: RowMatrix?, attributes: [UInt64: ItemAttributes]?,
                      options o: Options) -> [Int] {
        let n = ids.count
        guard n > 0 else { return [] }
        var masks: [UInt64]?
        if o.genreCap > 0, let attributes { masks = ids.map { attributes[$0]?.genresMask ?? 0 } }
        if o.freshnessWeight > 0, let attributes {
            boostFreshness(&scores, ids: ids, attributes: attributes, weight: o.freshnessWeight, now: o.now, halfLife: o.halfLife)
        }
        if o.lambda < 1, let rows {
            return scores.withUnsafeBufferPointer { s in
                if let masks {
                    return masks.withUnsafeBufferPointer { m in
                        Diversity.mmr(relevance: s, vectors: rows, lambda: o.lambda, k: o.k, attributes: m, attributeCap: o.genreCap)
                    }
                }
                return Diversity.mmr(relevance: s, vectors: rows, lambda: o.lambda, k: o.k)
            }
        }
        // Plain best-first: only the first k are needed, unless the genre cap may skip some.
        let order = scores.withUnsafeBufferPointer { s in
            ids.withUnsafeBufferPointer { i in
                RankOrder.order(count: n, limit: masks == nil ? o.k : .max, score: { s[$0] }, id: { i[$0] })
            }
        }
        if let masks {
            return masks.withUnsafeBufferPointer { Diversity.capPerAttribute(order: order, attributes: $0, cap: o.genreCap, limit: o.k) }
        }
        return order
    }

    /// Adds `weight * 2^(-age / halfLife)` to each score, age = `now` - the item's timestamp in
    /// seconds (clamped at 0: an item from the future counts as new). Items without attributes
    /// get no boost.
    static func boostFreshness(_ scores: inout [Float], ids: [UInt64], attributes: [UInt64: ItemAttributes],
                               weight: Float, now: Double, halfLife: Double) {
        for i in 0 ..< min(scores.count, ids.count) {
            guard let a = attributes[ids[i]] else { continue }
            let age = max(0, now - Double(a.timestamp))
            scores[i] += weight * Float(exp2(-age / halfLife))
        }
    }

    /// Wall-clock time in Unix seconds.
    static func unixNow() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}
