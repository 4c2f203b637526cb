internal import CNGHTTP2

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
            var flags = noCopy && name == name.lowercased() ? UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue)
                              : UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)
            if Self.neverIndexed(name) { flags |= UInt8(NGHTTP2_NV_FLAG_NO_INDEX.rawValue) }
            nv[i] = nghttp2_nv(name: np.assumingMemoryBound(to: UInt8.self), value: vp.assumingMemoryBound(to: UInt8.self),
                               namelen: n, valuelen: v, flags: flags)
        }
    }

    /// Headers whose value changes from call to call (a deadline, a request or trace id):
    /// sent as literals that HPACK never indexes (RFC 7541 §6.2.3), so they do not churn the
    /// dynamic table and evict the constant headers (path, content-type, user-agent), which
    /// then stay one-byte references on every call.
    static func neverIndexed(_ name: String) -> Bool {
        switch name {
        case "grpc-timeout", "x-request-id", "traceparent", "tracestate", "grpc-message": return true
        default: return false
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
