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

@Suite struct RowDecodeTests {
    /// Every variant and dtype, at lengths around the vector widths, from an odd (unaligned)
    /// source address: equal to the scalar decode, and nothing written past `count`.
    @Test(arguments: KernelISA.supported, RowElementType.allCases)
    func decodeEqualsScalar(isa: KernelISA, type: RowElementType) {
        var rng = SplitMix64(seed: UInt64(type.rawValue) &+ 7)
        for n in [0, 1, 3, 4, 5, 8, 15, 16, 17, 31, 64, 65, 100] {
            let scale: Float = 0.037
            var bytes = [UInt8](repeating: 0, count: 1 + n * type.byteWidth)
            var want = [Float](repeating: 0, count: n)
            for j in 0 ..< n {
                switch type {
                case .f32:
                    let v = Float(Int(rng.next() % 20001) - 10000) / 64
                    withUnsafeBytes(of: v.bitPattern.littleEndian) { for b in 0 ..< 4 { bytes[1 + 4 * j + b] = $0[b] } }
                    want[j] = v
                case .f16:
                    // Normals, subnormals, zeros, infinities (every bit pattern but NaN decodes to a comparable value).
                    var h = UInt16(truncatingIfNeeded: rng.next())
                    if h & 0x7C00 == 0x7C00 && h & 0x03FF != 0 { h &= 0xFC00 }
                    bytes[1 + 2 * j] = UInt8(h & 0xFF); bytes[2 + 2 * j] = UInt8(h >> 8)
                    want[j] = Float(Float16(bitPattern: h))
                case .int8:
                    let v = Int8(truncatingIfNeeded: rng.next())
                    bytes[1 + j] = UInt8(bitPattern: v)
                    want[j] = Float(v) * scale
                }
            }
            var got = [Float](repeating: -7, count: n + 4)
            bytes.withUnsafeBytes { src in
                got.withUnsafeMutableBufferPointer { type.decode(src.baseAddress! + 1, scale: scale, into: $0.baseAddress!, count: n, isa: isa) }
            }
            #expect(Array(got[..<n]) == want, "\(isa) \(type) n=\(n)")
            #expect(got[n...].allSatisfy { $0 == -7 }, "\(isa) \(type) n=\(n): wrote past the end")
        }
    }
}
