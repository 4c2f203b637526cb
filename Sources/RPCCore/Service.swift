/// Sends the messages of a server-streaming response. Thread-safe: a handler may call it from any
/// thread; the transport hops to the stream's event loop. Calls after `finish` are ignored.
public protocol ResponseStreamWriter: Sendable {
    func send(_ message: FramedMessage)
    /// Ends the response with OK (nil) or an error status.
    func finish(_ error: RPCError?)
}

/// One RPC method: its path, where it runs, and its handler.
public struct RPCMethod: Sendable {
    /// Where the handler runs.
    public enum Placement: Sendable, Hashable {
        /// On the connection's event loop: short, non-blocking work (a Lookup gather).
        case inline
        /// On the server's worker pool; the response is posted back to the event loop (Search, ranking).
        case workerPool
    }

    public typealias UnaryHandler = @Sendable (_ request: [UInt8], _ context: ServerContext) throws(RPCError) -> FramedMessage
    public typealias AsyncUnaryHandler = @Sendable (_ request: [UInt8], _ context: ServerContext) async throws(RPCError) -> FramedMessage
    public typealias ServerStreamingHandler = @Sendable (_ request: [UInt8], _ context: ServerContext, _ writer: any ResponseStreamWriter) throws(RPCError) -> Void
    /// Answers through `respond`, exactly once, from any thread: at once (before returning) or later.
    /// One request message of a bidirectional stream in, the response messages for it out (in
    /// order, possibly none). Runs on the connection's event loop, so it must be short.
    public typealias StreamMessageHandler = @Sendable (_ request: [UInt8], _ context: ServerContext) throws(RPCError) -> [FramedMessage]
    public typealias DeferredUnaryHandler = @Sendable (_ request: [UInt8], _ context: ServerContext,
                                                       _ respond: @escaping @Sendable (Result<FramedMessage, RPCError>) -> Void) -> Void

    public enum Handler: Sendable {
        /// One request message, one response message.
        case unary(UnaryHandler)
        /// One request, one response, computed by an async function (it may call other servers).
        /// It runs as a task; a cancel or an expired deadline cancels the task.
        case asyncUnary(AsyncUnaryHandler)
        /// One request message; the handler sends any number of messages and then finishes the
        /// writer, possibly later and from another thread.
        case serverStreaming(ServerStreamingHandler)
        /// One request, one response: the handler runs on the connection's event loop (it must not
        /// block) and either answers before returning (no thread hop: a short computation) or hands
        /// the work to another component that answers later from its own thread (e.g. a batcher).
        /// Counts toward the in-flight handler limit until answered; `placement` is ignored.
        case deferredUnary(DeferredUnaryHandler)
        /// A request stream and a response stream (gRPC bidirectional streaming), in the simplest
        /// shape: each request message is answered, in order, by the messages the handler returns
        /// for it, on the connection's event loop as it arrives; the call ends with OK when the
        /// client half-closes (or with the status the handler throws). Used by server reflection.
        /// `placement` is ignored.
        case streamMessages(StreamMessageHandler)
    }

    /// True for methods whose request is a stream of messages (the state machine keeps the stream
    /// open after the first message).
    public var streamsRequests: Bool {
        if case .streamMessages = handler { return true }
        return false
    }

    /// `/package.Service/Method`.
    public let path: String
    public let placement: Placement
    public let handler: Handler
    /// Its position in the router's `paths` (set when a router registers it; -1 before): lets
    /// the transport keep per-method state in an array instead of a dictionary keyed by path.
    public internal(set) var index: Int = -1

    public init(service: String, method: String, placement: Placement, handler: Handler) {
        self.path = "/\(service)/\(method)"
        self.placement = placement
        self.handler = handler
    }
}

/// A gRPC service: a fully qualified name and its methods.
public protocol RPCService: Sendable {
    /// `package.Service`.
    var serviceName: String { get }
    var methods: [RPCMethod] { get }
}
