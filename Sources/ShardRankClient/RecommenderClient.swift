public import RPCCore
public import RPCTransport
public import ShardRankWire

/// Typed async stub for `shardrank.v1.Recommender` on an `RPCChannel`.
public struct RecommenderClient: Sendable {
    public let channel: RPCChannel
    public init(channel: RPCChannel) { self.channel = channel }

    public func recommend(_ request: RecommendRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> RecommendResponse {
        try await channel.unary(RecommenderMethods.recommend, request, metadata: metadata, timeout: timeout)
    }

    public func rank(_ request: RankRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> ItemsResponse {
        try await channel.unary(RecommenderMethods.rank, request, metadata: metadata, timeout: timeout)
    }

    public func similar(_ request: SimilarRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> ItemsResponse {
        try await channel.unary(RecommenderMethods.similar, request, metadata: metadata, timeout: timeout)
    }

    /// Appends events to the user's session on this coordinator. Send a user's events and their
    /// Recommends to the same coordinator (`CoordinatorRing`): sessions are per replica.
    public func recordEvents(_ request: RecordEventsRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> RecordEventsResponse {
        try await channel.unary(RecommenderMethods.recordEvents, request, metadata: metadata, timeout: timeout)
    }

    /// What the cluster behind the coordinator serves (every shard's Info, merged).
    public func info(metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> InfoResponse {
        try await channel.unary(RecommenderMethods.info, InfoRequest(), metadata: metadata, timeout: timeout)
    }

    /// Many users' events in one call (an event pipeline's batch). Every user in it must belong
    /// to this coordinator (`CoordinatorRing.coordinator(of:)`); one bad entry refuses the whole batch.
    public func recordEventsBatch(_ request: RecordEventsBatchRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> RecordEventsBatchResponse {
        try await channel.unary(RecommenderMethods.recordEventsBatch, request, metadata: metadata, timeout: timeout)
    }
}
