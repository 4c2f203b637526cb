// libFuzzer harness: the gRPC message deframer (RPCCore.GRPCMessageDeframer) fed the same bytes
// whole and in arbitrary splits. Input: byte 0 picks the message limit, bytes 1-4 seed the split
// points, the rest is the DATA stream. Checks that every split yields the same messages and the
// same error as the whole buffer and as an independent reading of the framing, and that the
// buffer reserved for a partial message follows the bytes received, not the length claimed.
@testable import RPCCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum DeframerHarness {
    enum Outcome: Equatable {
        case ok(idle: Bool)
        case error(RPCStatusCode)
    }

    /// The framing read directly from the spec: flag byte, 4-byte big-endian length, payload.
    static func reference(_ b: ArraySlice<UInt8>, limit: Int) -> ([[UInt8]], Outcome) {
        var out: [[UInt8]] = []
        var i = b.startIndex
        while i < b.endIndex {
            guard b.endIndex - i >= 5 else { return (out, .ok(idle: false)) }
            let flag = b[i]
            let len = Int(b[i + 1]) << 24 | Int(b[i + 2]) << 16 | Int(b[i + 3]) << 8 | Int(b[i + 4])
            if flag != 0 { return (out, .error(.internal)) }
            if len > limit { return (out, .error(.resourceExhausted)) }
            guard b.endIndex - (i + 5) >= len else { return (out, .ok(idle: false)) }
            out.append(Array(b[(i + 5) ..< (i + 5 + len)]))
            i += 5 + len
        }
        return (out, .ok(idle: true))
    }

    static func run(_ stream: ArraySlice<UInt8>, limit: Int, splits: inout UInt32, whole: Bool) -> ([[UInt8]], Outcome) {
        var d = GRPCMessageDeframer(maxMessageLength: limit)
        var out: [[UInt8]] = []
        var i = stream.startIndex
        var fed = 0
        while i < stream.endIndex {
            var n = stream.endIndex - i
            if !whole {
                // xorshift32: mostly short chunks (the interesting boundaries), sometimes long ones.
                splits ^= splits << 13; splits ^= splits >> 17; splits ^= splits << 5
                let r = Int(splits % 64)
                n = min(n, r < 48 ? r % 8 : r < 60 ? r : Int(splits >> 8) % 4096)
            }
            let chunk = Array(stream[i ..< i + n])
            i += n
            fed += n
            do throws(RPCError) {
                try d.consume(chunk) { (m) throws(RPCError) in out.append(m) }
            } catch {
                return (out, .error(error.code))
            }
            // What is reserved for a partial message grows with what arrived (64 KiB at first).
            require(d.bufferedCapacity <= 2 * max(GRPCMessageDeframer.initialReserve, fed) + 4096,
                         "deframer reserved \(d.bufferedCapacity) bytes after \(fed) bytes")
        }
        return (out, .ok(idle: d.isIdle))
    }

    static func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        guard let data, size >= 5 else { return 0 }
        let bytes = Array(UnsafeBufferPointer(start: data, count: size))
        let limits = [0, 1, 7, 300, 4 << 20]
        let limit = limits[Int(bytes[0]) % limits.count]
        var seed = UInt32(bytes[1]) | UInt32(bytes[2]) << 8 | UInt32(bytes[3]) << 16 | UInt32(bytes[4]) << 24
        if seed == 0 { seed = 0x9E37_79B9 }
        let stream = bytes[5...]
        let expected = reference(stream, limit: limit)
        var unused: UInt32 = 0
        let whole = run(stream, limit: limit, splits: &unused, whole: true)
        require(whole.0 == expected.0 && whole.1 == expected.1, "whole buffer: \(whole.1) vs reference \(expected.1)")
        for _ in 0 ..< 3 {
            let split = run(stream, limit: limit, splits: &seed, whole: false)
            require(split.0 == expected.0 && split.1 == expected.1, "split: \(split.1) vs reference \(expected.1)")
        }
        return 0
    }

    /// Seeds: one message, two messages split across the prefix, an empty message, a compressed
    /// flag, a length over every limit but the largest.
    static func writeSeeds(_ dir: String) throws {
        let seeds: [(String, [UInt8])] = [
            ("one", [4, 1, 0, 0, 0] + [0, 0, 0, 0, 3, 0x0A, 0x01, 0x61]),
            ("two", [1, 9, 8, 7, 6] + [0, 0, 0, 0, 2, 0x08, 0x01] + [0, 0, 0, 0, 0] + [0, 0, 0, 1, 0x2C] + [UInt8](repeating: 7, count: 300)),
            ("compressed", [3, 5, 5, 5, 5] + [1, 0, 0, 0, 1, 0xFF]),
            ("partial", [4, 2, 2, 2, 2] + [0, 0, 1, 0, 0, 1, 2, 3]),
        ]
        for (name, bytes) in seeds {
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + name))
        }
    }
}
