/// How many messages each side of an RPC sends.
public enum MethodKind: Sendable, Hashable {
    case unary, serverStreaming, clientStreaming, bidirectionalStreaming
}

/// A typed method descriptor (as grpc-swift-2's `MethodDescriptor` with its serializers): the
/// method's path and how its request and response messages are encoded and decoded. Generated
/// from the `.proto` services (ShardRankWire's `ShardMethods`, `RecommenderMethods`,
/// `HealthMethods`); services register handlers with it (`RPCMethod.unary(_:placement:_:)`…) and
/// client stubs call with it (`RPCChannel.unary(_:request:…)`), so a request and its response
/// pair by type, never by naming convention.
public struct Method<Request: Sendable, Response: Sendable>: Sendable {
    public let service: String
    public let method: String
    /// `/package.Service/Method`.
    public let path: String
    public let kind: MethodKind
    public let encodeRequest: @Sendable (Request) -> FramedMessage
    public let decodeRequest: @Sendable ([UInt8]) throws(RPCError) -> Request
    public let encodeResponse: @Sendable (Response) -> FramedMessage
    public let decodeResponse: @Sendable ([UInt8]) throws(RPCError) -> Response

    @inlinable
    public init(service: String, method: String, kind: MethodKind,
                encodeRequest: @escaping @Sendable (Request) -> FramedMessage,
                decodeRequest: @escaping @Sendable ([UInt8]) throws(RPCError) -> Request,
                encodeResponse: @escaping @Sendable (Response) -> FramedMessage,
                decodeResponse: @escaping @Sendable ([UInt8]) throws(RPCError) -> Response) {
        self.service = service; self.method = method; self.path = "/\(service)/\(method)"; self.kind = kind
        self.encodeRequest = encodeRequest; self.decodeRequest = decodeRequest
        self.encodeResponse = encodeResponse; self.decodeResponse = decodeResponse
    }
}

// The helpers are @inlinable so that each service's handlers are specialized for its message types.
extension RPCMethod {
    /// A unary handler of typed messages: the request decoded, the response encoded by `method`.
    @inlinable
    public static func unary<Request, Response>(
        _ method: Method<Request, Response>, placement: Placement,
        _ body: @escaping @Sendable (Request, ServerContext) throws(RPCError) -> Response
    ) -> RPCMethod {
        RPCMethod(service: method.service, method: method.method, placement: placement, handler: .unary { bytes, ctx throws(RPCError) in
            method.encodeResponse(try body(try method.decodeRequest(bytes), ctx))
        })
    }

    /// An async unary handler of typed messages (it may call other servers).
    @inlinable
    public static func asyncUnary<Request, Response>(
        _ method: Method<Request, Response>, placement: Placement,
        _ body: @escaping @Sendable (Request, ServerContext) async throws(RPCError) -> Response
    ) -> RPCMethod {
        RPCMethod(service: method.service, method: method.method, placement: placement, handler: .asyncUnary { bytes, ctx throws(RPCError) in
            method.encodeResponse(try await body(try method.decodeRequest(bytes), ctx))
        })
    }

    /// A server-streaming handler: the request decoded by `method`; it sends `method.encodeResponse(…)`s to the writer.
    @inlinable
    public static func serverStreaming<Request, Response>(
        _ method: Method<Request, Response>, placement: Placement,
        _ body: @escaping @Sendable (Request, ServerContext, any ResponseStreamWriter) throws(RPCError) -> Void
    ) -> RPCMethod {
        RPCMethod(service: method.service, method: method.method, placement: placement, handler: .serverStreaming { bytes, ctx, writer throws(RPCError) in
            try body(try method.decodeRequest(bytes), ctx, writer)
        })
    }

    /// Any handler kind on the raw messages (a zero-copy or deferred path), registered at `method`'s path.
    @inlinable
    public init<Request, Response>(_ method: Method<Request, Response>, placement: Placement, handler: Handler) {
        self.init(service: method.service, method: method.method, placement: placement, handler: handler)
    }
}
