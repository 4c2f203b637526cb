/// Which shard holds an id or a string key: `StableHash.hash` (SplitMix64 with a fixed seed) then
/// jump consistent hashing to `shardCount` buckets. The single implementation used by the builder,
/// the shard servers (to check that a requested id is theirs) and the coordinator (to route).
///
/// A value type with no state beyond its two constants: `Sendable`, free to copy across threads.
public struct ShardRouter: Sendable, Hashable {
    /// Number of shards, at least 1.
    public let shardCount: Int
    /// The hash seed (a table set's `manifest.json` records it; `StableHash.defaultSeed` unless a
    /// builder chose otherwise).
    public let seed: UInt64

    /// - Precondition: `shardCount >= 1` (a programmer error otherwise; validate user input first).
    public init(shardCount: Int, seed: UInt64 = StableHash.defaultSeed) {
        precondition(shardCount >= 1, "a table set has at least one shard")
        self.shardCount = shardCount
        self.seed = seed
    }

    /// The shard (0-based) of a numeric id: items, users, and the keys of profile and attribute
    /// tables.
    @inlinable
    public func shard(ofID id: UInt64) -> Int {
        StableHash.jumpConsistentHash(StableHash.hash(id: id, seed: seed), buckets: shardCount)
    }

    /// The shard (0-based) of a string key of a list table (genre name, country, `all`, or the
    /// decimal item id of the `similar` table), hashed over its UTF-8 bytes.
    @inlinable
    public func shard(ofKey key: String) -> Int {
        StableHash.jumpConsistentHash(StableHash.hash(key: key, seed: seed), buckets: shardCount)
    }

    /// The shard of a string key given as raw UTF-8 bytes.
    @inlinable
    public func shard(ofKeyBytes bytes: UnsafeRawBufferPointer) -> Int {
        StableHash.jumpConsistentHash(StableHash.hash(bytes: bytes, seed: seed), buckets: shardCount)
    }
}
