import Testing
import RPCCore
@testable import ShardRankAdmin
import ShardRankWire

/// The JSON front door's request side without sockets: routes, query parsing, deadlines, the
/// HTTP statuses of gRPC codes and the error body.
@Suite struct JSONGatewayTests {
    func request(_ method: String, _ uri: String, body: String = "", headers: [(String, String)] = []) -> HTTPRequest {
        let (path, query) = AdminHandler.split(uri)
        return HTTPRequest(method: method, path: path, query: AdminHandler.parseQuery(query), headers: headers, body: Array(body.utf8), peer: "test")
    }

    @Test func routesMapToTheirMethodsAndMessages() throws {
        let (r, bytes, timeout) = try JSONGateway.parse(request("GET", "/v1/recommend/42?k=5&context.country=U%20S&sources=SOURCE_SEARCH&timeout_ms=250"))
        #expect(r.method == "Recommend" && timeout == .milliseconds(250))
        let q = try RecommendRequest.decode(bytes)
        #expect(q.userID == 42 && q.k == 5 && q.context?.country == "U S" && q.sources == [.search])
        let (s, sb, st) = try JSONGateway.parse(request("GET", "/v1/similar/7?k=3"))
        let similar = try SimilarRequest.decode(sb)
        #expect(s.method == "Similar" && st == nil && similar == SimilarRequest(itemID: 7, k: 3))
        let (e, eb, _) = try JSONGateway.parse(request("POST", "/v1/record_events", body: #"{"userId": "9", "events": [{"itemId": 3}]}"#,
                                                       headers: [("content-type", "application/json; charset=utf-8")]))
        let events = try RecordEventsRequest.decode(eb)
        #expect(e.method == "RecordEvents" && events == RecordEventsRequest(userID: 9, events: [Event(itemID: 3, kindValue: 0, timestampUnixSeconds: 0)]))
        let (b, _, _) = try JSONGateway.parse(request("POST", "/v1/record_events_batch", body: #"{"users": []}"#))
        #expect(b.method == "RecordEventsBatch")
        let (rk, rb, _) = try JSONGateway.parse(request("POST", "/v1/rank"))   // an empty body is {}
        #expect(rk.method == "Rank" && rb.isEmpty)
    }

    @Test func badRequestsAreNamed() {
        func code(_ r: HTTPRequest) -> (RPCStatusCode, String)? {
            do { _ = try JSONGateway.parse(r); return nil } catch { return (error.code, error.message) }
        }
        let cases: [(HTTPRequest, RPCStatusCode, String)] = [
            (request("GET", "/v1/nothing/1"), .notFound, "no route /v1/nothing/1"),
            (request("GET", "/v1/rank/1"), .notFound, "GET /v1/rank/1"),
            (request("GET", "/v1/recommend"), .notFound, "give the id in the path"),
            (request("GET", "/v1/recommend/abc"), .invalidArgument, "user_id 'abc'"),
            (request("GET", "/v1/recommend/1?timeout_ms=0"), .invalidArgument, "timeout_ms must be 1...3600000"),
            (request("GET", "/v1/recommend/1?user_id=2"), .invalidArgument, "repeats a value given by the URL path"),
            (request("POST", "/v1/recommend/1", body: "{}"), .notFound, "no id in the path"),
            (request("POST", "/v1/recommend?k=1", body: "{}"), .invalidArgument, "not the query (k)"),
            (request("POST", "/v1/recommend", body: "{}", headers: [("content-type", "text/plain")]), .invalidArgument, "content-type must be application/json"),
            (request("POST", "/v1/recommend", body: "{\"k\": true}"), .invalidArgument, "field 'k' must be"),
            (request("DELETE", "/v1/recommend/1"), .unimplemented, "use GET or POST"),
        ]
        for (r, want, words) in cases {
            let got = code(r)
            #expect(got?.0 == want && got?.1.contains(words) == true, "\(r.method) \(r.path): \(String(describing: got))")
        }
    }

    @Test func errorsAreJSONWithTheStatusNameAndProtobufsHTTPStatus() throws {
        let r = JSONGateway.errorResponse(RPCError(.invalidArgument, "bad \"k\"\n"))
        #expect(r.status == 400 && r.contentType == "application/json")
        #expect(String(decoding: r.body, as: UTF8.self) == #"{"code":3,"status":"INVALID_ARGUMENT","message":"bad \"k\"\n"}"# + "\n")
        let statuses: [RPCStatusCode: Int] = [.notFound: 404, .resourceExhausted: 429, .unavailable: 503, .deadlineExceeded: 504,
                                              .unimplemented: 501, .failedPrecondition: 400, .internal: 500, .cancelled: 499,
                                              .permissionDenied: 403, .unauthenticated: 401, .aborted: 409]
        for (c, http) in statuses { #expect(JSONGateway.httpStatus(c) == http, "\(c)") }
    }

    @Test func queryStringsArePercentDecoded() {
        #expect(AdminHandler.parseQuery("a=1&b=x%20y+z&c&d=%zz").map { "\($0)=\($1)" } == ["a=1", "b=x y z", "c=", "d=%zz"])
        #expect(AdminHandler.split("/v1/x?y=1").0 == "/v1/x" && AdminHandler.split("/v1/x").1 == "")
    }
}
