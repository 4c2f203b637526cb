import Testing
import ShardRankKernels

@Suite struct DiversityTests {
    /// Naive MMR straight from the definition, in Double.
    func referenceMMR(_ rel: [Float], _ vecs: [[Float]], lambda: Float, k: Int, cosine: Bool,
                      attrs: [UInt64]?, cap: Int) -> [Int] {
        func sim(_ a: Int, _ b: Int) -> Double {
            var d = 0.0, na = 0.0, nb = 0.0
            for j in 0..<vecs[a].count {
                d += Double(vecs[a][j]) * Double(vecs[b][j])
                na += Double(vecs[a][j] * vecs[a][j]); nb += Double(vecs[b][j] * vecs[b][j])
            }
            return cosine ? (na > 0 && nb > 0 ? d / (na.squareRoot() * nb.squareRoot()) : 0) : d
        }
        var picked: [Int] = []
        var counts = [Int](repeating: 0, count: 64)
        while picked.count < k {
            var best = -1, bestScore = -Double.infinity
            for i in 0..<rel.count where !picked.contains(i) {
                if let attrs, (0..<64).contains(where: { attrs[i] >> UInt64($0) & 1 == 1 && counts[$0] >= cap }) { continue }
                let pen = picked.map { sim(i, $0) }.max() ?? 0
                let s = Double(lambda) * Double(rel[i]) - Double(1 - lambda) * pen
                if best < 0 || s > bestScore { best = i; bestScore = s }
            }
            if best < 0 { break }
            picked.append(best)
            if let attrs { for b in 0..<64 where attrs[best] >> UInt64(b) & 1 == 1 { counts[b] += 1 } }
        }
        return picked
    }

    @Test(arguments: [Float(0), 0.3, 0.7, 1])
    func mmrMatchesDefinition(lambda: Float) {
        var rng = SplitMix64(seed: UInt64(lambda * 10))
        let n = 60, d = 17
        // Integer data with distinct relevances: float and double agree on every choice.
        let vecs: [[Float]] = (0..<n).map { _ in (0..<d).map { _ in Float(rng.int(-3, 3)) } }
        let rel: [Float] = (0..<n).map { Float($0 * 37 % n) / 4 }
        let attrs: [UInt64] = (0..<n).map { _ in UInt64(rng.int(1, 7)) }
        let flat = vecs.flatMap { $0 }
        for cosine in [false, true] {
            for (useAttrs, cap) in [(false, Int.max), (true, 3)] {
                let got = flat.withUnsafeBufferPointer { v in
                    rel.withUnsafeBufferPointer { r in
                        attrs.withUnsafeBufferPointer { a in
                            Diversity.mmr(relevance: r, vectors: RowMatrix(f32: v.baseAddress!, count: n, dimension: d),
                                          lambda: lambda, k: 12, similarity: cosine ? .cosine : .innerProduct,
                                          attributes: useAttrs ? a : nil, attributeCap: cap)
                        }
                    }
                }
                let ref = referenceMMR(rel, vecs, lambda: lambda, k: 12, cosine: cosine, attrs: useAttrs ? attrs : nil, cap: cap)
                #expect(got == ref, "λ=\(lambda) cosine=\(cosine) attrs=\(useAttrs)")
                #expect(Set(got).count == got.count)
            }
        }
    }

    @Test func lambdaOneIsRelevanceOrder() {
        let rel: [Float] = [0.1, 0.9, 0.5, 0.9, 0.3]
        let v: [Float] = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
        let got = v.withUnsafeBufferPointer { vp in
            rel.withUnsafeBufferPointer {
                Diversity.mmr(relevance: $0, vectors: RowMatrix(f32: vp.baseAddress!, count: 5, dimension: 2), lambda: 1, k: 10)
            }
        }
        #expect(got == [1, 3, 2, 4, 0])
    }

    @Test func capPerAttributeKeepsOrderAndCaps() {
        // genres: bit 0 = drama, bit 1 = comedy
        let attrs: [UInt64] = [1, 1, 3, 2, 1, 2, 2, 0]
        let got = attrs.withUnsafeBufferPointer {
            Diversity.capPerAttribute(order: [0, 1, 2, 3, 4, 5, 6, 7], attributes: $0, cap: 2)
        }
        // 0 (d1), 1 (d2), 2 blocked (drama full), 3 (c1), 4 blocked, 5 (c2), 6 blocked, 7 (no genre)
        #expect(got == [0, 1, 3, 5, 7])
        let limited = attrs.withUnsafeBufferPointer { Diversity.capPerAttribute(order: [7, 6, 5], attributes: $0, cap: 1, limit: 2) }
        #expect(limited == [7, 6])
    }
}
