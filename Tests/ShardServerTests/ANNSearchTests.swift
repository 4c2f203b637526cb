import Foundation
import Testing
import RPCCore
import ShardRankKernels
import ShardRankTables
import ShardRankWire
@testable import ShardServer

/// Search through a slice's ANN index: which mode answers, that exclusions hold, the exact
/// fallbacks, the recall monitor, and the index carried across a hot reload.
@Suite struct ANNSearchTests {
    static let dim = 16, n = 12_000

    /// Clustered pseudo-random vectors (40 centres plus noise), as embeddings are. (Rows on a
    /// low-dimensional curve with near-ties everywhere, e.g. sin(i)+cos(row), need a re-rank depth
    /// of ~1000 for this recall: docs/kernels.md.)
    static func vectors(_ n: Int, shift: Float = 0) -> [Float] {
        var state: UInt64 = 42
        func next() -> Float {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Float((z ^ (z >> 31)) >> 40) / Float(1 << 24) * 2 - 1
        }
        let centres = (0 ..< 40 * dim).map { _ in next() }
        var x = [Float](repeating: 0, count: n * dim)
        for r in 0 ..< n {
            let c = Int((next() + 1) * 20) % 40
            for j in 0 ..< dim { x[r * dim + j] = centres[c * dim + j] + 0.35 * next() + shift }
        }
        return x
    }

    static func publish(_ root: String, defaultMode: String = "ann", shift: Float = 0, index: Bool = true) throws {
        let b = try TableSetBuilder(root: root, shardCount: 1)
        let ids = (0 ..< n).map { UInt64($0 * 3 + 7) }
        try vectors(n, shift: shift).withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: ids, vectors: $0, dim: dim, dtype: .int8) }
        if index {
            try b.addANNIndex(table: "items", options: IVFPQBuildOptions(lists: 64), defaults: ANNSearchParameters(nprobe: 16, rerank: 100),
                              defaultMode: defaultMode, pool: nil, recallSample: 50)
        }
        try b.publish()
    }

    static func backend(_ root: String, serving: ANNServing = ANNServing()) throws -> TableSetBackend {
        try TableSetBackend(root: root, shard: 0, of: 1, pool: WorkerPool(threadCount: 2), annServing: serving)
    }

    static func root() -> String { NSTemporaryDirectory() + "shardrank-ann-\(UInt64.random(in: 0 ... .max))" }

    static func context() -> ServerContext {
        ServerContext(path: "/shardrank.v1.Shard/Search", deadline: ContinuousClock.now.advanced(by: .seconds(5)))
    }

    static func query(_ seed: Int, count: Int = 1) -> [Float] {
        (0 ..< count * dim).map { j in Float(cos(Double(seed * 97 + j) * 0.41)) }
    }

    func request(_ q: Int, count: Int = 1, k: UInt32 = 10, exclude: [UInt64] = [], mode: SearchMode = .unspecified) -> SearchRequest {
        SearchRequest(table: "items", queries: Self.query(q, count: count), dim: UInt32(Self.dim), k: k, excludeIDs: exclude, mode: mode)
    }

    /// The manifest's knobs are for k = 10: a request that leaves them at 0 and asks for more
    /// results gets both scaled by √(k/10) (rerank at least k); explicit knobs are used as sent.
    @Test func defaultKnobsScaleWithK() throws {
        let defaults = ANNSearchParameters(nprobe: 4, rerank: 80)
        #expect(defaults.scaled(forK: 10) == defaults)
        #expect(defaults.scaled(forK: 5) == defaults)
        #expect(defaults.scaled(forK: 76) == ANNSearchParameters(nprobe: 11, rerank: 221))
        #expect(defaults.scaled(forK: 40) == ANNSearchParameters(nprobe: 8, rerank: 160))
        #expect(ANNSearchParameters(nprobe: 1, rerank: 10).scaled(forK: 1000) == ANNSearchParameters(nprobe: 10, rerank: 1000))
        let root = Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.publish(root)
        let ts = try TableSetLoader.load(root: root, shard: 0, of: 1)
        let index = try #require(ts.index("items"))
        func plan(k: UInt32, nprobe: UInt32 = 0, rerank: UInt32 = 0) throws(RPCError) -> ANNSearchParameters? {
            var req = request(1, k: k, mode: .ann)
            req.nprobe = nprobe
            req.rerank = rerank
            return try ANNSearch.plan(req, excluded: [], index: index, serving: ANNServing())?.parameters
        }
        #expect(try plan(k: 10) == index.defaults)
        #expect(try plan(k: 90) == index.defaults.scaled(forK: 90))
        #expect(try plan(k: 90, nprobe: 3, rerank: 500) == ANNSearchParameters(nprobe: 3, rerank: 500))
    }

    @Test func modesAnswerAsAskedAndANNMatchesExactClosely() async throws {
        let root = Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.publish(root)
        let backend = try Self.backend(root)
        var hits = 0, total = 0
        for q in 0 ..< 20 {
            let exact = try backend.search(request(q, mode: .exact), context: Self.context())
            let ann = try backend.search(request(q), context: Self.context())
            let annAsync = try await backend.searchAsync(request(q, mode: .ann), context: Self.context())
            #expect(exact.mode == .exact && ann.mode == .ann && annAsync.mode == .ann)
            #expect(ann.results == annAsync.results)
            #expect(ann.results[0].ids.count == 10)
            let want = Set(exact.results[0].ids)
            hits += ann.results[0].ids.filter { want.contains($0) }.count
            total += 10
        }
        #expect(Double(hits) / Double(total) >= 0.95, "recall@10 \(Double(hits) / Double(total))")
        // Batched queries: one result list per query, each what a single query gets.
        let batch = try backend.search(request(3, count: 4), context: Self.context())
        #expect(batch.results.count == 4 && batch.mode == .ann)
        let single = try backend.search(SearchRequest(table: "items", queries: Array(Self.query(3, count: 4)[(2 * Self.dim)..<(3 * Self.dim)]),
                                                      dim: UInt32(Self.dim), k: 10), context: Self.context())
        #expect(batch.results[2] == single.results[0])
        // With rows (what the coordinator asks for): the same hits, each with its stored row and
        // scale as a Lookup sends them; the rows come from the ANN kernel, not an id lookup (the
        // ids here are 3 × row + 7).
        for q in 0 ..< 5 {
            var req = request(q, k: 25, mode: .ann)
            req.withRows = true
            let r = try backend.search(req, context: Self.context())
            let plain = try backend.search(request(q, k: 25, mode: .ann), context: Self.context())
            let hits = r.results[0]
            #expect(r.mode == .ann && hits.ids == plain.results[0].ids && hits.scores == plain.results[0].scores && hits.ids.count == 25)
            let lookup = try LookupResponse.decode(Array(try backend.lookup(LookupRequest(table: "items", ids: hits.ids), context: Self.context()).bytes.dropFirst(5)))
            #expect(hits.vectors == lookup.vectors)
            #expect(hits.scales.withUnsafeBytes { Array($0) } == lookup.scales)
        }
    }

    @Test(arguments: [0.01, 0.10, 0.20])
    func exclusionsAreAppliedInsideTheSearch(share: Double) throws {
        let root = Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.publish(root)
        let backend = try Self.backend(root)
        // Exclude the exact answer's top hits plus a random share of the slice.
        var rng = SplitMix64(seed: UInt64(share * 1000))
        for q in 0 ..< 8 {
            let top = try backend.search(request(q, k: 20, mode: .exact), context: Self.context()).results[0].ids
            let random = (0 ..< Int(share * Double(Self.n))).map { _ in UInt64(Int.random(in: 0 ..< Self.n, using: &rng) * 3 + 7) }
            let exclude = Array(top.prefix(10)) + random
            let r = try backend.search(request(q, exclude: exclude), context: Self.context())
            #expect(r.mode == .ann)
            #expect(r.results[0].ids.count == 10)
            #expect(Set(r.results[0].ids).isDisjoint(with: exclude))
        }
    }

    @Test func fallsBackToExactWhenItShould() throws {
        let root = Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.publish(root, defaultMode: "exact")
        let backend = try Self.backend(root)
        // The manifest's default is exact: UNSPECIFIED scans, ANN uses the index.
        #expect(try backend.search(request(0), context: Self.context()).mode == .exact)
        #expect(try backend.search(request(0, mode: .ann), context: Self.context()).mode == .ann)
        // Half of the slice excluded: the scan answers, with k results and none excluded.
        let half = (0 ..< Self.n / 2).map { UInt64($0 * 2 * 3 + 7) }
        let r = try backend.search(request(1, exclude: half, mode: .ann), context: Self.context())
        #expect(r.mode == .exact && r.results[0].ids.count == 10 && Set(r.results[0].ids).isDisjoint(with: half))
        // A slice below the minimum size: exact.
        var small = ANNServing()
        small.minRows = Self.n + 1
        #expect(try Self.backend(root, serving: small).search(request(0, mode: .ann), context: Self.context()).mode == .exact)
        // Knobs beyond the limits: INVALID_ARGUMENT.
        var big = request(0, mode: .ann)
        big.rerank = 1_000_000
        #expect(throws: RPCError.self) { try backend.search(big, context: Self.context()) }
    }

    @Test func noIndexMeansExact() throws {
        let root = Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.publish(root, index: false)
        #expect(try Self.backend(root).search(request(0, mode: .ann), context: Self.context()).mode == .exact)
    }

    @Test func recallMonitorMeasuresSampledQueries() throws {
        let root = Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.publish(root)
        var serving = ANNServing()
        serving.shadowEvery = 1
        let backend = try Self.backend(root, serving: serving)
        for q in 0 ..< 10 {
            _ = try backend.search(request(q), context: Self.context())
            backend.recallMonitor!.drain()
        }
        let r = try #require(backend.recallMonitor!.snapshot["items"])
        #expect(r.queries + r.skipped == 10 && r.queries >= 1)
        #expect(r.expected == 10 * r.queries)
        #expect(r.recall >= 0.9 && r.recall <= 1)
    }

    @Test func indexIsCarriedByHotReloadAndABadOneKeepsTheOldVersion() throws {
        let root = Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.publish(root)
        let backend = try Self.backend(root)
        try Self.publish(root, shift: 0.001)
        #expect(backend.reloadNow() == .switched(from: 1, to: 2))
        let r = try backend.search(request(0), context: Self.context())
        #expect(r.mode == .ann && r.version == 2)
        // v3 with a damaged index file: rejected, v2 keeps serving through its index.
        try Self.publish(root, shift: 0.002)
        let path = root + "/v3/items.0-of-1.ann.srt"
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        guard case .rejected(version: 3, _) = backend.reloadNow() else {
            Issue.record("a corrupt index must reject the version")
            return
        }
        let after = try backend.search(request(0), context: Self.context())
        #expect(after.mode == .ann && after.version == 2)
    }
}
