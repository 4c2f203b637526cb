import Foundation
import Testing
import ShardRankKernels
@testable import ShardRankTables

/// Co-visitation similar lists (`CoVisitation`, `build --similar-source interactions`): a planted
/// example with hand-computed cosines, window semantics, re-watches, ties, empty lists, a brute
/// force over random histories, and a build round trip.
@Suite struct CoVisitationTests {
    /// Interactions as (user index, item id, timestamp), in input order, over `ids` (item index →
    /// id). Returns the lists by item id.
    static func lists(ids: [UInt64], users: Int, _ events: [(Int, UInt64, Int64)], k: Int, window: Int,
                      workers: Int? = nil) -> [UInt64: RankedListRecord] {
        let index = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, $0) })
        let out = CoVisitation.compute(itemIDs: ids, userCount: users, interUser: events.map { Int32($0.0) },
                                       interItem: events.map { Int32(index[$0.1]!) }, interTime: events.map(\.2),
                                       k: k, window: window, workers: workers)
        #expect(out.map(\.key) == ids.map { String($0) })  // one list per item, in item order
        return Dictionary(uniqueKeysWithValues: zip(ids, out))
    }

    // Items A…F, stored in an order unrelated to their ids so ties must go by id, not index.
    static let A: UInt64 = 10, B: UInt64 = 20, C: UInt64 = 30, D: UInt64 = 40, E: UInt64 = 50, F: UInt64 = 60
    static let ids: [UInt64] = [C, A, F, E, B, D]

    /// u0: A B C, u1: A B, u2: B C D, u3: D E, u4: A. Given out of time order on purpose.
    static let planted: [(Int, UInt64, Int64)] = [
        (2, D, 30), (0, C, 3), (1, B, 11), (0, A, 1), (3, E, 41), (2, B, 10), (0, B, 2), (4, A, 7),
        (1, A, 10), (2, C, 20), (3, D, 40),
    ]

    static func check(_ got: RankedListRecord?, _ want: [(UInt64, Double)], sourceLocation: SourceLocation = #_sourceLocation) {
        guard let got else { Issue.record("no list", sourceLocation: sourceLocation); return }
        #expect(got.ids == want.map(\.0), "key \(got.key)", sourceLocation: sourceLocation)
        #expect(got.scores.count == want.count, sourceLocation: sourceLocation)
        for (s, w) in zip(got.scores, want) { #expect(abs(Double(s) - w.1) < 1e-6, "key \(got.key): \(s) vs \(w.1)", sourceLocation: sourceLocation) }
    }

    /// n: A 3, B 3, C 2, D 2, E 1, F 0. Whole histories: c(A,B) 2, c(A,C) 1, c(B,C) 2, c(B,D) 1,
    /// c(C,D) 1, c(D,E) 1; score c / √(n_i n_j).
    @Test(arguments: [nil, 1, 3] as [Int?])
    func plantedWholeHistory(workers: Int?) {
        let l = Self.lists(ids: Self.ids, users: 5, Self.planted, k: 5, window: 0, workers: workers)
        let (A, B, C, D, E, F) = (Self.A, Self.B, Self.C, Self.D, Self.E, Self.F)
        Self.check(l[A], [(B, 2 / 3.0), (C, 1 / 6.0.squareRoot())])
        Self.check(l[B], [(C, 2 / 6.0.squareRoot()), (A, 2 / 3.0), (D, 1 / 6.0.squareRoot())])
        Self.check(l[C], [(B, 2 / 6.0.squareRoot()), (D, 0.5), (A, 1 / 6.0.squareRoot())])
        Self.check(l[D], [(E, 1 / 2.0.squareRoot()), (C, 0.5), (B, 1 / 6.0.squareRoot())])
        Self.check(l[E], [(D, 1 / 2.0.squareRoot())])
        Self.check(l[F], [])  // no interactions
    }

    /// Window 1: only neighbours in time count, so A–C (u0: A B C) and B–D (u2: B C D) vanish.
    @Test func windowOfOne() {
        let l = Self.lists(ids: Self.ids, users: 5, Self.planted, k: 5, window: 1)
        let (A, B, C, D, E, F) = (Self.A, Self.B, Self.C, Self.D, Self.E, Self.F)
        Self.check(l[A], [(B, 2 / 3.0)])
        Self.check(l[B], [(C, 2 / 6.0.squareRoot()), (A, 2 / 3.0)])
        Self.check(l[C], [(B, 2 / 6.0.squareRoot()), (D, 0.5)])
        Self.check(l[D], [(E, 1 / 2.0.squareRoot()), (C, 0.5)])
        Self.check(l[E], [(D, 1 / 2.0.squareRoot())])
        Self.check(l[F], [])
        // Window 2 covers every pair of 3-item histories: the same as the whole history.
        let w2 = Self.lists(ids: Self.ids, users: 5, Self.planted, k: 5, window: 2)
        let w0 = Self.lists(ids: Self.ids, users: 5, Self.planted, k: 5, window: 0)
        #expect(w2 == w0)
    }

    /// A re-watch counts once, at its first position: u0 watching A again after C changes nothing
    /// (not n_A, not the window-1 neighbours of A), and a user who only repeats one item adds nothing.
    @Test func rewatchesCountOnce() {
        var events = Self.planted
        events.append((0, Self.A, 4))          // u0: A B C A
        events.append((4, Self.A, 8))          // u4: A A
        events.append((0, Self.B, 5))          // u0: A B C A B
        for window in [0, 1, 2] {
            #expect(Self.lists(ids: Self.ids, users: 5, events, k: 5, window: window)
                    == Self.lists(ids: Self.ids, users: 5, Self.planted, k: 5, window: window), "window \(window)")
        }
        // Equal timestamps keep the input order: u0 A(1) B(1) C(1) is still A B C, while C A B
        // makes A and C neighbours.
        let others = Self.planted.filter { $0.0 != 0 }
        let abc = others + [(0, Self.A, 1), (0, Self.B, 1), (0, Self.C, 1)]
        #expect(Self.lists(ids: Self.ids, users: 5, abc, k: 5, window: 1)
                == Self.lists(ids: Self.ids, users: 5, Self.planted, k: 5, window: 1))
        let cab = others + [(0, Self.C, 1), (0, Self.A, 1), (0, Self.B, 1)]
        #expect(Self.lists(ids: Self.ids, users: 5, cab, k: 5, window: 1)[Self.A]!.ids.contains(Self.C))
    }

    /// Equal scores rank the lower id first, whatever the storage order; k cuts the list.
    @Test func tiesGoToTheLowerIDAndKCuts() {
        // X=5 co-visited once with Y=9 and once with Z=7, n_Y = n_Z = 1: equal scores 1/√2.
        let ids: [UInt64] = [5, 9, 7]
        let events: [(Int, UInt64, Int64)] = [(0, 5, 1), (0, 9, 2), (1, 5, 1), (1, 7, 2)]
        let l = Self.lists(ids: ids, users: 2, events, k: 2, window: 0)
        Self.check(l[5], [(7, 1 / 2.0.squareRoot()), (9, 1 / 2.0.squareRoot())])
        let one = Self.lists(ids: ids, users: 2, events, k: 1, window: 0)
        Self.check(one[5], [(7, 1 / 2.0.squareRoot())])
        Self.check(one[9], [(5, 1 / 2.0.squareRoot())])
        let b = Self.lists(ids: Self.ids, users: 5, Self.planted, k: 2, window: 0)
        Self.check(b[Self.B], [(Self.C, 2 / 6.0.squareRoot()), (Self.A, 2 / 3.0)])
    }

    @Test func noInteractionsGiveEmptyLists() {
        let l = Self.lists(ids: [1, 2, 3], users: 0, [], k: 3, window: 0)
        #expect(l.values.allSatisfy { $0.ids.isEmpty && $0.scores.isEmpty })
        #expect(CoVisitation.compute(itemIDs: [], userCount: 0, interUser: [], interItem: [], interTime: [], k: 2, window: 3).isEmpty)
    }

    /// Against a direct implementation of the definition (dictionaries, every pair) on random
    /// histories with repeats and equal timestamps, for several windows and worker counts.
    @Test(arguments: [0, 1, 2, 5])
    func matchesTheDefinition(window: Int) {
        var rng = SplitMix64(seed: UInt64(100 + window))
        let itemCount = 700, userCount = 60
        let ids = (0..<itemCount).map { UInt64(($0 * 7919) % 1000 + 1) }  // distinct, scrambled
        var events: [(Int, UInt64, Int64)] = []
        for u in 0..<userCount {
            for _ in 0..<Int(rng.next() % 25) {
                // Skewed towards the first 40 items so pairs repeat across users.
                let i = rng.next() % 3 == 0 ? Int(rng.next() % UInt64(itemCount)) : Int(rng.next() % 40)
                events.append((u, ids[i], Int64(rng.next() % 30)))
            }
        }
        events.shuffle(using: &rng)
        // Reference.
        var seqs = [[UInt64]](repeating: [], count: userCount)
        for u in 0..<userCount {
            let mine = events.enumerated().filter { $0.element.0 == u }
                .sorted { $0.element.2 != $1.element.2 ? $0.element.2 < $1.element.2 : $0.offset < $1.offset }
            for e in mine where !seqs[u].contains(e.element.1) { seqs[u].append(e.element.1) }
        }
        var n: [UInt64: Int] = [:], c: [UInt64: [UInt64: Int]] = [:]
        for s in seqs {
            for i in s { n[i, default: 0] += 1 }
            for p in s.indices {
                for q in s.indices where q != p && (window == 0 || abs(p - q) <= window) {
                    c[s[p], default: [:]][s[q], default: 0] += 1
                }
            }
        }
        let k = 6
        for workers in [1, 3] {
            let got = Self.lists(ids: ids, users: userCount, events, k: k, window: window, workers: workers)
            for id in ids {
                var want: [(id: UInt64, score: Float)] = []
                for (j, cij) in c[id] ?? [:] {
                    let denominator = (Double(n[id]!) * Double(n[j]!)).squareRoot()
                    want.append((j, Float(Double(cij) / denominator)))
                }
                want.sort { $0.score != $1.score ? $0.score > $1.score : $0.id < $1.id }
                let top = want.prefix(k)
                #expect(got[id]!.ids == top.map { $0.id }, "item \(id) window \(window)")
                #expect(got[id]!.scores == top.map { $0.score }, "item \(id) window \(window)")
            }
        }
    }

    // MARK: - Build round trip

    @Test func buildStoresTheCoVisitationLists() throws {
        let input = try TempDir(), out = try TempDir()
        defer { input.cleanup(); out.cleanup() }
        try SmallWorld().write(to: input)
        var options = BuildOptions(shardCount: 3, similarK: 2)
        options.similarSource = .interactions
        options.covisitWindow = 0
        _ = try TableSetBuilder.build(inputDirectory: input.path, root: out.path, options: options)
        let sets = try (0..<3).map { try TableSetLoader.load(root: out.path, shard: $0, of: 3) }
        func list(_ key: String) -> ([UInt64], [Float])? {
            guard let v = sets[sets[0].router.shard(ofKey: key)].list("similar")?.list(forKey: key) else { return nil }
            return (Array(v.ids), Array(v.scores))
        }
        // SmallWorld: user 1 watches 10 20 30 10 (re-watch), user 2 20 40, user 3 20.
        // n: 10 → 1, 20 → 3, 30 → 1, 40 → 1. Pairs: 10–20, 10–30, 20–30, 20–40, each once.
        let r3 = Float(1 / 3.0.squareRoot())
        #expect(list("10")! == ([30, 20], [1, r3]))
        #expect(list("20")! == ([10, 30], [r3, r3]))   // three-way tie at 1/√3: lower ids first
        #expect(list("30")! == ([10, 20], [1, r3]))
        #expect(list("40")! == ([20], [r3]))
        // The vector lists differ (the default source): 10's nearest by inner product is 20.
        let vOut = try TempDir()
        defer { vOut.cleanup() }
        _ = try TableSetBuilder.build(inputDirectory: input.path, root: vOut.path, options: BuildOptions(shardCount: 1, similarK: 2))
        let v = try TableSetLoader.load(root: vOut.path, shard: 0, of: 1)
        #expect(Array(v.list("similar")!.list(forKey: "10")!.ids) == [20, 30])
    }

    @Test func interactionsSourceNeedsInteractions() throws {
        let input = try TempDir(), out = try TempDir()
        defer { input.cleanup(); out.cleanup() }
        try SmallWorld().write(to: input)
        try FileManager.default.removeItem(atPath: input.file("interactions.csv"))
        var options = BuildOptions(shardCount: 1, similarK: 2)
        options.similarSource = .interactions
        do {
            _ = try TableSetBuilder.build(inputDirectory: input.path, root: out.path, options: options)
            Issue.record("built without interactions.csv")
        } catch let e as TableError {
            #expect("\(e)".contains("interactions.csv") && "\(e)".contains("--similar-source interactions"), "\(e)")
        }
        #expect(try TableSetCatalog(root: out.path).completeVersions().isEmpty)
        // Without --similar nothing asks for it: the build succeeds.
        options.similarK = nil
        #expect(try TableSetBuilder.build(inputDirectory: input.path, root: out.path, options: options) == 1)
    }
}
