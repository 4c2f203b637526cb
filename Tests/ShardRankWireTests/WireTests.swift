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

/// `LookupRequest.decode` walks the usual shape itself and hands anything else to protobuf-c:
/// whatever the walk accepts must be exactly what protobuf-c decodes.
@Suite struct LookupRequestFastPathTests {
    struct Rng {
        var s: UInt64
        mutating func next() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }

    @Test func encodedRequestsTakeTheFastPathAndMatchProtobufC() throws {
        var rng = Rng(s: 1)
        for round in 0 ..< 300 {
            let n = Int(rng.next() % 300)
            let ids = (0 ..< n).map { _ in rng.next() >> (rng.next() % 64) }
            let r = LookupRequest(table: round % 7 == 0 ? "" : "items-\(round)", ids: ids,
                                  dtype: DType.allCases[round % DType.allCases.count], version: rng.next() % 3 == 0 ? 0 : rng.next())
            let bytes = Array(r.encoded().payload)
            let fast = LookupRequest.decodeCanonical(bytes)
            #expect(fast == r)
            #expect(try LookupRequest.decodeWithProtobufC(bytes) == r)
        }
    }

    @Test func otherValidShapesMatchProtobufC() throws {
        let t: [UInt8] = [0x0A, 0x02, 0x61, 0x62]  // table "ab"
        let cases: [[UInt8]] = [
            [],                                                          // all defaults
            [0x10, 0x05, 0x10, 0x07] + t,                                // unpacked ids, table last
            [0x12, 0x02, 0x01, 0x02, 0x10, 0x03, 0x12, 0x01, 0x04] + t,  // packed, unpacked, packed: concatenated
            t + [0x0A, 0x01, 0x63],                                      // table twice: last wins
            [0x18, 0x01, 0x18, 0x03, 0x20, 0x09, 0x20, 0x00],            // dtype and version twice
            [0x12, 0x00] + t,                                            // empty packed ids
            [0x12, 0x0A] + varint(.max) + t,                             // the largest id (10-byte varint)
            [0x8A, 0x00, 0x01, 0x61],                                    // a non-minimal key for field 1
            [0x0A, 0x02, 0xC3, 0x28],                                    // invalid UTF-8: repaired the same way
        ]
        for bytes in cases {
            let slow = try LookupRequest.decodeWithProtobufC(bytes)
            #expect(try LookupRequest.decode(bytes) == slow, "bytes \(bytes)")
            if let fast = LookupRequest.decodeCanonical(bytes) { #expect(fast == slow, "bytes \(bytes)") }
        }
        #expect(LookupRequest.decodeCanonical([0x12, 0x0A] + varint(.max)) == LookupRequest(table: "", ids: [.max]))
    }

    /// The packed-ids decoder at its edges: what it accepts equals protobuf-c, and what it leaves
    /// (truncated, over-long, bits past 64) goes to protobuf-c, whose answer `decode` returns.
    @Test func packedIDsAtTheEdges() throws {
        let ten = varint(.max)  // 10 bytes, last byte 0x01
        var tooWide = ten
        tooWide[9] = 0x02  // bit 64 set
        let eleven = Array(ten.dropLast()) + [0x81, 0x00]  // 11 bytes
        let cases: [(bytes: [UInt8], fast: [UInt64]?)] = [
            ([0x12, 0x03, 0x01, 0x7F, 0x00], [1, 127, 0]),
            ([0x12, 0x04, 0x80, 0x01, 0xFF, 0x7F], [128, 16383]),
            ([0x12, 0x0B] + ten + [0x05], [.max, 5]),
            ([0x12, 0x01, 0x80], nil),                         // only a continuation byte
            ([0x12, 0x03, 0x01, 0x02, 0x83], nil),             // the last varint truncated
            ([0x12, 0x0A] + tooWide, nil),                     // bits past 64
            ([0x12, 0x0B] + eleven, nil),                      // 11 bytes
        ]
        for (bytes, fast) in cases {
            #expect(LookupRequest.decodeCanonical(bytes)?.ids == fast, "bytes \(bytes)")
            let slow: LookupRequest?
            do { slow = try LookupRequest.decodeWithProtobufC(bytes) } catch { slow = nil }
            if let fast { #expect(slow?.ids == fast, "bytes \(bytes)") }
            let viaDecode: LookupRequest?
            do { viaDecode = try LookupRequest.decode(bytes) } catch { viaDecode = nil }
            #expect(viaDecode == slow, "bytes \(bytes)")
        }
    }

    /// Found by the wire fuzzer (fuzz/corpus/wire/canonical-long-length-prefix, docs/fuzzing.md):
    /// protobuf-c reads a length prefix of at most 5 bytes and a tag of at most 5, so a message
    /// with a longer (non-minimal) one is malformed, and `decode` must refuse it, not take it by
    /// the direct walk.
    @Test func overlongPrefixesAreLeftToProtobufC() {
        let cases: [[UInt8]] = [
            [0x0A, 0x80, 0x00, 0x0A, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],  // table: a 6-byte length prefix
            [0x12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],                    // ids: a 6-byte length prefix
            [0x8A, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00],                    // a 6-byte key for field 1
        ]
        for bytes in cases {
            #expect(LookupRequest.decodeCanonical(bytes) == nil, "bytes \(bytes)")
            #expect(throws: RPCError.self, "bytes \(bytes)") { try LookupRequest.decodeWithProtobufC(bytes) }
            #expect(throws: RPCError.self, "bytes \(bytes)") { try LookupRequest.decode(bytes) }
        }
        // A 5-byte prefix is still read (by protobuf-c, with the same answer).
        let five: [UInt8] = [0x0A, 0x81, 0x80, 0x80, 0x80, 0x00, 0x61]
        #expect((try? LookupRequest.decode(five)) == LookupRequest(table: "a", ids: []))
    }

    @Test func mutatedMessagesAgreeWithProtobufC() {
        var rng = Rng(s: 7)
        var fastTaken = 0, fallbacks = 0
        for round in 0 ..< 3000 {
            let r = LookupRequest(table: "t\(round % 5)", ids: (0 ..< Int(rng.next() % 12)).map { _ in rng.next() % 100_000 },
                                  dtype: .f32, version: rng.next() % 4)
            var bytes = Array(r.encoded().payload)
            switch rng.next() % 4 {
            case 0 where !bytes.isEmpty: bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
            case 1 where !bytes.isEmpty: bytes.removeLast(Int(rng.next() % UInt64(bytes.count)) + 1)
            case 2: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: Int(rng.next() % UInt64(bytes.count + 1)))
            default: bytes += (0 ..< Int(rng.next() % 4)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            let slow: LookupRequest?
            do { slow = try LookupRequest.decodeWithProtobufC(bytes) } catch { slow = nil }
            if let fast = LookupRequest.decodeCanonical(bytes) {
                fastTaken += 1
                #expect(slow == fast, "bytes \(bytes)")
            } else {
                fallbacks += 1
            }
            // The public entry point succeeds exactly when protobuf-c does, with its answer.
            let viaDecode: LookupRequest?
            do { viaDecode = try LookupRequest.decode(bytes) } catch { viaDecode = nil }
            #expect(viaDecode == slow, "bytes \(bytes)")
        }
        #expect(fastTaken > 500 && fallbacks > 500, "fast \(fastTaken), fallback \(fallbacks)")
    }
}
