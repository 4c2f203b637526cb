import Foundation
import Testing
import RPCCore
@testable import RPCHTTP2

/// A client session and a server session wired back to back in memory: every byte one flushes
/// is fed to the other, optionally in small pieces.
struct Pipe {
    let client: HTTP2Session
    let server: HTTP2Session
    var serverEvents: [HTTP2Event] = []
    var clientEvents: [HTTP2Event] = []
    var chunk = Int.max

    init(chunk: Int = .max, serverConfig: HTTP2Configuration = HTTP2Configuration(),
         clientConfig: HTTP2Configuration = HTTP2Configuration()) throws {
        client = try HTTP2Session(role: .client, configuration: clientConfig)
        server = try HTTP2Session(role: .server, configuration: serverConfig)
        self.chunk = chunk
    }

    mutating func pump() throws {
        for _ in 0 ..< 100 {
            var c2s: [UInt8] = []
            try client.flush { c2s.append(contentsOf: $0) }
            clientEvents += client.takeEvents()
            var s2c: [UInt8] = []
            try server.flush { s2c.append(contentsOf: $0) }
            serverEvents += server.takeEvents()
            if c2s.isEmpty && s2c.isEmpty { return }
            var i = 0
            while i < c2s.count {
                let n = min(chunk, c2s.count - i)
                serverEvents += try c2s[i ..< i + n].withUnsafeBytes { try server.receive($0) }
                i += n
            }
            i = 0
            while i < s2c.count {
                let n = min(chunk, s2c.count - i)
                clientEvents += try s2c[i ..< i + n].withUnsafeBytes { try client.receive($0) }
                i += n
            }
        }
    }
}

let requestHeaders: [(String, String)] = [(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C"), (":authority", "x"),
                                          ("content-type", "application/grpc"), ("te", "trailers")]

@Suite struct HTTP2SessionTests {
    @Test(arguments: [Int.max, 1, 7, 100])
    func requestResponseRoundTrip(chunk: Int) throws {
        var p = try Pipe(chunk: chunk)
        let body = FramedMessage(payload: Array(repeating: 0x5A, count: 40_000))
        let id = try p.client.submitRequest(headers: requestHeaders, body: body)
        try p.pump()
        // The server saw the request headers, the whole body, and the end of the stream.
        var got: [UInt8] = []
        var sawHeaders = false, sawEnd = false
        for e in p.serverEvents {
            switch e {
            case .headers(let sid, let h, _, let tooLarge):
                #expect(sid == id)
                #expect(!tooLarge)
                #expect(h.contains { $0.name == ":path" && $0.value == "/a.B/C" })
                sawHeaders = true
            case .data(_, let b): got += b
            case .endStream: sawEnd = true
            default: break
            }
        }
        #expect(sawHeaders && sawEnd)
        #expect(got == body.bytes)

        // Response: headers, two messages, trailers.
        try p.server.submitResponse(stream: id, headers: [(":status", "200"), ("content-type", "application/grpc")])
        let m1 = FramedMessage(payload: Array(repeating: 1, count: 70_000))
        p.server.enqueue(stream: id, m1)
        try p.pump()
        let m2 = FramedMessage(payload: [2, 2])
        p.server.enqueue(stream: id, m2)
        p.server.finish(stream: id, trailers: [("grpc-status", "0")])
        try p.pump()
        var parser = ClientResponseParser()
        var closed = false
        for e in p.clientEvents {
            switch e {
            case .headers(_, let h, let end, _): parser.receivedHeaders(h, endStream: end)
            case .data(_, let b): b.withUnsafeBytes { parser.receivedData($0) }
            case .streamClosed(_, let code): closed = true; #expect(code == 0)
            default: break
            }
        }
        #expect(closed)
        #expect(parser.finalStatus(streamClosedWithError: nil) == nil)
        #expect(parser.messages == [Array(m1.payload), Array(m2.payload)])
    }

    /// Per-call header values (deadline, request and trace ids) are never indexed, so the
    /// constant headers stay in the HPACK dynamic table: every request after the first encodes
    /// to the same size give or take a Huffman byte. (Indexed, each unique id pushed entries
    /// out, and every ~30 calls the constant headers went out as literals again: 107 → 148
    /// bytes here, and an insert plus evictions in both peers' tables on every call.)
    @Test func perCallHeaderValuesDoNotChurnTheHPACKTable() throws {
        var p = try Pipe()
        var sizes: [Int] = []
        for i in 0 ..< 300 {
            var h = requestHeaders
            h.append(("user-agent", "shardrank-swift/1.0"))
            h.append(("grpc-timeout", String(format: "%05dm", 10_000 + i)))
            h.append(("x-request-id", String(format: "req-%012d-%012d", i, i &* 7919)))
            h.append(("traceparent", String(format: "00-%032d-%016d-01", i, i)))
            let id = try p.client.submitRequest(headers: h, body: FramedMessage(payload: [1, 2, 3]))
            var out: [UInt8] = []
            try p.client.flush { out.append(contentsOf: $0) }
            sizes.append(out.count)
            p.serverEvents += try out.withUnsafeBytes { try p.server.receive($0) }
            // A trailers-only answer closes the stream (the concurrent-stream limit stays clear).
            try p.server.submitHeaders(stream: id, headers: [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0")],
                                       endStream: true)
            var back: [UInt8] = []
            try p.server.flush { back.append(contentsOf: $0) }
            if !back.isEmpty { p.clientEvents += try back.withUnsafeBytes { try p.client.receive($0) } }
        }
        // The server decoded every request's own ids.
        var ids: [String] = []
        for e in p.serverEvents { if case .headers(_, let h, _, _) = e, let v = h.first(where: { $0.name == "x-request-id" }) { ids.append(v.value) } }
        #expect(ids.count == 300 && ids.last == String(format: "req-%012d-%012d", 299, 299 &* 7919))
        // Only the per-call values' Huffman codes vary (a byte or two); a constant header sent
        // as a literal again would add tens of bytes.
        let later = sizes.dropFirst(2)
        #expect(later.max()! - later.min()! <= 8, "request sizes vary: \(Set(later).sorted())")
    }

    @Test func headerListLimitIsCounted() throws {
        var cfg = HTTP2Configuration()
        cfg.maxHeaderListBytes = 1024
        var p = try Pipe(serverConfig: cfg)
        var h = requestHeaders
        for i in 0 ..< 20 { h.append(("x-pad-\(i)", String(repeating: "v", count: 100))) }
        _ = try p.client.submitRequest(headers: h, body: FramedMessage(payload: []))
        try p.pump()
        let tooLarge = p.serverEvents.contains { if case .headers(_, _, _, true) = $0 { return true } else { return false } }
        #expect(tooLarge)
    }

    @Test func resetAfterEndStreamArrivesAfterTrailers() throws {
        var p = try Pipe()
        let id = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [1]))
        try p.pump()
        try p.server.submitHeaders(stream: id, headers: [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "8")],
                                   endStream: true)
        p.server.resetAfterEndStream(stream: id)
        try p.pump()
        // The client saw the status before the stream closed.
        guard let first = p.clientEvents.firstIndex(where: { if case .headers = $0 { true } else { false } }),
              let closed = p.clientEvents.firstIndex(where: { if case .streamClosed = $0 { true } else { false } }) else {
            Issue.record("expected headers and close: \(p.clientEvents)"); return
        }
        #expect(first < closed)
    }

    @Test func clientResetIsSeenByServer() throws {
        var p = try Pipe()
        let id = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [1]))
        try p.pump()
        p.client.reset(stream: id, errorCode: 8)
        try p.pump()
        #expect(p.serverEvents.contains { if case .streamClosed(id, 8) = $0 { return true } else { return false } })
    }

    /// HEADERS + DATA + RST_STREAM arriving in one read: nghttp2 opens and closes the stream inside
    /// `receive`, and reports the close only then. A response submitted afterwards (the owner
    /// handles the events in order, so it sees the request before the close) is refused and
    /// nothing is queued for it: the queue would never be released (issue 17, row 1).
    @Test func responseToAStreamResetInTheSameReadIsRefusedAndHoldsNothing() throws {
        var p = try Pipe()
        try p.pump()  // SETTINGS both ways
        let id = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [1]))
        var c2s: [UInt8] = []
        try p.client.flush { c2s.append(contentsOf: $0) }
        p.client.reset(stream: id, errorCode: 8)
        try p.client.flush { c2s.append(contentsOf: $0) }
        let events = try c2s.withUnsafeBytes { try p.server.receive($0) }
        #expect(events.contains { if case .endStream(id) = $0 { return true } else { return false } })
        #expect(events.contains { if case .streamClosed(id, 8) = $0 { return true } else { return false } })
        #expect(!p.server.isStreamOpen(id))
        #expect(throws: HTTP2Error.self) {
            try p.server.submitResponse(stream: id, headers: [(":status", "200"), ("content-type", "application/grpc")])
        }
        p.server.enqueue(stream: id, FramedMessage(payload: Array(repeating: 3, count: 1 << 20)))
        p.server.finish(stream: id, trailers: [("grpc-status", "0")])
        #expect(p.server.queuedStreams == 0)
        #expect(p.server.queuedBytes == 0)
        try p.pump()
        #expect(p.server.queuedStreams == 0)
        // An open stream on the same connection is still answered.
        let next = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [1]))
        try p.pump()
        #expect(p.server.isStreamOpen(next))
        try p.server.submitResponse(stream: next, headers: [(":status", "200"), ("content-type", "application/grpc")])
        #expect(p.server.queuedStreams == 1)
    }

    /// A request reset before its HEADERS went out: nghttp2 cancels it and never opens the
    /// stream, so its queued body is dropped at once (nothing else would ever release it).
    @Test func requestResetBeforeItIsSentIsDropped() throws {
        var p = try Pipe()
        try p.pump()  // SETTINGS both ways
        let id = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: Array(repeating: 7, count: 50_000)))
        p.client.reset(stream: id, errorCode: 8)
        #expect(p.client.outbound[id] == nil)
        try p.pump()
        #expect(!p.serverEvents.contains { if case .headers(id, _, _, _) = $0 { return true } else { return false } })
        #expect(!p.serverEvents.contains { if case .data(id, _) = $0 { return true } else { return false } })
        // The connection still works.
        let next = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [1]))
        try p.pump()
        #expect(p.serverEvents.contains { if case .headers(next, _, _, _) = $0 { return true } else { return false } })
    }

    /// A response reset by the server while most of its body is still queued (the client's
    /// stream window is smaller than the body): no DATA follows the reset, and the queue, kept
    /// while the stream was open because its data provider points to it, is released when it closes.
    @Test func responseResetMidBodySendsNoMoreAndReleasesTheQueue() throws {
        var small = HTTP2Configuration()
        small.initialWindowSize = 16 << 10
        var p = try Pipe(clientConfig: small)
        let id = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [1]))
        try p.pump()
        try p.server.submitResponse(stream: id, headers: [(":status", "200"), ("content-type", "application/grpc")])
        p.server.enqueue(stream: id, FramedMessage(payload: Array(repeating: 9, count: 200_000)))
        p.server.finish(stream: id, trailers: [("grpc-status", "0")])
        // One flush: the server sends what the 16 KiB window allows (the client's WINDOW_UPDATE
        // is not delivered before the reset).
        var s2c: [UInt8] = []
        try p.server.flush { s2c.append(contentsOf: $0) }
        p.clientEvents += try s2c.withUnsafeBytes { try p.client.receive($0) }
        let before = p.clientEvents.reduce(0) { if case .data(id, let b) = $1 { return $0 + b.count } else { return $0 } }
        #expect(before > 0 && before < 200_005, "the window stops the body part way")
        #expect(p.server.outbound[id] != nil)
        #expect(p.server.queuedBytes == 200_005 - before && p.server.queuedBytes(stream: id) == p.server.queuedBytes)
        p.server.reset(stream: id, errorCode: 8)
        try p.pump()
        let after = p.clientEvents.reduce(0) { if case .data(id, let b) = $1 { return $0 + b.count } else { return $0 } }
        #expect(after == before, "DATA after the reset")
        #expect(p.clientEvents.contains { if case .streamClosed(id, 8) = $0 { return true } else { return false } })
        #expect(p.server.outbound[id] == nil)
        #expect(p.server.queuedBytes == 0)
        // A second response on a stream that has one is refused (it would orphan the first queue).
        let id2 = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [1]))
        try p.pump()
        try p.server.submitResponse(stream: id2, headers: [(":status", "200")])
        #expect(throws: HTTP2Error.self) { try p.server.submitResponse(stream: id2, headers: [(":status", "200")]) }
    }

    @Test func serverSendsSettingsFirst() throws {
        let s = try HTTP2Session(role: .server)
        var out: [UInt8] = []
        try s.flush { out.append(contentsOf: $0) }
        #expect(out.count >= 9)
        #expect(out[3] == 0x4)  // SETTINGS
    }

    @Test func badPrefaceIsAnError() throws {
        let s = try HTTP2Session(role: .server)
        let junk = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        #expect(throws: HTTP2Error.self) { _ = try junk.withUnsafeBytes { try s.receive($0) } }
    }

    @Test func goAwayIsReported() throws {
        var p = try Pipe()
        _ = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [1]))
        try p.pump()
        p.server.submitGoAway(errorCode: 0, debug: "bye")
        try p.pump()
        #expect(p.clientEvents.contains { if case .goAway(1, 0) = $0 { return true } else { return false } })
    }
}
