/// Re-ranking for diversity: maximal marginal relevance and per-attribute caps.
public enum Diversity {
    /// How MMR measures the similarity of two items.
    public enum Similarity: Sendable {
        case innerProduct
        case cosine
    }

    /// Maximal marginal relevance: repeatedly picks the unpicked item maximising
    /// `λ·relevance[i] − (1−λ)·max_{p picked} sim(i, p)` (the max term is 0 before the first
    /// pick; ties go to the lower index), optionally skipping items that would exceed
    /// `attributeCap` picked items for any attribute bit they carry.
    ///
    /// - Parameters:
    ///   - relevance: `n` scores, one per candidate.
    ///   - vectors: the `n` candidates' vectors (`vectors.count == n`).
    ///   - attributes: nil, or `n` bitmasks (bit b set = item has attribute b, e.g. a genre).
    ///   - attributeCap: with `attributes`, the most items picked per attribute bit.
    /// - Returns: up to `k` candidate indices in pick order.
    /// Cost: O(k·n·d) through the inner-product kernels; allocates O(n) scratch per call.
    public static func mmr(relevance: UnsafeBufferPointer<Float>, vectors: RowMatrix, lambda: Float,
                           k: Int, similarity: Similarity = .cosine,
                           attributes: UnsafeBufferPointer<UInt64>? = nil, attributeCap: Int = .max,
                           isa: KernelISA = .best) -> [Int] {
        let n = relevance.count
        precondition(vectors.count == n, "mmr: one vector per candidate")
        precondition(attributes == nil || attributes!.count == n)
        guard n > 0, k > 0 else { return [] }
        let d = vectors.dimension
        var maxSim = [Float](repeating: -.infinity, count: n)
        var picked = [Bool](repeating: false, count: n)
        var invNorm = [Float](repeating: 1, count: n)
        var sims = [Float](repeating: 0, count: n)
        var query = [Float](repeating: 0, count: d)
        var attributeCounts = [Int](repeating: 0, count: 64)
        if similarity == .cosine {
            invNorm.withUnsafeMutableBufferPointer { out in
                InnerProducts.squaredNorms(rows: vectors, out: out.baseAddress!, isa: isa)
                for i in 0..<n { out[i] = out[i] > 0 ? 1 / out[i].squareRoot() : 0 }
            }
        }
        var order: [Int] = []
        order.reserveCapacity(min(k, n))
        while order.count < k {
            var best = -1
            var bestScore: Float = 0
            for i in 0..<n where !picked[i] {
                if let attrs = attributes, blocked(attrs[i], attributeCounts, attributeCap) { continue }
                let penalty = order.isEmpty ? 0 : maxSim[i]
                let s = lambda * relevance[i] - (1 - lambda) * penalty
                if best < 0 || s > bestScore { best = i; bestScore = s }
            }
            if best < 0 { break }
            picked[best] = true
            order.append(best)
            if let attrs = attributes {
                var bits = attrs[best]
                while bits != 0 {
                    attributeCounts[bits.trailingZeroBitCount] += 1
                    bits &= bits - 1
                }
            }
            if order.count == k { break }
            // Similarity of every candidate to the new pick.
            let scale = vectors.scale(row: best)
            for j in 0..<d { query[j] = vectors.value(row: best, column: j) * scale }
            query.withUnsafeBufferPointer { q in
                sims.withUnsafeMutableBufferPointer { s in
                    InnerProducts.dot(query: q.baseAddress!, rows: vectors, scores: s.baseAddress!, isa: isa)
                }
            }
            for i in 0..<n where !picked[i] {
                let sim = similarity == .cosine ? sims[i] * invNorm[i] * invNorm[best] : sims[i]
                if sim > maxSim[i] { maxSim[i] = sim }
            }
        }
        return order
    }

    /// Keeps items in their given order, dropping any item that would make some attribute
    /// bit appear more than `cap` times among the kept ones, until `limit` are kept.
    /// - Parameters:
    ///   - order: candidate indices, best first.
    ///   - attributes: one bitmask per candidate index.
    public static func capPerAttribute(order: [Int], attributes: UnsafeBufferPointer<UInt64>,
                                       cap: Int, limit: Int = .max) -> [Int] {
        var counts = [Int](repeating: 0, count: 64)
        var kept: [Int] = []
        for i in order {
            if kept.count >= limit { break }
            if blocked(attributes[i], counts, cap) { continue }
            kept.append(i)
            var bits = attributes[i]
            while bits != 0 {
                counts[bits.trailingZeroBitCount] += 1
                bits &= bits - 1
            }
        }
        return kept
    }

    @inline(__always)
    static func blocked(_ mask: UInt64, _ counts: [Int], _ cap: Int) -> Bool {
        var bits = mask
        while bits != 0 {
            if counts[bits.trailingZeroBitCount] >= cap { return true }
            bits &= bits - 1
        }
        return false
    }
}
