public import NIOCore
import RPCCore
public import RPCTransport
import ShardRankWire

/// The coordinator's JSON front door (docs/api.md, "JSON over HTTP"): HTTP/1.1 + JSON mapped
/// field by field from the Recommender service's messages (`ProtoJSON`, the proto3 JSON
/// mapping), served on the admin port. Each request runs as the gRPC method it maps to through
/// `RPCServer.invokeUnary`: the same handler, in-flight limit, deadlines and per-method metrics.
///
/// Routes:
/// - `GET  /v1/recommend/{user_id}?k=10&model=dot&context.country=US&sources=SOURCE_POPULAR,...`
/// - `GET  /v1/similar/{item_id}?k=10`
/// - `POST /v1/recommend`, `/v1/rank`, `/v1/similar`, `/v1/record_events`, `/v1/record_events_batch`
///   with the request message as a JSON object.
/// A `timeout_ms` query parameter is the call's deadline (as `grpc-timeout`); an
/// `x-request-id` header travels as the gRPC metadata of that name, and so does `authorization`
/// (a bearer token, checked as on the gRPC port). Answers are the response
/// message as JSON (200), or `{"code": N, "status": "NAME", "message": "..."}` with the HTTP
/// status protobuf's HTTP mapping gives the gRPC code (400, 404, 429, 503, 504, ...).
public struct JSONGateway: HTTPFrontDoor {
    let server: RPCServer

    public init(server: RPCServer) { self.server = server }

    struct Route {
        let method: String   // gRPC method name
        let request: String
        let response: String
        /// For GET /v1/<name>/{id}: the field the path's id sets.
        let pathField: String?
    }

    static let service = "shardrank.v1.Recommender"
    static let routes: [String: Route] = [
        "recommend": Route(method: "Recommend", request: "shardrank.v1.RecommendRequest", response: "shardrank.v1.RecommendResponse", pathField: "user_id"),
        "rank": Route(method: "Rank", request: "shardrank.v1.RankRequest", response: "shardrank.v1.RankResponse", pathField: nil),
        "similar": Route(method: "Similar", request: "shardrank.v1.SimilarRequest", response: "shardrank.v1.SimilarResponse", pathField: "item_id"),
        "record_events": Route(method: "RecordEvents", request: "shardrank.v1.RecordEventsRequest",
                               response: "shardrank.v1.RecordEventsResponse", pathField: nil),
        "record_events_batch": Route(method: "RecordEventsBatch", request: "shardrank.v1.RecordEventsBatchRequest",
                                     response: "shardrank.v1.RecordEventsBatchResponse", pathField: nil),
    ]

    public func owns(path: String) -> Bool { path == "/v1" || path.hasPrefix("/v1/") }

    /// The connection's own event loop (thread-per-core, as the gRPC path runs).
    public func executor(for loop: any EventLoop) -> (any TaskExecutor)? { server.loopExecutors.executor(for: loop) }

    public func handle(_ request: HTTPRequest, on loop: any EventLoop) async -> HTTPResponse {
        do throws(RPCError) {
            let (route, bytes, timeout) = try Self.parse(request)
            var metadata = Metadata()
            if let id = request.header("x-request-id") { metadata.add("x-request-id", id) }
            // Bearer tokens (`--token-file`): the gRPC path's check, on the same header.
            if let auth = request.header("authorization") { metadata.add("authorization", auth) }
            let result = await server.invokeUnary(path: "/\(Self.service)/\(route.method)", request: bytes, metadata: metadata,
                                                  timeout: timeout, peer: request.peer, on: loop)
            let answer = try result.get()
            let json = try ProtoJSON.json(fromWire: Array(answer.payload), message: route.response)
            return HTTPResponse(status: 200, contentType: "application/json", body: Array(json.utf8) + [0x0A])  // a newline, for shells
        } catch {
            return Self.errorResponse(error)
        }
    }

    /// The route, the request's protobuf bytes and its deadline, or INVALID_ARGUMENT / NOT_FOUND /
    /// UNIMPLEMENTED (a method the route does not take) naming the problem.
    static func parse(_ r: HTTPRequest) throws(RPCError) -> (Route, [UInt8], Duration?) {
        let parts = r.path.split(separator: "/").map(String.init)  // ["v1", name, id?]
        guard parts.count >= 2, parts.count <= 3, let route = routes[parts[1]] else {
            throw RPCError(.notFound, "no route \(r.path): try GET /v1/recommend/{user_id}, GET /v1/similar/{item_id}, or POST /v1/"
                           + routes.keys.sorted().joined(separator: "|"))
        }
        var query = r.query
        var timeout: Duration?
        if let i = query.firstIndex(where: { $0.0 == "timeout_ms" }) {
            guard let ms = Int(query[i].1), ms > 0, ms <= 3_600_000 else {
                throw RPCError(.invalidArgument, "timeout_ms must be 1...3600000 milliseconds (got '\(query[i].1)')")
            }
            timeout = .milliseconds(ms)
            query.remove(at: i)
        }
        switch r.method {
        case "GET":
            guard parts.count == 3, let field = route.pathField else {
                throw RPCError(.notFound, "GET \(r.path): give the id in the path (GET /v1/\(parts[1])/{\(route.pathField ?? "id")}) or POST a JSON body")
            }
            guard UInt64(parts[2]) != nil else { throw RPCError(.invalidArgument, "\(field) '\(parts[2])' in the path is not an unsigned integer") }
            let bytes = try ProtoJSON.wire(fromQuery: query, fixed: [(field, .string(parts[2]))], message: route.request)
            return (route, bytes, timeout)
        case "POST":
            guard parts.count == 2 else { throw RPCError(.notFound, "POST /v1/\(parts[1]) takes the whole request as a JSON body, no id in the path") }
            guard query.isEmpty else { throw RPCError(.invalidArgument, "POST takes its fields in the JSON body, not the query (\(query[0].0))") }
            if let type = r.header("content-type"), !type.lowercased().hasPrefix("application/json") {
                throw RPCError(.invalidArgument, "content-type must be application/json (got '\(type)')")
            }
            let bytes = try ProtoJSON.wire(fromJSON: r.body.isEmpty ? Array("{}".utf8) : r.body, message: route.request)
            return (route, bytes, timeout)
        default:
            throw RPCError(.unimplemented, "\(r.method) \(r.path): use GET or POST")
        }
    }

    /// protobuf's mapping of gRPC codes to HTTP statuses (google/rpc/code.proto).
    static func httpStatus(_ c: RPCStatusCode) -> Int {
        switch c {
        case .ok: 200
        case .cancelled: 499
        case .unknown, .internal, .dataLoss: 500
        case .invalidArgument, .failedPrecondition, .outOfRange: 400
        case .deadlineExceeded: 504
        case .notFound: 404
        case .alreadyExists, .aborted: 409
        case .permissionDenied: 403
        case .resourceExhausted: 429
        case .unimplemented: 501
        case .unavailable: 503
        case .unauthenticated: 401
        }
    }

    static func errorResponse(_ e: RPCError) -> HTTPResponse {
        var out = "{\"code\":\(e.code.rawValue),\"status\":\"\(e.code)\",\"message\":"
        ProtoJSON.writeString(e.message, into: &out)
        out += "}\n"
        return HTTPResponse(status: httpStatus(e.code), contentType: "application/json", body: Array(out.utf8))
    }
}
