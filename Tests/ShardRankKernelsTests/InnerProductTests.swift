import Foundation
import Testing
import ShardRankKernels

/// Every ISA variant × dtype × dimension against KernelReference: exact on integer-valued
/// inputs; otherwise |got − ref| ≤ 1e-5 · Σ|q_j x_j| (float rounding of a reordered sum).
@Suite struct InnerProductTests {
    static let cases: [(KernelISA, RowElementType)] =
        KernelISA.supported.flatMap { isa in RowElementType.allCases.map { (isa, $0) } }

    /// The variants the ISA-parameterised tests run are the ones this CPU has: detection is
    /// checked against the kernel's own report of the CPU's flags (`/proc/cpuinfo` on Linux), so
    /// a machine with AVX-512 whose detection broke fails here instead of silently testing less.
    @Test func bestVariantIsSupportedAndThisMachineHasAll() throws {
        #expect(KernelISA.supported.contains(.baseline))
        #expect(KernelISA.best.isSupported)
        #expect(KernelISA.supported.last == KernelISA.best)
        #if os(Linux) && arch(x86_64)
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let flagsLine = try #require(cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") })
        let flags = Set(flagsLine.split(separator: ":", maxSplits: 1).last!.split(separator: " ").map(String.init))
        let wantAVX2 = ["avx2", "fma", "f16c"].allSatisfy(flags.contains)
        let wantAVX512 = wantAVX2 && ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains)
        #expect(KernelISA.avx2.isSupported == wantAVX2, "the CPU's flags say avx2=\(wantAVX2)")
        #expect(KernelISA.avx512.isSupported == wantAVX512, "the CPU's flags say avx512=\(wantAVX512)")
        #endif
    }

    @Test(arguments: cases)
    func contiguousAndGathered(isa: KernelISA, type: RowElementType) {
        for d in kernelDimensions {
            for integer in [true, false] {
                var rng = SplitMix64(seed: UInt64(d * 7 + (integer ? 1 : 0)))
                let count = 37 // not a multiple of any vector width
                let queryCount = 5 // a 4-query tile (AVX-512), 2-query tiles (AVX2) and a single-query tail
                let rows = OwnedRows(type, count: count, dimension: d, integer: integer, rng: &rng)
                let queries = makeQueries(queryCount, d, integer: integer, rng: &rng)
                let gather: [Int64] = (0..<41).map { _ in Int64(rng.int(0, count - 1)) }
                for indices in [nil, gather] {
                    let n = indices?.count ?? count
                    var got = [Float](repeating: .nan, count: queryCount * n)
                    queries.withUnsafeBufferPointer { q in
                        got.withUnsafeMutableBufferPointer { out in
                            if let indices {
                                indices.withUnsafeBufferPointer { idx in
                                    InnerProducts.batchDot(queries: q.baseAddress!, queryCount: queryCount, rows: rows.matrix,
                                                           rowIndices: idx, scores: out.baseAddress!, isa: isa)
                                }
                            } else {
                                InnerProducts.batchDot(queries: q.baseAddress!, queryCount: queryCount, rows: rows.matrix,
                                                       scores: out.baseAddress!, isa: isa)
                            }
                        }
                        for qi in 0..<queryCount {
                            let qp = q.baseAddress! + qi * d
                            let ref = KernelReference.dot(query: qp, rows: rows.matrix, rowIndices: indices)
                            for i in 0..<n {
                                let g = got[qi * n + i]
                                if integer {
                                    #expect(g == ref[i], "\(isa) \(type) d=\(d) q=\(qi) i=\(i) gathered=\(indices != nil)")
                                } else {
                                    let r = indices.map { Int($0[i]) } ?? i
                                    let tol = 1e-5 * absDot(qp, rows.matrix, r) + 1e-30
                                    #expect(abs(g - ref[i]) <= tol, "\(isa) \(type) d=\(d) i=\(i): \(g) vs \(ref[i])")
                                }
                            }
                        }
                        // The 1×N entry point agrees with row 0 of the batch (exactly on integers;
                        // the batch path may sum in another order otherwise).
                        var single = [Float](repeating: .nan, count: n)
                        single.withUnsafeMutableBufferPointer { out in
                            if let indices {
                                indices.withUnsafeBufferPointer { idx in
                                    InnerProducts.dot(query: q.baseAddress!, rows: rows.matrix, rowIndices: idx,
                                                      scores: out.baseAddress!, isa: isa)
                                }
                            } else {
                                InnerProducts.dot(query: q.baseAddress!, rows: rows.matrix, scores: out.baseAddress!, isa: isa)
                            }
                        }
                        if integer { #expect(single == Array(got[0..<n])) }
                        let ref0 = KernelReference.dot(query: q.baseAddress!, rows: rows.matrix, rowIndices: indices)
                        var worst: Float = 0
                        for i in 0..<n {
                            let r = indices.map { Int($0[i]) } ?? i
                            let scale = max(Float(1e-30), absDot(q.baseAddress!, rows.matrix, r))
                            worst = max(worst, abs(single[i] - ref0[i]) / scale)
                        }
                        #expect(worst <= 1e-5, "\(isa) \(type) d=\(d) 1×N relative error \(worst)")
                    }
                }
            }
        }
    }

    /// Contiguous rows with fewer queries than a tile take a separate loop (rows at constant
    /// offsets, no pointer table); it must give bit-for-bit the sums of the general loop, which
    /// gathered rows always take (here: the identity gather), for every query count around
    /// the tile size, row counts around the group width, and long scans that prefetch
    /// (SRK_DOT_STREAM: f16/int8 beyond 512 KB). Non-integer inputs, so any change of
    /// summation order would show.
    @Test(arguments: cases)
    func contiguousFastPathEqualsGeneralPath(isa: KernelISA, type: RowElementType) {
        for d in kernelDimensions {
            var rng = SplitMix64(seed: UInt64(500 + d))
            let counts = [1, 15, 16, 17, 33, 100] + (d == 64 ? [9_000] : [])
            for count in counts {
                let rows = OwnedRows(type, count: count, dimension: d, integer: false, rng: &rng)
                let identity = (0..<Int64(count)).map { $0 }
                for queryCount in 1...5 {
                    let queries = makeQueries(queryCount, d, integer: false, rng: &rng)
                    var contiguous = [Float](repeating: .nan, count: queryCount * count), gathered = contiguous
                    queries.withUnsafeBufferPointer { q in
                        contiguous.withUnsafeMutableBufferPointer { out in
                            InnerProducts.batchDot(queries: q.baseAddress!, queryCount: queryCount, rows: rows.matrix,
                                                   scores: out.baseAddress!, isa: isa)
                        }
                        identity.withUnsafeBufferPointer { idx in
                            gathered.withUnsafeMutableBufferPointer { out in
                                InnerProducts.batchDot(queries: q.baseAddress!, queryCount: queryCount, rows: rows.matrix,
                                                       rowIndices: idx, scores: out.baseAddress!, isa: isa)
                            }
                        }
                    }
                    let same = zip(contiguous, gathered).allSatisfy { $0.bitPattern == $1.bitPattern }
                    #expect(same, "\(isa) \(type) d=\(d) n=\(count) queries=\(queryCount)")
                }
            }
        }
    }

    @Test(arguments: cases)
    func squaredNormsAndCosine(isa: KernelISA, type: RowElementType) {
        for d in kernelDimensions {
            var rng = SplitMix64(seed: UInt64(1000 + d))
            let rows = OwnedRows(type, count: 19, dimension: d, integer: true, rng: &rng)
            let q = makeQueries(1, d, integer: true, rng: &rng)
            var norms = [Float](repeating: .nan, count: 19)
            norms.withUnsafeMutableBufferPointer {
                InnerProducts.squaredNorms(rows: rows.matrix, out: $0.baseAddress!, isa: isa)
            }
            #expect(norms == KernelReference.squaredNorms(rows: rows.matrix), "\(isa) \(type) d=\(d)")
            var cos = [Float](repeating: .nan, count: 19)
            q.withUnsafeBufferPointer { qp in
                cos.withUnsafeMutableBufferPointer {
                    InnerProducts.cosine(query: qp.baseAddress!, rows: rows.matrix, scores: $0.baseAddress!, isa: isa)
                }
                let dots = KernelReference.dot(query: qp.baseAddress!, rows: rows.matrix)
                let qn = qp.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
                for i in 0..<19 {
                    let expected = (qn > 0 && norms[i] > 0) ? dots[i] / (qn * norms[i].squareRoot()) : 0
                    #expect(abs(cos[i] - expected) <= 1e-6, "\(isa) \(type) d=\(d) i=\(i): \(cos[i]) vs \(expected)")
                    #expect(cos[i] >= -1.000001 && cos[i] <= 1.000001)
                }
            }
        }
    }

    /// Every binary16 bit pattern converts exactly, in the vector path (16 identical lanes
    /// summed: 16·v is exact) and in the scalar tail (d = 1).
    @Test(arguments: KernelISA.supported)
    func everyHalfPrecisionPattern(isa: KernelISA) {
        for d in [16, 1] {
            let patterns = (0...UInt16.max).map { $0 }
            var rows = [UInt16](); rows.reserveCapacity(patterns.count * d)
            for p in patterns { rows += Array(repeating: p, count: d) }
            let q = [Float](repeating: 1, count: d)
            var out = [Float](repeating: 0, count: patterns.count)
            rows.withUnsafeBufferPointer { r in
                q.withUnsafeBufferPointer { qp in
                    out.withUnsafeMutableBufferPointer { o in
                        InnerProducts.dot(query: qp.baseAddress!, rows: RowMatrix(f16: r.baseAddress!, count: patterns.count, dimension: d),
                                          scores: o.baseAddress!, isa: isa)
                    }
                }
            }
            var bad = 0
            for p in patterns {
                let v = Float(Float16(bitPattern: p)) * Float(d)
                let g = out[Int(p)]
                if v.isNaN ? !g.isNaN : g != v { bad += 1 }
            }
            #expect(bad == 0, "\(isa) d=\(d): \(bad) patterns wrong")
        }
    }
}
