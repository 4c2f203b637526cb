import Testing
import RPCCore
@testable import ShardRankWire

@Suite struct WireTests {
    @Test func lookupRequestRoundTrip() throws {
        let r = LookupRequest(table: "items", ids: [0, 1, UInt64.max, 42], dtype: .int8, version: 7)
        #expect(try LookupRequest.decode(Array(r.encoded().payload)) == r)
    }

    @Test(arguments: DType.allCases)
    func lookupResponseRoundTrip(dtype: DType) throws {
        let r = LookupResponse(dim: 3, dtype: dtype, vectors: Array(0 ..< 24), missingIDs: [9, 10], version: 3,
                               scales: dtype == .int8 ? [0, 0, 128, 63] : [], shard: 2, shardCount: 4)
        #expect(try LookupResponse.decode(Array(r.encoded().payload)) == r)
    }

    @Test func inPlaceVectorsEqualCopiedVectors() throws {
        let vec: [UInt8] = (0 ..< 1000).map { UInt8($0 % 251) }
        let a = LookupResponse(dim: 10, dtype: .f32, vectors: vec, missingIDs: [1], version: 1).encoded()
        let b = LookupResponse.encode(dim: 10, dtype: .f32, missingIDs: [1], version: 1, scales: [], shard: 0, shardCount: 1,
                                      vectorBytes: vec.count) { dst in vec.withUnsafeBytes { dst.copyMemory(from: $0) } }
        #expect(try LookupResponse.decode(Array(a.payload)) == LookupResponse.decode(Array(b.payload)))
        #expect(a.payloadLength == b.payloadLength)
    }

    @Test func emptyVectorsEncode() throws {
        let r = LookupResponse(dim: 4, dtype: .f32, vectors: [], missingIDs: [5], version: 1)
        #expect(try LookupResponse.decode(Array(r.encoded().payload)) == r)
    }

    @Test func searchRoundTrip() throws {
        let q = SearchRequest(table: "items", queries: [1, 2, 3, 4, 5, 6], dim: 3, k: 10, excludeIDs: [3], version: 0)
        let back = try SearchRequest.decode(Array(q.encoded().payload))
        #expect(back == q)
        #expect(back.queryCount == 2)
        let r = SearchResponse(results: [SearchHits(ids: [1, 2], scores: [0.5, 0.25]), SearchHits(ids: [], scores: []),
                                         SearchHits(ids: [9], scores: [-1])], version: 2, shard: 1, shardCount: 2)
        #expect(try SearchResponse.decode(Array(r.encoded().payload)) == r)
    }

    @Test func searchQueriesMustBeWholeRows() {
        var m = SearchRequest(table: "t", queries: [1, 2, 3], dim: 2, k: 1)
        #expect(throws: RPCError.self) { try SearchRequest.decode(Array(m.encoded().payload)) }
        m.dim = 0
        #expect(throws: RPCError.self) { try SearchRequest.decode(Array(m.encoded().payload)) }
    }

    @Test func listsAndInfoRoundTrip() throws {
        let q = ListsRequest(table: "genre_top", keys: ["Drama", "Comedy", ""], limit: 50, version: 3)
        #expect(try ListsRequest.decode(Array(q.encoded().payload)) == q)
        let r = ListsResponse(lists: [RankedList(key: "Drama", ids: [1, 2, 3], scores: [3, 2, 1]), RankedList(key: "x", ids: [], scores: [])],
                              missingKeys: ["Nope"], version: 3, shard: 0, shardCount: 2)
        #expect(try ListsResponse.decode(Array(r.encoded().payload)) == r)
        let i = InfoResponse(version: 4, shard: 1, shardCount: 3,
                             tables: [TableInfo(name: "items", kind: .embedding, dim: 64, dtype: .f16, rows: 1000),
                                      TableInfo(name: "popular", kind: .list, dim: 0, dtype: .unspecified, rows: 1)],
                             mappedBytes: 1 << 30, source: "/tables", hash: "xxh64")
        #expect(try InfoResponse.decode(Array(i.encoded().payload)) == i)
        _ = try InfoRequest.decode(Array(InfoRequest().encoded().payload))
    }

    @Test func healthRoundTrip() throws {
        #expect(try HealthCheckRequest.decode(Array(HealthCheckRequest(service: "a.B").encoded().payload)).service == "a.B")
        #expect(try HealthCheckResponse.decode(Array(HealthCheckResponse(status: .notServing).encoded().payload)).status == .notServing)
    }

    @Test(arguments: [[UInt8]([0xFF, 0xFF, 0xFF]), [0x0A, 0x05, 0x61], [0x12, 0x80], [0x08]])
    func garbageIsInvalidArgument(bytes: [UInt8]) {
        do {
            _ = try LookupRequest.decode(bytes)
            Issue.record("garbage decoded")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("LookupRequest"))
        }
    }

    @Test func unknownDTypeIsInvalidArgument() {
        // field 3 (dtype) = 9
        do {
            _ = try LookupRequest.decode([0x0A, 0x01, 0x61, 0x18, 0x09])
            Issue.record("accepted dtype 9")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("dtype"))
        }
    }

    /// Many empty strings in a repeated field make protobuf-c allocate far more than the message
    /// size: the budgeted allocator refuses instead of allocating without bound.
    @Test func allocationBudgetBoundsHostileMessages() {
        // field 2 (keys), length 0, repeated 200k times: 400 KB message, ~3.2 MB of pointers + strings.
        var bytes: [UInt8] = []
        for _ in 0 ..< 200_000 { bytes += [0x12, 0x00] }
        let saved = ProtoC.budgetFactor
        #expect(saved == 16)
        do {
            _ = try ListsRequest.decode(bytes)
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("memory"))
            return
        }
        Issue.record("expected the budget to refuse")
    }

    @Test func unknownFieldsAreIgnored() throws {
        // LookupRequest with table "a" and an unknown field 99 (varint 1).
        let bytes: [UInt8] = [0x0A, 0x01, 0x61, 0x98, 0x06, 0x01]
        #expect(try LookupRequest.decode(bytes).table == "a")
    }
}

@Suite struct RecommenderWireTests {
    @Test func recommendRequestRoundTrip() throws {
        let full = RecommendRequest(userID: 42, context: RecommendContext(recentItemIDs: [1, 2, 3], country: "DE", genres: ["Drama", "Sci-Fi"],
                                                                          excludeIDs: [9]),
                                    k: 20, budgets: Budgets(similarPerItem: 10, genre: 50, country: 50, popular: 30, search: 200),
                                    model: "mlp", diversityLambda: 0.7, minCoverage: 0.5, genreCap: 3, sources: [.popular, .search])
        #expect(try RecommendRequest.decode(Array(full.encoded().payload)) == full)
        let bare = RecommendRequest(userID: 1)
        #expect(try RecommendRequest.decode(Array(bare.encoded().payload)) == bare)
    }

    @Test func recommendResponseRoundTrip() throws {
        let r = RecommendResponse(items: [ScoredItem(itemID: 5, score: 0.9, sources: [.search, .genre]), ScoredItem(itemID: 6, score: 0.1)],
                                  version: 3,
                                  timings: StageTimings(retrieveMicros: 1, filterMicros: 2, gatherMicros: 3, rankMicros: 4, postRankMicros: 5, totalMicros: 15),
                                  coverage: Coverage(shardsAsked: 4, shardsAnswered: 3, sourcesFailed: [.country], degraded: true,
                                                     degradedReasons: ["shard 2 missed its deadline"]),
                                  candidates: 321)
        #expect(try RecommendResponse.decode(Array(r.encoded().payload)) == r)
    }

    @Test func rankAndSimilarRoundTrip() throws {
        let rq = RankRequest(userID: 7, candidateIDs: [3, 1, 2], model: "dot", k: 2)
        #expect(try RankRequest.decode(Array(rq.encoded().payload)) == rq)
        let sq = SimilarRequest(itemID: 99, k: 5)
        #expect(try SimilarRequest.decode(Array(sq.encoded().payload)) == sq)
        let resp = ItemsResponse(items: [ScoredItem(itemID: 1, score: 2, sources: [.caller])], version: 1, coverage: Coverage(shardsAsked: 1, shardsAnswered: 1))
        #expect(try ItemsResponse.decodeRank(Array(resp.encodedAsRank().payload)) == resp)
        #expect(try ItemsResponse.decodeSimilar(Array(resp.encodedAsSimilar().payload)) == resp)
    }
}
