import Testing
@testable import RPCCore

/// The server-side stream state machine without sockets: headers, data, handler results,
/// deadlines and resets in every order that matters.
@Suite struct ServerStreamStateMachineTests {
    struct Echo: RPCService {
        let serviceName = "test.Echo"
        var methods: [RPCMethod] {
            [RPCMethod(service: serviceName, method: "Say", placement: .inline, handler: .unary { b, _ in FramedMessage(payload: b) })]
        }
    }

    let router = Router(services: [Echo()])

    func headers(path: String = "/test.Echo/Say", contentType: String = "application/grpc", method: String = "POST",
                 extra: [(String, String)] = []) -> [(name: String, value: String)] {
        ([(":method", method), (":scheme", "http"), (":path", path), ("content-type", contentType), ("te", "trailers")] + extra)
            .map { (name: $0.0, value: $0.1) }
    }

    func feed(_ m: inout ServerStreamStateMachine, _ bytes: [UInt8], end: Bool) -> ServerStreamStateMachine.Action {
        bytes.withUnsafeBytes { m.receivedData($0, endStream: end) }
    }

    /// What a stream buffers of a request not yet handed out: a partial message's buffer, then a
    /// complete unary message waiting for END_STREAM; nothing once the handler has it or after an
    /// abort (the transport sums these against --max-connection-request-bytes).
    @Test func bufferedRequestBytesFollowTheRequest() {
        var m = ServerStreamStateMachine()
        #expect(m.bufferedRequestBytes == 0)
        _ = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        let frame = FramedMessage(payload: [UInt8](repeating: 7, count: 300_000)).bytes
        _ = feed(&m, Array(frame[..<200_000]), end: false)
        #expect(m.bufferedRequestBytes >= 200_000 - 5 && m.bufferedRequestBytes <= 2 * 200_000, "\(m.bufferedRequestBytes)")
        _ = feed(&m, Array(frame[200_000...]), end: false)
        #expect(m.bufferedRequestBytes >= 300_000, "a complete message waiting for END_STREAM is still held")
        guard case .invoke = m.receivedEndStream() else { Issue.record("expected invoke"); return }
        #expect(m.bufferedRequestBytes == 0)

        var aborted = ServerStreamStateMachine()
        _ = aborted.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        _ = feed(&aborted, Array(frame[..<100_000]), end: false)
        #expect(aborted.bufferedRequestBytes > 0)
        guard case .finish(let e?, false, false, true) = aborted.abort(RPCError(.resourceExhausted, "too much")) else {
            Issue.record("expected RESOURCE_EXHAUSTED then a reset"); return
        }
        #expect(e.code == .resourceExhausted)
        #expect(aborted.bufferedRequestBytes == 0)
    }

    @Test func happyPath() {
        var m = ServerStreamStateMachine()
        guard case .accepted(let call) = m.receivedHeaders(headers(extra: [("grpc-timeout", "5m"), ("x-a", "1")]), endStream: false,
                                                           headerListTooLarge: false, router: router) else {
            Issue.record("expected accepted"); return
        }
        #expect(call.timeout?.nanoseconds == 5_000_000)
        #expect(call.metadata.string("x-a") == "1")
        #expect(call.metadata.count == 1)
        let frame = FramedMessage(payload: [1, 2, 3]).bytes
        guard case .none = feed(&m, Array(frame[..<4]), end: false) else { Issue.record("partial"); return }
        guard case .none = feed(&m, Array(frame[4...]), end: false) else { Issue.record("complete, not ended"); return }
        guard case .invoke(_, let req) = m.receivedEndStream() else { Issue.record("expected invoke"); return }
        #expect(req == [1, 2, 3])
        guard case .sendResponse(let r) = m.handlerReturned(.success(FramedMessage(payload: [9]))) else { Issue.record("response"); return }
        #expect(Array(r.payload) == [9])
        #expect(m.isDone)
        guard case .none = m.peerReset() else { Issue.record("reset after done does nothing"); return }
    }

    @Test func messageAndEndStreamInOneFrame() {
        var m = ServerStreamStateMachine()
        _ = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        guard case .invoke(_, let req) = feed(&m, FramedMessage(payload: [5]).bytes, end: true) else { Issue.record("invoke"); return }
        #expect(req == [5])
    }

    @Test func wrongContentTypeIs415() {
        var m = ServerStreamStateMachine()
        guard case .rejectHTTP(let status, _) = m.receivedHeaders(headers(contentType: "application/json"), endStream: false,
                                                                   headerListTooLarge: false, router: router) else {
            Issue.record("expected 415"); return
        }
        #expect(status == 415)
    }

    @Test(arguments: ["application/grpc", "application/grpc+proto", "application/grpc;charset=utf-8"])
    func grpcContentTypeVariantsAccepted(ct: String) {
        var m = ServerStreamStateMachine()
        guard case .accepted = m.receivedHeaders(headers(contentType: ct), endStream: false, headerListTooLarge: false, router: router) else {
            Issue.record("expected accepted for \(ct)"); return
        }
    }

    @Test func getIs405() {
        var m = ServerStreamStateMachine()
        guard case .rejectHTTP(405, _) = m.receivedHeaders(headers(method: "GET"), endStream: true, headerListTooLarge: false, router: router) else {
            Issue.record("expected 405"); return
        }
    }

    @Test(arguments: [("/test.Echo/Nope", "unknown method 'Nope'"), ("/x.Y/Z", "unknown service 'x.Y'"), ("bad", "malformed")])
    func unknownPathIsUnimplemented(path: String, text: String) {
        var m = ServerStreamStateMachine()
        guard case .finish(let e?, false, false, true) = m.receivedHeaders(headers(path: path), endStream: false,
                                                                            headerListTooLarge: false, router: router) else {
            Issue.record("expected trailers-only error"); return
        }
        #expect(e.code == .unimplemented)
        #expect(e.message.contains(text))
    }

    @Test func headerListTooLargeIsResourceExhausted() {
        var m = ServerStreamStateMachine()
        guard case .finish(let e?, false, _, _) = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: true, router: router) else {
            Issue.record("expected error"); return
        }
        #expect(e.code == .resourceExhausted)
    }

    @Test func malformedTimeoutIsInvalidArgument() {
        var m = ServerStreamStateMachine()
        guard case .finish(let e?, false, _, _) = m.receivedHeaders(headers(extra: [("grpc-timeout", "-1S")]), endStream: false,
                                                                    headerListTooLarge: false, router: router) else {
            Issue.record("expected error"); return
        }
        #expect(e.code == .invalidArgument)
    }

    @Test func unsupportedEncoding() {
        var m = ServerStreamStateMachine()
        guard case .finish(let e?, _, _, _) = m.receivedHeaders(headers(extra: [("grpc-encoding", "gzip")]), endStream: false,
                                                                headerListTooLarge: false, router: router) else {
            Issue.record("expected error"); return
        }
        #expect(e.code == .unimplemented)
        #expect(e.metadata.string("grpc-accept-encoding") == "identity")
    }

    @Test func oversizeMessageFailsFromPrefix() {
        var m = ServerStreamStateMachine(limits: .init(maxMessageLength: 10))
        _ = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        guard case .finish(let e?, false, false, true) = feed(&m, [0, 0, 0, 0, 11], end: false) else { Issue.record("expected"); return }
        #expect(e.code == .resourceExhausted)
        // Later data is ignored, not buffered.
        guard case .none = feed(&m, Array(repeating: 0, count: 11), end: true) else { Issue.record("ignored"); return }
    }

    @Test func twoMessagesOnUnaryIsInternal() {
        var m = ServerStreamStateMachine()
        _ = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        let two = FramedMessage(payload: [1]).bytes + FramedMessage(payload: [2]).bytes
        guard case .finish(let e?, _, _, _) = feed(&m, two, end: true) else { Issue.record("expected"); return }
        #expect(e.code == .internal)
    }

    @Test func endWithoutMessageOrInsideOne() {
        var m = ServerStreamStateMachine()
        guard case .finish(let e?, _, _, _) = m.receivedHeaders(headers(), endStream: true, headerListTooLarge: false, router: router) else {
            Issue.record("expected"); return
        }
        #expect(e.code == .internal)
        var m2 = ServerStreamStateMachine()
        _ = m2.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        guard case .finish(let e2?, _, _, _) = feed(&m2, [0, 0, 0, 0, 3, 1], end: true) else { Issue.record("expected"); return }
        #expect(e2.code == .internal)
    }

    @Test func deadlineWhileHandlerRunsCancelsIt() {
        var m = ServerStreamStateMachine()
        _ = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        _ = feed(&m, FramedMessage(payload: [1]).bytes, end: true)
        guard case .finish(let e?, false, true, false) = m.abort(.deadlineExceeded()) else { Issue.record("expected abort"); return }
        #expect(e.code == .deadlineExceeded)
        // The handler's late result goes nowhere.
        guard case .none = m.handlerReturned(.success(FramedMessage(payload: [])) ) else { Issue.record("late result dropped"); return }
    }

    @Test func deadlineBeforeRequestCompletes() {
        var m = ServerStreamStateMachine()
        _ = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        guard case .finish(_, false, false, true) = m.abort(.deadlineExceeded()) else { Issue.record("expected"); return }
    }

    @Test func resetWhileHandlerRuns() {
        var m = ServerStreamStateMachine()
        _ = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        _ = feed(&m, FramedMessage(payload: [1]).bytes, end: true)
        guard case .cancelHandler(let e) = m.peerReset() else { Issue.record("expected cancel"); return }
        #expect(e.code == .cancelled)
        guard case .none = m.handlerReturned(.failure(.cancelled())) else { Issue.record("dropped"); return }
    }

    @Test func handlerErrorBecomesTrailersOnly() {
        var m = ServerStreamStateMachine()
        _ = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        _ = feed(&m, FramedMessage(payload: [1]).bytes, end: true)
        guard case .finish(let e?, false, false, false) = m.handlerReturned(.failure(.notFound("x"))) else { Issue.record("expected"); return }
        #expect(e.code == .notFound)
    }

    @Test func streamingSendsHeadersOnce() {
        var m = ServerStreamStateMachine()
        _ = m.receivedHeaders(headers(), endStream: false, headerListTooLarge: false, router: router)
        _ = feed(&m, FramedMessage(payload: [1]).bytes, end: true)
        guard case .sendMessage(_, true) = m.handlerSent(FramedMessage(payload: [1])) else { Issue.record("first"); return }
        guard case .sendMessage(_, false) = m.handlerSent(FramedMessage(payload: [2])) else { Issue.record("second"); return }
        guard case .finish(nil, true, false, false) = m.handlerFinished(nil) else { Issue.record("finish"); return }
    }
}

@Suite struct ClientResponseParserTests {
    @Test func normalResponse() {
        var p = ClientResponseParser()
        p.receivedHeaders([(":status", "200"), ("content-type", "application/grpc")], endStream: false)
        let f = FramedMessage(payload: [1, 2]).bytes
        f.withUnsafeBytes { p.receivedData($0) }
        p.receivedHeaders([("grpc-status", "0")], endStream: true)
        #expect(p.finalStatus(streamClosedWithError: nil) == nil)
        #expect(p.messages == [[1, 2]])
    }

    @Test func trailersOnly() {
        var p = ClientResponseParser()
        p.receivedHeaders([(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "5"), ("grpc-message", "no%20such")],
                          endStream: true)
        #expect(p.finalStatus(streamClosedWithError: nil) == RPCError(.notFound, "no such"))
    }

    @Test func httpErrorWithoutGRPCStatus() {
        var p = ClientResponseParser()
        p.receivedHeaders([(":status", "503")], endStream: true)
        #expect(p.finalStatus(streamClosedWithError: nil)?.code == .unavailable)
    }

    @Test func resetWithoutStatus() {
        let p = ClientResponseParser()
        #expect(p.finalStatus(streamClosedWithError: 8)?.code == .cancelled)
        #expect(p.finalStatus(streamClosedWithError: 7)?.code == .unavailable)
    }
}
