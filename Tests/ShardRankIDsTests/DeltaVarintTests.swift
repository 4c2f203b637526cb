import Testing
import ShardRankIDs

@Suite struct DeltaVarintTests {
    @Test func knownBytes() throws {
        // 5, then gaps 1 and 300 (0xAC 0x02), then a gap of 2^63.
        let ids: [UInt64] = [5, 6, 306, 306 + (1 << 63)]
        let bytes = DeltaVarint.encode(ids)
        #expect(bytes == [5, 1, 0xAC, 0x02, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])
        #expect(try DeltaVarint.decode(bytes) == ids)
        #expect(DeltaVarint.encode([]) == [])
        #expect(try DeltaVarint.decode([]) == [])
        #expect(DeltaVarint.encode([0]) == [0], "the first id may be 0")
        #expect(DeltaVarint.encode([UInt64.max]) == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        #expect(try DeltaVarint.decode(DeltaVarint.encode([0, UInt64.max])) == [0, UInt64.max])
        for v: UInt64 in [0, 1, 127, 128, 16_383, 16_384, 1 << 35, UInt64.max] {
            var out: [UInt8] = []
            [v].withUnsafeBufferPointer { DeltaVarint.encode($0, into: &out) }
            #expect(DeltaVarint.size(of: v) == out.count, "\(v)")
        }
    }

    @Test func randomRoundTrips() throws {
        var state: UInt64 = 42
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        for trial in 0 ..< 200 {
            let n = Int(next() % 3000)
            // Dense catalogs, sparse ones, and full 64-bit ids.
            let range: UInt64 = [UInt64(5000), 1 << 24, .max][trial % 3]
            let raw = (0 ..< n).map { _ in range == .max ? next() : next() % range }
            let packed = PackedIDs(raw)
            let want = Array(Set(raw)).sorted()
            #expect(packed.count == want.count)
            #expect(packed.decoded() == want)
            #expect(try PackedIDs(validating: packed.bytes) == packed)
            #expect(packed.bytes.withUnsafeBytes { DeltaVarint.terminatorCount($0) } == want.count)
        }
    }

    @Test func malformedInputIsAnErrorNeverACrash() {
        func error(_ b: [UInt8]) -> DeltaVarint.DecodeError? {
            do { _ = try DeltaVarint.decode(b); return nil } catch { return error }
        }
        #expect(error([0x80]) == .truncated(offset: 0))
        #expect(error([3, 0x81, 0x80]) == .truncated(offset: 1))
        #expect(error([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]) == .overlong(offset: 0), "bits beyond 64")
        #expect(error([1] + [UInt8](repeating: 0x80, count: 10) + [0]) == .overlong(offset: 1), "11 bytes")
        #expect(error([7, 0]) == .notIncreasing(offset: 1), "a repeated id")
        #expect(error([7, 1, 0]) == .notIncreasing(offset: 2))
        #expect(error([0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 2]) == .overflow(offset: 10), "past 2^64 - 1")
        #expect(throws: DeltaVarint.DecodeError.self) { _ = try PackedIDs(validating: [0x80, 0x80]) }
        // Every truncation of a valid stream that cuts a varint is refused; every cut on a
        // boundary decodes to a prefix.
        let ids: [UInt64] = [1, 200, 70_000, 1 << 40, (1 << 40) + 1]
        let bytes = DeltaVarint.encode(ids)
        for cut in 0 ... bytes.count {
            let prefix = Array(bytes.prefix(cut))
            if let e = error(prefix) {
                guard case .truncated = e else { Issue.record("cut \(cut): \(e)"); continue }
            } else {
                let got = (try? DeltaVarint.decode(prefix)) ?? []
                #expect(got == Array(ids.prefix(got.count)), "cut \(cut)")
            }
        }
        // Random garbage: decoding answers or throws, and never reads outside the buffer.
        var state: UInt64 = 7
        for _ in 0 ..< 2000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let n = Int(state >> 60)
            let garbage = (0 ..< n).map { i in UInt8(truncatingIfNeeded: state >> UInt64(i * 4 % 56)) }
            if let ids = try? DeltaVarint.decode(garbage) {
                #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 })
            }
        }
    }

    @Test func sortedHelpers() {
        #expect(SortedIDs.sortedUnique([5, 1, 5, 3, 1]) == [1, 3, 5])
        #expect(SortedIDs.sortedUnique([]) == [])
        #expect(SortedIDs.union([1, 4, 9], [2, 4, 10]) == [1, 2, 4, 9, 10])
        #expect(SortedIDs.union([], [2]) == [2] && SortedIDs.union([3], []) == [3])
        let s: [UInt64] = [2, 4, 8, 16]
        #expect(s.allSatisfy { SortedIDs.contains(s, $0) })
        #expect(![0, 1, 3, 17, .max].contains { SortedIDs.contains(s, $0) })
        #expect(!SortedIDs.contains([], 1))
    }
}
