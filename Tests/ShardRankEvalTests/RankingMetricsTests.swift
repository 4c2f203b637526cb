import Testing
@testable import ShardRankEval

@Suite struct RankingMetricsTests {
    static func b(_ s: String) -> [Bool] { s.map { $0 == "1" } }

    /// The course definition on hand-computed cases (the table).
    static let courseCases: [(String, Double)] = [("001", 1.0 / 9), ("011", 7.0 / 18), ("111", 1.0), ("100", 1.0 / 3), ("010", 1.0 / 6), ("000", 0.0)]
    static let commonCases: [(String, Double)] = [("001", 1.0 / 3), ("011", 7.0 / 12), ("111", 1.0), ("100", 1.0), ("010", 1.0 / 2)]

    @Test(arguments: courseCases)
    func courseAP(pattern: String, want: Double) {
        #expect(abs(RankingMetrics.averagePrecisionCourse(Self.b(pattern), n: 3) - want) < 1e-12)
    }

    /// The common definition on the same lists, when every relevant item is in the list:
    /// Σ P(k)·rel(k) ÷ min(K, #relevant).
    @Test(arguments: commonCases)
    func commonAP(pattern: String, want: Double) {
        let rel = Self.b(pattern)
        let n = rel.filter { $0 }.count
        #expect(abs(RankingMetrics.averagePrecision(rel, k: 3, relevantCount: n) - want) < 1e-12)
    }

    @Test func commonAPCountsRelevantItemsMissingFromTheList() {
        // 1 of 4 relevant items retrieved at rank 1, K = 3: (1/1) / min(3, 4).
        #expect(abs(RankingMetrics.averagePrecision(Self.b("100"), k: 3, relevantCount: 4) - 1.0 / 3) < 1e-12)
    }

    @Test func precisionRecallNDCG() {
        let rel = Self.b("1010")
        #expect(RankingMetrics.precision(rel, k: 4) == 0.5)
        #expect(RankingMetrics.precision(rel, k: 2) == 0.5)
        #expect(RankingMetrics.recall(rel, k: 4, relevantCount: 4) == 0.5)
        #expect(RankingMetrics.recall(rel, k: 1, relevantCount: 2) == 0.5)
        // DCG = 1 + 1/log2(4) = 1.5; IDCG(2) = 1 + 1/log2(3)
        let want = 1.5 / (1 + 1 / log2(3.0))
        #expect(abs(RankingMetrics.ndcg(rel, k: 4, relevantCount: 2) - want) < 1e-12)
        #expect(RankingMetrics.ndcg(Self.b("11"), k: 2, relevantCount: 2) == 1)
        #expect(RankingMetrics.ndcg(Self.b("00"), k: 2, relevantCount: 2) == 0)
        #expect(RankingMetrics.ndcg([], k: 2, relevantCount: 0) == 0)
    }

    @Test func quantiles() {
        let v = (1 ... 100).map(Double.init)
        #expect(RankingMetrics.quantile(v, 0.5) == 50)
        #expect(RankingMetrics.quantile(v, 0.99) == 99)
        #expect(RankingMetrics.quantile(v, 1) == 100)
        #expect(RankingMetrics.quantile([], 0.5) == 0)
    }
}

#if canImport(Glibc)
import Glibc
#endif
