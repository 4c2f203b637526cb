/// The life of one server-side gRPC stream, with no I/O: the transport feeds it what arrived and
/// what the handler did, and performs the action it returns. This is the one place where errors
/// become wire responses (Trailers-Only when no response headers went out yet).
public struct ServerStreamStateMachine: Sendable {
    public struct Limits: Sendable, Hashable {
        /// Largest request message accepted (gRPC's default: 4 MiB).
        public var maxMessageLength: Int
        public init(maxMessageLength: Int = 4 << 20) { self.maxMessageLength = maxMessageLength }
    }

    /// What the call asked for, once its headers were accepted. A class: it travels through
    /// several actions and states, and one reference is cheaper to copy than its fields.
    public final class Call: Sendable {
        public let method: RPCMethod
        public let metadata: Metadata
        public let timeout: GRPCTimeout?

        init(method: RPCMethod, metadata: Metadata, timeout: GRPCTimeout?) {
            self.method = method
            self.metadata = metadata
            self.timeout = timeout
        }
    }

    public enum Action: Sendable {
        /// Nothing to do yet.
        case none
        /// Answer with an HTTP status and no gRPC semantics (wrong content-type: 415, wrong method:
        /// 405), then reset the stream if the client is still sending.
        case rejectHTTP(status: Int, message: String)
        /// Headers accepted: arm the deadline (if any) and wait for the request message.
        case accepted(Call)
        /// The request is complete: run the handler with this message.
        case invoke(Call, request: [UInt8])
        /// Request messages of a request-streaming call (`RPCMethod.Handler.streamMessages`): run
        /// the handler on each, in order, passing every response to `handlerSent`; then, if
        /// `endStream` (the client half-closed), `handlerFinished(nil)`. A handler error goes to
        /// `handlerFinished(error)` and the remaining requests are dropped.
        case invokeEach(Call, requests: [[UInt8]], endStream: Bool)
        /// Send the whole unary response: headers, the message, trailers with OK.
        case sendResponse(FramedMessage)
        /// Send response headers (first streaming message only) and a message.
        case sendMessage(FramedMessage, withHeaders: Bool)
        /// End the call with this status: Trailers-Only if `headersSent` is false, else trailers.
        /// `cancelHandler` asks the transport to cancel a running handler; `resetAfter` to send
        /// RST_STREAM(NO_ERROR) after the trailers because the client may still be sending.
        case finish(RPCError?, headersSent: Bool, cancelHandler: Bool, resetAfter: Bool)
        /// The stream is gone (reset by the peer): cancel the handler, send nothing.
        case cancelHandler(RPCError)
    }

    enum State: Sendable {
        case awaitingHeaders
        case receiving(Call, message: [UInt8]?, deframer: GRPCMessageDeframer)
        case handlerRunning(Call, headersSent: Bool)
        /// A request-streaming call: messages are handed out as they complete.
        case streaming(Call, headersSent: Bool, deframer: GRPCMessageDeframer, clientDone: Bool)
        case done
    }

    private var state: State = .awaitingHeaders
    public let limits: Limits

    public init(limits: Limits = Limits()) { self.limits = limits }

    public var isDone: Bool { if case .done = state { return true } else { return false } }

    /// Bytes this stream holds of a request not yet handed to its handler: the partial message's
    /// buffer, and a unary request's complete message waiting for the end of the stream. What a
    /// client that never ends its requests makes the server buffer (the transport bounds the sum
    /// per connection and per process).
    public var bufferedRequestBytes: Int {
        switch state {
        case .receiving(_, let message, let deframer): return deframer.bufferedCapacity + (message?.count ?? 0)
        case .streaming(_, _, let deframer, _): return deframer.bufferedCapacity
        default: return 0
        }
    }

    /// The request headers arrived.
    /// - Parameters:
    ///   - headers: the header block in order, pseudo-headers included.
    ///   - endStream: the client sent END_STREAM with the headers (no message).
    ///   - headerListTooLarge: the transport counted more header bytes than its limit.
    public mutating func receivedHeaders(_ headers: [(name: String, value: String)], endStream: Bool,
                                         headerListTooLarge: Bool, router: Router) -> Action {
        guard case .awaitingHeaders = state else {
            // A second HEADERS block from a client is trailers; gRPC clients send none. Ignore.
            return .none
        }
        let resetAfter = !endStream
        func fail(_ e: RPCError) -> Action {
            state = .done
            return .finish(e, headersSent: false, cancelHandler: false, resetAfter: resetAfter)
        }
        if headerListTooLarge {
            return fail(RPCError(.resourceExhausted, "request header list exceeds the server's limit"))
        }
        var method: String?
        var path: String?
        var contentType: String?
        var timeoutValue: String?
        var encoding: String?
        var metadata = Metadata()
        for (name, value) in headers {
            switch name {
            case ":method": method = value
            case ":path": path = value
            case "content-type": contentType = value
            case "grpc-timeout": timeoutValue = value
            case "grpc-encoding": encoding = value
            default:
                if Metadata.isReserved(name) { continue }
                do throws(RPCError) { try metadata.addWireHeader(name: name, value: value) } catch { return fail(error) }
            }
        }
        guard method == "POST" else {
            state = .done
            return .rejectHTTP(status: 405, message: "gRPC requires POST, got \(method ?? "none")")
        }
        guard let ct = contentType, ct == "application/grpc" || ct.hasPrefix("application/grpc+") || ct.hasPrefix("application/grpc;") else {
            state = .done
            return .rejectHTTP(status: 415, message: "unsupported content-type '\(contentType ?? "")': expected application/grpc")
        }
        guard let path else { return fail(RPCError(.unimplemented, "missing :path")) }
        let m: RPCMethod
        do throws(RPCError) { m = try router.method(for: path) } catch { return fail(error) }
        if let encoding, encoding != "identity" {
            var md = Metadata()
            md.add("grpc-accept-encoding", "identity")
            return fail(RPCError(.unimplemented, "grpc-encoding '\(encoding)' is not supported (identity only)", metadata: md))
        }
        var timeout: GRPCTimeout?
        if let timeoutValue {
            do throws(RPCError) { timeout = try GRPCTimeout(parsing: timeoutValue) } catch { return fail(error) }
        }
        let call = Call(method: m, metadata: metadata, timeout: timeout)
        if m.streamsRequests {
            if endStream {  // an empty request stream: nothing to answer
                state = .done
                return .finish(nil, headersSent: false, cancelHandler: false, resetAfter: false)
            }
            state = .streaming(call, headersSent: false, deframer: GRPCMessageDeframer(maxMessageLength: limits.maxMessageLength),
                               clientDone: false)
            return .accepted(call)
        }
        if endStream {
            return fail(RPCError(.internal, "request stream ended without a message"))
        }
        state = .receiving(call, message: nil, deframer: GRPCMessageDeframer(maxMessageLength: limits.maxMessageLength))
        return .accepted(call)
    }

    /// DATA arrived.
    public mutating func receivedData(_ bytes: UnsafeRawBufferPointer, endStream: Bool) -> Action {
        if case .streaming(let call, let headersSent, var deframer, let clientDone) = state {
            guard !clientDone else { return .none }
            return receivedStreamData(bytes, endStream: endStream, call: call, headersSent: headersSent, deframer: &deframer)
        }
        guard case .receiving(let call, var message, var deframer) = state else {
            return .none  // after an early error, or before headers (nghttp2 rejects that)
        }
        state = .done  // while mutating; restored below
        var error: RPCError?
        do throws(RPCError) {
            try deframer.consume(bytes) { (m: [UInt8]) throws(RPCError) in
                if message != nil {
                    throw RPCError(.internal, "unary request carried more than one message")
                }
                message = m
            }
        } catch let e {
            error = e
        }
        if let error {
            return .finish(error, headersSent: false, cancelHandler: false, resetAfter: !endStream)
        }
        if endStream {
            guard deframer.isIdle else {
                return .finish(RPCError(.internal, "request stream ended inside a message"), headersSent: false,
                               cancelHandler: false, resetAfter: false)
            }
            guard let message else {
                return .finish(RPCError(.internal, "request stream ended without a message"), headersSent: false,
                               cancelHandler: false, resetAfter: false)
            }
            state = .handlerRunning(call, headersSent: false)
            return .invoke(call, request: message)
        }
        state = .receiving(call, message: message, deframer: deframer)
        return .none
    }

    private mutating func receivedStreamData(_ bytes: UnsafeRawBufferPointer, endStream: Bool, call: Call, headersSent: Bool,
                                             deframer: inout GRPCMessageDeframer) -> Action {
        state = .done  // while mutating; restored below
        var requests: [[UInt8]] = []
        do throws(RPCError) {
            try deframer.consume(bytes) { (m: [UInt8]) throws(RPCError) in requests.append(m) }
        } catch {
            return .finish(error, headersSent: headersSent, cancelHandler: false, resetAfter: !endStream)
        }
        if endStream, !deframer.isIdle {
            return .finish(RPCError(.internal, "request stream ended inside a message"), headersSent: headersSent,
                           cancelHandler: false, resetAfter: false)
        }
        state = .streaming(call, headersSent: headersSent, deframer: deframer, clientDone: endStream)
        if requests.isEmpty && !endStream { return .none }
        return .invokeEach(call, requests: requests, endStream: endStream)
    }

    /// The client half-closed with an empty DATA or trailers frame.
    public mutating func receivedEndStream() -> Action {
        var empty: [UInt8] = []
        return empty.withUnsafeMutableBytes { receivedData(UnsafeRawBufferPointer($0), endStream: true) }
    }

    /// A unary handler returned.
    public mutating func handlerReturned(_ result: Result<FramedMessage, RPCError>) -> Action {
        guard case .handlerRunning(_, let headersSent) = state else { return .none }
        state = .done
        switch result {
        case .success(let m): return .sendResponse(m)
        case .failure(let e): return .finish(e, headersSent: headersSent, cancelHandler: false, resetAfter: false)
        }
    }

    /// A streaming handler sent a message.
    public mutating func handlerSent(_ message: FramedMessage) -> Action {
        if case .streaming(let call, let headersSent, let deframer, let clientDone) = state {
            state = .streaming(call, headersSent: true, deframer: deframer, clientDone: clientDone)
            return .sendMessage(message, withHeaders: !headersSent)
        }
        guard case .handlerRunning(let call, let headersSent) = state else { return .none }
        state = .handlerRunning(call, headersSent: true)
        return .sendMessage(message, withHeaders: !headersSent)
    }

    /// A streaming handler finished.
    public mutating func handlerFinished(_ error: RPCError?) -> Action {
        if case .streaming(_, let headersSent, _, let clientDone) = state {
            state = .done
            return .finish(error, headersSent: headersSent, cancelHandler: false, resetAfter: !clientDone)
        }
        guard case .handlerRunning(_, let headersSent) = state else { return .none }
        state = .done
        return .finish(error, headersSent: headersSent, cancelHandler: false, resetAfter: false)
    }

    /// The deadline passed, or the server is stopping (`reason`): answer with that status now and
    /// cancel the handler if one runs.
    public mutating func abort(_ reason: RPCError) -> Action {
        switch state {
        case .awaitingHeaders, .done:
            return .none
        case .receiving:
            state = .done
            return .finish(reason, headersSent: false, cancelHandler: false, resetAfter: true)
        case .handlerRunning(_, let headersSent):
            state = .done
            return .finish(reason, headersSent: headersSent, cancelHandler: true, resetAfter: false)
        case .streaming(_, let headersSent, _, let clientDone):
            state = .done
            return .finish(reason, headersSent: headersSent, cancelHandler: false, resetAfter: !clientDone)
        }
    }

    /// The peer reset the stream (RST_STREAM) or the connection went away.
    public mutating func peerReset() -> Action {
        let wasRunning: Bool
        switch state {
        case .handlerRunning, .streaming: wasRunning = true
        default: wasRunning = false
        }
        state = .done
        return wasRunning ? .cancelHandler(RPCError(.cancelled, "the client cancelled the call")) : .none
    }
}
