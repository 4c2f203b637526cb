import Testing
@testable import RPCCore

/// Request-streaming calls (`.streamMessages`, used by server reflection) in the stream state
/// machine: every request message handed out in order as it completes, the response headers sent
/// once, the call ended when the client half-closes, errors and deadlines mid-stream.
@Suite struct ServerStreamStateMachineStreamingTests {
    struct Chat: RPCService {
        let serviceName = "test.Chat"
        var methods: [RPCMethod] {
            [RPCMethod(service: serviceName, method: "Talk", placement: .inline, handler: .streamMessages { b, _ in [FramedMessage(payload: b)] })]
        }
    }

    let router = Router(services: [Chat()])
    let headers: [(name: String, value: String)] = [(":method", "POST"), (":scheme", "http"), (":path", "/test.Chat/Talk"),
                                                    ("content-type", "application/grpc"), ("te", "trailers")]

    func feed(_ m: inout ServerStreamStateMachine, _ bytes: [UInt8], end: Bool) -> ServerStreamStateMachine.Action {
        bytes.withUnsafeBytes { m.receivedData($0, endStream: end) }
    }

    func accepted() -> ServerStreamStateMachine {
        var m = ServerStreamStateMachine()
        guard case .accepted = m.receivedHeaders(headers, endStream: false, headerListTooLarge: false, router: router) else {
            Issue.record("expected accepted"); return m
        }
        return m
    }

    @Test func messagesAreHandedOutAsTheyCompleteAndTheCallEndsOnHalfClose() {
        var m = accepted()
        let one = FramedMessage(payload: [1]).bytes, two = FramedMessage(payload: [2, 2]).bytes, three = FramedMessage(payload: [3]).bytes
        // The first message, complete, with half of the second: only the first is handed out.
        guard case .invokeEach(_, let first, false) = feed(&m, one + two[..<3], end: false) else { Issue.record("first"); return }
        #expect(first == [[1]])
        guard case .sendMessage(let r1, true) = m.handlerSent(FramedMessage(payload: [10])) else { Issue.record("headers with the first answer"); return }
        #expect(Array(r1.payload) == [10])
        // The rest of the second and the whole third in one frame: both, in order.
        guard case .invokeEach(_, let more, false) = feed(&m, Array(two[3...]) + three, end: false) else { Issue.record("more"); return }
        #expect(more == [[2, 2], [3]])
        guard case .sendMessage(_, false) = m.handlerSent(FramedMessage(payload: [20])) else { Issue.record("no second headers"); return }
        #expect(!m.isDone)
        // Half-close with no message: the transport ends the call with OK, no reset needed.
        guard case .invokeEach(_, let none, true) = m.receivedEndStream() else { Issue.record("end"); return }
        #expect(none.isEmpty)
        guard case .finish(nil, true, false, false) = m.handlerFinished(nil) else { Issue.record("OK trailers"); return }
        #expect(m.isDone)
    }

    @Test func emptyRequestStreamEndsWithOK() {
        var m = ServerStreamStateMachine()
        guard case .finish(nil, false, false, false) = m.receivedHeaders(headers, endStream: true, headerListTooLarge: false, router: router) else {
            Issue.record("expected OK"); return
        }
        #expect(m.isDone)
    }

    @Test func handlerErrorWhileTheClientStillSendsResetsAfterTrailers() {
        var m = accepted()
        guard case .invokeEach = feed(&m, FramedMessage(payload: [1]).bytes, end: false) else { Issue.record("invoke"); return }
        guard case .finish(let e?, false, false, true) = m.handlerFinished(RPCError(.invalidArgument, "bad")) else { Issue.record("finish"); return }
        #expect(e.code == .invalidArgument)
        guard case .none = feed(&m, FramedMessage(payload: [2]).bytes, end: false) else { Issue.record("nothing after the end"); return }
    }

    @Test func oversizeMessageEndsTheCall() {
        var m = ServerStreamStateMachine(limits: .init(maxMessageLength: 4))
        _ = m.receivedHeaders(headers, endStream: false, headerListTooLarge: false, router: router)
        guard case .finish(let e?, false, false, true) = feed(&m, FramedMessage(payload: [1, 2, 3, 4, 5]).bytes, end: false) else {
            Issue.record("expected resource exhausted"); return
        }
        #expect(e.code == .resourceExhausted)
    }

    @Test func streamEndingInsideAMessageIsAnError() {
        var m = accepted()
        guard case .finish(let e?, false, false, false) = feed(&m, Array(FramedMessage(payload: [1, 2]).bytes.prefix(6)), end: true) else {
            Issue.record("expected error"); return
        }
        #expect(e.message.contains("inside a message"))
    }

    @Test func deadlineMidStreamFinishesWithTheReason() {
        var m = accepted()
        _ = feed(&m, FramedMessage(payload: [1]).bytes, end: false)
        _ = m.handlerSent(FramedMessage(payload: [1]))
        guard case .finish(let e?, true, false, true) = m.abort(RPCError(.deadlineExceeded, "late")) else { Issue.record("abort"); return }
        #expect(e.code == .deadlineExceeded)
    }

    @Test func peerResetIsObservedAsCancelled() {
        var m = accepted()
        guard case .cancelHandler(let e) = m.peerReset() else { Issue.record("cancel"); return }
        #expect(e.code == .cancelled)
    }
}
