import Testing
import ShardRankKernels

/// Top-k and merges against `sorted()`; scores are drawn from a few values so ties are common.
@Suite struct TopKTests {
    func randomItems(_ n: Int, seed: UInt64, distinctValues: Int = 10) -> [ScoredID] {
        var rng = SplitMix64(seed: seed)
        var ids = Array(0..<UInt64(n * 3)).map { $0 * 7 + 3 }
        for i in stride(from: ids.count - 1, to: 0, by: -1) { ids.swapAt(i, rng.int(0, i)) }
        return (0..<n).map { ScoredID(id: ids[$0], score: Float(rng.int(0, distinctValues)) - 3) }
    }

    @Test(arguments: [0, 1, 2, 5, 100, 999, 1000, 1500])
    func selectMatchesSorted(k: Int) {
        for n in [0, 1, 7, 1000] {
            let items = randomItems(n, seed: UInt64(n + k))
            let scores = items.map(\.score), ids = items.map(\.id)
            let got = scores.withUnsafeBufferPointer { s in
                ids.withUnsafeBufferPointer { TopK.select(scores: s, ids: $0, k: k) }
            }
            #expect(got == KernelReference.topK(items, k: k), "n=\(n) k=\(k)")
        }
    }

    @Test func heapIsReusableAndNaNIsIgnored() {
        let heap = TopKHeap(capacity: 3)
        for round in 0..<3 {
            heap.reset()
            heap.push(score: .nan, id: 1)
            heap.push(score: 1, id: 9)
            heap.push(score: 1, id: 4)
            heap.push(score: 2, id: 100)
            #expect(heap.threshold == 1)
            heap.push(score: 1, id: 2)   // ties with the worst (1, 9): lower id wins
            heap.push(score: 0.5, id: 0) // below the threshold
            let expected = [ScoredID(id: 100, score: 2), ScoredID(id: 2, score: 1), ScoredID(id: 4, score: 1)]
            #expect(heap.sortedItems() == expected, "round \(round)")
            #expect(heap.sortedItems() == expected, "sortedItems keeps the contents")
            heap.push(score: 1, id: 3)
            #expect(heap.sortedItems() == [ScoredID(id: 100, score: 2), ScoredID(id: 2, score: 1), ScoredID(id: 3, score: 1)])
            var ids = [UInt64](repeating: 0, count: 3), scores = [Float](repeating: 0, count: 3)
            #expect(heap.sorted(ids: &ids, scores: &scores) == 3)
            #expect(ids == [100, 2, 3] && scores == [2, 1, 1])
        }
    }

    @Test func exclusionsAndImplicitIDs() {
        let scores: [Float] = [5, 1, 5, 3, 9, 9, 0]
        let exclude: [UInt64] = [14, 15] // firstID 10: excludes the two 9s
        let got = scores.withUnsafeBufferPointer { s in
            exclude.withUnsafeBufferPointer { TopK.select(scores: s, firstID: 10, k: 3, excluding: $0) }
        }
        #expect(got == [ScoredID(id: 10, score: 5), ScoredID(id: 12, score: 5), ScoredID(id: 13, score: 3)])
    }

    @Test(arguments: [1, 2, 5, 8])
    func kWayMergeMatchesSorted(shards: Int) {
        let all = randomItems(600, seed: UInt64(shards))
        var lists = Array(repeating: [ScoredID](), count: shards)
        for (i, it) in all.enumerated() { lists[i % shards].append(it) }
        lists = lists.map { KernelReference.topK($0, k: 50) } // per-shard top-50, sorted
        let expected = KernelReference.topK(lists.flatMap { $0 }, k: 100)
        #expect(TopK.merge(lists, k: 100) == expected)
        #expect(TopK.merge(lists + [[]], k: 7) == Array(expected.prefix(7)))
        #expect(TopK.merge([], k: 5).isEmpty)
        // The positions: each merged item is where mergePositions says it is.
        let positions = TopK.mergePositions(counts: lists.map(\.count), k: 100, item: { lists[$0][$1] })
        #expect(positions?.map { lists[$0.list][$0.index] } == expected)
    }

    @Test func mergePositionsRefusesAListOutOfOrderOrANaN() {
        let sorted: [[ScoredID]] = [[.init(id: 5, score: 0.9), .init(id: 9, score: 0.5)], [.init(id: 2, score: 0.9), .init(id: 4, score: 0.6)]]
        let got = TopK.mergePositions(counts: [2, 2], k: 3, item: { sorted[$0][$1] })
        #expect(got?.map { [$0.list, $0.index] } == [[1, 0], [0, 0], [1, 1]])  // ties to the lower id
        let unsorted: [[ScoredID]] = [[.init(id: 1, score: 0.1), .init(id: 9, score: 0.5)], sorted[1]]
        #expect(TopK.mergePositions(counts: [2, 2], k: 4, item: { unsorted[$0][$1] }) == nil)
        let nan: [[ScoredID]] = [[.init(id: 5, score: .nan), .init(id: 9, score: 0.5)], sorted[1]]
        #expect(TopK.mergePositions(counts: [2, 2], k: 3, item: { nan[$0][$1] }) == nil)
        #expect(TopK.mergePositions(counts: [2, 2], k: 0, item: { sorted[$0][$1] })?.isEmpty == true)
        // merge tolerates what mergePositions refuses: it ranks everything (NaN last).
        #expect(TopK.merge(unsorted, k: 3) == [.init(id: 2, score: 0.9), .init(id: 4, score: 0.6), .init(id: 9, score: 0.5)])
        #expect(TopK.merge(nan, k: 4).map(\.id) == [2, 4, 9, 5])
    }

    @Test func dedupeMergeKeepsSourcesAndBestScore() {
        var rng = SplitMix64(seed: 99)
        let lists: [[ScoredID]] = (0..<8).map { _ in
            (0..<40).map { _ in ScoredID(id: UInt64(rng.int(0, 60)), score: Float(rng.int(0, 9))) }
        }
        var expected: [UInt64: (Float, UInt8)] = [:]
        for (s, l) in lists.enumerated() {
            for it in l {
                let old = expected[it.id] ?? (-.infinity, 0)
                expected[it.id] = (max(old.0, it.score), old.1 | UInt8(1) << s)
            }
        }
        let got = TopK.mergeCandidates(lists)
        #expect(got.count == expected.count)
        #expect(Set(got.map(\.id)).count == got.count)
        for c in got {
            #expect(expected[c.id]?.0 == c.score && expected[c.id]?.1 == c.sources, "id \(c.id)")
        }
        #expect(got.map(\.item) == got.map(\.item).sorted(by: ScoredID.ranksBefore))
    }
}
