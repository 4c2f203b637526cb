// libFuzzer harness: RPCHTTP2.HTTP2Session (libnghttp2 with this package's callbacks) fed raw
// bytes as a peer would send them, split at arbitrary points, while the owner's side reacts the
// way the transport does: responses with queued messages and trailers, trailers-only answers,
// resets, pings, GOAWAY, and a flush after every read.
// Input: byte 0 bit 0 picks the role (server: bytes from a client; client: a request is sent
// first, then bytes from a server), bit 1 prepends the client connection preface (server role),
// bytes 1-4 seed the split points and the owner's choices, the rest is the peer's bytes.
// `ShardRankFuzz http2 --write-seeds DIR` writes the seed corpus (real client and server byte streams).
import RPCCore
import RPCHTTP2
#if canImport(Glibc)
import Glibc
#endif

enum HTTP2Harness {
    struct Rng {
        var s: UInt32
        mutating func next() -> UInt32 { s ^= s << 13; s ^= s >> 17; s ^= s << 5; return s }
    }

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let requestHeaders: [(String, String)] = [
        (":method", "POST"), (":scheme", "http"), (":path", "/shardrank.v1.Shard/Lookup"), (":authority", "localhost"),
        ("content-type", "application/grpc"), ("te", "trailers"),
    ]

    static func checkInvariants(_ s: HTTP2Session) {
        require(s.queuedBytes >= 0, "queuedBytes is \(s.queuedBytes)")
        if s.queuedStreams == 0 { require(s.queuedBytes == 0, "\(s.queuedBytes) bytes queued on no stream") }
    }

    /// Returns false when the connection is over.
    static func flush(_ s: HTTP2Session, into out: inout [UInt8]) -> Bool {
        do throws(HTTP2Error) {
            try s.flush(into: { out.append(contentsOf: $0) }, messages: { m, r in m.withUnsafeBytes { out.append(contentsOf: $0[r]) } })
        } catch { return false }
        _ = s.takeEvents()
        checkInvariants(s)
        return true
    }

    static func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        guard let data, size >= 5 else { return 0 }
        let server = data[0] & 1 == 0
        var rng = Rng(s: UInt32(data[1]) | UInt32(data[2]) << 8 | UInt32(data[3]) << 16 | UInt32(data[4]) << 24)
        if rng.s == 0 { rng.s = 0x9E37_79B9 }
        var input = server && data[0] & 2 != 0 ? preface : []
        input += UnsafeBufferPointer(start: data + 5, count: size - 5)
        var config = HTTP2Configuration()
        config.maxHeaderListBytes = 1024
        config.maxConcurrentStreams = 8
        guard let s = try? HTTP2Session(role: server ? .server : .client, configuration: config) else { return 0 }
        var sink: [UInt8] = []
        var responded: Set<Int32> = []
        if !server {
            _ = try? s.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [0x0A, 0x01, 0x61]))
        }
        guard flush(s, into: &sink) else { return 0 }
        var i = 0
        while i < input.count {
            let r = rng.next()
            let n = min(input.count - i, r % 4 == 0 ? Int(r >> 4) % 2048 : Int(r >> 4) % 24 + 1)
            let received = input[i ..< i + n].withUnsafeBytes { p in Result { () throws(HTTP2Error) in try s.receive(p) } }
            guard case .success(let events) = received else {
                _ = flush(s, into: &sink)  // the GOAWAY nghttp2 queued
                return 0
            }
            i += n
            for e in events {
                switch e {
                case .headers(let id, _, _, _) where server && !responded.contains(id):
                    responded.insert(id)
                    switch rng.next() % 4 {
                    case 0:
                        try? s.submitResponse(stream: id, headers: [(":status", "200"), ("content-type", "application/grpc")])
                        s.enqueue(stream: id, FramedMessage(payload: [UInt8](repeating: 0x41, count: Int(rng.next() % 40_000))))
                        s.finish(stream: id, trailers: [("grpc-status", "0")])
                    case 1:
                        try? s.submitHeaders(stream: id, headers: [(":status", "200"), ("grpc-status", "12")], endStream: true)
                    case 2:
                        s.reset(stream: id, errorCode: 8)
                    default:
                        try? s.submitResponse(stream: id, headers: [(":status", "200")])
                        s.enqueue(stream: id, FramedMessage(payload: [1, 2, 3]))
                        if rng.next() & 1 == 0 { s.resetAfterEndStream(stream: id) }
                        s.finishWithoutTrailers(stream: id)
                    }
                case .streamClosed(let id, _):
                    require(!s.isStreamOpen(id), "stream \(id) reported closed but still open")
                default:
                    break
                }
            }
            switch rng.next() % 16 {
            case 0: try? s.submitPing()
            case 1: s.submitShutdownNotice()
            case 2: s.submitGoAway(errorCode: 0, debug: "fuzz")
            case 3 where !server: _ = try? s.submitRequest(headers: requestHeaders, body: FramedMessage(payload: []))
            default: break
            }
            guard flush(s, into: &sink) else { return 0 }
            if sink.count > 1 << 20 { sink.removeAll(keepingCapacity: true) }
        }
        return 0
    }

    /// The seed corpus: a client's request stream (for the server role) and a server's answer (for
    /// the client role), produced by two sessions talking to each other.
    static func writeSeeds(_ dir: String) {
        func write(_ name: String, _ bytes: [UInt8]) { bytes.withUnsafeBytes { writeScratch(dir + "/" + name, $0.baseAddress, $0.count) } }
        let client = try! HTTP2Session(role: .client)
        let server = try! HTTP2Session(role: .server)
        var c2s: [UInt8] = []
        var s2c: [UInt8] = []
        _ = try! client.submitRequest(headers: requestHeaders, body: FramedMessage(payload: [0x0A, 0x01, 0x61, 0x12, 0x02, 0x01, 0x02]))
        _ = flush(client, into: &c2s)
        let events = try! c2s.withUnsafeBytes { p in Result { () throws(HTTP2Error) in try server.receive(p) } }.get()
        for case .headers(let id, _, _, _) in events {
            try! server.submitResponse(stream: id, headers: [(":status", "200"), ("content-type", "application/grpc")])
            server.enqueue(stream: id, FramedMessage(payload: [0x08, 0x04]))
            server.finish(stream: id, trailers: [("grpc-status", "0")])
        }
        _ = flush(server, into: &s2c)
        // Byte 0: role (bit 0) and preface (bit 1); bytes 1-4: the split seed.
        write("server-request", [0, 1, 2, 3, 4] + c2s)
        write("server-request-nopreface", [2, 7, 0, 0, 0] + c2s.dropFirst(preface.count))
        write("client-response", [1, 9, 9, 9, 9] + s2c)
    }
}
