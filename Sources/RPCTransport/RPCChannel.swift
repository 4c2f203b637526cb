public import NIOCore
import NIOPosix
import NIOSSL
public import RPCCore
internal import RPCHTTP2
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Client settings.
public struct ClientConfiguration: Sendable {
    /// Connections kept to the target; calls go to the one with the fewest active streams.
    public var connections: Int = 2
    /// Largest response message accepted.
    public var maxMessageLength: Int = 4 << 20
    public var http2 = HTTP2Settings()
    /// Reconnect backoff (gRPC connection-backoff: initial, ×multiplier, ±jitter, capped).
    public var initialBackoff: Duration = .milliseconds(100)
    public var maxBackoff: Duration = .seconds(5)
    public var backoffMultiplier: Double = 1.6
    public var backoffJitter: Double = 0.2
    /// Time allowed to establish a TCP connection (and, with TLS, again for the handshake).
    public var connectTimeout: Duration = .seconds(2)
    /// Keepalive: a PING on each connection every `keepaliveInterval` (nil: none); a PING not
    /// acknowledged within `keepaliveTimeout` closes the connection (its calls fail UNAVAILABLE
    /// and the channel reconnects), so a silently lost peer is found in seconds.
    public var keepaliveInterval: Duration? = .seconds(10)
    public var keepaliveTimeout: Duration = .seconds(5)
    /// One connection per event loop of the group (`connections` is then ignored), and a call
    /// made on one of the group's event loops goes out on that loop's own connection: its
    /// answer resumes the caller on the same thread (see `EventLoopTaskExecutor`). Calls from
    /// other threads take the least-loaded connection.
    public var loopAffinity = false
    /// TLS (ALPN `h2`) on every connection, verifying the server's certificate (and presenting
    /// ours, for mutual TLS); nil: cleartext h2c. `reload()` on it changes new connections.
    public var tls: TLSContextSource?
    /// The name the server's certificate must carry (and SNI) when the target's host is not it;
    /// nil: the target's host (an IP literal is checked against the certificate's IP SANs).
    public var tlsServerName: String?
    /// Metadata sent with every call (a bearer token's `authorization`), before the call's own.
    public var metadata = Metadata()
    public init() {}
}

/// A channel to one `host:port`: a small pool of HTTP/2 connections, each carrying many
/// concurrent streams. Thread-safe; calls are `async`.
///
/// Failures: transport problems (refused, reset, closed, GOAWAY before processing) surface as
/// UNAVAILABLE; a connection that failed is retried with jittered exponential backoff, and
/// while a slot waits out its backoff, calls fail fast with UNAVAILABLE instead of hanging.
public final class RPCChannel: Sendable {
    public let host: String
    public let port: Int
    public let configuration: ClientConfiguration
    private let group: any EventLoopGroup
    private let slots: [Slot]
    private let closed = Atomic<Bool>(false)

    /// - Parameter target: `host:port`.
    public init(target: String, group: any EventLoopGroup, configuration: ClientConfiguration = ClientConfiguration()) throws(RPCError) {
        guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]), port > 0, port < 65536 else {
            throw RPCError(.invalidArgument, "target '\(target)' is not host:port")
        }
        var h = String(target[..<colon])
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        self.host = h
        self.port = port
        self.group = group
        self.configuration = configuration
        if configuration.loopAffinity {
            self.slots = group.makeIterator().map { Slot(loop: $0) }
        } else {
            self.slots = (0 ..< max(1, configuration.connections)).map { _ in Slot(loop: nil) }
        }
    }

    public var target: String { "\(host):\(port)" }

    // MARK: - Calls

    /// A unary call: one request message, one response message.
    /// - Parameters:
    ///   - path: `/package.Service/Method`.
    ///   - timeout: sent as `grpc-timeout` and enforced locally (DEADLINE_EXCEEDED).
    /// - Throws: `RPCError` with the server's status, or the transport's UNAVAILABLE /
    ///   DEADLINE_EXCEEDED / CANCELLED (task cancellation resets the stream).
    public func unary(path: String, request: FramedMessage, metadata: Metadata = Metadata(),
                      timeout: Duration? = nil) async throws(RPCError) -> [UInt8] {
        let messages = try await call(path: path, request: request, metadata: metadata, timeout: timeout)
        guard messages.count == 1 else {
            throw RPCError(.internal, "unary call got \(messages.count) response messages")
        }
        return messages[0]
    }

    /// A unary call of typed messages: `method` encodes the request and decodes the response.
    /// - Throws: as `unary(path:…)`, and INTERNAL ("bad response from server: …") when the
    ///   response is not a `Response`.
    @inlinable  // specialized at the call site (the stubs' per-call path)
    public func unary<Request, Response>(_ method: Method<Request, Response>, _ request: Request, metadata: Metadata = Metadata(),
                                         timeout: Duration? = nil) async throws(RPCError) -> Response {
        let bytes = try await unary(path: method.path, request: method.encodeRequest(request), metadata: metadata, timeout: timeout)
        do throws(RPCError) { return try method.decodeResponse(bytes) } catch {
            throw RPCError(.internal, "bad response from server: \(error.message)")
        }
    }

    /// A server-streaming call collected until the server ends it (use for bounded streams).
    public func call(path: String, request: FramedMessage, metadata: Metadata = Metadata(),
                     timeout: Duration? = nil) async throws(RPCError) -> [[UInt8]] {
        if closed.load(ordering: .relaxed) { throw RPCError(.unavailable, "channel to \(target) is closed") }
        let metadata = configuration.metadata.isEmpty ? metadata : Self.merged(configuration.metadata, metadata)
        let deadline = timeout.map { ContinuousClock.now.advanced(by: $0) }
        let conn = try await connection(deadline: deadline)
        let token = CallToken()
        conn.load.wrappingAdd(1, ordering: .relaxed)
        defer { conn.load.wrappingSubtract(1, ordering: .relaxed) }
        let result: Result<[[UInt8]], RPCError> = await withTaskCancellationHandler {
            await withCheckedContinuation { (cont: CheckedContinuation<Result<[[UInt8]], RPCError>, Never>) in
                let start: @Sendable () -> Void = {
                    let handler = conn.handler.value
                    let once = OnceResume(cont)
                    if token.isCancelled {
                        once.resume(.failure(RPCError(.cancelled, "call cancelled by the client")))
                        return
                    }
                    let remaining = deadline.map { ContinuousClock.now.duration(to: $0) }
                    if let remaining, remaining <= .zero {
                        once.resume(.failure(RPCError(.deadlineExceeded, "deadline exceeded before the call started")))
                        return
                    }
                    let id = handler.start(path: path, authority: self.target, request: request, metadata: metadata,
                                           timeout: remaining) { once.resume($0) }
                    if let id { token.started(id) }
                }
                // On the connection's own loop (loop affinity): start at once, no hop.
                if conn.eventLoop.inEventLoop { start() } else { conn.eventLoop.execute(start) }
            }
        } onCancel: {
            if let id = token.cancel() {
                conn.eventLoop.execute { conn.handler.value.cancel(id) }
            }
        }
        return try result.get()
    }

    /// The channel's own metadata, then the call's.
    private static func merged(_ base: Metadata, _ call: Metadata) -> Metadata {
        var all = base
        for (k, v) in call { all.add(k, v) }
        return all
    }

    /// Closes every connection; calls in flight fail with UNAVAILABLE.
    public func close() async {
        closed.store(true, ordering: .relaxed)
        for s in slots {
            if let ch = s.state.withLock({ st -> (any Channel)? in
                if case .ready(let c) = st { st = .idle; return c.channel }
                st = .idle
                return nil
            }) { try? await ch.close() }
        }
    }

    // MARK: - Connections

    final class Slot: Sendable {
        /// The event loop this slot's connection lives on (loop affinity), or nil: any.
        let loop: (any EventLoop)?
        init(loop: (any EventLoop)?) { self.loop = loop }
        enum State {
            case idle
            case connecting(EventLoopFuture<ConnectionBox>)
            case ready(ConnectionBox)
            case backoff(until: ContinuousClock.Instant, attempts: Int, lastError: String)
        }
        let state = Mutex<State>(.idle)
        let attempts = Atomic<Int>(0)
    }

    final class ConnectionBox: Sendable {
        let channel: any Channel
        let handler: NIOLoopBound<ClientConnectionHandler>
        /// Calls in flight on this connection (for least-loaded choice).
        let load = Atomic<Int>(0)
        init(channel: any Channel, handler: NIOLoopBound<ClientConnectionHandler>) { self.channel = channel; self.handler = handler }
        var eventLoop: any EventLoop { channel.eventLoop }
    }

    private func connection(deadline: ContinuousClock.Instant?) async throws(RPCError) -> ConnectionBox {
        // Loop affinity: the calling loop's own connection when it is ready.
        if configuration.loopAffinity, let mine = slots.first(where: { $0.loop?.inEventLoop == true }) {
            if let box = mine.state.withLock({ st -> ConnectionBox? in
                if case .ready(let b) = st { return b }
                return nil
            }) { return box }
        }
        // Prefer a ready slot with the lowest load; start connecting idle slots.
        var waitOn: EventLoopFuture<ConnectionBox>?
        var best: (box: ConnectionBox, load: Int)?
        var backoffError: String?
        let now = ContinuousClock.now
        for slot in slots {
            let decision = slot.state.withLock { st -> (ConnectionBox?, EventLoopFuture<ConnectionBox>?, String?) in
                switch st {
                case .ready(let box):
                    return (box, nil, nil)
                case .connecting(let f):
                    return (nil, f, nil)
                case .backoff(let until, _, let err) where until > now:
                    return (nil, nil, err)
                case .idle, .backoff:
                    let f = startConnect(slot)
                    st = .connecting(f)
                    return (nil, f, nil)
                }
            }
            if let box = decision.0 {
                let l = box.load.load(ordering: .relaxed)
                if best == nil || l < best!.load { best = (box, l) }
            } else if let f = decision.1 {
                if waitOn == nil { waitOn = f }
            } else if let e = decision.2 {
                backoffError = e
            }
        }
        if let best { return best.box }
        if let waitOn {
            // Wait for the connection, but never past the call's deadline (a blackholed host
            // leaves a connect attempt pending for `connectTimeout`). The race is decided on the
            // event loop — whichever of the connect and the deadline timer comes first — so a
            // busy cooperative pool cannot turn a connection made in time into a timeout.
            let target = self.target
            let loop = waitOn.eventLoop
            let promise = loop.makePromise(of: ConnectionBox.self)
            waitOn.whenComplete { result in
                switch result {
                case .success(let box): promise.succeed(box)
                case .failure(let error as RPCError): promise.fail(error)
                case .failure(let error): promise.fail(RPCError(.unavailable, "cannot connect to \(target): \(error)"))
                }
            }
            if let deadline {
                let nanos = ContinuousClock.now.duration(to: deadline).clampedNanoseconds
                let timer = loop.scheduleTask(in: .nanoseconds(nanos)) {
                    promise.fail(RPCError(.deadlineExceeded, "deadline exceeded while connecting to \(target)"))
                }
                promise.futureResult.whenComplete { _ in timer.cancel() }
            }
            do { return try await promise.futureResult.get() } catch let e as RPCError { throw e } catch {
                throw RPCError(.unavailable, "cannot connect to \(target): \(error)")
            }
        }
        throw RPCError(.unavailable, "cannot connect to \(target): \(backoffError ?? "no connection") (retrying with backoff)")
    }

    /// A connect failure in words a person can act on (NIO's own description nests its internals).
    static func describe(connectError error: any Error) -> String {
        var errnos: [Int32] = []
        if let e = error as? NIOConnectionError {
            if e.dnsAError != nil || e.dnsAAAAError != nil, e.connectionErrors.isEmpty { return "cannot resolve the host name" }
            errnos = e.connectionErrors.compactMap { ($0.error as? IOError)?.errnoCode }
        } else if let e = error as? IOError {
            errnos = [e.errnoCode]
        } else if error is ChannelError, "\(error)".contains("connectTimeout") {
            return "connection timed out (is the host reachable?)"
        }
        if errnos.contains(ECONNREFUSED) { return "connection refused: nothing is listening there (is the server running?)" }
        if errnos.contains(ENETUNREACH) || errnos.contains(EHOSTUNREACH) { return "network unreachable" }
        if errnos.contains(ETIMEDOUT) { return "connection timed out (is the host reachable?)" }
        if let first = errnos.first { return String(cString: strerror(first)) }
        if let e = error as? TLSSetupError { return e.description }
        return "\(error)"
    }

    private func startConnect(_ slot: Slot) -> EventLoopFuture<ConnectionBox> {
        let config = configuration
        let nanos = config.connectTimeout.clampedNanoseconds
        // SNI and the name checked: a host name; an IP literal is checked against IP SANs.
        let serverName = config.tlsServerName ?? ((try? SocketAddress(ipAddress: host, port: port)) == nil ? host : nil)
        let bootstrap = ClientBootstrap(group: slot.loop ?? group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.nanoseconds(nanos))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = config.tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls.context, serverHostname: serverName))
                        let handshake = channel.eventLoop.makePromise(of: Void.self)
                        try channel.pipeline.syncOperations.addHandler(TLSHandshakeWaiter(promise: handshake, timeout: config.connectTimeout))
                        try channel.pipeline.syncOperations.addHandler(TLSHandshakeResult(handshake.futureResult))
                    }
                    let h = try ClientConnectionHandler(configuration: config.http2.session, maxMessageLength: config.maxMessageLength,
                                                        keepaliveInterval: config.keepaliveInterval, keepaliveTimeout: config.keepaliveTimeout)
                    try channel.pipeline.syncOperations.addHandler(h)
                    let bound = NIOLoopBound(h, eventLoop: channel.eventLoop)
                    h.onUnusable = { [weak slot] in
                        slot?.state.withLock { st in
                            if case .ready(let b) = st, b.channel === channel { st = .idle }
                        }
                        _ = bound
                    }
                }
            }
        // A literal address connects directly: `connect(host:port:)` would resolve it with
        // getaddrinfo on a Dispatch queue, which CPU-heavy work elsewhere in the process (a
        // `concurrentPerform`) can hold up for seconds.
        let connecting: EventLoopFuture<any Channel>
        if let address = try? SocketAddress(ipAddress: host, port: port) {
            connecting = bootstrap.connect(to: address)
        } else {
            connecting = bootstrap.connect(host: host, port: port)
        }
        let future = connecting.flatMap { channel -> EventLoopFuture<any Channel> in
            // With TLS, the connection counts as made once the handshake agreed on h2.
            guard let waiting = try? channel.pipeline.syncOperations.handler(type: TLSHandshakeResult.self) else {
                return channel.eventLoop.makeSucceededFuture(channel)
            }
            channel.pipeline.syncOperations.removeHandler(waiting, promise: nil)
            return waiting.result.map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }.flatMapThrowing { channel -> ConnectionBox in
            let h = try channel.pipeline.syncOperations.handler(type: ClientConnectionHandler.self)
            return ConnectionBox(channel: channel, handler: NIOLoopBound(h, eventLoop: channel.eventLoop))
        }
        let target = self.target
        future.whenComplete { [config] result in
            slot.state.withLock { st in
                switch result {
                case .success(let box):
                    slot.attempts.store(0, ordering: .relaxed)
                    st = .ready(box)
                case .failure(let error):
                    let n = slot.attempts.wrappingAdd(1, ordering: .relaxed).newValue
                    var backoff = config.initialBackoff.secondsValue
                    let maxB = config.maxBackoff.secondsValue
                    for _ in 1 ..< n { backoff = min(maxB, backoff * config.backoffMultiplier) }
                    backoff *= 1 + Double.random(in: -config.backoffJitter ... config.backoffJitter)
                    st = .backoff(until: ContinuousClock.now.advanced(by: .milliseconds(Int(backoff * 1000))), attempts: n,
                                  lastError: Self.describe(connectError: error))
                }
            }
        }
        return future.flatMapErrorThrowing { error in
            throw RPCError(.unavailable, "cannot connect to \(target): \(Self.describe(connectError: error))")
        }
    }
}

/// Tracks the stream id of a call so task cancellation can reset it.
private final class CallToken: Sendable {
    private let state = Mutex<(cancelled: Bool, id: Int32?)>((false, nil))
    var isCancelled: Bool { state.withLock { $0.cancelled } }
    func started(_ id: Int32) { state.withLock { $0.id = id } }
    /// Marks cancelled; returns the stream id if the call already started.
    func cancel() -> Int32? { state.withLock { $0.cancelled = true; return $0.id } }
}

/// Resumes a continuation exactly once.
private final class OnceResume: @unchecked Sendable {
    private var cont: CheckedContinuation<Result<[[UInt8]], RPCError>, Never>?
    init(_ c: CheckedContinuation<Result<[[UInt8]], RPCError>, Never>) { cont = c }
    /// Only called on one event loop.
    func resume(_ r: Result<[[UInt8]], RPCError>) {
        if let c = cont { cont = nil; c.resume(returning: r) }
    }
}
