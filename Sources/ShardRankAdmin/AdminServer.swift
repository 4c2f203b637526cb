public import NIOCore
import NIOPosix
import NIOHTTP1

/// An HTTP request for a front door served beside the admin endpoints (the coordinator's JSON API).
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path, without the query.
    public var path: String
    /// Query parameters, percent-decoded, in order.
    public var query: [(String, String)]
    /// Header names in lower case.
    public var headers: [(String, String)]
    public var body: [UInt8]
    public var peer: String

    public func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    public init(status: Int, contentType: String, body: [UInt8]) { self.status = status; self.contentType = contentType; self.body = body }
}

/// What the admin port serves besides `/metrics` and `/healthz`.
public protocol HTTPFrontDoor: Sendable {
    /// Whether `path` is this front door's (it then answers every method on it).
    func owns(path: String) -> Bool
    /// Answers one request; `loop` is the connection's event loop.
    func handle(_ request: HTTPRequest, on loop: any EventLoop) async -> HTTPResponse
    /// Where `handle` should run for a connection on `loop` (nil: Swift's default executor).
    func executor(for loop: any EventLoop) -> (any TaskExecutor)?
}

extension HTTPFrontDoor {
    public func executor(for loop: any EventLoop) -> (any TaskExecutor)? { nil }
}

/// The admin HTTP/1.1 endpoint of a process: `GET /metrics` (Prometheus text format) and
/// `GET /healthz` ("ok"), plus an optional front door (the coordinator's JSON API under `/v1/`).
/// Plaintext, meant for loopback or a cluster-internal network.
public final class AdminServer: Sendable {
    private let channel: any Channel
    public let port: Int
    /// Largest request body accepted (larger: 413).
    public static let maxBodyBytes = 4 << 20

    /// Binds `host:port` (0 picks a free port) and serves `metrics` (and `frontDoor`).
    public init(host: String, port: Int, metrics: ServerMetrics, frontDoor: (any HTTPFrontDoor)? = nil, group: any EventLoopGroup) async throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(metrics: metrics, frontDoor: frontDoor))
                }
            }
        channel = try await bootstrap.bind(host: host, port: port).get()
        self.port = channel.localAddress?.port ?? port
    }

    public func close() async {
        try? await channel.close()
    }
}

final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let metrics: ServerMetrics
    let frontDoor: (any HTTPFrontDoor)?
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(metrics: ServerMetrics, frontDoor: (any HTTPFrontDoor)?) { self.metrics = metrics; self.frontDoor = frontDoor }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
            tooLarge = false
        case .body(var buf):
            if body.count + buf.readableBytes > AdminServer.maxBodyBytes { tooLarge = true; return }
            if !tooLarge { body += buf.readBytes(length: buf.readableBytes) ?? [] }
        case .end:
            guard let h = head else { return }
            head = nil
            answer(h, context: context)
        }
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let (path, queryText) = Self.split(head.uri)
        if let frontDoor, frontDoor.owns(path: path) {
            if tooLarge {
                write(HTTPResponse(status: 413, contentType: "text/plain", body: Array("request body over \(AdminServer.maxBodyBytes) bytes\n".utf8)),
                      version: head.version, context: context)
                return
            }
            let request = HTTPRequest(method: head.method.rawValue, path: path, query: Self.parseQuery(queryText),
                                      headers: head.headers.map { ($0.name.lowercased(), $0.value) }, body: body,
                                      peer: context.channel.remoteAddress?.description ?? "")
            body = []
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            Task(executorPreference: frontDoor.executor(for: loop)) {
                let response = await frontDoor.handle(request, on: loop)
                loop.execute { bound.value.0.write(response, version: head.version, context: bound.value.1) }
            }
            return
        }
        let response: HTTPResponse
        switch (head.method, path) {
        case (.GET, "/metrics"):
            response = HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.exposition())
        case (.GET, "/healthz"):
            response = HTTPResponse(status: 200, contentType: "text/plain", body: Array("ok\n".utf8))
        case (.GET, _):
            response = HTTPResponse(status: 404, contentType: "text/plain",
                                    body: Array("not found: try /metrics or /healthz\(frontDoor == nil ? "" : " (or the JSON API under /v1/)")\n".utf8))
        default:
            response = HTTPResponse(status: 405, contentType: "text/plain", body: Array("GET only\n".utf8))
        }
        write(response, version: head.version, context: context)
    }

    private func write(_ r: HTTPResponse, version: HTTPVersion, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: r.contentType)
        headers.add(name: "content-length", value: String(r.body.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: r.status), headers: headers))),
                      promise: nil)
        var buf = context.channel.allocator.buffer(capacity: r.body.count)
        buf.writeBytes(r.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buf))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    static func split(_ uri: String) -> (String, Substring) {
        guard let q = uri.firstIndex(of: "?") else { return (uri, "") }
        return (String(uri[..<q]), uri[uri.index(after: q)...])
    }

    /// `a=1&b=x%20y` → [("a", "1"), ("b", "x y")] (`+` is a space, as in forms).
    static func parseQuery(_ q: Substring) -> [(String, String)] {
        q.split(separator: "&").map { pair in
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (percentDecode(kv[0]), kv.count > 1 ? percentDecode(kv[1]) : "")
        }
    }

    static func percentDecode(_ s: Substring) -> String {
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "+") { out.append(0x20); continue }
            if c == UInt8(ascii: "%"), it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v); it = it.dropFirst(2); continue
            }
            out.append(c)
        }
        return String(decoding: out, as: UTF8.self)
    }
}
