public import RPCCore

extension LookupResponse {
    /// What a caller that does not need the rows themselves (the load driver) checks of a
    /// Lookup answer, read straight from the encoded message without copying the payload.
    public struct Summary: Sendable, Hashable {
        public var dim: UInt32 = 0
        public var dtype: DType = .unspecified
        /// Bytes of `vectors` and `scales`.
        public var vectorBytes = 0
        public var scaleBytes = 0
        public var missingCount = 0
        public var version: UInt64 = 0
        public var shard: UInt32 = 0
        public var shardCount: UInt32 = 0

        /// Found rows (`vectorBytes / (dim * element size)`), 0 when dim or dtype is unset.
        public var rows: Int {
            let rowBytes = Int(dim) * dtype.elementSize
            return rowBytes > 0 ? vectorBytes / rowBytes : 0
        }
    }

    /// Walks the protobuf wire format of an encoded `LookupResponse` (every field, unknown ones
    /// skipped as protobuf requires) and returns its summary. The same checks as `decode` that
    /// do not need the payload: well-formed tags, varints and lengths, a known dtype, `vectors`
    /// a whole number of rows and, for int8, one 4-byte scale per row.
    /// - Throws: INTERNAL naming the problem when the message is malformed.
    public static func summary(_ bytes: [UInt8]) throws(RPCError) -> Summary {
        var s = Summary()
        var dtypeRaw: UInt64 = 0
        let ok: Bool = bytes.withUnsafeBufferPointer { b in
            var i = 0
            let n = b.count
            func varint() -> UInt64? {
                var v: UInt64 = 0, shift: UInt64 = 0
                while i < n && shift < 64 {
                    let byte = b[i]; i += 1
                    v |= UInt64(byte & 0x7f) << shift
                    if byte & 0x80 == 0 { return v }
                    shift += 7
                }
                return nil
            }
            while i < n {
                // A tag is at most 5 bytes (field numbers fit 32 bits), as protobuf-c reads it.
                let keyStart = i
                guard let key = varint(), key >> 3 >= 1, i - keyStart <= 5 else { return false }
                let field = key >> 3, wire = key & 7
                // A known field with another wire type is malformed (protobuf-c refuses it):
                // fields 3 and 6 are bytes, 4 repeated varints (packed or not), the rest varints.
                let known = field >= 1 && field <= 8
                switch wire {
                case 0:
                    guard field != 3 && field != 6 else { return false }
                    guard let v = varint() else { return false }
                    switch field {
                    case 1: s.dim = UInt32(truncatingIfNeeded: v)
                    case 2: dtypeRaw = v
                    case 4: s.missingCount += 1
                    case 5: s.version = v
                    case 7: s.shard = UInt32(truncatingIfNeeded: v)
                    case 8: s.shardCount = UInt32(truncatingIfNeeded: v)
                    default: break
                    }
                case 2:
                    guard !known || field == 3 || field == 4 || field == 6 else { return false }
                    // A length prefix is at most 5 bytes, as protobuf-c reads it (it refuses
                    // a longer one, even an overlong encoding of a small value).
                    let lenStart = i
                    guard let len = varint(), i - lenStart <= 5, len <= UInt64(n - i) else { return false }
                    let end = i + Int(len)
                    switch field {
                    // A singular bytes field given twice: the last one counts, as in protobuf-c.
                    case 3: s.vectorBytes = Int(len)
                    case 6: s.scaleBytes = Int(len)
                    case 4: // packed missing ids
                        while i < end { guard varint() != nil, i <= end else { return false }; s.missingCount += 1 }
                    default: break
                    }
                    i = end
                case 1: guard !known, n - i >= 8 else { return false }; i += 8
                case 5: guard !known, n - i >= 4 else { return false }; i += 4
                default: return false
                }
            }
            return true
        }
        guard ok else { throw RPCError(.internal, "malformed shardrank.v1.LookupResponse (\(bytes.count) bytes)") }
        // protobuf-c reads an enum varint's low 32 bits.
        guard let dtype = DType(rawValue: UInt32(truncatingIfNeeded: dtypeRaw)) else {
            throw RPCError(.internal, "LookupResponse.dtype: unknown value \(dtypeRaw)")
        }
        s.dtype = dtype
        let rowBytes = Int(s.dim) * dtype.elementSize
        if s.vectorBytes > 0 && (rowBytes == 0 || s.vectorBytes % rowBytes != 0) {
            throw RPCError(.internal, "LookupResponse: \(s.vectorBytes) vector bytes are not whole rows of dim \(s.dim) \(dtype)")
        }
        if dtype == .int8 && s.scaleBytes != 4 * s.rows {
            throw RPCError(.internal, "LookupResponse: \(s.scaleBytes) scale bytes for \(s.rows) int8 rows (want 4 per row)")
        }
        return s
    }
}
