import ShardRankRouting
import Testing
@testable import ShardRankTables

// Golden values computed independently (Python reference implementations of SplitMix64, FNV-1a,
// Lamping & Veach's jump hash, and the `xxhash` package for xxHash64). If any of these change,
// every published table set is misrouted: never "fix" a golden value.

@Suite struct StableHashTests {
    @Test func mix64Golden() {
        #expect(StableHash.mix64(0) == 0)
        #expect(StableHash.mix64(1) == 0x5692_161D_100B_05E5)
    }

    @Test(arguments: [
        (UInt64(0), UInt64(0xE220_A839_7B1D_CDAF)),
        (1, 0x910A_2DEC_8902_5CC1),
        (42, 0xBDD7_3226_2FEB_6E95),
        (123_456_789, 0x223C_74D9_3DEB_7679),
        (9_223_372_036_854_775_813, 0x54A6_4D19_D753_4F30),
        (UInt64.max, 0xE4D9_7177_1B65_2C20),
    ] as [(UInt64, UInt64)])
    func idHashGolden(id: UInt64, expected: UInt64) {
        #expect(StableHash.hash(id: id) == expected)
    }

    @Test(arguments: [
        ("all", UInt64(0xE6F0_9B19_0519_DAA4), UInt64(0x6D44_568E_9F2C_3937)),
        ("Action", 0xA442_044B_586E_C8BF, 0x773B_AF7A_52E8_1B1F),
        ("FR", 0x0905_6E07_B59E_C8D1, 0x3F10_E5E9_03DF_6A83),
        ("42", 0x07EE_7E07_B4B1_9223, 0x2E3F_71EE_82C2_E0F4),
        ("", 0xCBF2_9CE4_8422_2325, 0xC381_7C01_6BA4_FF30),
    ] as [(String, UInt64, UInt64)])
    func keyHashGolden(key: String, fnv: UInt64, expected: UInt64) {
        let f = Array(key.utf8).withUnsafeBytes { StableHash.fnv1a64($0) }
        #expect(f == fnv)
        #expect(StableHash.hash(key: key) == expected)
        // Non-contiguous (bridged-like) and Substring paths agree.
        #expect(StableHash.hash(key: String(Substring(key))) == expected)
    }

    @Test(arguments: [
        (0 as UInt64, [0, 1, 2, 7, 8, 258]),
        (1, [0, 0, 0, 3, 15, 527]),
        (42, [0, 0, 0, 0, 0, 151]),
        (123_456_789, [0, 0, 0, 4, 10, 534]),
        (9_223_372_036_854_775_813, [0, 0, 0, 5, 8, 757]),
        (UInt64.max, [0, 0, 2, 3, 3, 650]),
    ] as [(UInt64, [Int])])
    func shardOfIDGolden(id: UInt64, shards: [Int]) {
        for (s, expected) in zip([1, 2, 3, 8, 16, 1000], shards) {
            #expect(ShardRouter(shardCount: s).shard(ofID: id) == expected, "id \(id) with \(s) shards")
        }
    }

    @Test(arguments: [
        ("all", [1, 2, 4, 12]),
        ("Action", [1, 1, 3, 14]),
        ("FR", [0, 0, 4, 4]),
        ("42", [0, 2, 2, 13]),
        ("", [0, 0, 3, 9]),
    ] as [(String, [Int])])
    func shardOfKeyGolden(key: String, shards: [Int]) {
        for (s, expected) in zip([2, 3, 8, 16], shards) {
            #expect(ShardRouter(shardCount: s).shard(ofKey: key) == expected, "key \(key) with \(s) shards")
            let viaBytes = Array(key.utf8).withUnsafeBytes { ShardRouter(shardCount: s).shard(ofKeyBytes: $0) }
            #expect(viaBytes == expected)
        }
    }

    @Test func jumpHashGoldenRawKeys() {
        let keys: [UInt64] = [0, 1, 2, 3, 0xDEAD_BEEF, .max]
        #expect(keys.map { StableHash.jumpConsistentHash($0, buckets: 10) } == [0, 6, 6, 8, 5, 9])
        #expect(keys.allSatisfy { StableHash.jumpConsistentHash($0, buckets: 1) == 0 })
    }

    @Test func shardSizesAreBalanced() {
        // 10,000 consecutive ids over 8 shards: the Python reference puts 1268 in shard 3.
        let router = ShardRouter(shardCount: 8)
        var counts = [Int](repeating: 0, count: 8)
        for id in 0..<10_000 as Range<UInt64> { counts[router.shard(ofID: id)] += 1 }
        #expect(counts[3] == 1268)
        #expect(counts.allSatisfy { abs($0 - 1250) < 120 }, "\(counts)")
    }

    @Test(arguments: [1, 2, 3, 7, 16, 63])
    func growingMovesAboutOneOverSPlusOne(s: Int) {
        let before = ShardRouter(shardCount: s), after = ShardRouter(shardCount: s + 1)
        let n = 50_000
        var moved = 0
        for i in 0..<n {
            let id = UInt64(i) &* 2_654_435_761 &+ 11
            let a = before.shard(ofID: id), b = after.shard(ofID: id)
            if a != b {
                moved += 1
                #expect(b == s, "a moved id must go to the new shard")
            }
        }
        let expected = Double(n) / Double(s + 1)
        #expect(abs(Double(moved) - expected) < 0.06 * expected + 200, "moved \(moved), expected ≈ \(expected)")
    }

    @Test(arguments: [
        (0, UInt64(0), UInt64(0xEF46_DB37_51D8_E999), UInt64(0x95F0_626F_6F0A_4409)),
        (1, 0x61, 0xD24E_C4F1_A98C_6E5B, 0xDC63_49D4_89E0_F965),
        (3, 0, 0x44BC_2CF5_AD77_0999, 0x9E75_5206_1566_76D7),
        (40, 0, 0xF5DA_40F1_B117_41E9, 0xFC9F_7A1B_2401_2CB5),
        (1280, 0, 0xAFC1_84AD_7938_A354, 0x133C_F6CA_9D1C_1256),
    ] as [(Int, UInt64, UInt64, UInt64)])
    func xxh64Golden(length: Int, _: UInt64, seed0: UInt64, seed7: UInt64) {
        // Inputs: "", "a", "abc", bytes 0..<40, bytes 0..<256 repeated 5 times.
        let input: [UInt8] = switch length {
        case 0: []
        case 1: Array("a".utf8)
        case 3: Array("abc".utf8)
        case 40: (0..<40).map { UInt8($0) }
        default: Array((0..<5).map { _ in (0..<256).map { UInt8($0) } }.joined())
        }
        input.withUnsafeBytes { b in
            #expect(StableHash.xxh64(b) == seed0)
            #expect(StableHash.xxh64(b, seed: 7) == seed7)
        }
    }
}
