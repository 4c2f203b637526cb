/// Sets of 64-bit ids stored and sent as **delta-varint**: the ids sorted ascending, unique, then
/// the LEB128 varint of the first id followed by the LEB128 varint of each gap to the previous id
/// (every gap ≥ 1). The one encoding of a user's history in the profile table
/// (docs/table-format.md), of `UserProfile.history` and of `SearchRequest.exclude_sorted`
/// (docs/api.md).
///
/// A varint is at most 10 bytes, 7 bits per byte, low bits first, the high bit set on every byte
/// but the last; bits beyond 64 are an error, so is a stream that ends inside a varint, a gap of 0
/// (not unique), or ids past `UInt64.max`. Decoding never reads outside the given bytes.
public enum DeltaVarint {
    /// Why bytes are not a delta-varint id set. `offset` is the byte where the problem starts.
    public enum DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
        /// The bytes end inside a varint.
        case truncated(offset: Int)
        /// A varint longer than 10 bytes or with bits beyond 64.
        case overlong(offset: Int)
        /// A gap of 0: the id repeats the previous one (the ids must be unique and ascending).
        case notIncreasing(offset: Int)
        /// The id would exceed `UInt64.max`.
        case overflow(offset: Int)

        public var description: String {
            switch self {
            case .truncated(let o): "the bytes end inside the varint starting at byte \(o)"
            case .overlong(let o): "the varint at byte \(o) is longer than 10 bytes or exceeds 64 bits"
            case .notIncreasing(let o): "the gap at byte \(o) is 0 (ids must be unique and ascending)"
            case .overflow(let o): "the id ending at byte \(o) exceeds 2^64 - 1"
            }
        }
    }

    /// Bytes of one LEB128 varint of `v`.
    @inlinable
    public static func size(of v: UInt64) -> Int {
        // 1 + ⌊(bits − 1) / 7⌋, with 0 taking one byte.
        let bits = 64 - (v | 1).leadingZeroBitCount
        return (bits + 6) / 7
    }

    /// Appends the encoding of `ids` (ascending, unique: a precondition) to `out`.
    public static func encode(_ ids: UnsafeBufferPointer<UInt64>, into out: inout [UInt8]) {
        guard !ids.isEmpty else { return }
        var bytes = 0
        var prev: UInt64 = 0
        for (i, id) in ids.enumerated() {
            precondition(i == 0 || id > prev, "delta-varint ids must be ascending and unique")
            bytes += size(of: i == 0 ? id : id &- prev)
            prev = id
        }
        out.reserveCapacity(out.count + bytes)
        prev = 0
        for (i, id) in ids.enumerated() {
            var v = i == 0 ? id : id &- prev
            while v >= 0x80 {
                out.append(UInt8(truncatingIfNeeded: v) | 0x80)
                v >>= 7
            }
            out.append(UInt8(v))
            prev = id
        }
    }

    /// The encoding of `ids` (ascending, unique: a precondition).
    public static func encode(_ ids: [UInt64]) -> [UInt8] {
        var out: [UInt8] = []
        ids.withUnsafeBufferPointer { encode($0, into: &out) }
        return out
    }

    /// Walks `bytes`, calling `body` with each id in order; stops at the first malformed varint.
    /// Never reads outside `bytes`.
    @inlinable
    public static func forEach(_ bytes: UnsafeRawBufferPointer,
                               _ body: (UInt64) throws(DecodeError) -> Void) throws(DecodeError) {
        guard let base = bytes.baseAddress else { return }
        let p = base.assumingMemoryBound(to: UInt8.self)
        let end = bytes.count
        var i = 0
        var prev: UInt64 = 0
        var first = true
        while i < end {
            let start = i
            var v: UInt64
            let b0 = p[i]
            i += 1
            if b0 < 0x80 {
                v = UInt64(b0)
            } else {
                v = UInt64(b0 & 0x7F)
                var shift: UInt64 = 7
                while true {
                    guard i < end else { throw .truncated(offset: start) }
                    let b = p[i]
                    i += 1
                    // The 10th byte may carry only bit 63.
                    if shift == 63 && b > 1 { throw .overlong(offset: start) }
                    v |= UInt64(b & 0x7F) << shift
                    if b < 0x80 { break }
                    shift += 7
                    if shift > 63 { throw .overlong(offset: start) }
                }
            }
            let id: UInt64
            if first {
                id = v
                first = false
            } else {
                guard v != 0 else { throw .notIncreasing(offset: start) }
                let (sum, carry) = prev.addingReportingOverflow(v)
                guard !carry else { throw .overflow(offset: i - 1) }
                id = sum
            }
            try body(id)
            prev = id
        }
    }

    /// Checks `bytes` and returns how many ids they hold.
    public static func validate(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> Int {
        var n = 0
        try forEach(bytes) { _ in n += 1 }
        return n
    }

    /// The ids of `bytes`, appended to `out` (ascending, unique).
    public static func decode(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt64]) throws(DecodeError) {
        try forEach(bytes) { out.append($0) }
    }

    /// The ids of `bytes`.
    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> [UInt64] {
        var out: [UInt64] = []
        let result: Result<Void, DecodeError> = bytes.withUnsafeBytes { b in
            out.reserveCapacity(terminatorCount(b))
            do throws(DecodeError) { try decode(b, into: &out) } catch { return .failure(error) }
            return .success(())
        }
        try result.get()
        return out
    }

    /// The number of bytes without the continuation bit: the id count of a *valid* stream
    /// (8 bytes at a time).
    public static func terminatorCount(_ bytes: UnsafeRawBufferPointer) -> Int {
        guard let base = bytes.baseAddress else { return 0 }
        var count = 0, i = 0
        while i + 8 <= bytes.count {
            count &+= (~base.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080).nonzeroBitCount
            i += 8
        }
        while i < bytes.count {
            count &+= Int((base.load(fromByteOffset: i, as: UInt8.self) >> 7) ^ 1)
            i += 1
        }
        return count
    }
}

/// A set of ids held as its delta-varint bytes (`DeltaVarint`): compact (1–3 bytes per id for
/// a catalog's ids) and ready to send as is. Valid by construction: every initializer either
/// encodes, or checks the bytes, except `init(trustedBytes:count:)` for bytes already checked.
public struct PackedIDs: Sendable, Hashable {
    /// The delta-varint bytes.
    public let bytes: [UInt8]
    /// How many ids they hold.
    public let count: Int

    public var isEmpty: Bool { count == 0 }

    /// The empty set.
    public init() {
        bytes = []
        count = 0
    }

    /// Packs ids that are already ascending and unique (a precondition).
    public init(sortedUnique ids: [UInt64]) {
        bytes = DeltaVarint.encode(ids)
        count = ids.count
    }

    /// Packs any ids: sorted and deduplicated first.
    public init(_ ids: some Sequence<UInt64>) {
        self.init(sortedUnique: SortedIDs.sortedUnique(Array(ids)))
    }

    /// Checks `bytes`.
    /// - Throws: `DeltaVarint.DecodeError` when they are not a delta-varint id set.
    public init(validating bytes: [UInt8]) throws(DeltaVarint.DecodeError) {
        let result: Result<Int, DeltaVarint.DecodeError> = bytes.withUnsafeBytes { b in
            do throws(DeltaVarint.DecodeError) { return .success(try DeltaVarint.validate(b)) } catch { return .failure(error) }
        }
        count = try result.get()
        self.bytes = bytes
    }

    /// Bytes already checked (e.g. a verified table file's section) holding `count` ids.
    public init(trustedBytes bytes: [UInt8], count: Int) {
        self.bytes = bytes
        self.count = count
    }

    /// The ids, ascending.
    public func decoded() -> [UInt64] {
        var out: [UInt64] = []
        out.reserveCapacity(count)
        decode(into: &out)
        return out
    }

    /// Appends the ids, ascending, to `out`.
    public func decode(into out: inout [UInt64]) {
        bytes.withUnsafeBytes { b in
            // Valid by construction: cannot fail.
            do throws(DeltaVarint.DecodeError) { try DeltaVarint.decode(b, into: &out) } catch { preconditionFailure("\(error)") }
        }
    }
}

/// Helpers for ascending, duplicate-free id arrays.
public enum SortedIDs {
    /// `ids` ascending without duplicates (no work when they already are).
    public static func sortedUnique(_ ids: [UInt64]) -> [UInt64] {
        if isSortedUnique(ids) { return ids }
        var s = ids
        s.sort()
        var w = 1
        for i in 1 ..< s.count where s[i] != s[w - 1] {
            s[w] = s[i]
            w += 1
        }
        s.removeLast(s.count - w)
        return s
    }

    public static func isSortedUnique(_ ids: [UInt64]) -> Bool {
        var i = 1
        while i < ids.count {
            if ids[i] <= ids[i - 1] { return false }
            i += 1
        }
        return true
    }

    /// The union of two ascending, duplicate-free arrays, ascending, duplicate-free.
    public static func union(_ a: [UInt64], _ b: [UInt64]) -> [UInt64] {
        if a.isEmpty { return b }
        if b.isEmpty { return a }
        var out: [UInt64] = []
        out.reserveCapacity(a.count + b.count)
        var i = 0, j = 0
        while i < a.count && j < b.count {
            let x = a[i], y = b[j]
            if x < y { out.append(x); i += 1 } else if y < x { out.append(y); j += 1 } else { out.append(x); i += 1; j += 1 }
        }
        out.append(contentsOf: a[i...])
        out.append(contentsOf: b[j...])
        return out
    }

    /// Whether the ascending array `sorted` holds `id` (binary search).
    @inlinable
    public static func contains(_ sorted: [UInt64], _ id: UInt64) -> Bool {
        var lo = 0, hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if sorted[mid] < id { lo = mid + 1 } else { hi = mid }
        }
        return lo < sorted.count && sorted[lo] == id
    }
}
