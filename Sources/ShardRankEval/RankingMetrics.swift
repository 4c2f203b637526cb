/// Offline ranking metrics of one user's ranked list against their held-out (relevant) items.
/// Pure functions; `relevance[i]` is true when the item at rank i+1 is relevant.
public enum RankingMetrics {
    /// Precision@K: relevant items in the top K ÷ K.
    public static func precision(_ relevance: [Bool], k: Int) -> Double {
        guard k > 0 else { return 0 }
        return Double(relevance.prefix(k).filter { $0 }.count) / Double(k)
    }

    /// Recall@K: relevant items in the top K ÷ all relevant items of the user.
    public static func recall(_ relevance: [Bool], k: Int, relevantCount: Int) -> Double {
        guard relevantCount > 0 else { return 0 }
        return Double(relevance.prefix(k).filter { $0 }.count) / Double(relevantCount)
    }

    /// Σ_{i ≤ K} P(i)·rel(i), the sum both AP definitions share.
    static func precisionSum(_ relevance: [Bool], k: Int) -> Double {
        var hits = 0
        var sum = 0.0
        for (i, r) in relevance.prefix(k).enumerated() where r {
            hits += 1
            sum += Double(hits) / Double(i + 1)
        }
        return sum
    }

    /// AP@K, the common definition (as in most libraries): Σ P(i)·rel(i) ÷ min(K, #relevant).
    public static func averagePrecision(_ relevance: [Bool], k: Int, relevantCount: Int) -> Double {
        let d = min(k, relevantCount)
        guard d > 0 else { return 0 }
        return precisionSum(relevance, k: k) / Double(d)
    }

    /// AP@N, the course definition: (1/N) Σ_{k=1}^{N} P(k)·rel(k), with N the list length K.
    /// For [0,0,1] it is 1/9, [0,1,1] 7/18, [1,1,1] 1, [1,0,0] 1/3, [0,1,0] 1/6.
    public static func averagePrecisionCourse(_ relevance: [Bool], n: Int) -> Double {
        guard n > 0 else { return 0 }
        return precisionSum(relevance, k: n) / Double(n)
    }

    /// NDCG@K with binary gains: DCG = Σ rel(i)/log2(i+1), normalised by the ideal DCG of
    /// min(K, #relevant) relevant items at the top.
    public static func ndcg(_ relevance: [Bool], k: Int, relevantCount: Int) -> Double {
        var dcg = 0.0
        for (i, r) in relevance.prefix(k).enumerated() where r { dcg += 1 / log2(Double(i + 2)) }
        var ideal = 0.0
        for i in 0 ..< min(k, relevantCount) { ideal += 1 / log2(Double(i + 2)) }
        return ideal > 0 ? dcg / ideal : 0
    }

    /// Marks each ranked item as relevant or not.
    public static func relevance(_ ranked: [UInt64], relevant: Set<UInt64>) -> [Bool] {
        ranked.map { relevant.contains($0) }
    }

    /// The q-quantile (0...1) of `values` (nearest rank); 0 for none.
    public static func quantile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let s = values.sorted()
        let i = min(s.count - 1, max(0, Int((q * Double(s.count)).rounded(.up)) - 1))
        return s[i]
    }

    /// Adds one answer's precision, recall, MAP (both definitions) and NDCG at every K of `ks`
    /// to `sums[K][metric]`, and its top-K items to `distinct` (catalog coverage).
    public static func accumulate(_ items: [UInt64], relevant: Set<UInt64>, ks: [Int], into sums: inout [Int: [String: Double]],
                                  distinct: inout Set<UInt64>) {
        let rel = relevance(items, relevant: relevant)
        for k in ks {
            distinct.formUnion(items.prefix(k))
            var m = sums[k] ?? [:]
            m["precision", default: 0] += precision(rel, k: k)
            m["recall", default: 0] += recall(rel, k: k, relevantCount: relevant.count)
            m["map_common", default: 0] += averagePrecision(rel, k: k, relevantCount: relevant.count)
            m["map_course", default: 0] += averagePrecisionCourse(rel, n: k)
            m["ndcg", default: 0] += ndcg(rel, k: k, relevantCount: relevant.count)
            sums[k] = m
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
