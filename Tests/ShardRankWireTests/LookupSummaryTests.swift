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
        ]
        for (name, bytes) in cases {
            do {
                _ = try LookupResponse.summary(bytes)
                Issue.record("accepted: \(name)")
            } catch {
                #expect(error.code == .internal, "\(name)")
            }
        }
        // Unknown fields are skipped, as protobuf requires.
        let withUnknown = good + [0x48, 0x05, 0x52, 0x02, 0xaa, 0xbb, 0x5d, 1, 2, 3, 4, 0x61, 1, 2, 3, 4, 5, 6, 7, 8]
        #expect(try LookupResponse.summary(withUnknown).rows == 2)
    }
}
