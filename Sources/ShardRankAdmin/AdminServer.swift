public import NIOCore
import NIOPosix
import NIOHTTP1

/// The admin HTTP/1.1 endpoint of a process: `GET /metrics` (Prometheus text format) and
/// `GET /healthz` ("ok"). Plaintext, meant for loopback or a cluster-internal network.
public final class AdminServer: Sendable {
    private let channel: any Channel
    public let port: Int

    /// Binds `host:port` (0 picks a free port) and serves `metrics`.
    public init(host: String, port: Int, metrics: ServerMetrics, group: any EventLoopGroup) async throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(AdminHandler(metrics: metrics))
                }
            }
        channel = try await bootstrap.bind(host: host, port: port).get()
        self.port = channel.localAddress?.port ?? port
    }

    public func close() async {
        try? await channel.close()
    }
}

final class AdminHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let metrics: ServerMetrics

    init(metrics: ServerMetrics) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let (status, type, body): (HTTPResponseStatus, String, [UInt8])
        switch (head.method, head.uri.split(separator: "?").first.map(String.init) ?? head.uri) {
        case (.GET, "/metrics"):
            (status, type, body) = (.ok, "text/plain; version=0.0.4; charset=utf-8", metrics.exposition())
        case (.GET, "/healthz"):
            (status, type, body) = (.ok, "text/plain", Array("ok\n".utf8))
        case (.GET, _):
            (status, type, body) = (.notFound, "text/plain", Array("not found: try /metrics or /healthz\n".utf8))
        default:
            (status, type, body) = (.methodNotAllowed, "text/plain", Array("GET only\n".utf8))
        }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: type)
        headers.add(name: "content-length", value: String(body.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        var buf = context.channel.allocator.buffer(capacity: body.count)
        buf.writeBytes(body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buf))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
