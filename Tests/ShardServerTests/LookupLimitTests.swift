import Testing
import RPCCore
import ShardRankWire
@testable import ShardServer

/// A Lookup's answer is bounded in bytes, not only in ids: on a wide table a call within the id
/// limit could ask for gigabytes (it used to kill the shard in `FramedMessage.init`).
@Suite struct LookupLimitTests {
    static let context = ServerContext(path: "/shardrank.v1.Shard/Lookup")

    @Test func answersBeyondTheByteLimitAreRefusedBeforeAllocating() throws {
        let dim = 16_384
        let backend = SyntheticBackend(table: SyntheticTable(rows: 100, dim: dim))
        let fits = LookupResponse.maxVectorBytes / (dim * 4)   // 1,024 rows of 64 KiB
        let ok = try LookupResponse.decode(Array(try backend.lookup(LookupRequest(table: "items", ids: Array(repeating: 3, count: fits)),
                                                                      context: Self.context).payload))
        #expect(ok.dim == UInt32(dim) && ok.vectors.count == fits * dim * 4)
        for (count, dtype) in [(fits + 1, DType.f32), (70_000, .f32), (70_000, .int8)] {
            do {
                _ = try backend.lookup(LookupRequest(table: "items", ids: Array(repeating: 3, count: count), dtype: dtype), context: Self.context)
                Issue.record("\(count) rows of \(dtype) were answered")
            } catch {
                #expect(error.code == .resourceExhausted && error.message.contains("exceeds the limit of \(LookupResponse.maxVectorBytes)"),
                        "\(error)")
            }
        }
        // A smaller dtype is the way out that the message names.
        let f16 = try backend.lookup(LookupRequest(table: "items", ids: Array(repeating: 3, count: fits + 1), dtype: .f16), context: Self.context)
        #expect(f16.payload.count > (fits + 1) * dim * 2)
    }
}
