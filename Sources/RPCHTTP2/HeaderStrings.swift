internal import CNGHTTP2

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

/// A header list encoded once for nghttp2 (names and values in one allocation, the `nghttp2_nv`
/// array built), reused for every response that sends it: the usual `:status 200` +
/// `content-type`, the OK trailers.
///
/// `PreparedHeaders(constant:)` also tells nghttp2 not to copy the names and values
/// (`NGHTTP2_NV_FLAG_NO_COPY_*`), so it must outlive every frame it was submitted for: only for
/// process-lifetime constants (`static let`). Its HPACK encoder copies what it keeps in its table.
public final class PreparedHeaders: @unchecked Sendable {
    // Immutable after init: names and values (lower-case names), NUL-separated, one allocation.
    private let storage: UnsafeMutableRawBufferPointer
    private let nv: UnsafeMutableBufferPointer<nghttp2_nv>
    public let pairs: [(String, String)]

    /// Headers nghttp2 copies when they are submitted: any lifetime.
    public convenience init(_ headers: [(String, String)]) { self.init(headers, noCopy: false) }

    /// A process-lifetime constant (keep it in a `static let`): nghttp2 does not copy it.
    public convenience init(constant headers: [(String, String)]) { self.init(headers, noCopy: true) }

    private init(_ headers: [(String, String)], noCopy: Bool) {
        pairs = headers
        let total = headers.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count + 2 }
        storage = .allocate(byteCount: max(1, total), alignment: 1)
        nv = .allocate(capacity: max(1, headers.count))
        var offset = 0
        for (i, (name, value)) in headers.enumerated() {
            let n = name.utf8.count, v = value.utf8.count
            let np = storage.baseAddress! + offset
            UnsafeMutableRawBufferPointer(start: np, count: n).copyBytes(from: name.utf8)
            (np + n).storeBytes(of: 0, as: UInt8.self)
            let vp = np + n + 1
            UnsafeMutableRawBufferPointer(start: vp, count: v).copyBytes(from: value.utf8)
            (vp + v).storeBytes(of: 0, as: UInt8.self)
            offset += n + v + 2
            // Only pre-lowered names may skip nghttp2's copy (it lower-cases what it copies).
            let flags = noCopy && name == name.lowercased() ? UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue)
                              : UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)
            nv[i] = nghttp2_nv(name: np.assumingMemoryBound(to: UInt8.self), value: vp.assumingMemoryBound(to: UInt8.self),
                               namelen: n, valuelen: v, flags: flags)
        }
    }

    deinit {
        storage.deallocate()
        nv.deallocate()
    }

    var count: Int { pairs.count }

    func withNV<R>(_ body: (UnsafeMutablePointer<nghttp2_nv>, Int) -> R) -> R {
        body(nv.baseAddress!, pairs.count)
    }
}
