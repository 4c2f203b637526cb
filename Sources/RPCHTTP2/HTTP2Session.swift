internal import CNGHTTP2
public import RPCCore

/// What a peer did, recorded by the nghttp2 callbacks during `receive` and handed out after
/// `nghttp2_session_mem_recv` returns (callbacks only record; the owner acts afterwards).
public enum HTTP2Event: Sendable {
    /// A complete header block. On a server the first block of a stream is the request; on a
    /// client the first is the response headers and a later one the trailers.
    /// `tooLarge`: the block exceeded `maxHeaderListBytes`; only the headers up to the limit are kept.
    case headers(streamID: Int32, headers: [(name: String, value: String)], endStream: Bool, tooLarge: Bool)
    /// A chunk of DATA payload (flow control is already accounted).
    case data(streamID: Int32, bytes: [UInt8])
    /// The peer ended its side of the stream with a DATA frame.
    case endStream(streamID: Int32)
    /// The stream closed: `errorCode` 0 after a normal end, else the RST_STREAM code (or the
    /// connection's error).
    case streamClosed(streamID: Int32, errorCode: UInt32)
    /// The peer sent GOAWAY.
    case goAway(lastStreamID: Int32, errorCode: UInt32)
    /// The peer acknowledged one of our PINGs (`submitPing`).
    case pingAck
}

/// Errors of the HTTP/2 layer: the connection can not go on.
public struct HTTP2Error: Error, Sendable, CustomStringConvertible {
    public let code: Int32
    public let operation: String
    public var description: String {
        "HTTP/2 error in \(operation): \(String(cString: nghttp2_strerror(code))) (\(code))"
    }
}

/// Settings and limits of one HTTP/2 connection.
public struct HTTP2Configuration: Sendable, Hashable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to the peer (server) — streams beyond it are refused.
    public var maxConcurrentStreams: UInt32 = 256
    /// Largest header list accepted, counted as RFC 7540 does (name + value + 32 per field);
    /// advertised as SETTINGS_MAX_HEADER_LIST_SIZE.
    public var maxHeaderListBytes: Int = 16 << 10
    /// SETTINGS_INITIAL_WINDOW_SIZE for streams, and the connection window we open up to.
    public var initialWindowSize: UInt32 = 1 << 20
    public var connectionWindowSize: Int32 = 16 << 20
    /// SETTINGS_MAX_FRAME_SIZE advertised.
    public var maxFrameSize: UInt32 = 16 << 10
    /// The server's limiter of incoming RST_STREAM (nghttp2's token bucket against rapid reset):
    /// `resetBurst` resets at once, refilled at `resetRate` per second; beyond it the connection
    /// gets GOAWAY. nghttp2's defaults (1000, 33/s) make a shard GOAWAY its own coordinator when
    /// many of its calls are cancelled (hedges, expired deadlines: thousands per second in a
    /// slow spell). A reset costs this server little: a request reset in the read that completed
    /// it runs nothing, a running handler is cancelled, and handlers in flight are bounded by
    /// `--max-in-flight` whatever the resets.
    public var resetBurst: UInt64 = 20_000
    public var resetRate: UInt64 = 5_000
    /// RST_STREAMs a server may send on one connection: `sentResetBurst` at once, refilled at
    /// `sentResetRate` per second; beyond it the connection gets GOAWAY(ENHANCE_YOUR_CALM) and is
    /// closed. Bounds resets a peer provokes (bad frames on a stream, requests failed before they
    /// ended: "MadeYouReset"), which nghttp2's limiter of incoming resets does not count. A
    /// well-behaved client provokes none: its requests end with their headers and body.
    public var sentResetBurst: Double = 1_000
    public var sentResetRate: Double = 200

    public init() {}
}

extension HTTP2Session {
    /// A header block counted past this many times `maxHeaderListBytes` resets its stream
    /// instead of being decoded field by field up to its end (the HPACK bomb).
    static let headerListResetFactor = 4
}

/// One HTTP/2 connection's protocol state, driven in memory: bytes in (`receive`) → events out;
/// submissions (`submitResponse`, `submitRequest`, ...) → bytes out (`flush`).
///
/// Threading: not thread-safe. A session belongs to one thread (its connection's event loop) for
/// its whole life. It is never re-entered: `receive` and `flush` must not be called from the
/// closures they call.
///
/// Ownership: the session owns its `nghttp2_session` (deleted once, in `deinit`). nghttp2's
/// `user_data` is this object, unretained: valid because the C session never outlives it.
public final class HTTP2Session {
    public enum Role: Sendable { case server, client }

    public let role: Role
    public let configuration: HTTP2Configuration
    let session: OpaquePointer

    // Recorded by callbacks, drained by `receive`.
    var events: [HTTP2Event] = []
    // The header block being received: HTTP/2 sends a block (HEADERS + CONTINUATION) without
    // interleaving other frames, so there is at most one, for `pendingHeadersStream` (0: none).
    // The object is reused.
    let pendingHeaders = PendingHeaders()
    var pendingHeadersStream: Int32 = 0
    // Header strings seen before on this connection, reused instead of decoded again.
    var headerStrings = HeaderStringCache()
    // Outbound DATA queued per stream, from the submission until the stream closes. The owner of
    // every OutboundStream: each stream's nghttp2 data provider holds it unretained (`source.ptr`,
    // handed back to the data callbacks), valid because nghttp2 calls those only while the stream
    // is open, and the entry is removed only when nghttp2 reports the stream closed.
    var outbound: [Int32: OutboundStream] = [:]
    /// The peer's first SETTINGS (after its preface) arrived.
    public internal(set) var peerSettingsReceived = false
    /// The sum of every queue's `pendingBytes`: message bytes this connection holds, not yet sent.
    public internal(set) var queuedBytes = 0
    // The sinks during `flush`: bytes serialised by nghttp2 (frame headers, HEADERS, SETTINGS, ...)
    // and, when set, the spans of queued messages that DATA frames carry (else copied into `sink`).
    var sink: ((UnsafeRawBufferPointer) -> Void)?
    var messageSink: ((FramedMessage, Range<Int>) -> Void)?
    var inCallback = false
    // Streams to reset (NO_ERROR) once their END_STREAM frame went out, and those now due.
    var resetAfterEnd: Set<Int32> = []
    var resetsDue: [Int32] = []
    // The token bucket of RST_STREAMs this side sent (server), and whether it ran dry.
    var sentResetTokens: Double
    var sentResetRefilled = ContinuousClock.now
    var sentResetFlood = false
    /// RST_STREAM frames this side has sent.
    public internal(set) var resetsSent = 0
    /// The connection was torn down (GOAWAY ENHANCE_YOUR_CALM) for sending too many resets.
    public internal(set) var terminatedForResets = false

    /// A class, not a struct: mutated in place from the callbacks (no copy-on-write per header).
    final class PendingHeaders {
        var headers: [(name: String, value: String)] = []
        var bytes = 0
        var tooLarge = false

        /// A new, empty list (the previous one was handed out in an event).
        func reset() {
            headers = []
            headers.reserveCapacity(12)
            bytes = 0
            tooLarge = false
        }
    }

    final class OutboundStream {
        var chunks: [FramedMessage] = []
        var offset = 0  // into chunks[0]'s bytes
        var pendingBytes = 0
        /// Trailers to send after the data (server), or nil.
        var trailers: PreparedHeaders?
        /// End the stream after the data with END_STREAM on the last DATA frame (client request).
        var endStreamAfterData = false
        /// nghttp2 was told NGHTTP2_ERR_DEFERRED; resume when data is added.
        var deferred = false
        var finished = false
        /// The stream was reset by this side: send no more of it.
        var cancelled = false
        init() {}
    }

    public init(role: Role, configuration: HTTP2Configuration = HTTP2Configuration()) throws(HTTP2Error) {
        self.role = role
        self.configuration = configuration
        self.sentResetTokens = configuration.sentResetBurst
        var callbacks: OpaquePointer?
        var rv = nghttp2_session_callbacks_new(&callbacks)
        guard rv == 0, let callbacks else { throw HTTP2Error(code: rv, operation: "nghttp2_session_callbacks_new") }
        defer { nghttp2_session_callbacks_del(callbacks) }
        HTTP2Session.installCallbacks(callbacks)

        var option: OpaquePointer?
        rv = nghttp2_option_new(&option)
        guard rv == 0, let option else { throw HTTP2Error(code: rv, operation: "nghttp2_option_new") }
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_max_send_header_block_length(option, 64 << 10)
        if role == .server {
            nghttp2_option_set_stream_reset_rate_limit(option, configuration.resetBurst, configuration.resetRate)
        }
        if role == .client {
            // Streams a client may open before the server's SETTINGS arrive: 100, the least
            // RFC 9113 lets a server advertise (and nghttp2's own default). More than the server
            // allows would be refused (REFUSED_STREAM) in a burst on a fresh connection; above
            // 100, nghttp2 holds new streams until the real limit is known.
            nghttp2_option_set_peer_max_concurrent_streams(option, 100)
        }

        var s: OpaquePointer?
        // `self` is not fully initialised until `session` is set: create into a local first, with
        // a placeholder user_data fixed right after.
        switch role {
        case .server: rv = nghttp2_session_server_new2(&s, callbacks, nil, option)
        case .client: rv = nghttp2_session_client_new2(&s, callbacks, nil, option)
        }
        guard rv == 0, let s else { throw HTTP2Error(code: rv, operation: "nghttp2_session_new") }
        session = s
        nghttp2_session_set_user_data(s, Unmanaged.passUnretained(self).toOpaque())

        // SETTINGS first: real gRPC clients fail a connection whose server does not send them.
        let settings: [nghttp2_settings_entry] = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: configuration.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: configuration.initialWindowSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue), value: configuration.maxFrameSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: UInt32(configuration.maxHeaderListBytes)),
        ]
        rv = settings.withUnsafeBufferPointer { nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), $0.baseAddress, $0.count) }
        guard rv == 0 else { throw HTTP2Error(code: rv, operation: "nghttp2_submit_settings") }
        rv = nghttp2_session_set_local_window_size(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, configuration.connectionWindowSize)
        guard rv == 0 else { throw HTTP2Error(code: rv, operation: "nghttp2_session_set_local_window_size") }
    }

    deinit {
        nghttp2_session_del(session)  // the one delete site
    }

    /// `body` with the session behind `userData`, borrowed: no retain/release per callback (the
    /// session is alive for the whole C call that invokes the callback: its owner is calling it).
    @inline(__always)
    static func with<R>(_ userData: UnsafeMutableRawPointer?, _ body: (HTTP2Session) -> R) -> R {
        Unmanaged<HTTP2Session>.fromOpaque(userData!)._withUnsafeGuaranteedRef(body)
    }

    // MARK: - Input

    /// Feeds received bytes and returns what happened, in order.
    /// - Throws: `HTTP2Error` when the connection must be closed at once (bad preface, flood);
    ///   any GOAWAY nghttp2 queued is still written by a following `flush`.
    public func receive(_ bytes: UnsafeRawBufferPointer) throws(HTTP2Error) -> [HTTP2Event] {
        precondition(!inCallback, "HTTP2Session re-entered")
        inCallback = true
        let rv = nghttp2_session_mem_recv(session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        inCallback = false
        let out = events
        events.removeAll(keepingCapacity: true)
        if rv < 0 { throw HTTP2Error(code: Int32(rv), operation: "nghttp2_session_mem_recv") }
        return out
    }

    // MARK: - Output

    /// Serialises everything pending into `sink` (possibly several calls).
    /// - Throws: `HTTP2Error` when nghttp2 reports a fatal error; close the connection.
    public func flush(into sink: (UnsafeRawBufferPointer) -> Void) throws(HTTP2Error) {
        precondition(!inCallback, "HTTP2Session re-entered")
        try withoutActuallyEscaping(sink) { (s) throws(HTTP2Error) in
            self.sink = s
            defer { self.sink = nil }
            try sendLoop()
        }
    }

    /// `flush(into:)` without copying message payloads: the bytes nghttp2 serialises go to
    /// `sink`, and each DATA frame's payload is handed to `messages` as a span of a queued
    /// message, in wire order between the `sink` calls (the frame header goes to `sink` first).
    /// The owner writes both, in the order they were produced.
    public func flush(into sink: (UnsafeRawBufferPointer) -> Void,
                      messages: (FramedMessage, Range<Int>) -> Void) throws(HTTP2Error) {
        precondition(!inCallback, "HTTP2Session re-entered")
        try withoutActuallyEscaping(sink) { (s) throws(HTTP2Error) in
            try withoutActuallyEscaping(messages) { (m) throws(HTTP2Error) in
                self.sink = s
                self.messageSink = m
                defer { self.sink = nil; self.messageSink = nil }
                try sendLoop()
            }
        }
    }

    private func sendLoop() throws(HTTP2Error) {
        while true {
            inCallback = true
            let rv = nghttp2_session_send(session)
            inCallback = false
            if rv != 0 { throw HTTP2Error(code: rv, operation: "nghttp2_session_send") }
            if sentResetFlood {
                // GOAWAY(ENHANCE_YOUR_CALM); nghttp2 then wants neither to read nor to write, and
                // the owner closes the connection once it went out.
                sentResetFlood = false
                terminatedForResets = true
                resetsDue.removeAll()
                _ = nghttp2_session_terminate_session(session, UInt32(NGHTTP2_ENHANCE_YOUR_CALM.rawValue))
                continue
            }
            if resetsDue.isEmpty { break }
            // The END_STREAM of these streams is on the wire: now tell the peer to stop sending.
            for id in resetsDue { _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, 0) }
            resetsDue.removeAll()
        }
    }

    /// Events recorded outside `receive` (e.g. streams closed while flushing). Drain after `flush`.
    public func takeEvents() -> [HTTP2Event] {
        let out = events
        events.removeAll(keepingCapacity: true)
        return out
    }

    /// Whether nghttp2 still has `stream` open. False once it closed: both sides ended it, either
    /// reset it, or the connection failed — even while the `.streamClosed` event saying so waits
    /// to be handled (a request and its RST_STREAM in one read close the stream inside `receive`).
    public func isStreamOpen(_ stream: Int32) -> Bool {
        guard let st = nghttp2_session_find_stream(session, stream) else { return false }
        return nghttp2_stream_get_state(st).rawValue != NGHTTP2_STREAM_STATE_CLOSED.rawValue
    }

    /// Streams with a response (or request body) queue: what this connection holds for its peer.
    public var queuedStreams: Int { outbound.count }

    /// The stream whose header block (HEADERS + CONTINUATION) is being received; 0: none.
    public var headerBlockInProgress: Int32 { pendingHeadersStream }

    /// Bytes queued on `stream` and not yet sent (0 for a stream with no queue).
    public func queuedBytes(stream: Int32) -> Int { outbound[stream]?.pendingBytes ?? 0 }

    /// True while the connection has something to read or write; false once both sides are done
    /// (after GOAWAY and every stream closed): the owner should close the socket.
    public var isActive: Bool { nghttp2_session_want_read(session) != 0 || nghttp2_session_want_write(session) != 0 }
    public var wantsWrite: Bool { nghttp2_session_want_write(session) != 0 }

    // MARK: - Submissions

    /// Response headers for `stream`. With `endStream` it is a headers-only (Trailers-Only) answer.
    public func submitHeaders(stream: Int32, headers: [(String, String)], endStream: Bool) throws(HTTP2Error) {
        let flags = endStream ? UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) : UInt8(NGHTTP2_FLAG_NONE.rawValue)
        let rv = PreparedHeaders(headers).withNV { nv, n in
            nghttp2_submit_headers(session, flags, stream, nil, nv, n, nil)
        }
        if rv < 0 { throw HTTP2Error(code: rv, operation: "nghttp2_submit_headers") }
    }

    /// Response headers followed by a data stream for `stream` (server). Data is queued with
    /// `enqueue(stream:_:)` and ended with `finish(stream:trailers:)`.
    public func submitResponse(stream: Int32, headers: [(String, String)]) throws(HTTP2Error) {
        try submitResponse(stream: stream, headers: PreparedHeaders(headers))
    }

    /// `submitResponse` with headers prepared once (no per-call encoding).
    /// - Throws: on a stream nghttp2 has already closed (the peer reset it, possibly in the same
    ///   read that carried the request): its queue would never be released, as nghttp2 reports a
    ///   stream's close only once.
    public func submitResponse(stream: Int32, headers: PreparedHeaders) throws(HTTP2Error) {
        // A second response on a stream would free the queue the first one's provider points to.
        guard outbound[stream] == nil else {
            throw HTTP2Error(code: Int32(NGHTTP2_ERR_INVALID_STREAM_STATE.rawValue), operation: "submitResponse")
        }
        guard isStreamOpen(stream) else {
            throw HTTP2Error(code: Int32(NGHTTP2_ERR_STREAM_CLOSED.rawValue), operation: "submitResponse")
        }
        let o = OutboundStream()
        outbound[stream] = o
        var provider = HTTP2Session.dataProvider(o)
        let rv = headers.withNV { nv, n in nghttp2_submit_response(session, stream, nv, n, &provider) }
        if rv != 0 {
            outbound[stream] = nil
            throw HTTP2Error(code: rv, operation: "nghttp2_submit_response")
        }
    }

    /// Starts a request (client) whose body is `body`, ended by END_STREAM after it.
    /// - Returns: the new stream id.
    public func submitRequest(headers: [(String, String)], body: FramedMessage) throws(HTTP2Error) -> Int32 {
        let o = OutboundStream()
        var provider = HTTP2Session.dataProvider(o)
        let stream = PreparedHeaders(headers).withNV { nv, n in nghttp2_submit_request(session, nil, nv, n, &provider, nil) }
        if stream < 0 { throw HTTP2Error(code: stream, operation: "nghttp2_submit_request") }
        o.chunks = [body]
        o.pendingBytes = body.count
        queuedBytes += body.count
        o.endStreamAfterData = true
        o.finished = true
        outbound[stream] = o
        return stream
    }

    /// Queues a message on a stream started with `submitResponse`.
    public func enqueue(stream: Int32, _ message: FramedMessage) {
        guard let o = outbound[stream], !o.finished else { return }
        o.pendingBytes += message.count
        queuedBytes += message.count
        o.chunks.append(message)
        let resume = o.deferred
        o.deferred = false
        if resume { nghttp2_session_resume_data(session, stream) }
    }

    /// Ends a stream started with `submitResponse`: trailers go after the queued data.
    public func finish(stream: Int32, trailers: [(String, String)]) {
        finish(stream: stream, trailers: PreparedHeaders(trailers))
    }

    /// Ends a stream started with `submitResponse` without trailers: END_STREAM goes on the last
    /// DATA frame (a plain HTTP answer).
    public func finishWithoutTrailers(stream: Int32) {
        guard let o = outbound[stream], !o.finished else { return }
        o.finished = true
        let resume = o.deferred
        o.deferred = false
        if resume { nghttp2_session_resume_data(session, stream) }
    }

    /// `finish` with trailers prepared once (no per-call encoding).
    public func finish(stream: Int32, trailers: PreparedHeaders) {
        guard let o = outbound[stream], !o.finished else { return }
        o.trailers = trailers
        o.finished = true
        let resume = o.deferred
        o.deferred = false
        if resume { nghttp2_session_resume_data(session, stream) }
    }

    /// Sends RST_STREAM(NO_ERROR) on `stream` right after this side's END_STREAM frame has been
    /// written, for a response sent while the peer may still be sending (PROTOCOL-HTTP2: the
    /// server ends early with trailers, then resets so the client stops uploading).
    public func resetAfterEndStream(stream: Int32) {
        resetAfterEnd.insert(stream)
    }

    /// Resets a stream (RST_STREAM) with an HTTP/2 error code (0 NO_ERROR, 8 CANCEL, ...).
    public func reset(stream: Int32, errorCode: UInt32) {
        // An open stream's queue stays until nghttp2 reports it closed (its provider points to
        // it); nothing more of it is sent. A stream nghttp2 never opened (a request whose HEADERS
        // had not gone out: nghttp2 cancels them, and will neither read its data nor report a
        // close) drops its queue now.
        if nghttp2_session_find_stream(session, stream) == nil {
            if let o = outbound.removeValue(forKey: stream) { queuedBytes -= o.pendingBytes }
        } else {
            outbound[stream]?.cancelled = true
        }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, errorCode)
    }

    /// Graceful shutdown, step 1: a GOAWAY with the maximum stream id (a "shutdown notice").
    /// Queues a PING (the peer must answer with an ACK: `HTTP2Event.pingAck`); a keepalive probe.
    public func submitPing() throws(HTTP2Error) {
        let rv = nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
        if rv != 0 { throw HTTP2Error(code: rv, operation: "nghttp2_submit_ping") }
    }

    public func submitShutdownNotice() {
        _ = nghttp2_submit_shutdown_notice(session)
    }

    /// Sends a GOAWAY naming the last stream this side processed; new streams are refused after it.
    public func submitGoAway(errorCode: UInt32 = 0, debug: String = "") {
        let last = nghttp2_session_get_last_proc_stream_id(session)
        var d = Array(debug.utf8)
        _ = d.withUnsafeMutableBufferPointer {
            nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, errorCode, $0.baseAddress, $0.count)
        }
    }

    /// Called for every RST_STREAM sent (server): takes a token, refilling by the time elapsed;
    /// none left: the connection is to be torn down (`sentResetFlood`).
    func countSentReset() {
        resetsSent += 1
        guard role == .server, !sentResetFlood else { return }
        let now = ContinuousClock.now
        let elapsed = sentResetRefilled.duration(to: now)
        sentResetRefilled = now
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        sentResetTokens = min(configuration.sentResetBurst, sentResetTokens + seconds * configuration.sentResetRate)
        if sentResetTokens >= 1 {
            sentResetTokens -= 1
        } else {
            sentResetFlood = true
        }
    }

    // MARK: - Helpers

    /// A data provider whose source is `o`, unretained (owned by `outbound`).
    static func dataProvider(_ o: OutboundStream) -> nghttp2_data_provider {
        var p = nghttp2_data_provider()
        p.source.ptr = Unmanaged.passUnretained(o).toOpaque()
        p.read_callback = HTTP2Session.readCallback
        return p
    }
}
