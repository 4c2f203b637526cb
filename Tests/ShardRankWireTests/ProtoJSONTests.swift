import Testing
import RPCCore
@testable import ShardRankWire

/// The proto3 JSON mapping of the Recommender messages (the coordinator's JSON front door):
/// JSON in → the same bytes the Swift encoders make; bytes → JSON out; errors name the field.
@Suite struct ProtoJSONTests {
    func request(_ json: String) throws -> RecommendRequest {
        try RecommendRequest.decode(ProtoJSON.wire(fromJSON: Array(json.utf8), message: "shardrank.v1.RecommendRequest"))
    }

    func refused(_ json: String, _ message: String = "shardrank.v1.RecommendRequest") -> String? {
        do {
            _ = try ProtoJSON.wire(fromJSON: Array(json.utf8), message: message)
            return nil
        } catch {
            #expect(error.code == .invalidArgument)
            return error.message
        }
    }

    @Test func requestsMapFieldByField() throws {
        let want = RecommendRequest(userID: 18_446_744_073_709_551_615, context: RecommendContext(recentItemIDs: [5, 9_007_199_254_740_993], country: "US",
                                                                                                   genres: ["Drama", "Comedy"], excludeIDs: [7]),
                                    k: 12, budgets: Budgets(similarPerItem: 3, search: 150), model: "ltr", diversityLambda: 0.75, minCoverage: 0.5,
                                    genreCap: 2, sources: [.popular, .search], freshnessWeight: 0.25, freshnessHalfLifeSeconds: 3600,
                                    nowUnixSeconds: -5, returnFeatures: true, userVector: .tower)
        // lowerCamelCase JSON names, 64-bit integers as strings, enums by name.
        let camel = """
        {"userId": "18446744073709551615", "context": {"recentItemIds": ["5", 9007199254740993], "country": "US",
         "genres": ["Drama", "Comedy"], "excludeIds": [7]}, "k": 12, "budgets": {"similarPerItem": 3, "search": 150},
         "model": "ltr", "diversityLambda": 0.75, "minCoverage": 0.5, "genreCap": 2, "sources": ["SOURCE_POPULAR", 5],
         "freshnessWeight": 0.25, "freshnessHalfLifeS": 3600, "nowUnixS": "-5", "returnFeatures": true, "userVector": "USER_VECTOR_MODE_TOWER"}
        """
        #expect(try request(camel) == want)
        // The proto names, numbers as numbers, `null` for a default, 1e1 as an integer.
        let snake = """
        {"user_id": 18446744073709551615, "context": {"recent_item_ids": [5, 9007199254740993], "country": "US",
         "genres": ["Drama", "Comedy"], "exclude_ids": ["7"]}, "k": 1.2e1, "budgets": {"similar_per_item": 3, "search": 150, "genre": null},
         "model": "ltr", "diversity_lambda": "0.75", "min_coverage": 0.5, "genre_cap": 2, "sources": ["SOURCE_POPULAR", "SOURCE_SEARCH"],
         "freshness_weight": 0.25, "freshness_half_life_s": 3600, "now_unix_s": -5, "return_features": true, "user_vector": 2}
        """
        #expect(try request(snake) == want)
        #expect(try request("{}") == RecommendRequest(userID: 0, k: 0))
        // The bytes are the Swift encoder's (field order aside, the decode is equal).
        #expect(try ProtoJSON.wire(fromJSON: Array("{\"userId\": 3, \"k\": 10}".utf8), message: "shardrank.v1.RecommendRequest")
            == Array(RecommendRequest(userID: 3, k: 10).encoded().payload))
    }

    @Test func errorsNameTheField() {
        #expect(refused("{\"userID\": 1}")?.contains("unknown field 'userID'") == true)
        #expect(refused("{\"context\": {\"contry\": \"US\"}}")?.contains("unknown field 'context.contry'") == true)
        #expect(refused("{\"k\": -1}")?.contains("field 'k' must be an integer in 0...4294967295") == true)
        #expect(refused("{\"k\": 4294967296}")?.contains("field 'k'") == true)
        #expect(refused("{\"k\": 1.5}")?.contains("field 'k' must be an integer") == true)
        #expect(refused("{\"userId\": \"18446744073709551616\"}")?.contains("field 'user_id'") == true)
        #expect(refused("{\"sources\": [\"SOURCE_POPULAR\", \"POPULAR\"]}")?.contains("field 'sources[1]' must be one of SOURCE_UNSPECIFIED") == true)
        #expect(refused("{\"sources\": \"SOURCE_POPULAR\"}")?.contains("field 'sources' must be a JSON array") == true)
        #expect(refused("{\"returnFeatures\": 1}")?.contains("field 'return_features' must be true or false") == true)
        #expect(refused("{\"model\": 5}")?.contains("field 'model' must be a JSON string") == true)
        #expect(refused("{\"context\": []}")?.contains("context must be a JSON object") == true)
        #expect(refused("{\"k\": 1, \"k\": 2}")?.contains("field 'k' is given twice") == true)
        #expect(refused("{\"diversityLambda\": \"fast\"}")?.contains("field 'diversity_lambda' must be a number") == true)
        #expect(refused("[1]")?.contains("the request must be a JSON object") == true)
        #expect(refused("{\"k\": 1,}")?.contains("invalid JSON at byte 8: expected a member name") == true)
        #expect(refused("{\"k\": 01}")?.contains("leading zero") == true)
        #expect(refused("{\"model\": \"a\u{01}\"}")?.contains("control character") == true)
        #expect(refused(String(repeating: "[", count: 70))?.contains("nested deeper than 64") == true)
        #expect(refused("{\"users\": [{\"userId\": 1, \"events\": [{\"itemId\": 2, \"kind\": \"VIEW\"}]}]}",
                        "shardrank.v1.RecordEventsBatchRequest")?.contains("field 'users[0].events[0].kind'") == true)
    }

    @Test func jsonTextIsParsedExactly() throws {
        let v = try JSONValue.parse(Array(#" {"a": [true, false, null, -0.5e-3, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {}} "#.utf8))
        #expect(v == .object([("a", .array([.bool(true), .bool(false), .null, .number("-0.5e-3"), .string("x\"\\/\u{08}\u{0C}\n\r\té😀")])),
                              ("b", .object([]))]))
        #expect(throws: RPCError.self) { try JSONValue.parse(Array(#""\ud83d""#.utf8)) }
        #expect(throws: RPCError.self) { try JSONValue.parse(Array("1 2".utf8)) }
        #expect(throws: RPCError.self) { try JSONValue.parse([0x22, 0xFF, 0x22]) }  // not UTF-8
    }

    @Test func responsesFollowTheMapping() throws {
        let r = RecommendResponse(items: [ScoredItem(itemID: 18_446_744_073_709_551_615, score: 0.25, sources: [.similar, .search]),
                                          ScoredItem(itemID: 3, score: -1.5)],
                                  version: 7, candidates: 2, coldStart: true,
                                  features: CandidateFeatures(names: ["dot", "a\"b"], itemIDs: [3], values: [.nan, -.infinity]),
                                  userVectorSource: .tower, sessionEvents: 0)
        let json = try ProtoJSON.json(fromWire: Array(r.encoded().payload), message: "shardrank.v1.RecommendResponse")
        #expect(json == #"{"items":[{"itemId":"18446744073709551615","score":0.25,"sources":["SOURCE_SIMILAR","SOURCE_SEARCH"]},"#
            + #"{"itemId":"3","score":-1.5}],"version":"7","candidates":2,"coldStart":true,"#
            + #""features":{"names":["dot","a\"b"],"itemIds":["3"],"values":["NaN","-Infinity"]},"userVectorSource":"USER_VECTOR_SOURCE_TOWER"}"#)
        // Back through the request side of the mapping (the same reader): the numbers survive.
        let ev = try ProtoJSON.json(fromWire: Array(RecordEventsBatchResponse(accepted: 5, users: 0).encoded().payload),
                                    message: "shardrank.v1.RecordEventsBatchResponse")
        #expect(ev == #"{"accepted":5}"#, "defaults are omitted")
        #expect(throws: RPCError.self) { try ProtoJSON.json(fromWire: [0xFF], message: "shardrank.v1.RecommendResponse") }
    }

    @Test func queryParametersMapLikeJSON() throws {
        let q: [(String, String)] = [("k", "5"), ("context.country", "US"), ("sources", "SOURCE_POPULAR,SOURCE_SEARCH"), ("sources", "2"),
                                     ("returnFeatures", "true"), ("budgets.search", "40"), ("context.recentItemIds", "9,10")]
        let bytes = try ProtoJSON.wire(fromQuery: q, fixed: [("user_id", .string("42"))], message: "shardrank.v1.RecommendRequest")
        #expect(try RecommendRequest.decode(bytes) == RecommendRequest(userID: 42, context: RecommendContext(recentItemIDs: [9, 10], country: "US"),
                                                                        k: 5, budgets: Budgets(search: 40), sources: [.popular, .search, .genre],
                                                                        returnFeatures: true))
        func message(_ q: [(String, String)]) -> String? {
            do { _ = try ProtoJSON.wire(fromQuery: q, fixed: [("user_id", .string("1"))], message: "shardrank.v1.RecommendRequest"); return nil } catch {
                return error.message
            }
        }
        #expect(message([("kk", "1")])?.contains("unknown query parameter 'kk'") == true)
        #expect(message([("k", "1"), ("k", "2")])?.contains("'k' is given twice") == true)
        #expect(message([("context", "x")])?.contains("names a message") == true)
        #expect(message([("k.x", "1")])?.contains("'k' is not a message field") == true)
        #expect(message([("userId", "2")])?.contains("repeats a value given by the URL path") == true)
        #expect(message([("returnFeatures", "yes")])?.contains("must be true or false") == true)
    }
}
