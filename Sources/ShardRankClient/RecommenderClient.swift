public import RPCCore
public import RPCTransport
public import ShardRankWire

/// Typed async stub for `shardrank.v1.Recommender` on an `RPCChannel`.
public struct RecommenderClient: Sendable {
    public let channel: RPCChannel
    public init(channel: RPCChannel) { self.channel = channel }

    public func recommend(_ request: RecommendRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> RecommendResponse {
        let bytes = try await channel.unary(path: "/shardrank.v1.Recommender/Recommend", request: request.encoded(), metadata: metadata, timeout: timeout)
        return try decodeResponse { () throws(RPCError) in try RecommendResponse.decode(bytes) }
    }

    public func rank(_ request: RankRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> ItemsResponse {
        let bytes = try await channel.unary(path: "/shardrank.v1.Recommender/Rank", request: request.encoded(), metadata: metadata, timeout: timeout)
        return try decodeResponse { () throws(RPCError) in try ItemsResponse.decodeRank(bytes) }
    }

    public func similar(_ request: SimilarRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> ItemsResponse {
        let bytes = try await channel.unary(path: "/shardrank.v1.Recommender/Similar", request: request.encoded(), metadata: metadata, timeout: timeout)
        return try decodeResponse { () throws(RPCError) in try ItemsResponse.decodeSimilar(bytes) }
    }

    /// Appends events to the user's session on this coordinator. Send a user's events and their
    /// Recommends to the same coordinator (`CoordinatorRing`): sessions are per replica.
    public func recordEvents(_ request: RecordEventsRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> RecordEventsResponse {
        let bytes = try await channel.unary(path: "/shardrank.v1.Recommender/RecordEvents", request: request.encoded(), metadata: metadata, timeout: timeout)
        return try decodeResponse { () throws(RPCError) in try RecordEventsResponse.decode(bytes) }
    }

    /// What the cluster behind the coordinator serves (every shard's Info, merged).
    public func info(metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> InfoResponse {
        let bytes = try await channel.unary(path: "/shardrank.v1.Recommender/Info", request: InfoRequest().encoded(), metadata: metadata, timeout: timeout)
        return try decodeResponse { () throws(RPCError) in try InfoResponse.decode(bytes) }
    }

    /// Many users' events in one call (an event pipeline's batch). Every user in it must belong
    /// to this coordinator (`CoordinatorRing.coordinator(of:)`); one bad entry refuses the whole batch.
    public func recordEventsBatch(_ request: RecordEventsBatchRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> RecordEventsBatchResponse {
        let bytes = try await channel.unary(path: "/shardrank.v1.Recommender/RecordEventsBatch", request: request.encoded(), metadata: metadata, timeout: timeout)
        return try decodeResponse { () throws(RPCError) in try RecordEventsBatchResponse.decode(bytes) }
    }
}
