#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns received header bytes into Strings without decoding the same bytes again and again.
///
/// A client sends nearly the same header block on every call of a connection (`:method POST`,
/// `:path /pkg.Service/Method`, `content-type application/grpc`, `te trailers`, its user-agent):
/// names from a fixed table are matched by bytes, and for each of those names the last value is
/// kept and reused when the next one has the same bytes. Anything else is decoded as before.
/// Owned by one `HTTP2Session`, so by one thread.
struct HeaderStringCache {
    /// Header names whose values repeat from call to call on a connection.
    static let names: [String] = [
        ":method", ":scheme", ":path", ":authority", ":status", "content-type", "te", "user-agent",
        "grpc-accept-encoding", "accept-encoding", "grpc-encoding", "content-length", "grpc-status", "grpc-message",
    ]
    /// `names` as bytes, one after the other, and where each starts (plus the end): one buffer
    /// to scan, no array per name.
    private static let nameBlob: [UInt8] = names.flatMap { Array($0.utf8) }
    private static let nameStarts: [Int] = names.reduce(into: [0]) { $0.append($0.last! + $1.utf8.count) }

    /// Per name of `names`: the bytes and the String of the last value seen.
    private var lastValueBytes: [[UInt8]] = Array(repeating: [], count: HeaderStringCache.names.count)
    private var lastValue: [String] = Array(repeating: "", count: HeaderStringCache.names.count)

    /// Values longer than this are decoded every time (not worth keeping).
    static let maxCachedValue = 256

    mutating func strings(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> (name: String, value: String) {
        guard let i = Self.index(of: name) else {
            return (Self.decode(name), Self.decode(value))
        }
        let n = Self.names[i]
        if value.count > Self.maxCachedValue { return (n, Self.decode(value)) }
        let same = lastValueBytes[i].withUnsafeBytes { last in Self.equal(last, value) }
        if !same {
            lastValueBytes[i] = Array(value)
            lastValue[i] = Self.decode(value)
        }
        return (n, lastValue[i])
    }

    private static func index(of name: UnsafeRawBufferPointer) -> Int? {
        let n = name.count
        guard n >= 2, n <= 20 else { return nil }
        return nameBlob.withUnsafeBytes { blob in
            nameStarts.withUnsafeBufferPointer { starts in
                for i in 0 ..< starts.count - 1 where starts[i + 1] - starts[i] == n {
                    if equal(UnsafeRawBufferPointer(rebasing: blob[starts[i] ..< starts[i + 1]]), name) { return i }
                }
                return nil
            }
        }
    }

    /// Byte equality (`memcmp`), for header names and values.
    @inline(__always)
    private static func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        guard a.count > 0 else { return true }
        return memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0
    }

    private static func decode(_ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: bytes, as: UTF8.self)
    }
}
