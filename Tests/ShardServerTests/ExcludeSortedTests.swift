import ShardRankRouting
import Foundation
import Testing
import TestSupport
import RPCCore
import ShardRankIDs
import ShardRankKernels
@testable import ShardRankTables
import ShardRankWire
@testable import ShardServer

/// `SearchRequest.exclude_sorted` is applied like `exclude_ids` (their union) in every way a
/// shard searches — the exact scan, the ANN traversal, a batched pass shared with other calls —
/// with thousands of ids; profiles carry the stored history; Info reports the hash seed.
@Suite struct ExcludeSortedTests {
    /// Thousands of excluded ids: the exact top 20, every 5th row of the slice, and ids no shard holds.
    static func exclusions(top: [UInt64]) -> [UInt64] {
        Array(top.prefix(20)) + (0 ..< ANNSearchTests.n / 5).map { UInt64($0 * 5 * 3 + 7) } + (0 ..< 500).map { 1 << 40 + UInt64($0) }
    }

    func request(_ q: Int, k: UInt32, mode: SearchMode, ids: [UInt64] = [], sorted: [UInt64] = []) -> SearchRequest {
        SearchRequest(table: "items", queries: ANNSearchTests.query(q), dim: UInt32(ANNSearchTests.dim), k: k, excludeIDs: ids, mode: mode,
                      excludeSorted: PackedIDs(sorted))
    }

    @Test(arguments: [SearchMode.exact, .ann]) func exactAndApproximateSearchExcludeTheUnion(mode: SearchMode) async throws {
        let root = ANNSearchTests.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try ANNSearchTests.publish(root)
        let backend = try ANNSearchTests.backend(root)
        for q in 0 ..< 6 {
            let top = try backend.search(request(q, k: 40, mode: .exact), context: ANNSearchTests.context()).results[0].ids
            let excluded = Self.exclusions(top: top)
            #expect(excluded.count > 2900)
            // Split over the two fields (overlapping a little), or all in one: the same answer.
            let split = request(q, k: 10, mode: mode, ids: Array(excluded.prefix(30)), sorted: Array(excluded.dropFirst(25)))
            let r = try backend.search(split, context: ANNSearchTests.context())
            let viaList = try backend.search(request(q, k: 10, mode: mode, ids: excluded), context: ANNSearchTests.context())
            let viaAsync = try await backend.searchAsync(split, context: ANNSearchTests.context())
            #expect(r.mode == mode && viaAsync.mode == mode)
            #expect(r.results[0].ids.count == 10, "k results, no post-filtering gaps")
            #expect(Set(r.results[0].ids).isDisjoint(with: excluded))
            #expect(r.results == viaList.results && r.results == viaAsync.results)
            if mode == .exact {
                let want = try backend.search(request(q, k: 10 + 40, mode: .exact), context: ANNSearchTests.context()).results[0].ids
                    .filter { !excluded.contains($0) }
                // The best unexcluded hits of the unfiltered top 50 lead the answer.
                #expect(Array(r.results[0].ids.prefix(want.count)) == Array(want.prefix(10)))
            }
        }
    }

    /// Calls with thousands of exclusions each share one pass and still get exactly what each
    /// would get alone.
    @Test func batchedCallsWithLargeSortedExclusionsEqualSeparateCalls() async throws {
        let (backend, root) = try SearchBatcherTests.backend()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let dim = UInt32(SearchBatcherTests.dim)
        func req(_ q: Int, k: UInt32, sorted: [UInt64] = [], ids: [UInt64] = []) -> SearchRequest {
            SearchRequest(table: "items", queries: SearchBatcherTests.query(q), dim: dim, k: k, excludeIDs: ids, excludeSorted: PackedIDs(sorted))
        }
        let rowIDs = (0 ..< 3000).map { UInt64($0 * 3 + 7) }
        // Call 0 excludes the query's whole top 600 (and more): a pass that asked for fewer than
        // k + 600 hits would leave it short.
        let top = try backend.search(req(0, k: 600), context: SearchBatcherTests.context()).results[0].ids
        let requests = [
            req(0, k: 10, sorted: top + rowIDs.enumerated().filter { $0.offset % 3 == 0 }.map(\.element)),
            req(0, k: 10, sorted: rowIDs.enumerated().filter { $0.offset % 2 == 1 }.map(\.element) + [1 << 50], ids: [top[0]]),
            req(1, k: 40),
        ]
        let want = try requests.map { try backend.search($0, context: SearchBatcherTests.context()) }
        backend.batcher.hold()
        let before = backend.batcher.stats
        let got = try await withThrowingTaskGroup(of: (Int, SearchResponse).self) { group in
            for (i, r) in requests.enumerated() { group.addTask { (i, try await backend.searchAsync(r, context: SearchBatcherTests.context())) } }
            try await waitUntil("every call queued") { backend.batcher.queuedJobs == requests.count }
            backend.batcher.release()
            var out = [SearchResponse?](repeating: nil, count: requests.count)
            for try await (i, r) in group { out[i] = r }
            return out.map { $0! }
        }
        #expect(backend.batcher.stats.passes - before.passes == 1, "one shared pass")
        for i in requests.indices {
            #expect(got[i].results == want[i].results, "call \(i)")
            let excluded = Set(requests[i].allExcludedIDs())
            #expect(got[i].results[0].ids.count == Int(requests[i].k) && Set(got[i].results[0].ids).isDisjoint(with: excluded))
        }
    }

    @Test func theServiceRefusesMalformedAndTooManyExclusions() {
        let query: [Float] = [1, 0]
        func decode(_ r: SearchRequest, limits: ShardLimits = ShardLimits()) throws(RPCError) -> SearchRequest {
            try ShardService.decodeSearch(Array(r.encoded().payload), limits)
        }
        do {
            _ = try decode(SearchRequest(table: "items", queries: query, dim: 2, k: 1, excludeSorted: PackedIDs(trustedBytes: [3, 0x80], count: 2)))
            Issue.record("accepted a truncated exclude_sorted")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("exclude_sorted"), "\(error)")
        }
        var limits = ShardLimits()
        limits.maxExcludedIDs = 100
        let many = SearchRequest(table: "items", queries: query, dim: 2, k: 1, excludeIDs: [1], excludeSorted: PackedIDs((0 ..< 100).map(UInt64.init)))
        do {
            _ = try decode(many, limits: limits)
            Issue.record("accepted 101 exclusions over a limit of 100")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("limit of 100"), "\(error)")
        }
        #expect((try? decode(many)) != nil, "within the default limit")
        #expect(ShardLimits().maxExcludedIDs == 1_000_000)
    }

    @Test(arguments: [true, false]) func profilesCarryTheStoredHistoryAndInfoTheSeed(stored: Bool) throws {
        let root = ANNSearchTests.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let seed: UInt64 = 0xABCD_EF01_2345_6789
        let b = try TableSetBuilder(root: root, shardCount: 1, seed: seed, genres: ["Drama"], countries: ["DE"])
        let history = (0 ..< 2000).map { UInt64($0) * 7 + 1 }
        b.writesProfileHistory = stored  // false: the layout of tables built before the history sections
        try b.addProfiles([UserProfileRecord(userID: 5, recentItems: [8, 1], history: history, topGenres: [0], country: 0)])
        try [Float](repeating: 1, count: 4).withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: [1, 2], vectors: $0, dim: 2) }
        try b.publish()
        let backend = try TableSetBackend(root: root, shard: 0, of: 1, pool: WorkerPool(threadCount: 1))
        let r = try backend.profiles(ProfilesRequest(userIDs: [5, 6]), context: ANNSearchTests.context())
        #expect(r.missingUserIDs == [6])
        let p = try #require(r.profiles.first)
        #expect(p.recentItemIDs == [8, 1])
        #expect(p.history.decoded() == (stored ? history : [1, 8]), "the whole history, or the recent items of an older table")
        // Through the wire, unchanged.
        #expect(try ProfilesResponse.decode(Array(r.encoded().payload)) == r)
        #expect(backend.info().hashSeed == seed)
        #expect(SyntheticBackend(table: SyntheticTable(rows: 4, dim: 2)).info().hashSeed == StableHash.defaultSeed)
    }
}
