import Foundation
import Testing
import TestSupport
import RPCCore
import ShardRankKernels
import ShardRankTables
import ShardRankWire
@testable import ShardServer

/// Concurrent Search calls that share one pass must get exactly what each would get alone.
@Suite struct SearchBatcherTests {
    static let dim = 16

    /// A one-shard int8 table set of `n` items with pseudo-random vectors, and its backend (every
    /// exact scan goes to the batcher unless `inlineExactRows` says otherwise).
    static func backend(n: Int = 3000, lockTables: Bool = false, inlineExactRows: Int = 0) throws -> (TableSetBackend, String) {
        let root = NSTemporaryDirectory() + "shardrank-batch-\(UInt64.random(in: 0 ... .max))"
        let b = try TableSetBuilder(root: root, shardCount: 1, genres: ["A"], countries: ["DE"])
        let ids = (0 ..< n).map { UInt64($0 * 3 + 7) }
        let vectors = (0 ..< n * dim).map { i in Float(sin(Double(i) * 0.731) + cos(Double(i / dim) * 0.37)) }
        try vectors.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: ids, vectors: $0, dim: dim, dtype: .int8) }
        _ = try b.publish()
        var serving = ANNServing()
        serving.inlineExactRows = inlineExactRows
        return (try TableSetBackend(root: root, shard: 0, of: 1, pool: WorkerPool(threadCount: 2), lockTables: lockTables, annServing: serving), root)
    }

    static func context(ms: Int = 5000) -> ServerContext {
        ServerContext(path: "/shardrank.v1.Shard/Search", deadline: ContinuousClock.now.advanced(by: .milliseconds(ms)))
    }

    static func query(_ seed: Int, count: Int = 1) -> [Float] {
        (0 ..< count * dim).map { j in Float(cos(Double(seed * 97 + j) * 0.41)) }
    }

    @Test func batchedCallsEqualSeparateCalls() async throws {
        let (backend, root) = try Self.backend()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // Different k, exclusions (some overlapping, one excluding the unexcluded top hit of
        // another call) and query counts.
        let alone0 = try backend.search(SearchRequest(table: "items", queries: Self.query(0), dim: UInt32(Self.dim), k: 10), context: Self.context())
        let top0 = alone0.results[0].ids[0]
        let requests: [SearchRequest] = [
            SearchRequest(table: "items", queries: Self.query(0), dim: UInt32(Self.dim), k: 10),
            SearchRequest(table: "items", queries: Self.query(0), dim: UInt32(Self.dim), k: 10, excludeIDs: [top0, 7, 10, top0]),
            SearchRequest(table: "items", queries: Self.query(1, count: 3), dim: UInt32(Self.dim), k: 50, excludeIDs: Array(alone0.results[0].ids.prefix(5))),
            SearchRequest(table: "items", queries: Self.query(2), dim: UInt32(Self.dim), k: 1),
            SearchRequest(table: "items", queries: Self.query(3, count: 2), dim: UInt32(Self.dim), k: 300),
        ]
        let want = try requests.map { try backend.search($0, context: Self.context()) }
        backend.batcher.hold()
        let before = backend.batcher.stats
        let got = try await withThrowingTaskGroup(of: (Int, SearchResponse).self) { group in
            for (i, r) in requests.enumerated() {
                group.addTask { (i, try await backend.searchAsync(r, context: Self.context())) }
            }
            // Wait until every call has reached the queue, then run them.
            try await waitUntil { backend.batcher.queuedJobs == requests.count }
            backend.batcher.release()
            var out = [SearchResponse?](repeating: nil, count: requests.count)
            for try await (i, r) in group { out[i] = r }
            return out.map { $0! }
        }
        let after = backend.batcher.stats
        #expect(after.passes - before.passes == 1, "all five calls shared one pass")
        #expect(after.calls - before.calls == requests.count)
        for i in requests.indices {
            #expect(got[i].results == want[i].results, "call \(i)")
            #expect(got[i].version == want[i].version)
        }
        #expect(!got[1].results[0].ids.contains(top0))
    }

    @Test func aCancelledCallInABatchGetsItsErrorAndCostsNothing() async throws {
        let (backend, root) = try Self.backend(n: 500)
        defer { try? FileManager.default.removeItem(atPath: root) }
        backend.batcher.hold()
        let cancelled = Self.context()
        async let a = backend.searchAsync(SearchRequest(table: "items", queries: Self.query(4), dim: UInt32(Self.dim), k: 5), context: cancelled)
        async let b = backend.searchAsync(SearchRequest(table: "items", queries: Self.query(5), dim: UInt32(Self.dim), k: 5), context: Self.context())
        try await waitUntil { backend.batcher.queuedJobs == 2 }
        cancelled.cancel(RPCError(.cancelled, "client went away"))
        backend.batcher.release()
        do {
            _ = try await a
            Issue.record("a cancelled call was answered")
        } catch {
            #expect((error as? RPCError)?.code == .cancelled)
        }
        let rb = try await b
        #expect(rb.results[0].ids.count == 5)
    }

    @Test func aLargeCallYieldsToWaitingCallsBetweenChunks() async throws {
        let (backend, root) = try Self.backend(n: 800)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let big = SearchRequest(table: "items", queries: Self.query(8, count: 200), dim: UInt32(Self.dim), k: 3, excludeIDs: [10])
        let small = SearchRequest(table: "items", queries: Self.query(9), dim: UInt32(Self.dim), k: 3)
        let wantBig = try backend.search(big, context: Self.context())
        let wantSmall = try backend.search(small, context: Self.context())
        backend.batcher.hold()
        async let a = backend.searchAsync(big, context: Self.context())
        try await waitUntil { backend.batcher.queuedJobs == 1 }   // the big call first
        async let b = backend.searchAsync(small, context: Self.context())
        try await waitUntil { backend.batcher.queuedJobs == 2 }
        let before = backend.batcher.stats
        backend.batcher.release()
        let (ga, gb) = try await (a, b)
        #expect(ga.results == wantBig.results)
        #expect(gb.results == wantSmall.results)
        // The big call went first, was split where the small one waited, and finished later.
        #expect(backend.batcher.stats.passes - before.passes >= 2)
    }

    @Test func aLargeCallRunsAloneInChunks() async throws {
        let (backend, root) = try Self.backend(n: 800)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let req = SearchRequest(table: "items", queries: Self.query(6, count: 100), dim: UInt32(Self.dim), k: 4, excludeIDs: [7])
        let got = try await backend.searchAsync(req, context: Self.context())
        let want = try backend.search(req, context: Self.context())
        #expect(got.results == want.results)
        #expect(got.results.count == 100)
    }
}

/// A small slice is scanned on the calling thread (no batcher pass), and a Search with rows
/// sends each hit's row exactly as a Lookup of that id would.
@Suite struct InlineSearchTests {
    @Test func aSmallSliceIsAnsweredInlineWithTheHitsRows() throws {
        let (backend, root) = try SearchBatcherTests.backend(n: 3000, inlineExactRows: 32_768)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let before = backend.batcher.stats
        let req = SearchRequest(table: "items", queries: SearchBatcherTests.query(5), dim: UInt32(SearchBatcherTests.dim), k: 25,
                                excludeIDs: [7, 10], withRows: true)
        nonisolated(unsafe) var answer: Result<SearchResponse, RPCError>?
        backend.searchDeferred(req, context: SearchBatcherTests.context()) { answer = $0 }
        // Answered before searchDeferred returned: no thread hop.
        let r = try #require(try answer?.get())
        #expect(backend.batcher.stats.passes == before.passes, "no batcher pass for a 3,000-row slice")
        #expect(r.mode == .exact && r.dtype == .int8 && r.dim == UInt32(SearchBatcherTests.dim))
        let hits = try #require(r.results.first)
        #expect(hits.ids.count == 25 && !hits.ids.contains(7) && !hits.ids.contains(10))
        // The same hits as the batcher's scan.
        var plain = req
        plain.withRows = false
        let batched = try backend.search(plain, context: SearchBatcherTests.context())
        #expect(batched.results[0].ids == hits.ids && batched.results[0].scores == hits.scores)
        #expect(batched.results[0].vectors.isEmpty, "rows only when asked for")
        // Rows and scales as a Lookup sends them (int8, in id order).
        let lookup = try LookupResponse.decode(Array(try backend.lookup(LookupRequest(table: "items", ids: hits.ids), context: SearchBatcherTests.context()).bytes.dropFirst(5)))
        #expect(hits.vectors == lookup.vectors)
        #expect(hits.scales.withUnsafeBytes { Array($0) } == lookup.scales)
        // And the wire round trip keeps them.
        let decoded = try SearchResponse.decode(Array(r.encoded().bytes.dropFirst(5)))
        #expect(decoded == r)
    }
}
