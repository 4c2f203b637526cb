public import ShardRankWire
public import RPCCore

/// The coordinator's one seam to the shards: the `shardrank.v1.Shard` calls it makes, addressed
/// to a shard by number. `ShardCluster` implements it over gRPC (replicas, hedging, ejection);
/// tests implement it over in-process table-set backends, so the pipeline's stages are tested
/// without sockets, and wrap it to inject faults (a shard that fails, answers late, or from
/// another version).
///
/// Contract: each call answers from `shard` alone, before `deadline` or with DEADLINE_EXCEEDED;
/// errors are `RPCError`s with the shard's status (NOT_FOUND: the table set has no such table).
/// `requestID` is forwarded for the shard's logs.
/// The table-set version new requests pin and the hash seed its manifest records (what ids
/// are routed with).
public struct PinnedTableSet: Sendable, Hashable {
    /// 0 = unknown.
    public var version: UInt64
    /// The seed of the sharding hash (`InfoResponse.hash_seed`); 0 = not reported, routed with
    /// the default seed.
    public var hashSeed: UInt64
    public init(version: UInt64, hashSeed: UInt64) { self.version = version; self.hashSeed = hashSeed }
}

public protocol ShardFetcher: Sendable {
    var shardCount: Int { get }
    /// The table-set version new requests pin (every serving replica holds it; 0 = unknown) and
    /// its hash seed, read together so a request routes with the seed of the version it pins.
    var pinned: PinnedTableSet { get }
    func lookup(_ request: LookupRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> LookupResponse
    func search(_ request: SearchRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> SearchResponse
    func lists(_ request: ListsRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> ListsResponse
    func profiles(_ request: ProfilesRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> ProfilesResponse
    func attributes(_ request: AttributesRequest, shard: Int, deadline: ContinuousClock.Instant,
                    requestID: String) async throws(RPCError) -> AttributesResponse
    /// `Info` of shard `shard` (for the coordinator's own Info); a default answers UNIMPLEMENTED.
    func info(shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> InfoResponse
}

extension ShardFetcher {
    /// The pinned version alone.
    public var pinnedVersion: UInt64 { pinned.version }

    /// `Info` of shard `shard` (what `Recommender.info` aggregates). The default: UNIMPLEMENTED.
    public func info(shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> InfoResponse {
        throw RPCError(.unimplemented, "this shard fetcher does not ask shards for Info")
    }
}

extension ShardCluster: ShardFetcher {
    public func info(shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> InfoResponse {
        try await call(shard: shard, deadline: deadline, requestID: requestID) { c, t throws(RPCError) in try await c.info(timeout: t) }
    }
    public func lookup(_ request: LookupRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> LookupResponse {
        try await call(shard: shard, deadline: deadline, requestID: requestID) { c, t throws(RPCError) in try await c.lookup(request, timeout: t) }
    }
    public func search(_ request: SearchRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> SearchResponse {
        try await call(shard: shard, deadline: deadline, requestID: requestID) { c, t throws(RPCError) in try await c.search(request, timeout: t) }
    }
    public func lists(_ request: ListsRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> ListsResponse {
        try await call(shard: shard, deadline: deadline, requestID: requestID) { c, t throws(RPCError) in try await c.lists(request, timeout: t) }
    }
    public func profiles(_ request: ProfilesRequest, shard: Int, deadline: ContinuousClock.Instant, requestID: String) async throws(RPCError) -> ProfilesResponse {
        try await call(shard: shard, deadline: deadline, requestID: requestID) { c, t throws(RPCError) in try await c.profiles(request, timeout: t) }
    }
    public func attributes(_ request: AttributesRequest, shard: Int, deadline: ContinuousClock.Instant,
                           requestID: String) async throws(RPCError) -> AttributesResponse {
        try await call(shard: shard, deadline: deadline, requestID: requestID) { c, t throws(RPCError) in try await c.attributes(request, timeout: t) }
    }
}
