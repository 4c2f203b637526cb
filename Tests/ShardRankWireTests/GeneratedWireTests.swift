import Testing
import RPCCore
import ShardRankIDs
@testable import ShardRankWire

/// The glue scripts/gen-proto generates from proto/ (Sources/ShardRankWire/Generated).
@Suite struct GeneratedWireTests {
    /// Every RPC of proto/'s services has a typed descriptor with its path, and no other.
    @Test func methodDescriptorsCoverEveryRPC() {
        let paths = [
            ShardMethods.lookup.path, ShardMethods.search.path, ShardMethods.lists.path, ShardMethods.info.path,
            ShardMethods.ids.path, ShardMethods.profiles.path, ShardMethods.attributes.path,
            RecommenderMethods.recommend.path, RecommenderMethods.rank.path, RecommenderMethods.similar.path,
            RecommenderMethods.recordEvents.path, RecommenderMethods.recordEventsBatch.path, RecommenderMethods.info.path,
            HealthMethods.check.path, HealthMethods.watch.path,
        ]
        let index = ProtoDescriptorIndex.compiled
        let services = [ShardMethods.serviceName, RecommenderMethods.serviceName, HealthMethods.serviceName]
        var declared: [String] = []
        for s in services {
            #expect(index.services.contains(s))
            declared += index.symbols.keys.filter { $0.hasPrefix(s + ".") }.map { "/\(s)/\($0.dropFirst(s.count + 1))" }
        }
        #expect(Set(paths) == Set(declared))
        #expect(ShardMethods.lookup.path == "/shardrank.v1.Shard/Lookup")
        #expect(HealthMethods.watch.kind == .serverStreaming && ShardMethods.search.kind == .unary)
    }

    /// Rank and Similar share a Swift type; their descriptors pick their own proto message.
    @Test func descriptorsPairTheirOwnCodecs() throws {
        let r = ItemsResponse(items: [ScoredItem(itemID: 7, score: 0.5, sources: [.similar, .search])], version: 3,
                              coverage: Coverage(shardsAsked: 2, shardsAnswered: 1, sourcesFailed: [.genre], degraded: true,
                                                 degradedReasons: ["shard 1: UNAVAILABLE"]))
        let rank = RecommenderMethods.rank, similar = RecommenderMethods.similar
        #expect(try rank.decodeResponse(Array(rank.encodeResponse(r).payload)) == r)
        #expect(try similar.decodeResponse(Array(similar.encodeResponse(r).payload)) == r)
        #expect(Array(rank.encodeResponse(r).payload) == Array(r.encodedAsRank().payload))
        let q = SimilarRequest(itemID: 9, k: 4)
        #expect(try RecommenderMethods.similar.decodeRequest(Array(RecommenderMethods.similar.encodeRequest(q).payload)) == q)
    }

    /// Every shape of field the generator emits, through protobuf-c and back.
    @Test func everyFieldKindRoundTrips() throws {
        let req = RecommendRequest(userID: 1, context: RecommendContext(recentItemIDs: [1, 2], country: "DE", genres: ["a", ""], excludeIDs: [3]),
                                   k: 5, budgets: Budgets(similarPerItem: 1, genre: 2, country: 3, popular: 4, search: 5), model: "mlp",
                                   diversityLambda: 0.25, minCoverage: 0.5, genreCap: 2, sources: [.popular, .caller],
                                   freshnessWeight: 1.5, freshnessHalfLifeSeconds: 60, nowUnixSeconds: -7, returnFeatures: true,
                                   userVector: .tower)
        #expect(try RecommendRequest.decode(Array(req.encoded().payload)) == req)
        let resp = RecommendResponse(items: [ScoredItem(itemID: 1, score: 1)], version: 2,
                                     timings: StageTimings(retrieveMicros: 1, filterMicros: 2, gatherMicros: 3, rankMicros: 4, postRankMicros: 5, totalMicros: 6),
                                     coverage: Coverage(shardsAsked: 1), candidates: 9, coldStart: true,
                                     features: CandidateFeatures(names: ["x"], itemIDs: [1], values: [.nan]),
                                     userVectorSource: .tower, sessionEvents: 3)
        #expect(try RecommendResponse.decode(Array(resp.encoded().payload)) == resp)
        let batch = RecordEventsBatchRequest(users: [RecordEventsRequest(userID: 4, events: [Event(itemID: 1, kind: .click, timestampUnixSeconds: 5),
                                                                                             Event(itemID: 2, kindValue: 99, timestampUnixSeconds: 0)], replace: true)])
        #expect(try RecordEventsBatchRequest.decode(Array(batch.encoded().payload)) == batch)
        let profiles = ProfilesResponse(profiles: [UserProfile(userID: 1, recentItemIDs: [5, 4], history: PackedIDs(sortedUnique: [4, 5, 90]),
                                                               topGenres: ["Drama"], country: "FR")],
                                        missingUserIDs: [2], version: 1, shard: 1, shardCount: 2)
        #expect(try ProfilesResponse.decode(Array(profiles.encoded().payload)) == profiles)
        let attrs = AttributesResponse(itemIDs: [1], genreMasks: [3], timestamps: [-1], popularity: [0.5], genres: ["a", "b"],
                                       missingItemIDs: [2], version: 1)
        #expect(try AttributesResponse.decode(Array(attrs.encoded().payload)) == attrs)
        let hits = SearchResponse(results: [SearchHits(ids: [1], scores: [2], vectors: [1, 2, 3, 4], scales: [0.5])], version: 1,
                                  mode: .ann, dim: 4, dtype: .int8)
        #expect(try SearchResponse.decode(Array(hits.encoded().payload)) == hits)
        let search = SearchRequest(table: "items", queries: [1, 2], dim: 2, k: 3, mode: .ann, nprobe: 4, rerank: 5, withRows: true,
                                   excludeSorted: PackedIDs(sortedUnique: [1, 7]))
        #expect(try SearchRequest.decode(Array(search.encoded().payload)) == search)
    }

    /// An enum field marked strict names the field; others read an unknown value as the zero case.
    @Test func unknownEnumValues() throws {
        // SearchRequest: table "t", dim 1 (field 3), mode (field 7) = 9.
        do {
            _ = try SearchRequest.decode([0x0A, 0x01, 0x74, 0x18, 0x01, 0x38, 0x09])
            Issue.record("accepted mode 9")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("SearchRequest.mode"))
        }
        // HealthCheckResponse.status (field 1) = 9: unknown.
        #expect(try HealthCheckResponse.decode([0x08, 0x09]).status == .unknown)
        // RecommendRequest.user_vector (field 14) = 9: nil (the coordinator refuses it).
        #expect(try RecommendRequest.decode([0x70, 0x09]).userVector == nil)
    }
}
