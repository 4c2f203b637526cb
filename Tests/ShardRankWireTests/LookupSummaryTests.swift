import Testing
import RPCCore
@testable import ShardRankWire

/// The load driver's in-place reading of Lookup answers agrees with the full decode, and
/// refuses what the decode refuses.
@Suite struct LookupSummaryTests {
    @Test(arguments: DType.allCases.filter { $0 != .unspecified })
    func summaryAgreesWithDecode(dtype: DType) throws {
        for (rows, missing) in [(0, [UInt64]()), (1, [7]), (37, [1, 2, UInt64.max]), (300, Array(0 ..< 200))] {
            let dim = 5
            let r = LookupResponse(dim: UInt32(dim), dtype: dtype, vectors: (0 ..< rows * dim * dtype.elementSize).map { UInt8($0 % 251) },
                                   missingIDs: missing, version: 1 << 40, scales: dtype == .int8 ? Array(repeating: 1, count: 4 * rows) : [],
                                   shard: 3, shardCount: 4)
            let bytes = Array(r.encoded().payload)
            let s = try LookupResponse.summary(bytes)
            let d = try LookupResponse.decode(bytes)
            #expect(s.rows == rows)
            #expect(s.dim == d.dim && s.dtype == d.dtype && s.version == d.version)
            #expect(s.vectorBytes == d.vectors.count && s.scaleBytes == d.scales.count)
            #expect(s.missingCount == d.missingIDs.count)
            #expect(s.shard == 3 && s.shardCount == 4)
        }
    }

    @Test func malformedAnswersAreInternalErrors() throws {
        let good = Array(LookupResponse(dim: 2, dtype: .f32, vectors: Array(repeating: 0, count: 16), missingIDs: [], version: 1).encoded().payload)
        let cases: [(String, [UInt8])] = [
            ("truncated", Array(good.dropLast(3))),
            ("bad varint", [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            ("length past the end", [0x1a, 0x40, 0x00]),
            ("unknown dtype", [0x08, 0x02, 0x10, 0x09]),
            ("partial row", [0x08, 0x02, 0x10, 0x01, 0x1a, 0x05, 0, 0, 0, 0, 0]),
            ("int8 without scales", [0x08, 0x02, 0x10, 0x03, 0x1a, 0x02, 1, 2]),
            ("wire type 3", [0x0b]),
            ("field 0", [0x00, 0x01]),
            // Found by the wire fuzzer (fuzz/corpus/wire/summary-long-tag): a 9-byte tag, which
            // protobuf-c refuses (tags are at most 5 bytes), was skipped as an unknown field.
            ("tag longer than 5 bytes", [0x08, 0x02, 0x10, 0x01, 0x8a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x28, 0x00]),
            // Also found by the fuzzer (fuzz/corpus/wire/summary-wrong-wire-type): a known field
            // with another wire type (scales as fixed64) was skipped; protobuf-c refuses it.
            ("scales as fixed64", [0x08, 0x02, 0x31, 1, 2, 3, 4, 5, 6, 7, 8]),
            // Found by the fuzz smoke run in CI (fuzz/corpus/wire/summary-long-length-prefix): an
            // unknown field's length written in 6 bytes (an overlong 0); protobuf-c reads at most 5.
            ("length prefix longer than 5 bytes", [0x08, 0x02, 0x10, 0x01, 0xa2, 0x04, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            ("dim as bytes", [0x0a, 0x01, 0x02]),
            ("vectors as a varint", [0x18, 0x01]),
            ("version as fixed32", [0x2d, 1, 2, 3, 4]),
        ]
        for (name, bytes) in cases {
            do {
                _ = try LookupResponse.summary(bytes)
                Issue.record("accepted: \(name)")
            } catch {
                #expect(error.code == .internal, "\(name)")
            }
        }
        // Malformed protobuf, not just answers the summary's own checks refuse: protobuf-c agrees.
        for (name, bytes) in cases where name != "partial row" && name != "int8 without scales" {
            #expect(throws: RPCError.self, "protobuf-c refuses: \(name)") { try LookupResponse.decode(bytes) }
        }
        // A singular bytes field given twice: the last one counts, as in protobuf-c (the summary
        // added them up). Varint values are read as protobuf-c does (dtype: its low 32 bits).
        let twice: [UInt8] = [0x08, 0x02, 0x10, 0x01, 0x1a, 0x10] + Array(repeating: 0, count: 16) + [0x1a, 0x08] + Array(repeating: 0, count: 8)
        let wideDType: [UInt8] = [0x08, 0x01, 0x10, 0x81, 0x80, 0x80, 0x80, 0x10, 0x1a, 0x04, 0, 0, 0, 0]  // 2^32 + 1
        for bytes in [twice, wideDType] {
            let s = try LookupResponse.summary(bytes)
            let d = try LookupResponse.decode(bytes)
            #expect(s.vectorBytes == d.vectors.count && s.dtype == d.dtype && s.rows == 1)
        }
        // Unknown fields are skipped, as protobuf requires.
        let withUnknown = good + [0x48, 0x05, 0x52, 0x02, 0xaa, 0xbb, 0x5d, 1, 2, 3, 4, 0x61, 1, 2, 3, 4, 5, 6, 7, 8]
        #expect(try LookupResponse.summary(withUnknown).rows == 2)
    }
}
