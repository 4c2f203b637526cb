import Testing
import RPCCore
@testable import RPCHTTP2

@Suite struct HeaderStringCacheTests {
    func strings(_ cache: inout HeaderStringCache, _ name: String, _ value: String) -> (name: String, value: String) {
        let n = Array(name.utf8), v = Array(value.utf8)
        return n.withUnsafeBytes { nb in v.withUnsafeBytes { vb in cache.strings(name: nb, value: vb) } }
    }

    @Test func knownNamesKeepTheirLastValueAndChangesAreSeen() {
        var c = HeaderStringCache()
        #expect(strings(&c, ":path", "/a.B/C") == (":path", "/a.B/C"))
        #expect(strings(&c, ":path", "/a.B/C") == (":path", "/a.B/C"))
        // Same length, one byte different (first, middle, last): a new value, not the cached one.
        #expect(strings(&c, ":path", "/a.B/D") == (":path", "/a.B/D"))
        #expect(strings(&c, ":path", "/a.X/D") == (":path", "/a.X/D"))
        #expect(strings(&c, ":path", "xa.X/D") == (":path", "xa.X/D"))
        #expect(strings(&c, ":path", "") == (":path", ""))
        #expect(strings(&c, "content-type", "application/grpc") == ("content-type", "application/grpc"))
        #expect(strings(&c, ":path", "/a.B/C") == (":path", "/a.B/C"))
    }

    @Test func otherNamesAndLongValuesAreDecoded() {
        var c = HeaderStringCache()
        #expect(strings(&c, "x-request-id", "r1") == ("x-request-id", "r1"))
        #expect(strings(&c, "x-request-id", "r2") == ("x-request-id", "r2"))
        // Near misses of table names: same length and ends, or a prefix.
        #expect(strings(&c, "tf", "v") == ("tf", "v"))
        #expect(strings(&c, ":pbth", "v") == (":pbth", "v"))
        #expect(strings(&c, ":pat", "v") == (":pat", "v"))
        let long = String(repeating: "u", count: HeaderStringCache.maxCachedValue + 1)
        #expect(strings(&c, "user-agent", long) == ("user-agent", long))
        #expect(strings(&c, "user-agent", "short") == ("user-agent", "short"))
        // Invalid UTF-8 is repaired exactly as before (U+FFFD), cached or not.
        let bad: [UInt8] = [0x61, 0xFF, 0x62]
        let got = Array(":path".utf8).withUnsafeBytes { n in bad.withUnsafeBytes { v in c.strings(name: n, value: v) } }
        #expect(got.value == "a\u{FFFD}b")
    }
}

@Suite struct OutputPathTests {
    /// One request answered with `messages` and trailers; returns everything the server wrote,
    /// produced either by the copying `flush(into:)` or by `flush(into:messages:)` (spans).
    func serverBytes(spans: Bool, prepared: Bool, messages: [FramedMessage]) throws -> [UInt8] {
        var p = try Pipe()
        let id = try p.client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [1, 2, 3]))
        try p.pump()
        if prepared {
            try p.server.submitResponse(stream: id, headers: Self.headers)
        } else {
            try p.server.submitResponse(stream: id, headers: [(":status", "200"), ("content-type", "application/grpc")])
        }
        for m in messages { p.server.enqueue(stream: id, m) }
        if prepared {
            p.server.finish(stream: id, trailers: Self.trailers)
        } else {
            p.server.finish(stream: id, trailers: [("grpc-status", "0")])
        }
        var out: [UInt8] = []
        var spanCount = 0
        if spans {
            try p.server.flush(into: { out.append(contentsOf: $0) }, messages: { m, r in
                spanCount += 1
                m.withUnsafeBytes { out.append(contentsOf: $0[r]) }
            })
            #expect(spanCount > 0)
        } else {
            try p.server.flush { out.append(contentsOf: $0) }
        }
        // The client accepts it all: every message, then status 0.
        let events = try out.withUnsafeBytes { try p.client.receive($0) }
        var parser = ClientResponseParser()
        for e in events {
            switch e {
            case .headers(_, let h, let end, _): parser.receivedHeaders(h, endStream: end)
            case .data(_, let b): b.withUnsafeBytes { parser.receivedData($0) }
            default: break
            }
        }
        #expect(parser.finalStatus(streamClosedWithError: nil) == nil)
        #expect(parser.messages == messages.map { Array($0.payload) })
        return out
    }

    static let headers = PreparedHeaders(constant: [(":status", "200"), ("content-type", "application/grpc")])
    static let trailers = PreparedHeaders(constant: [("grpc-status", "0")])

    @Test(arguments: [[1], [70_000], [16_379, 16_380, 16_381], [0, 5, 200_000]])
    func spansAndPreparedHeadersGiveTheSameBytes(sizes: [Int]) throws {
        let messages = sizes.enumerated().map { i, n in FramedMessage(payload: (0 ..< n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) }) }
        let copied = try serverBytes(spans: false, prepared: false, messages: messages)
        #expect(try serverBytes(spans: true, prepared: false, messages: messages) == copied)
        #expect(try serverBytes(spans: false, prepared: true, messages: messages) == copied)
        #expect(try serverBytes(spans: true, prepared: true, messages: messages) == copied)
    }

    @Test func preparedHeadersKeepTheirPairs() {
        let h = PreparedHeaders([("grpc-status", "3"), ("grpc-message", "bad%20thing")])
        #expect(h.count == 2)
        #expect(h.pairs.map(\.0) == ["grpc-status", "grpc-message"])
        #expect(h.pairs.map(\.1) == ["3", "bad%20thing"])
    }
}
