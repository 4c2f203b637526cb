import Testing
import ShardRankKernels

@Suite struct RowGatherTests {
    /// Every variant, at the sizes with specialised loops (64, 128, 256, 512) and others.
    @Test(arguments: KernelISA.supported, [1, 4, 63, 64, 128, 256, 260, 512, 576])
    func gatherEqualsRowByRowCopy(isa: KernelISA, rowBytes: Int) {
        let rowCount = 1000
        let table = (0 ..< rowCount * rowBytes).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 >> 8) }
        var rng = SplitMix64(seed: UInt64(rowBytes))
        for n in [0, 1, 7, 8, 9, 300] {
            // Random rows, repeats, and missing entries (-1) anywhere, including first and last.
            var rows = (0 ..< n).map { _ in Int(rng.next() % UInt64(rowCount)) }
            for i in stride(from: 0, to: n, by: 5) { rows[i] = -1 }
            if n > 2 { rows[n - 1] = -1; rows[1] = rows[2] }
            var want: [UInt8] = []
            for r in rows where r >= 0 { want += table[r * rowBytes ..< (r + 1) * rowBytes] }
            var got = [UInt8](repeating: 0xEE, count: want.count + 16)
            let copied = table.withUnsafeBytes { t in
                got.withUnsafeMutableBytes { d in
                    rows.withUnsafeBufferPointer { RowGather.gather(into: d.baseAddress!, base: t.baseAddress!, rowBytes: rowBytes, rows: $0, isa: isa) }
                }
            }
            #expect(copied == rows.filter { $0 >= 0 }.count)
            #expect(Array(got[..<want.count]) == want)
            #expect(got[want.count...].allSatisfy { $0 == 0xEE }, "wrote past the gathered rows")
        }
    }
}
