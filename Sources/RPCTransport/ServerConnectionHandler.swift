import NIOCore
import Synchronization
import NIOPosix
import Logging
import RPCCore
import RPCHTTP2

/// Hosts one HTTP/2 server session on a channel. Everything here runs on the channel's event loop:
/// the fixed rhythm is read → `HTTP2Session.receive` → act on events (state machines) → submit →
/// `flush` → write. Handlers placed `.workerPool` run elsewhere and post their result back here.
final class ServerConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let session: HTTP2Session
    private let router: Router
    private let observers: MethodObservers?
    private let config: ServerConfiguration
    private let state: ServerState
    private let pool: NIOThreadPool
    private let poolExecutor: ThreadPoolTaskExecutor
    private let loopExecutors: EventLoopExecutors?
    /// This connection's event loop as a task executor (set when the handler is added).
    private var loopExecutor: EventLoopTaskExecutor!
    private let logger: Logger
    private var streams: [Int32: Stream] = [:]
    private var context: ChannelHandlerContext?
    private var peer = ""
    /// The peer certificate's identity, read at the first call that needs it (with an authorizer).
    private var peerIdentity: PeerIdentity?
    private var goingAway = false
    /// Distinguishes this connection in generated request ids.
    private let connectionTag = String(UInt32.random(in: 0 ... .max), radix: 36)
    /// Reused for every flush: once the previous write completed, NIO holds no reference and
    /// `clear()` keeps the storage, so steady-state flushes allocate nothing for it.
    private var outBuffer: ByteBuffer?
    /// Closes the connection after `maxConnectionIdle` without streams (GOAWAY first). One timer
    /// at a time, never cancelled on the request path: it checks `idleSince` when it fires and
    /// re-arms for the rest of the interval (a timer per request would cost a heap insert and
    /// removal on every call).
    private var idleTask: Scheduled<Void>?
    private var writeStallTask: Scheduled<Void>?
    /// Checks answered streams for stalled sends every `streamSendTimeout` while any exist.
    private var sendCheckTask: Scheduled<Void>?
    /// Checks streams still receiving their request every `streamIdleTimeout` while any exist.
    private var streamIdleTask: Scheduled<Void>?
    /// Checks the preface and header blocks every `headerTimeout` for the connection's life.
    private var headerTask: Scheduled<Void>?
    /// The header block in progress at the previous header check (0: none).
    private var lastHeaderBlock: Int32 = 0
    /// This connection's `session.queuedBytes` as last added to the process's `state.queuedBytes`.
    private var publishedQueued = 0
    /// Bytes of incomplete requests this connection's streams buffer (their `buffered` summed);
    /// added to `state.requestBytes` as it changes.
    private var requestBytes = 0
    /// When the last stream closed; nil while streams are open.
    private var idleSince: NIODeadline?

    final class Stream {
        var machine: ServerStreamStateMachine
        var call: ServerStreamStateMachine.Call?
        var serverContext: ServerContext?
        var deadlineTask: Scheduled<Void>?
        var deadline: ContinuousClock.Instant?
        let started = ContinuousClock.now
        /// The method's observer, once the call was accepted and counted as started.
        var observer: (any RPCMethodObserver)?
        var finished = false
        /// A unary answer is queued: the call is counted when the stream closes — OK once all of
        /// it went out, CANCELLED or DEADLINE_EXCEEDED if the peer never took it.
        var answered = false
        /// Bytes still queued at the last send check (-1: not checked yet).
        var lastQueued = -1
        /// Request bytes (or its end) arrived since the last stream-idle check; `watched`: that
        /// check saw this stream already (a stream is judged only over a whole interval).
        var sawInput = false
        var watched = false
        /// A streaming call holds one of the process's `maxInFlightHandlers` slots until the
        /// stream is gone (unary handlers hold theirs while they run).
        var holdsSlot = false
        /// `machine.bufferedRequestBytes` as last counted in the connection's `requestBytes`.
        var buffered = 0
        init(limits: ServerStreamStateMachine.Limits) { machine = ServerStreamStateMachine(limits: limits) }
    }

    init(router: Router, observers: MethodObservers?, config: ServerConfiguration, state: ServerState, pool: NIOThreadPool,
         poolExecutor: ThreadPoolTaskExecutor, loopExecutors: EventLoopExecutors?, logger: Logger) throws {
        self.poolExecutor = poolExecutor
        self.loopExecutors = loopExecutors
        self.session = try HTTP2Session(role: .server, configuration: config.http2.session)
        self.router = router
        self.observers = observers
        self.config = config
        self.state = state
        self.pool = pool
        self.logger = logger
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        peer = context.remoteAddress?.description ?? "?"
        let loop = context.eventLoop
        loopExecutor = loopExecutors?.executor(for: loop) ?? EventLoopTaskExecutor(loop)
        let bound = NIOLoopBound(self, eventLoop: loop)
        let channel = context.channel
        state.connections.withLock {
            $0[ObjectIdentifier(self)] = ServerState.ConnectionRef(
                eventLoop: loop,
                shutdown: { loop.execute { bound.value.beginGracefulShutdown() } },
                close: { channel.close(promise: nil) })
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        state.connections.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if state.shuttingDown.load(ordering: .relaxed) { goingAway = true; session.submitGoAway() }
        armIdleTimer()
        if config.headerTimeout != nil { scheduleHeaderCheck() }
        flush()  // SETTINGS first
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTask?.cancel()
        writeStallTask?.cancel()
        sendCheckTask?.cancel()
        streamIdleTask?.cancel()
        headerTask?.cancel()
        state.queuedBytes.wrappingSubtract(publishedQueued, ordering: .relaxed)
        publishedQueued = 0
        let gone = RPCError(.unavailable, "connection closed")
        for (id, s) in streams {
            s.deadlineTask?.cancel()
            if s.call != nil { observeEnd(s, .unavailable) }
            s.serverContext?.cancel(gone)
            removeStream(id)
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let events: [HTTP2Event]
        do {
            events = try buffer.withUnsafeReadableBytes { try session.receive($0) }
        } catch {
            logger.debug("closing connection from \(peer): \(error)")
            flush()
            context.close(promise: nil)
            return
        }
        for e in events { handle(e) }
        flush()
    }

    /// Back-pressure: while the socket cannot take more, stop reading new requests (no new
    /// handlers run, so no new responses pile up) and leave frames in nghttp2's queue.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        context.channel.setOption(ChannelOptions.autoRead, value: writable).whenFailure { _ in }
        if writable {
            writeStallTask?.cancel()
            writeStallTask = nil
            flush()
        } else if writeStallTask == nil, let timeout = config.writeTimeout {
            // The peer stopped reading: if it does not resume within the write timeout, close
            // the connection (and free the answers waiting for it) instead of holding them.
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            writeStallTask = context.eventLoop.scheduleTask(in: .nanoseconds(timeout.clampedNanoseconds)) {
                bound.value.writeStalled(timeout)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    private func writeStalled(_ timeout: Duration) {
        writeStallTask = nil
        guard let context, !context.channel.isWritable else { return }
        logger.info("closing the connection from \(peer): it read nothing for \(timeout) while answers waited (write timeout)")
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("connection error from \(peer): \(error)")
        context.close(promise: nil)
    }

    // MARK: - Protocol events

    private func handle(_ event: HTTP2Event) {
        switch event {
        case .headers(let id, let headers, let endStream, let tooLarge):
            if let s = streams[id] {
                // Trailers from the client: only END_STREAM matters.
                if endStream { apply(s.machine.receivedEndStream(), s, id) }
                return
            }
            let s = Stream(limits: .init(maxMessageLength: config.maxMessageLength))
            streams[id] = s
            idleSince = nil
            state.openStreams.wrappingAdd(1, ordering: .relaxed)
            let action = s.machine.receivedHeaders(headers, endStream: endStream, headerListTooLarge: tooLarge, router: router)
            apply(action, s, id)
        case .data(let id, let bytes):
            guard let s = streams[id] else { return }
            s.sawInput = true
            let action = bytes.withUnsafeBytes { s.machine.receivedData($0, endStream: false) }
            apply(action, s, id)
            countRequestBytes(s, id)
        case .endStream(let id):
            guard let s = streams[id] else { return }
            s.sawInput = true
            apply(s.machine.receivedEndStream(), s, id)
            countRequestBytes(s, id)
        case .streamClosed(let id, let code):
            guard let s = streams[id] else { return }
            if code != 0 { apply(s.machine.peerReset(), s, id) }
            s.deadlineTask?.cancel()
            if code == 0, s.answered { observeEnd(s, .ok) }  // the whole answer went out
            if code != 0 {
                s.serverContext?.cancel(RPCError(.cancelled, "the client cancelled the call"))
                // A call reset before its handler ran (or before it had its whole request) ends
                // here: counted as CANCELLED, like one cancelled while it runs.
                if s.call != nil { observeEnd(s, .cancelled) }
            }
            removeStream(id)
        case .goAway, .pingAck:
            break
        }
    }

    /// Counts what `s` now buffers of its incomplete request; when that grew past the
    /// connection's or the process's limit, the stream fails RESOURCE_EXHAUSTED (and is reset)
    /// and what it held is released.
    private func countRequestBytes(_ s: Stream, _ id: Int32) {
        let now = s.machine.bufferedRequestBytes
        let delta = now - s.buffered
        guard delta != 0 else { return }
        s.buffered = now
        requestBytes += delta
        let all = state.requestBytes.wrappingAdd(delta, ordering: .relaxed).newValue
        guard delta > 0 else { return }
        var refusal: RPCError?
        if requestBytes > config.maxConnectionRequestBytes {
            refusal = RPCError(.resourceExhausted, "the connection's unfinished requests hold \(requestBytes) bytes, "
                               + "past the limit of \(config.maxConnectionRequestBytes)")
        } else if all > config.maxRequestBytes {
            refusal = RPCError(.resourceExhausted, "the server's unfinished requests hold \(all) bytes, "
                               + "past the process limit of \(config.maxRequestBytes)")
        }
        guard let refusal else { return }
        logger.debug("failing stream \(id) from \(peer): \(refusal.message)")
        apply(s.machine.abort(refusal), s, id)
        countRequestBytes(s, id)  // released: the machine is done
    }

    private func removeStream(_ id: Int32) {
        if let s = streams.removeValue(forKey: id) {
            if s.buffered != 0 {
                requestBytes -= s.buffered
                state.requestBytes.wrappingSubtract(s.buffered, ordering: .relaxed)
                s.buffered = 0
            }
            state.openStreams.wrappingSubtract(1, ordering: .relaxed)
            if s.holdsSlot { s.holdsSlot = false; state.releaseHandler() }
        }
        if streams.isEmpty, idleSince == nil { armIdleTimer() }
    }

    /// Performs what a stream's state machine decided.
    /// `s` is the stream `id` (in `streams`): callers have it at hand, so it is not looked up again.
    private func apply(_ action: ServerStreamStateMachine.Action, _ s: Stream, _ id: Int32) {
        switch action {
        case .none:
            break
        case .rejectHTTP(let status, let message):
            logger.debug("rejecting stream \(id) from \(peer): HTTP \(status): \(message)")
            // The message as a text body too (for curl and browsers). No RST_STREAM: the stream
            // stays half-closed until the client ends it, counted against
            // --max-concurrent-streams like any open stream (what it sends is discarded), as an
            // HTTP/2 server answering a request early does.
            do {
                try session.submitResponse(stream: id, headers: PreparedHeaders([(":status", String(status)), ("content-type", "text/plain"),
                                                                                 ("grpc-message", PercentEncoding.encode(message))]))
                session.enqueue(stream: id, FramedMessage(unframed: Array((message + "\n").utf8)))
                session.finishWithoutTrailers(stream: id)
            } catch {
                session.reset(stream: id, errorCode: 2)
            }
        case .accepted(let call):
            s.call = call
            if streamIdleTask == nil, config.streamIdleTimeout != nil { scheduleStreamIdleCheck() }
            if let o = observers?.byIndex[call.method.index] {
                s.observer = o
                o.callStarted()
            }
            if let t = call.timeout {
                s.deadline = ContinuousClock.now.advanced(by: .nanoseconds(t.nanoseconds))
                let loop = context!.eventLoop
                let bound = NIOLoopBound(self, eventLoop: loop)
                s.deadlineTask = loop.scheduleTask(in: .nanoseconds(t.nanoseconds)) {
                    bound.value.deadlineExpired(id)
                }
            }
        case .invoke(let call, let request):
            // The peer may have reset the stream in the same read that completed the request
            // (HEADERS + DATA + RST_STREAM): its `.streamClosed` event follows in this batch and
            // counts the call as cancelled. Running the handler would be work for nobody.
            guard session.isStreamOpen(id) else { return }
            invoke(call, request: request, stream: s, id: id)
        case .invokeEach(let call, let requests, let endStream):
            guard session.isStreamOpen(id) else { return }  // reset in this read, as for `.invoke`
            invokeEach(call, requests: requests, endStream: endStream, stream: s, id: id)
        case .sendResponse(let message):
            guard session.isStreamOpen(id) else {
                // Reset while the handler ran: nothing to send, nothing to keep.
                s.deadlineTask?.cancel()
                observeEnd(s, .cancelled)
                return
            }
            let held = session.queuedBytes
            let heldByAll = state.queuedBytes.load(ordering: .relaxed) + held - publishedQueued
            var refusal: RPCError?
            if held > 0, held + message.count > config.maxConnectionQueuedBytes {
                refusal = RPCError(.resourceExhausted, "the connection holds \(held) bytes of answers its peer has not read; "
                                   + "this one (\(message.count) bytes) would pass the limit of \(config.maxConnectionQueuedBytes)")
            } else if heldByAll > 0, heldByAll + message.count > config.maxQueuedBytes {
                refusal = RPCError(.resourceExhausted, "the server holds \(heldByAll) bytes of answers its peers have not read; "
                                   + "this one (\(message.count) bytes) would pass the process limit of \(config.maxQueuedBytes)")
            }
            if let refusal {
                s.deadlineTask?.cancel()
                observeEnd(s, refusal.code)
                try? session.submitHeaders(stream: id, headers: Self.responseHeaders + Self.statusHeaders(refusal), endStream: true)
                return
            }
            do {
                try session.submitResponse(stream: id, headers: Self.preparedResponseHeaders)
                session.enqueue(stream: id, message)
                session.finish(stream: id, trailers: Self.preparedOKTrailers)
                // Counted when the stream closes; until then the deadline (if any) and the send
                // check may still reset it if the peer's window keeps the answer here.
                s.answered = true
                if sendCheckTask == nil, config.streamSendTimeout != nil { scheduleSendCheck() }
            } catch {
                s.deadlineTask?.cancel()
                observeEnd(s, .internal)
                logger.warning("submitting response on stream \(id) failed: \(error)")
                session.reset(stream: id, errorCode: 2)
            }
        case .sendMessage(let message, let withHeaders):
            if withHeaders { try? session.submitResponse(stream: id, headers: Self.preparedResponseHeaders) }
            session.enqueue(stream: id, message)
        case .finish(let error, let headersSent, let cancelHandler, let resetAfter):
            s.deadlineTask?.cancel()
            observeEnd(s, error?.code ?? .ok)
            if cancelHandler, let error { s.serverContext?.cancel(error) }
            if headersSent {
                session.finish(stream: id, trailers: error == nil ? Self.preparedOKTrailers : PreparedHeaders(Self.statusHeaders(error)))
            } else {
                try? session.submitHeaders(stream: id, headers: Self.responseHeaders + Self.statusHeaders(error), endStream: true)
            }
            if resetAfter { session.resetAfterEndStream(stream: id) }
        case .cancelHandler(let error):
            s.deadlineTask?.cancel()
            observeEnd(s, error.code)
            s.serverContext?.cancel(error)
        }
    }

    private func observeEnd(_ s: Stream, _ code: RPCStatusCode) {
        guard !s.finished else { return }
        s.finished = true
        let duration = ContinuousClock.now - s.started
        let path = s.call?.method.path ?? "unknown"
        // One structured line per call (debug; server-side failures at warning). Never payloads.
        let level: Logger.Level = (code == .internal || code == .unknown || code == .dataLoss) ? .warning : .debug
        if logger.logLevel <= level {
            logger.log(level: level, "call", metadata: [
                "request_id": "\(s.serverContext?.requestID ?? "-")", "method": "\(path)", "status": "\(code)", "peer": "\(peer)",
                "ms": "\(duration.millisecondsValue)",
            ])
        }
        // The handler's own end-of-call work first (what counts delivered answers), then the
        // per-method counters: a scrape that sees the call ended sees its answer counted too.
        s.serverContext?.finished(code)
        if let observers { (s.observer ?? observers.unknown).callFinished(status: code, duration: duration) }
    }

    static let responseHeaders: [(String, String)] = [(":status", "200"), ("content-type", "application/grpc")]
    static let preparedResponseHeaders = PreparedHeaders(constant: responseHeaders)
    static let preparedOKTrailers = PreparedHeaders(constant: [("grpc-status", "0")])

    static func statusHeaders(_ error: RPCError?) -> [(String, String)] {
        guard let error else { return [("grpc-status", "0")] }
        var h = [("grpc-status", String(error.code.rawValue))]
        if !error.message.isEmpty { h.append(("grpc-message", PercentEncoding.encode(error.message))) }
        h.append(contentsOf: error.metadata.wireHeaders)
        return h
    }

    private func deadlineExpired(_ id: Int32) {
        guard let s = streams[id] else { return }
        let ms = Double(s.call?.timeout?.nanoseconds ?? 0) / 1e6
        if s.answered {
            // The answer was ready in time but is still here: the peer's flow-control window kept
            // it. Give up on it (the client's own deadline has passed too) and free it.
            guard !s.finished else { return }
            observeEnd(s, .deadlineExceeded)
            logger.debug("resetting stream \(id) from \(peer): its answer was not taken within the deadline of \(ms) ms")
            session.reset(stream: id, errorCode: 8)
            flush()
            return
        }
        apply(s.machine.abort(RPCError(.deadlineExceeded, "deadline of \(ms) ms exceeded")), s, id)
        flush()
    }

    // MARK: - Handlers

    /// The configured authorizer's verdict on `call` (nil: it may run), with the peer's
    /// certificate identity read once per connection.
    private func authorizationError(_ call: ServerStreamStateMachine.Call) -> RPCError? {
        guard let authorizer = config.authorizer else { return nil }
        let identity: PeerIdentity
        if let known = peerIdentity { identity = known } else {
            identity = config.tls == nil ? .anonymous : PeerIdentity.of(context!.pipeline.syncOperations)
            peerIdentity = identity
        }
        guard let denied = authorizer.authorize(path: call.method.path, metadata: call.metadata, peer: identity) else { return nil }
        logger.debug("refusing \(call.method.path) from \(peer): \(denied.code): \(denied.message)")
        return denied
    }

    private func invoke(_ call: ServerStreamStateMachine.Call, request: [UInt8], stream s: Stream, id: Int32) {
        let loop = context!.eventLoop
        if let denied = authorizationError(call) {
            apply(s.machine.abort(denied), s, id)
            return
        }
        let ctx = ServerContext(path: call.method.path, metadata: call.metadata, deadline: s.deadline, peer: peer,
                                generatedIDPrefix: connectionTag, generatedIDNumber: Int64(id))
        s.serverContext = ctx
        state.acceptedCalls.wrappingAdd(1, ordering: .relaxed)
        switch call.method.handler {
        case .unary(let handler):
            guard state.tryAcquireHandler(limit: config.maxInFlightHandlers) else {
                apply(s.machine.abort(RPCError(.resourceExhausted,
                      "server overloaded: \(config.maxInFlightHandlers) calls in flight")), s, id)
                return
            }
            switch call.method.placement {
            case .inline:
                let result: Result<FramedMessage, RPCError>
                do throws(RPCError) { result = .success(try handler(request, ctx)) } catch { result = .failure(error) }
                state.releaseHandler()
                apply(s.machine.handlerReturned(result), s, id)
            case .workerPool:
                let bound = NIOLoopBound(self, eventLoop: loop)
                let state = self.state
                pool.submit { workState in
                    let result: Result<FramedMessage, RPCError>
                    if workState == .cancelled {
                        result = .failure(RPCError(.unavailable, "server is shutting down"))
                    } else if ctx.isCancelled {
                        result = .failure(ctx.cancellationError ?? .cancelled())
                    } else {
                        do throws(RPCError) { result = .success(try handler(request, ctx)) } catch { result = .failure(error) }
                    }
                    state.releaseHandler()
                    loop.execute { bound.value.handlerReturned(id, result) }
                }
            }
        case .asyncUnary(let handler):
            guard state.tryAcquireHandler(limit: config.maxInFlightHandlers) else {
                apply(s.machine.abort(RPCError(.resourceExhausted,
                      "server overloaded: \(config.maxInFlightHandlers) calls in flight")), s, id)
                return
            }
            let bound = NIOLoopBound(self, eventLoop: loop)
            let state = self.state
            // `.inline`: the task runs on this connection's event loop (and so do its children
            // and, through loop-affine channels, the answers of the calls it makes);
            // `.workerPool`: on the server's worker threads.
            let executor: any TaskExecutor = call.method.placement == .inline ? loopExecutor : poolExecutor
            let task = Task(executorPreference: executor) {
                let result: Result<FramedMessage, RPCError>
                do throws(RPCError) { result = .success(try await handler(request, ctx)) } catch { result = .failure(error) }
                state.releaseHandler()
                if loop.inEventLoop {
                    bound.value.handlerReturned(id, result)
                } else {
                    loop.execute { bound.value.handlerReturned(id, result) }
                }
            }
            ctx.whenCancelled { task.cancel() }
        case .deferredUnary(let handler):
            guard state.tryAcquireHandler(limit: config.maxInFlightHandlers) else {
                apply(s.machine.abort(RPCError(.resourceExhausted,
                      "server overloaded: \(config.maxInFlightHandlers) calls in flight")), s, id)
                return
            }
            let responder = DeferredResponder(bound: NIOLoopBound(self, eventLoop: loop), id: id, state: state)
            handler(request, ctx, responder.respond)
            if let early = responder.handlerReturned() { apply(s.machine.handlerReturned(early), s, id) }
        case .streamMessages:
            preconditionFailure("\(call.method.path): request-streaming calls go through invokeEach")
        case .serverStreaming(let handler):
            guard state.tryAcquireHandler(limit: config.maxInFlightHandlers) else {
                apply(s.machine.abort(RPCError(.resourceExhausted,
                      "server overloaded: \(config.maxInFlightHandlers) calls in flight")), s, id)
                return
            }
            s.holdsSlot = true
            let writer = StreamWriter(bound: NIOLoopBound(self, eventLoop: loop), id: id)
            do throws(RPCError) {
                try handler(request, ctx, writer)
            } catch {
                apply(s.machine.handlerFinished(error), s, id)
            }
        }
    }

    /// Answers the request messages of a `.streamMessages` call in order, on this loop.
    private func invokeEach(_ call: ServerStreamStateMachine.Call, requests: [[UInt8]], endStream: Bool, stream s: Stream, id: Int32) {
        guard case .streamMessages(let handler) = call.method.handler else { preconditionFailure("\(call.method.path) streams no requests") }
        let ctx: ServerContext
        if let c = s.serverContext {
            ctx = c
        } else {
            if let denied = authorizationError(call) {
                apply(s.machine.abort(denied), s, id)
                return
            }
            ctx = ServerContext(path: call.method.path, metadata: call.metadata, deadline: s.deadline, peer: peer,
                                generatedIDPrefix: connectionTag, generatedIDNumber: Int64(id))
            s.serverContext = ctx
            state.acceptedCalls.wrappingAdd(1, ordering: .relaxed)
        }
        for request in requests {
            do throws(RPCError) {
                for response in try handler(request, ctx) { apply(s.machine.handlerSent(response), s, id) }
            } catch {
                apply(s.machine.handlerFinished(error), s, id)
                return
            }
        }
        if endStream { apply(s.machine.handlerFinished(nil), s, id) }
    }

    fileprivate func handlerReturned(_ id: Int32, _ result: Result<FramedMessage, RPCError>) {
        guard let s = streams[id] else { return }  // reset or expired meanwhile
        apply(s.machine.handlerReturned(result), s, id)
        flush()
    }

    fileprivate func streamSend(_ id: Int32, _ message: FramedMessage) {
        guard let s = streams[id] else { return }
        apply(s.machine.handlerSent(message), s, id)
        flush()
    }

    fileprivate func streamFinish(_ id: Int32, _ error: RPCError?) {
        guard let s = streams[id] else { return }
        apply(s.machine.handlerFinished(error), s, id)
        flush()
    }

    // MARK: - Stalled sends

    private func scheduleSendCheck() {
        guard let loop = context?.eventLoop, let timeout = config.streamSendTimeout else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        sendCheckTask = loop.scheduleTask(in: .nanoseconds(timeout.clampedNanoseconds)) { bound.value.sendCheck() }
    }

    /// Every answered stream whose queue did not shrink since the previous check (the peer grants
    /// it no window) is reset and its answer freed: counted CANCELLED. One timer per connection,
    /// armed only while answers wait (none per call).
    private func sendCheck() {
        sendCheckTask = nil
        var waiting = false
        var stalled = 0
        for (id, s) in streams where s.answered && !s.finished {
            let queued = session.queuedBytes(stream: id)
            if queued > 0, queued == s.lastQueued {
                observeEnd(s, .cancelled)
                session.reset(stream: id, errorCode: 8)
                stalled += 1
            } else {
                s.lastQueued = queued
                waiting = true
            }
        }
        if stalled > 0 {
            logger.info("reset \(stalled) stream(s) from \(peer): their answers sent nothing for \(config.streamSendTimeout ?? .zero) (no flow-control window)")
            flush()
        }
        if waiting { scheduleSendCheck() }
    }

    // MARK: - Slow requests

    private func scheduleStreamIdleCheck() {
        guard let loop = context?.eventLoop, let timeout = config.streamIdleTimeout else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        streamIdleTask = loop.scheduleTask(in: .nanoseconds(timeout.clampedNanoseconds)) { bound.value.streamIdleCheck() }
    }

    /// Every stream still receiving its request that got nothing over a whole interval (open
    /// streams that never end: slowloris) is answered CANCELLED and reset.
    private func streamIdleCheck() {
        streamIdleTask = nil
        let timeout = config.streamIdleTimeout ?? .zero
        var receiving = false
        var expired: [Int32] = []
        for (id, s) in streams where s.call != nil && s.serverContext == nil && !s.machine.isDone {
            if s.watched && !s.sawInput {
                expired.append(id)
            } else {
                s.watched = true
                s.sawInput = false
                receiving = true
            }
        }
        for id in expired {
            guard let s = streams[id] else { continue }
            apply(s.machine.abort(RPCError(.cancelled, "the request received nothing for \(timeout) before it was complete (stream idle timeout)")), s, id)
        }
        if !expired.isEmpty {
            logger.debug("reset \(expired.count) stream(s) from \(peer): their requests received nothing for \(timeout)")
            flush()
        }
        if receiving { scheduleStreamIdleCheck() }
    }

    private func scheduleHeaderCheck() {
        guard let loop = context?.eventLoop, let timeout = config.headerTimeout else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        headerTask = loop.scheduleTask(in: .nanoseconds(timeout.clampedNanoseconds)) { bound.value.headerCheck() }
    }

    /// Closes a connection that sent no preface and SETTINGS within the header timeout, or whose
    /// header block stayed incomplete over a whole interval (slow HEADERS/CONTINUATION).
    private func headerCheck() {
        headerTask = nil
        guard let context else { return }
        let timeout = config.headerTimeout ?? .zero
        if !session.peerSettingsReceived {
            logger.debug("closing the connection from \(peer): no HTTP/2 preface and SETTINGS within \(timeout)")
            context.close(promise: nil)
            return
        }
        let block = session.headerBlockInProgress
        if block != 0, block == lastHeaderBlock {
            logger.debug("closing the connection from \(peer): the header block of stream \(block) was not completed within \(timeout)")
            context.close(promise: nil)
            return
        }
        lastHeaderBlock = block
        scheduleHeaderCheck()
    }

    /// Adds the change in what this connection holds unsent to the process's total.
    private func publishQueued() {
        let q = session.queuedBytes
        if q != publishedQueued {
            state.queuedBytes.wrappingAdd(q - publishedQueued, ordering: .relaxed)
            publishedQueued = q
        }
    }

    // MARK: - Shutdown and output

    /// The connection just became idle: note when, and make sure a check is scheduled.
    private func armIdleTimer() {
        guard config.maxConnectionIdle != nil else { return }
        idleSince = .now()
        if idleTask == nil { scheduleIdleCheck(in: idleInterval) }
    }

    private var idleInterval: TimeAmount {
        guard let idle = config.maxConnectionIdle else { return .seconds(0) }
        return .nanoseconds(idle.clampedNanoseconds)
    }

    private func scheduleIdleCheck(in delay: TimeAmount) {
        guard let loop = context?.eventLoop else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        idleTask = loop.scheduleTask(in: delay) { bound.value.idleCheck() }
    }

    /// Busy since: the next transition to idle re-arms. Idle long enough: GOAWAY. Idle for less:
    /// check again when the interval since it became idle is over.
    private func idleCheck() {
        idleTask = nil
        guard let since = idleSince, streams.isEmpty, !goingAway else { return }
        let due = since + idleInterval
        let now = NIODeadline.now()
        if now >= due {
            logger.debug("closing idle connection from \(peer)")
            beginGracefulShutdown()
        } else {
            scheduleIdleCheck(in: due - now)
        }
    }

    /// GOAWAY naming the last stream processed: running calls finish, new ones go elsewhere.
    func beginGracefulShutdown() {
        guard !goingAway else { return }
        goingAway = true
        session.submitGoAway(errorCode: 0, debug: "server shutting down")
        flush()
    }

    /// Writes whatever the session has pending; closes the channel once the session is done.
    ///
    /// What nghttp2 serialises (frame headers, HEADERS, SETTINGS, ...) is collected in one reused
    /// buffer; large DATA payloads are written as slices of the response buffers their encoders
    /// filled (no copy), small ones are copied in with the rest. All of it goes out in one
    /// gathering write (`writev`) at the end.
    private func flush() {
        guard let context else { return }
        // A slow reader: leave the frames in nghttp2's queue (bounded by flow control and the
        // stream limit) instead of piling bytes into the channel; resume on writability.
        guard context.channel.isWritable else { return }
        var buffer = outBuffer ?? context.channel.allocator.buffer(capacity: 16 << 10)
        outBuffer = nil
        buffer.clear()
        segments.removeAll(keepingCapacity: true)
        var cut = 0  // start of the serialised bytes not yet in `segments`
        let coalesce = config.tls != nil
        do {
            try session.flush(into: { bytes in buffer.writeBytes(bytes) }, messages: { message, span in
                if span.count < Self.copyBelow || (coalesce && buffer.writerIndex + span.count <= Self.tlsCoalesceBytes) {
                    message.withUnsafeBytes { _ = buffer.writeBytes(UnsafeRawBufferPointer(rebasing: $0[span])) }
                    return
                }
                if buffer.writerIndex > cut { segments.append(.serialised(cut ..< buffer.writerIndex)); cut = buffer.writerIndex }
                segments.append(.message(message.buffer.getSlice(at: message.buffer.readerIndex + span.lowerBound, length: span.count)!))
            })
        } catch {
            logger.debug("HTTP/2 send failed to \(peer): \(error)")
            context.close(promise: nil)
            return
        }
        if buffer.writerIndex > cut { segments.append(.serialised(cut ..< buffer.writerIndex)) }
        for e in session.takeEvents() { handle(e) }
        publishQueued()
        let done = !session.isActive || (goingAway && streams.isEmpty)
        if done, session.terminatedForResets, !goingAway {
            goingAway = true
            logger.info("closing the connection from \(peer): it made the server reset \(session.resetsSent) streams (GOAWAY ENHANCE_YOUR_CALM)")
        }
        // The buffer is kept for the next flush; one grown past `keptBufferBytes` (TLS
        // coalescing) only while the connection has streams open.
        defer { outBuffer = buffer.capacity <= Self.keptBufferBytes || !streams.isEmpty ? buffer : nil }
        if !segments.isEmpty {
            // Slices are taken only now, after the last write into `buffer` (a slice taken
            // earlier would make the next write copy the whole buffer).
            // When the session is done, close once the last byte went out.
            let lastWritten: EventLoopPromise<Void>? = done ? context.eventLoop.makePromise() : nil
            for (i, seg) in segments.enumerated() {
                let promise = i == segments.count - 1 ? lastWritten : nil
                switch seg {
                case .serialised(let r): context.write(wrapOutboundOut(buffer.getSlice(at: r.lowerBound, length: r.count)!), promise: promise)
                case .message(let b): context.write(wrapOutboundOut(b), promise: promise)
                }
            }
            segments.removeAll(keepingCapacity: true)
            context.flush()
            if let lastWritten {
                let channel = context.channel
                lastWritten.futureResult.whenComplete { _ in channel.close(promise: nil) }
            }
        } else if done {
            context.close(promise: nil)
        }
    }

    /// DATA payload spans shorter than this are copied next to their frame header instead of
    /// written as their own slice (an iovec per small message costs more than the copy).
    static let copyBelow = 4096

    /// Under TLS every buffer written becomes at least one TLS record of its own, so a flush's
    /// frames are copied into one contiguous buffer up to this many bytes (payloads past it go
    /// as slices): full 16 KiB records instead of one per frame header and per payload slice.
    /// The server's CPU stays the same (the copy costs what the fewer records save); the
    /// client's falls, as it opens fewer, fuller records (a 64 KiB Lookup answer: 13 % less
    /// client CPU per call, BENCHMARKS.md "TLS cost").
    static let tlsCoalesceBytes = 256 << 10

    /// The largest flush buffer kept between flushes of a connection with no stream open.
    static let keptBufferBytes = 64 << 10

    private enum Segment {
        case serialised(Range<Int>)  // of `outBuffer`
        case message(ByteBuffer)     // a slice of a response's own buffer
    }
    /// Reused by every flush (keeps its capacity).
    private var segments: [Segment] = []
}

/// The writer a server-streaming handler gets: hops every call to the stream's event loop.
private struct StreamWriter: ResponseStreamWriter {
    let bound: NIOLoopBound<ServerConnectionHandler>
    let id: Int32

    func send(_ message: FramedMessage) {
        let b = bound, id = id
        b.eventLoop.execute { b.value.streamSend(id, message) }
    }

    func finish(_ error: RPCError?) {
        let b = bound, id = id
        b.eventLoop.execute { b.value.streamFinish(id, error) }
    }
}

/// The `respond` of a `.deferredUnary` call. An answer given while the handler is still running on
/// the event loop is kept and applied when it returns (no hop, no extra flush); a later one, from
/// any thread, is posted to the loop. Only the first answer counts; it releases the handler slot.
private final class DeferredResponder: @unchecked Sendable {
    private let bound: NIOLoopBound<ServerConnectionHandler>
    private let id: Int32
    private let state: ServerState
    private let answered = Atomic<Bool>(false)
    /// Touched only on the event loop.
    private var inHandler = true
    private var early: Result<FramedMessage, RPCError>?

    init(bound: NIOLoopBound<ServerConnectionHandler>, id: Int32, state: ServerState) {
        self.bound = bound
        self.id = id
        self.state = state
    }

    func respond(_ result: Result<FramedMessage, RPCError>) {
        guard !answered.exchange(true, ordering: .acquiringAndReleasing) else { return }
        state.releaseHandler()
        let loop = bound.eventLoop
        if loop.inEventLoop && inHandler {
            early = result
            return
        }
        let bound = self.bound, id = self.id
        loop.execute { bound.value.handlerReturned(id, result) }
    }

    /// Called on the loop when the handler returns: the answer it gave meanwhile, if any.
    func handlerReturned() -> Result<FramedMessage, RPCError>? {
        inHandler = false
        return early
    }
}
