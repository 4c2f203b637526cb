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
            var c = WireCursor(b)  // the module's one hand-written wire reader (fuzzed against protobuf-c)
            while c.i < c.end {
                guard let key = c.varint(), key >> 3 >= 1 else { return false }
                let field = key >> 3, wire = key & 7
                switch wire {
                case 0:
                    guard let v = c.varint() else { return false }
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
                    guard let payload = c.lengthDelimited() else { return false }
                    switch field {
                    case 3: s.vectorBytes += payload.count
                    case 6: s.scaleBytes += payload.count
                    case 4:  // packed missing ids
                        var ids = WireCursor(payload)
                        while ids.i < ids.end { guard ids.varint() != nil else { return false }; s.missingCount += 1 }
                    default: break
                    }
                case 1: guard c.end - c.i >= 8 else { return false }; c.i += 8
                case 5: guard c.end - c.i >= 4 else { return false }; c.i += 4
                default: return false
                }
            }
            return true
        }
        guard ok else { throw RPCError(.internal, "malformed shardrank.v1.LookupResponse (\(bytes.count) bytes)") }
        guard let dtype = DType(rawValue: UInt32(truncatingIfNeeded: dtypeRaw)), dtypeRaw <= UInt64(UInt32.max) else {
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
