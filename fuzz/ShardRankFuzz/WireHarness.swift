// libFuzzer harness: the hand-written protobuf wire decoders against protobuf-c. Input: byte 0
// picks the decoder, the rest is the message.
//   0: LookupRequest.decodeCanonical (the Lookup hot path) vs protobuf-c: whatever the direct
//      walk accepts, protobuf-c must accept with the same value; what protobuf-c encodes, the
//      direct walk must accept (it is the shape every client sends).
//   1: LookupResponse.summary (the load driver's copy-free reader) vs protobuf-c's decode.
//   2: every other decoder (protobuf-c plus the Swift checks around it) must not crash, and a
//      decoded SearchRequest must survive encode → decode unchanged.
//   3: the delta-varint id-set codec (ShardRankIDs): validate, decode and re-encode agree.
// A disagreement is a crash (precondition): deliberate differences are documented in
// docs/fuzzing.md and filtered here.
import RPCCore
import ShardRankIDs
@testable import ShardRankWire
#if canImport(Glibc)
import Glibc
#endif

enum WireHarness {
    static func lookupRequest(_ b: [UInt8]) {
        let canonical = LookupRequest.decodeCanonical(b)
        let reference = try? LookupRequest.decodeWithProtobufC(b)
        if let canonical {
            guard let reference else { fatalError("decodeCanonical accepts what protobuf-c rejects: \(canonical)") }
            require(canonical == reference, "decodeCanonical \(canonical) ≠ protobuf-c \(reference)")
        }
        if let reference {
            require((try? LookupRequest.decode(b)) == reference, "LookupRequest.decode differs from protobuf-c")
            let again = Array(reference.encoded().payload)
            guard let c2 = LookupRequest.decodeCanonical(again) else {
                fatalError("decodeCanonical rejects protobuf-c's own encoding of \(reference)")
            }
            require(c2 == reference, "re-encoded LookupRequest decodes to \(c2), not \(reference)")
        }
    }

    static func lookupResponse(_ b: [UInt8]) {
        let summary = try? LookupResponse.summary(b)
        let decoded = try? LookupResponse.decode(b)
        if let s = summary {
            guard let d = decoded else { fatalError("summary accepts what protobuf-c rejects: \(s)") }
            let same = s.dim == d.dim && s.dtype == d.dtype && s.vectorBytes == d.vectors.count && s.scaleBytes == d.scales.count
                && s.missingCount == d.missingIDs.count && s.version == d.version && s.shard == d.shard && s.shardCount == d.shardCount
            require(same, "summary \(s) ≠ protobuf-c (dim \(d.dim), \(d.dtype), \(d.vectors.count) vector bytes, "
                         + "\(d.scales.count) scale bytes, \(d.missingIDs.count) missing, version \(d.version), shard \(d.shard)/\(d.shardCount))")
        } else if let d = decoded {
            // Deliberate difference: protobuf-c takes a tag of field number 0 written in more than
            // one byte (0x80 0x00) as an unknown field; field 0 is invalid protobuf and summary
            // refuses it in any form.
            if hasFieldZeroTag(b) { return }
            // summary also checks that vectors are whole rows and that int8 rows have one scale each
            // (LookupResponse.decode leaves that to its callers): only those may make it refuse.
            let rowBytes = Int(d.dim) * d.dtype.elementSize
            let partialRows = !d.vectors.isEmpty && (rowBytes == 0 || d.vectors.count % rowBytes != 0)
            let rows = rowBytes > 0 ? d.vectors.count / rowBytes : 0
            let badScales = d.dtype == .int8 && d.scales.count != 4 * rows
            require(partialRows || badScales, "summary rejects a well-formed LookupResponse protobuf-c accepts")
        }
    }

    /// Whether `b`, walked as protobuf (tags of up to 5 bytes, as protobuf-c reads them), has a
    /// tag of field number 0.
    static func hasFieldZeroTag(_ b: [UInt8]) -> Bool {
        var i = 0
        func varint(max: Int = 10) -> UInt64? {
            var v: UInt64 = 0
            for k in 0..<max {
                guard i < b.count else { return nil }
                let byte = b[i]; i += 1
                if k < 10 { v |= UInt64(byte & 0x7f) << (7 * UInt64(k)) }
                if byte & 0x80 == 0 { return v }
            }
            return nil
        }
        while i < b.count {
            guard let key = varint(max: 5) else { return false }
            if key >> 3 == 0 { return true }
            switch key & 7 {
            case 0: guard varint() != nil else { return false }
            case 1: i += 8
            case 2: guard let n = varint(), n <= UInt64(b.count - i) else { return false }; i += Int(n)
            case 5: i += 4
            default: return false
            }
        }
        return false
    }

    static func others(_ b: [UInt8]) {
        _ = try? HealthCheckRequest.decode(b)
        _ = try? HealthCheckResponse.decode(b)
        _ = try? ProfilesRequest.decode(b)
        _ = try? ProfilesResponse.decode(b)
        _ = try? AttributesRequest.decode(b)
        _ = try? AttributesResponse.decode(b)
        _ = try? RecommendRequest.decode(b)
        _ = try? RecommendResponse.decode(b)
        _ = try? RecordEventsRequest.decode(b)
        _ = try? RecordEventsBatchRequest.decode(b)
        _ = try? RecordEventsBatchResponse.decode(b)
        _ = try? RecordEventsResponse.decode(b)
        _ = try? RankRequest.decode(b)
        _ = try? SimilarRequest.decode(b)
        _ = try? ItemsResponse.decodeRank(b)
        _ = try? ItemsResponse.decodeSimilar(b)
        _ = try? ReflectionRequest.decode(b)
        _ = try? SearchResponse.decode(b)
        _ = try? ListsRequest.decode(b)
        _ = try? ListsResponse.decode(b)
        _ = try? InfoRequest.decode(b)
        _ = try? InfoResponse.decode(b)
        _ = try? IdsRequest.decode(b)
        _ = try? IdsResponse.decode(b)
        if let s = try? SearchRequest.decode(b) {
            let excluded = s.allExcludedIDs()
            require(SortedIDs.isSortedUnique(excluded), "allExcludedIDs is not ascending and unique")
            // Compared as encodings: queries may hold NaNs (never == themselves).
            let encoded = Array(s.encoded().payload)
            guard let again = try? SearchRequest.decode(encoded) else { fatalError("a decoded SearchRequest's encoding does not decode") }
            require(Array(again.encoded().payload) == encoded, "SearchRequest encode → decode changed it")
        }
    }

    static func deltaVarint(_ b: [UInt8]) {
        let validated = b.withUnsafeBytes { p in Result { () throws(DeltaVarint.DecodeError) in try DeltaVarint.validate(p) } }
        let decoded = Result { () throws(DeltaVarint.DecodeError) in try DeltaVarint.decode(b) }
        switch (validated, decoded) {
        case (.success(let n), .success(let ids)):
            require(n == ids.count, "validate counts \(n) ids, decode returns \(ids.count)")
            require(SortedIDs.isSortedUnique(ids), "decoded ids are not ascending and unique")
            require((try? DeltaVarint.decode(DeltaVarint.encode(ids))) == ids, "encode → decode changed the ids")
            let packed = try! PackedIDs(validating: b)
            require(packed.count == ids.count && packed.decoded() == ids, "PackedIDs disagrees with decode")
            require(DeltaVarint.encode(ids).count <= b.count, "canonical encoding longer than the input")
        case (.failure(let e1), .failure(let e2)):
            require(e1 == e2, "validate says \(e1), decode says \(e2)")
        default:
            fatalError("validate and decode disagree on \(b.count) bytes")
        }
    }

    static func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        guard let data, size >= 1 else { return 0 }
        let b = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
        switch data[0] & 3 {
        case 0: lookupRequest(b)
        case 1: lookupResponse(b)
        case 2: others(b)
        default: deltaVarint(b)
        }
        return 0
    }

    static func writeSeeds(_ dir: String) {
        func write(_ name: String, _ bytes: [UInt8]) { bytes.withUnsafeBytes { writeScratch(dir + "/" + name, $0.baseAddress, $0.count) } }
        write("lookup-request", [0] + LookupRequest(table: "items", ids: [1, 300, 70_000, 1 << 40], dtype: .f16, version: 3).encoded().payload)
        write("lookup-request-unpacked", [0, 0x0A, 0x01, 0x74, 0x10, 0x05, 0x10, 0x80, 0x01, 0x18, 0x01, 0x20, 0x02])
        write("lookup-response", [1] + LookupResponse(dim: 2, dtype: .f32, vectors: [UInt8](repeating: 1, count: 16), missingIDs: [9, 10],
                                                      version: 4, shard: 1, shardCount: 2).encoded().payload)
        write("lookup-response-int8", [1] + LookupResponse(dim: 3, dtype: .int8, vectors: [1, 2, 3, 4, 5, 6], missingIDs: [],
                                                           version: 1, scales: [0, 0, 128, 63, 0, 0, 0, 64]).encoded().payload)
        write("search-request", [2] + SearchRequest(table: "items", queries: [1, 0, 0.5, 2], dim: 2, k: 10, excludeIDs: [5, 3],
                                                    version: 7, mode: .ann, nprobe: 4, rerank: 20, withRows: true,
                                                    excludeSorted: PackedIDs([1, 2, 1000])).encoded().payload)
        write("delta-varint", [3] + DeltaVarint.encode([0, 1, 127, 128, 16_384, UInt64.max]))
    }
}
