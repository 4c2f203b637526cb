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
    private static let nameBytes: [[UInt8]] = names.map { Array($0.utf8) }

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
        let same = lastValueBytes[i].withUnsafeBytes { last in last.count == value.count && last.elementsEqual(value) }
        if !same {
            lastValueBytes[i] = Array(value)
            lastValue[i] = Self.decode(value)
        }
        return (n, lastValue[i])
    }

    private static func index(of name: UnsafeRawBufferPointer) -> Int? {
        let n = name.count
        guard n >= 2, n <= 20 else { return nil }
        let first = name[0], last = name[n - 1]
        for i in 0 ..< nameBytes.count {
            let match = nameBytes[i].withUnsafeBytes { b in
                guard b.count == n, b[0] == first, b[n - 1] == last else { return false }
                for k in 1 ..< n - 1 where b[k] != name[k] { return false }
                return true
            }
            if match { return i }
        }
        return nil
    }

    private static func decode(_ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: bytes, as: UTF8.self)
    }
}
