import NIOCore
import RPCCore
import RPCHTTP2

/// Hosts one HTTP/2 client session on a channel; every method runs on the channel's event loop.
/// Calls are started with `start`, and each ends exactly once through its `complete` callback:
/// with the response messages, or an `RPCError` (status from the server, DEADLINE_EXCEEDED when
/// the local deadline fires, CANCELLED, or UNAVAILABLE when the connection fails).
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let session: HTTP2Session
    private let maxMessageLength: Int
    private var context: ChannelHandlerContext?
    private var calls: [Int32: PendingCall] = [:]
    private(set) var goAwayReceived = false
    private(set) var isClosed = false
    private var flushScheduled = false
    /// Called on the loop when the connection can take no new calls (GOAWAY or closed).
    var onUnusable: (() -> Void)?

    typealias Completion = (Result<[[UInt8]], RPCError>) -> Void

    final class PendingCall {
        var parser: ClientResponseParser
        let complete: Completion
        var deadlineTask: Scheduled<Void>?
        var done = false
        init(parser: ClientResponseParser, complete: @escaping Completion) { self.parser = parser; self.complete = complete }
    }

    /// Keepalive: a PING every `keepaliveInterval`; when one is not acknowledged within
    /// `keepaliveTimeout` the connection is declared dead (its calls fail UNAVAILABLE, the channel
    /// reconnects) — a peer lost silently (power cut, partition) is found in seconds instead of
    /// TCP's retransmission timeout (minutes). nil: no pings.
    private let keepaliveInterval: Duration?
    private let keepaliveTimeout: Duration
    private var keepaliveTask: Scheduled<Void>?
    private var pingSentAt: NIODeadline?

    init(configuration: HTTP2Configuration, maxMessageLength: Int, keepaliveInterval: Duration? = nil,
         keepaliveTimeout: Duration = .seconds(5)) throws {
        session = try HTTP2Session(role: .client, configuration: configuration)
        self.maxMessageLength = maxMessageLength
        self.keepaliveInterval = keepaliveInterval
        self.keepaliveTimeout = keepaliveTimeout
    }

    var activeCalls: Int { calls.count }
    var isUsable: Bool { !goAwayReceived && !isClosed }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelActive(context: ChannelHandlerContext) {
        flush()
        scheduleKeepalive(in: keepaliveInterval)
        context.fireChannelActive()
    }

    /// The next keepalive step after `delay`: send a PING, or, when the last one is still
    /// unanswered after `keepaliveTimeout`, close the connection.
    private func scheduleKeepalive(in delay: Duration?) {
        guard let delay, let loop = context?.eventLoop, !isClosed else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        keepaliveTask = loop.scheduleTask(in: .nanoseconds(delay.clampedNanoseconds)) { bound.value.keepaliveTick() }
    }

    private func keepaliveTick() {
        guard let context, !isClosed, keepaliveInterval != nil else { return }
        let now = NIODeadline.now()
        if let sent = pingSentAt {
            let elapsed = Duration.nanoseconds((now - sent).nanoseconds)
            if elapsed >= keepaliveTimeout {
                isClosed = true
                failAll(RPCError(.unavailable, "connection to \(context.remoteAddress?.description ?? "server") lost: keepalive PING "
                                 + "not acknowledged within \(keepaliveTimeout)"))
                onUnusable?()
                context.close(promise: nil)
                return
            }
            scheduleKeepalive(in: keepaliveTimeout - elapsed)
            return
        }
        do { try session.submitPing() } catch { return }
        pingSentAt = now
        flush()
        scheduleKeepalive(in: keepaliveTimeout)
    }

    func channelInactive(context: ChannelHandlerContext) {
        keepaliveTask?.cancel()
        isClosed = true
        failAll(RPCError(.unavailable, "connection to \(context.remoteAddress?.description ?? "server") closed"))
        onUnusable?()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failAll(RPCError(.unavailable, "connection error: \(error)"))
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let events: [HTTP2Event]
        do {
            events = try buffer.withUnsafeReadableBytes { try session.receive($0) }
        } catch {
            failAll(RPCError(.unavailable, "HTTP/2 protocol error from server: \(error)"))
            context.close(promise: nil)
            return
        }
        for e in events { handle(e) }
        flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flush() }
        context.fireChannelWritabilityChanged()
    }

    /// Starts a unary (or server-streaming) call. `deadline` is enforced locally and sent as
    /// `grpc-timeout`. Returns a token for `cancel`, or nil when the call already failed.
    func start(path: String, authority: String, request: FramedMessage, metadata: Metadata,
               timeout: Duration?, complete: @escaping Completion) -> Int32? {
        guard isUsable else {
            complete(.failure(RPCError(.unavailable, "connection is closing")))
            return nil
        }
        var headers: [(String, String)] = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
                                           ("content-type", "application/grpc"), ("te", "trailers"),
                                           ("user-agent", "shardrank-swift/1.0")]
        if let timeout {
            let ns = timeout.clampedNanoseconds
            headers.append(("grpc-timeout", GRPCTimeout(nanoseconds: ns).headerValue))
        }
        headers.append(contentsOf: metadata.wireHeaders)
        let id: Int32
        do {
            id = try session.submitRequest(headers: headers, body: request)
        } catch {
            complete(.failure(RPCError(.unavailable, "cannot start stream: \(error)")))
            return nil
        }
        let call = PendingCall(parser: ClientResponseParser(maxMessageLength: maxMessageLength), complete: complete)
        calls[id] = call
        if let timeout, let loop = context?.eventLoop {
            let ns = timeout.clampedNanoseconds
            let bound = NIOLoopBound(self, eventLoop: loop)
            call.deadlineTask = loop.scheduleTask(in: .nanoseconds(max(0, ns))) {
                bound.value.finish(id, .failure(RPCError(.deadlineExceeded, "deadline exceeded after \(timeout)")), reset: true)
            }
        }
        scheduleFlush()
        return id
    }

    /// Cancels a call: RST_STREAM(CANCEL) and CANCELLED to the caller.
    func cancel(_ id: Int32) {
        finish(id, .failure(RPCError(.cancelled, "call cancelled by the client")), reset: true)
    }

    private func finish(_ id: Int32, _ result: Result<[[UInt8]], RPCError>, reset: Bool) {
        guard let call = calls.removeValue(forKey: id), !call.done else { return }
        call.done = true
        call.deadlineTask?.cancel()
        if reset { session.reset(stream: id, errorCode: 8); flush() }
        call.complete(result)
    }

    private func failAll(_ error: RPCError) {
        let all = calls
        calls.removeAll()
        for (_, c) in all where !c.done {
            c.done = true
            c.deadlineTask?.cancel()
            c.complete(.failure(error))
        }
    }

    private func handle(_ event: HTTP2Event) {
        switch event {
        case .headers(let id, let headers, let endStream, _):
            calls[id]?.parser.receivedHeaders(headers, endStream: endStream)
        case .data(let id, let bytes):
            guard let c = calls[id] else { return }
            bytes.withUnsafeBytes { c.parser.receivedData($0) }
        case .endStream:
            break
        case .streamClosed(let id, let code):
            guard let c = calls[id] else { return }
            if let err = c.parser.finalStatus(streamClosedWithError: code == 0 ? nil : code) {
                finish(id, .failure(err), reset: false)
            } else {
                finish(id, .success(c.parser.messages), reset: false)
            }
        case .goAway(let last, _):
            goAwayReceived = true
            // Streams above `last` were never processed: safe to retry elsewhere.
            for (id, _) in calls where id > last {
                finish(id, .failure(RPCError(.unavailable, "server sent GOAWAY before processing the call")), reset: false)
            }
            onUnusable?()
        case .pingAck:
            if let sent = pingSentAt, let interval = keepaliveInterval {
                pingSentAt = nil
                // The next PING one interval after this one was sent.
                let elapsed = Duration.nanoseconds(max(0, (NIODeadline.now() - sent).nanoseconds))
                keepaliveTask?.cancel()
                scheduleKeepalive(in: interval > elapsed ? interval - elapsed : .zero)
            }
        }
    }

    /// Writes once the event loop finishes what it is doing now: the calls a request starts in
    /// one go (its sub-calls to this server) leave in one write, not one each.
    private func scheduleFlush() {
        guard !flushScheduled, let loop = context?.eventLoop else { return }
        flushScheduled = true
        let bound = NIOLoopBound(self, eventLoop: loop)
        loop.execute {
            bound.value.flushScheduled = false
            bound.value.flush()
        }
    }

    private func flush() {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: 0)
        do {
            try session.flush { buffer.writeBytes($0) }
        } catch {
            failAll(RPCError(.unavailable, "HTTP/2 send failed: \(error)"))
            context.close(promise: nil)
            return
        }
        for e in session.takeEvents() { handle(e) }
        if buffer.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(buffer), promise: nil) }
        if goAwayReceived && calls.isEmpty { context.close(promise: nil) }
    }
}
