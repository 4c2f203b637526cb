import Testing
@testable import RPCCore

@Suite struct FramingTests {
    static func frames(_ payloads: [[UInt8]]) -> [UInt8] {
        payloads.flatMap { FramedMessage(payload: $0).bytes }
    }

    @Test func prefixIsBigEndianLength() {
        let f = FramedMessage(payload: Array(repeating: 7, count: 300))
        #expect(Array(f.bytes.prefix(5)) == [0, 0, 0, 1, 44])
        #expect(f.payloadLength == 300)
        #expect(Array(f.payload) == Array(repeating: 7, count: 300))
    }

    /// Every way of splitting a stream of three messages (including an empty one) yields the
    /// same messages: split at every byte, and drip-fed one byte at a time.
    @Test func splitAtEveryByte() throws {
        let msgs: [[UInt8]] = [Array(0 ..< 10), [], Array(repeating: 0xAB, count: 70)]
        let stream = Self.frames(msgs)
        for cut in 0 ... stream.count {
            var d = GRPCMessageDeframer(maxMessageLength: 1000)
            var got: [[UInt8]] = []
            try d.consume(Array(stream[..<cut])) { got.append($0) }
            try d.consume(Array(stream[cut...])) { got.append($0) }
            #expect(got == msgs, "cut at \(cut)")
            #expect(d.isIdle)
        }
        var d = GRPCMessageDeframer(maxMessageLength: 1000)
        var got: [[UInt8]] = []
        for b in stream {
            try d.consume([b]) { got.append($0) }
        }
        #expect(got == msgs)
    }

    @Test func partialMessageIsNotIdle() throws {
        var d = GRPCMessageDeframer(maxMessageLength: 100)
        try d.consume([0, 0, 0]) { _ in Issue.record("no message expected") }
        #expect(!d.isIdle)
        try d.consume([0, 2, 1]) { _ in Issue.record("no message expected") }
        #expect(!d.isIdle)
    }

    @Test func oversizeRejectedFromThePrefixAlone() {
        var d = GRPCMessageDeframer(maxMessageLength: 4 << 20)
        // Only the 5-byte prefix of a 4 GiB - 1 message: rejected before any payload arrives.
        #expect(throws: RPCError(.resourceExhausted, "message of 4294967295 bytes exceeds the limit of 4194304 bytes")) {
            try d.consume([0, 0xFF, 0xFF, 0xFF, 0xFF]) { _ in }
        }
    }

    /// A prefix claiming 4 MiB reserves no 4 MiB: memory follows the bytes that arrive (issue 17,
    /// row 3: a peer sending prefixes only would pin 4 MiB per stream). The message still arrives whole.
    @Test func claimedLengthIsNotReservedUpFront() throws {
        var d = GRPCMessageDeframer(maxMessageLength: 4 << 20)
        try d.consume([0, 0, 0x40, 0, 0]) { _ in Issue.record("no message expected") }  // claims 4 MiB
        try d.consume([1, 2, 3]) { _ in Issue.record("no message expected") }
        #expect(d.bufferedCapacity < 256 << 10, "reserved \(d.bufferedCapacity) bytes for 3 received")
        var payload = [UInt8](repeating: 0x5A, count: (4 << 20) - 3)
        payload[payload.count - 1] = 0xEE
        var got: [UInt8] = []
        var i = 0
        while i < payload.count {
            let n = min(16 << 10, payload.count - i)
            try d.consume(Array(payload[i ..< i + n])) { got = $0 }
            if i + n < payload.count { #expect(d.bufferedCapacity <= 2 * (i + n + 3) + (64 << 10)) }
            i += n
        }
        #expect(got == [1, 2, 3] + payload)
        #expect(d.isIdle)
    }

    @Test func exactlyAtLimitAccepted() throws {
        var d = GRPCMessageDeframer(maxMessageLength: 16)
        var n = 0
        try d.consume(FramedMessage(payload: Array(repeating: 1, count: 16)).bytes) { n += $0.count }
        #expect(n == 16)
    }

    @Test func compressedFlagRejected() {
        var d = GRPCMessageDeframer(maxMessageLength: 100)
        #expect(throws: RPCError.self) { try d.consume([1, 0, 0, 0, 1, 9]) { _ in } }
        do { try d.consume([1, 0, 0, 0, 1, 9]) { _ in } } catch { #expect(error.code == .internal && error.message.contains("compressed flag")) }
        var d2 = GRPCMessageDeframer(maxMessageLength: 100)
        do { try d2.consume([7, 0, 0, 0, 1, 9]) { _ in } } catch { #expect(error.code == .internal) }
    }

    @Test func fillWritesInPlace() {
        let f = FramedMessage(payloadLength: 4) { dst in
            for i in 0 ..< 4 { dst[i] = UInt8(i + 1) }
        }
        #expect(f.bytes == [0, 0, 0, 0, 4, 1, 2, 3, 4])
    }
}
