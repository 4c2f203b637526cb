internal import CProtobufC
internal import CShardRankProto
public import RPCCore
public import ShardRankIDs

// The hand-written parts of the `shardrank.v1.Shard` messages: the value types, their decode and
// encode are generated from proto/ (Generated/ShardrankV1Shard.swift, scripts/gen-proto). What
// stays here: Lookup's two hot paths (the request's direct wire walk, fuzzed against protobuf-c
// by WireTests, and the response encode that writes the rows straight into the framed buffer;
// BENCHMARKS.md, issue 2, "Runs D and E": 0.85× server CPU per 256-id Lookup with the direct
// decode), and helpers over the values.

extension LookupRequest {
    /// A direct walk of the wire format for the shape clients send — fields 1 (table), 2 (ids,
    /// packed or not), 3 (dtype), 4 (version), in any order and repeated as protobuf allows (last
    /// scalar wins, ids concatenate) — that returns exactly what protobuf-c would, or nil for
    /// anything else (an unknown field, a truncated or over-long varint, a table name with a NUL
    /// byte, a dtype beyond 32 bits), which then goes to protobuf-c. The 256 packed ids of a
    /// typical Lookup decode here without protobuf-c's two passes and temporary array.
    static func decodeCanonical(_ bytes: [UInt8]) -> LookupRequest? {
        bytes.withUnsafeBufferPointer { b -> LookupRequest? in
            var c = WireCursor(b)
            var table = ""
            var ids: [UInt64] = []
            var dtype: UInt64 = 0
            var version: UInt64 = 0
            while c.i < c.end {
                // The keys below are one byte; a longer encoding of one (protobuf-c reads tags of
                // up to 5 bytes) goes to protobuf-c.
                let keyStart = c.i
                guard let key = c.varint(), c.i - keyStart == 1 else { return nil }
                switch key {
                case 0x0A:  // 1: table, length-delimited
                    guard let s = c.lengthDelimited() else { return nil }
                    if s.contains(0) { return nil }  // protobuf-c's C string would end there
                    table = String(decoding: s, as: UTF8.self)
                case 0x12:  // 2: ids, packed
                    guard let s = c.lengthDelimited() else { return nil }
                    guard let decoded = WireCursor.packedVarints(s, count: WireCursor.varintCount(s)) else { return nil }
                    // The usual case is one packed field: its array becomes `ids`, no copy.
                    if ids.isEmpty { ids = decoded } else { ids += decoded }
                case 0x10:  // 2: one id, unpacked
                    guard let v = c.varint() else { return nil }
                    ids.append(v)
                case 0x18:  // 3: dtype
                    guard let v = c.varint(), v <= UInt64(Int32.max) else { return nil }
                    dtype = v
                case 0x20:  // 4: version
                    guard let v = c.varint() else { return nil }
                    version = v
                default:
                    return nil
                }
            }
            guard let d = DType(rawValue: UInt32(dtype)) else { return nil }  // protobuf-c path names the error
            return LookupRequest(table: table, ids: ids, dtype: d, version: version)
        }
    }
}

extension LookupResponse {
    /// Encodes the response with its rows copied once, straight into the framed buffer.
    public func encoded() -> FramedMessage {
        vectors.withUnsafeBytes { v in
            LookupResponse.encode(dim: dim, dtype: dtype, missingIDs: missingIDs, version: version, scales: scales,
                                  shard: shard, shardCount: shardCount, vectorBytes: v.count) { dst in
                if v.count > 0 { dst.copyMemory(from: v) }
            }
        }
    }

    /// Encodes a response whose `vectors` field (`vectorBytes` long) is written in place by
    /// `fillVectors` directly into the framed buffer: the gather is the only copy of the rows.
    /// The largest `vectors` payload one Lookup answer may carry (64 MiB). The id count alone does
    /// not bound it (100,000 ids of a 16,384-dim f32 table are 6.5 GB): beyond it the call is
    /// RESOURCE_EXHAUSTED, decided before anything is allocated.
    public static let maxVectorBytes = 64 << 20

    /// Servers call this before building an answer of `vectorBytes` bytes of rows.
    /// - Throws: `RPCError(.resourceExhausted)` when it exceeds `maxVectorBytes`.
    public static func checkSize(vectorBytes: Int, dim: Int, dtype: DType) throws(RPCError) {
        guard vectorBytes <= maxVectorBytes else {
            throw RPCError(.resourceExhausted, "a Lookup answer of \(vectorBytes) bytes of rows exceeds the limit of \(maxVectorBytes) "
                           + "(\(dim) dims of \(dtype)): ask for fewer ids, or for dtype f16 or int8")
        }
    }

    public static func encode(dim: UInt32, dtype: DType, missingIDs: [UInt64], version: UInt64, scales: [UInt8],
                              shard: UInt32, shardCount: UInt32, vectorBytes: Int,
                              fillVectors: (UnsafeMutableRawBufferPointer) -> Void) -> FramedMessage {
        var m = Shardrank__V1__LookupResponse()
        shardrank__v1__lookup_response__init(&m)
        var missing = missingIDs
        var sc = scales
        return missing.withUnsafeMutableBufferPointer { mp in
            sc.withUnsafeMutableBufferPointer { sp in
                m.dim = dim
                m.dtype = Shardrank__V1__DType(rawValue: dtype.rawValue)
                m.n_missing_ids = mp.count
                m.missing_ids = mp.baseAddress
                m.version = version
                m.scales = ProtobufCBinaryData(len: sp.count, data: sp.baseAddress)
                m.shard = shard
                m.shard_count = shardCount
                return ProtoC.pack(&m, appendingBytesField: 3, length: vectorBytes, fill: fillVectors)
            }
        }
    }
}

extension SearchRequest {
    public var queryCount: Int { dim == 0 ? 0 : queries.count / Int(dim) }

    /// How many ids the request excludes, counting an id in both fields twice (an upper bound
    /// that needs no decoding).
    public var excludedCountBound: Int { excludeIDs.count + excludeSorted.count }

    /// Every excluded id (`exclude_ids` ∪ `exclude_sorted`), ascending and unique: one decode
    /// per request, ready for the kernels' binary searches.
    public func allExcludedIDs() -> [UInt64] {
        if excludeIDs.isEmpty { return excludeSorted.decoded() }
        let listed = SortedIDs.sortedUnique(excludeIDs)
        return excludeSorted.isEmpty ? listed : SortedIDs.union(listed, excludeSorted.decoded())
    }

    /// The checks of a decoded request that protobuf-c does not make.
    func validateDecoded() throws(RPCError) {
        guard dim > 0 else { throw RPCError(.invalidArgument, "SearchRequest.dim must be > 0") }
        guard queries.count % Int(dim) == 0 else {
            throw RPCError(.invalidArgument, "SearchRequest.queries has \(queries.count * 4) bytes, not a multiple of dim \(dim) × 4")
        }
    }
}

extension IdsRequest {
    /// The page size a `limit` of 0 asks for, and the most one call may ask for.
    public static let defaultLimit: UInt32 = 65_536
    public static let maxLimit: UInt32 = 262_144

    /// The page size asked for (`limit`, or `defaultLimit` for 0).
    public var pageSize: Int { Int(limit == 0 ? Self.defaultLimit : limit) }
}

extension LookupResponse {
    /// The found rows as f32, row-major (`found × dim` floats): f16 widened, int8 × its row scale.
    public func floatRows() -> [Float] {
        let dim = Int(self.dim)
        guard dim > 0 else { return [] }
        switch dtype {
        case .f32, .unspecified:
            return vectors.withUnsafeBytes { b in
                (0 ..< b.count / 4).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
        case .f16:
            return vectors.withUnsafeBytes { b in
                (0 ..< b.count / 2).map { Float(Float16(bitPattern: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)))) }
            }
        case .int8:
            let n = vectors.count / dim
            var out = [Float](repeating: 0, count: n * dim)
            vectors.withUnsafeBytes { v in
                scales.withUnsafeBytes { s in
                    for i in 0 ..< n {
                        let scale = Float(bitPattern: UInt32(littleEndian: s.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                        for j in 0 ..< dim { out[i * dim + j] = Float(v.load(fromByteOffset: i * dim + j, as: Int8.self)) * scale }
                    }
                }
            }
            return out
        }
    }
}

/// Reads protobuf wire-format primitives from a buffer (the fast paths that bypass protobuf-c).
struct WireCursor {
    let b: UnsafeBufferPointer<UInt8>
    var i = 0
    let end: Int

    init(_ b: UnsafeBufferPointer<UInt8>) {
        self.b = b
        end = b.count
    }

    /// A varint as protobuf-c reads it (at most 10 bytes), or nil when it is truncated or has
    /// bits past 64 (the caller then leaves the message to protobuf-c).
    @inline(__always)
    mutating func varint() -> UInt64? {
        guard i < end else { return nil }
        let first = b[i]
        if first < 0x80 { i += 1; return UInt64(first) }
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while i < end {
            let byte = b[i]
            i += 1
            if shift == 63 && byte > 1 { return nil }
            v |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return v }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    /// How many varints `s` holds: its bytes without the continuation bit, counted 8 at a time.
    static func varintCount(_ s: UnsafeBufferPointer<UInt8>) -> Int {
        guard let base = s.baseAddress else { return 0 }
        let raw = UnsafeRawPointer(base)
        var count = 0, i = 0
        while i + 8 <= s.count {
            count &+= (~raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080).nonzeroBitCount
            i += 8
        }
        while i < s.count {
            count &+= Int((base[i] >> 7) ^ 1)
            i += 1
        }
        return count
    }

    /// The varints of a packed field holding `count` of them (its bytes without the continuation
    /// bit), decoded as `varint()` does into a new array; nil when one is truncated or has bits
    /// past 64. Each decoded varint consumes one terminating byte, so at most `count` are written.
    static func packedVarints(_ s: UnsafeBufferPointer<UInt8>, count: Int) -> [UInt64]? {
        guard let base = s.baseAddress, count > 0 else { return s.isEmpty ? [] : nil }
        var ok = true
        let out = [UInt64](unsafeUninitializedCapacity: count) { dst, initialized in
            var p = base
            let end = base + s.count
            var k = 0
            decoding: while p < end {
                let first = p.pointee
                if first < 0x80 {
                    dst[k] = UInt64(first)
                    k += 1
                    p += 1
                    continue
                }
                // Ids below 2^21 (the usual catalog) take 2 or 3 bytes: unrolled.
                if end - p >= 3 {
                    let second = p[1], third = p[2]
                    if second < 0x80 {
                        dst[k] = UInt64(first & 0x7F) | UInt64(second) << 7
                        k += 1
                        p += 2
                        continue
                    }
                    if third < 0x80 {
                        dst[k] = UInt64(first & 0x7F) | UInt64(second & 0x7F) << 7 | UInt64(third) << 14
                        k += 1
                        p += 3
                        continue
                    }
                }
                p += 1
                var v = UInt64(first & 0x7F)
                var shift: UInt64 = 7
                while p < end {
                    let byte = p.pointee
                    p += 1
                    if shift == 63 && byte > 1 { break }
                    v |= UInt64(byte & 0x7F) << shift
                    if byte & 0x80 == 0 {
                        dst[k] = v
                        k += 1
                        continue decoding
                    }
                    shift += 7
                    if shift > 63 { break }
                }
                ok = false  // truncated, or too long
                break
            }
            initialized = k
        }
        return ok ? out : nil
    }

    /// A length prefix and the bytes it covers, or nil when they run past the end or the prefix
    /// is longer than the 5 bytes protobuf-c reads (which refuses such a message).
    @inline(__always)
    mutating func lengthDelimited() -> UnsafeBufferPointer<UInt8>? {
        let start = i
        guard let len = varint(), i - start <= 5, len <= UInt64(end - i) else { return nil }
        let s = UnsafeBufferPointer(rebasing: b[i ..< i + Int(len)])
        i += Int(len)
        return s
    }
}
