/// The fixed, process-independent hash functions of the table-set format.
///
/// Nothing here may ever change for format version 1: shard assignments, the id index of every
/// table file and the block checksums all depend on these exact bit patterns, and
/// `Tests/ShardRankTablesTests/StableHashTests.swift` pins golden values. Never use Swift's
/// `Hasher` for any of this: it is seeded per process.
///
/// - `hash(id:seed:)`: SplitMix64's output function applied to `id &+ seed`
///   (Steele, Lea & Flood 2014; the finaliser is Stafford's "Mix13"). With the default seed
///   `0x9E3779B97F4A7C15` this is exactly the first output of a SplitMix64 generator whose state is
///   `id`.
/// - `hash(bytes:seed:)`: FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) of the
///   bytes, then `hash(id:seed:)` of that.
/// - `xxh64(_:seed:)`: xxHash64 (Yann Collet), used for checksums.
public enum StableHash {
    /// The seed every table set built by this code uses (the SplitMix64 increment, "golden gamma").
    public static let defaultSeed: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// The name written to `manifest.json` for the shard function (`hash` + jump consistent hash).
    public static let functionName = "splitmix64+jump-v1"

    /// The SplitMix64 / Mix13 finaliser: a bijection on 64-bit words with full avalanche.
    @inlinable
    public static func mix64(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z &>> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z &>> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z &>> 31)
    }

    /// The stable 64-bit hash of a numeric id (items, users).
    @inlinable
    public static func hash(id: UInt64, seed: UInt64 = defaultSeed) -> UInt64 {
        mix64(id &+ seed)
    }

    /// FNV-1a, 64-bit.
    @inlinable
    public static func fnv1a64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in bytes {
            h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3
        }
        return h
    }

    /// The stable 64-bit hash of a string key's bytes (genre names, countries, decimal item ids).
    @inlinable
    public static func hash(bytes: UnsafeRawBufferPointer, seed: UInt64 = defaultSeed) -> UInt64 {
        hash(id: fnv1a64(bytes), seed: seed)
    }

    /// The stable hash of a string key: its UTF-8 bytes through `hash(bytes:seed:)`.
    /// Allocation-free for native Swift strings.
    @inlinable
    public static func hash(key: String, seed: UInt64 = defaultSeed) -> UInt64 {
        if let h = key.utf8.withContiguousStorageIfAvailable({ hash(bytes: UnsafeRawBufferPointer($0), seed: seed) }) {
            return h
        }
        var copy = key
        copy.makeContiguousUTF8()
        return copy.utf8.withContiguousStorageIfAvailable { hash(bytes: UnsafeRawBufferPointer($0), seed: seed) }!
    }

    /// The hash that places a key in a table file's open-addressing index, derived from the key's
    /// stable hash so that it is decorrelated from the shard assignment (which uses the same hash).
    @inlinable
    public static func indexHash(_ keyHash: UInt64) -> UInt64 {
        mix64(keyHash ^ 0xD6E8_FEB8_6659_FD93)
    }

    /// Jump consistent hash (Lamping & Veach, 2014, "A Fast, Minimal Memory, Consistent Hash
    /// Algorithm"), exactly as published: maps `key` to a bucket in `0..<buckets`; growing from
    /// `n` to `n + 1` buckets moves only about `1/(n+1)` of the keys, all of them to the new bucket.
    /// - Precondition: `buckets >= 1`.
    @inlinable
    public static func jumpConsistentHash(_ key: UInt64, buckets: Int) -> Int {
        precondition(buckets >= 1, "jumpConsistentHash needs at least one bucket")
        var key = key
        var b: Int64 = -1
        var j: Int64 = 0
        let n = Int64(buckets)
        while j < n {
            b = j
            key = key &* 2_862_933_555_777_941_757 &+ 1
            j = Int64(Double(b &+ 1) * (Double(Int64(1) << 31) / Double((key &>> 33) &+ 1)))
        }
        return Int(b)
    }

    // MARK: - xxHash64

    @usableFromInline static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    @usableFromInline static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    @usableFromInline static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    @usableFromInline static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    @usableFromInline static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always) @usableFromInline
    static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x &<< r) | (x &>> (64 &- r)) }

    @inline(__always) @usableFromInline
    static func xxRound(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    @inline(__always) @usableFromInline
    static func xxMerge(_ acc: UInt64, _ val: UInt64) -> UInt64 {
        (acc ^ xxRound(0, val)) &* p1 &+ p4
    }

    /// xxHash64 of `bytes` (the reference algorithm, little-endian reads).
    public static func xxh64(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let len = bytes.count
        guard let base = bytes.baseAddress, len > 0 else {
            return xxAvalanche(seed &+ p5)
        }
        var p = 0
        var h: UInt64
        if len >= 32 {
            var v1 = seed &+ p1 &+ p2
            var v2 = seed &+ p2
            var v3 = seed
            var v4 = seed &- p1
            let limit = len - 32
            while p <= limit {
                v1 = xxRound(v1, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt64.self)))
                v2 = xxRound(v2, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 8, as: UInt64.self)))
                v3 = xxRound(v3, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 16, as: UInt64.self)))
                v4 = xxRound(v4, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 24, as: UInt64.self)))
                p += 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = xxMerge(h, v1)
            h = xxMerge(h, v2)
            h = xxMerge(h, v3)
            h = xxMerge(h, v4)
        } else {
            h = seed &+ p5
        }
        h = h &+ UInt64(len)
        while p + 8 <= len {
            let k = xxRound(0, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt64.self)))
            h ^= k
            h = rotl(h, 27) &* p1 &+ p4
            p += 8
        }
        if p + 4 <= len {
            h ^= UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt32.self))) &* p1
            h = rotl(h, 23) &* p2 &+ p3
            p += 4
        }
        while p < len {
            h ^= UInt64(base.load(fromByteOffset: p, as: UInt8.self)) &* p5
            h = rotl(h, 11) &* p1
            p += 1
        }
        return xxAvalanche(h)
    }

    @inline(__always) @usableFromInline
    static func xxAvalanche(_ hash: UInt64) -> UInt64 {
        var h = hash
        h ^= h &>> 33
        h = h &* p2
        h ^= h &>> 29
        h = h &* p3
        h ^= h &>> 32
        return h
    }
}
