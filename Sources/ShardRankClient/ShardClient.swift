public import RPCCore
public import RPCTransport
public import ShardRankWire

/// Typed async stub for `shardrank.v1.Shard` (and the standard health service) on an `RPCChannel`.
/// Every method throws `RPCError`: the server's status, or the transport's.
public struct ShardClient: Sendable {
    public let channel: RPCChannel
    /// Sent with every call (e.g. `x-request-id` of the request being served), before per-call metadata.
    public var defaultMetadata: Metadata
    public init(channel: RPCChannel, defaultMetadata: Metadata = Metadata()) {
        self.channel = channel
        self.defaultMetadata = defaultMetadata
    }

    /// A copy of this client that sends `requestID` as `x-request-id`.
    public func forwarding(requestID: String) -> ShardClient {
        guard !requestID.isEmpty else { return self }
        var md = defaultMetadata
        md.add("x-request-id", requestID)
        return ShardClient(channel: channel, defaultMetadata: md)
    }

    /// A client whose calls also carry a W3C trace context (`traceparent`, and `tracestate` when
    /// given): the coordinator's shard calls of a traced request.
    public func forwarding(requestID: String, traceParent: String, traceState: String?) -> ShardClient {
        var md = defaultMetadata
        if !requestID.isEmpty { md.add("x-request-id", requestID) }
        md.add("traceparent", traceParent)
        if let traceState { md.add("tracestate", traceState) }
        return ShardClient(channel: channel, defaultMetadata: md)
    }

    func merged(_ md: Metadata) -> Metadata {
        if defaultMetadata.isEmpty { return md }
        var out = defaultMetadata
        for (k, v) in md { out.add(k, v) }
        return out
    }

    public func lookup(_ request: LookupRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> LookupResponse {
        try await channel.unary(ShardMethods.lookup, request, metadata: merged(metadata), timeout: timeout)
    }

    /// Lookup for callers that only check the answer (the load driver): the response is walked
    /// in place (`LookupResponse.summary`) instead of decoded and copied.
    public func lookupSummary(_ request: LookupRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> LookupResponse.Summary {
        let bytes = try await channel.unary(path: ShardMethods.lookup.path, request: request.encoded(), metadata: merged(metadata), timeout: timeout)
        return try decodeResponse { () throws(RPCError) in try LookupResponse.summary(bytes) }
    }

    public func search(_ request: SearchRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> SearchResponse {
        try await channel.unary(ShardMethods.search, request, metadata: merged(metadata), timeout: timeout)
    }

    public func lists(_ request: ListsRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> ListsResponse {
        try await channel.unary(ShardMethods.lists, request, metadata: merged(metadata), timeout: timeout)
    }

    public func profiles(_ request: ProfilesRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> ProfilesResponse {
        try await channel.unary(ShardMethods.profiles, request, metadata: merged(metadata), timeout: timeout)
    }

    public func attributes(_ request: AttributesRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> AttributesResponse {
        try await channel.unary(ShardMethods.attributes, request, metadata: merged(metadata), timeout: timeout)
    }

    /// A page of the ids `request.table` holds on this shard, in row order.
    public func ids(_ request: IdsRequest, metadata: Metadata = Metadata(), timeout: Duration? = nil) async throws(RPCError) -> IdsResponse {
        try await channel.unary(ShardMethods.ids, request, metadata: merged(metadata), timeout: timeout)
    }

    /// Every id `table` holds on this shard, in row order, paged from one table-set version
    /// (`version`, or the newest when 0). Refuses (FAILED_PRECONDITION) a table of more than `maxIDs` rows.
    public func allIDs(table: String, version: UInt64 = 0, maxIDs: Int = 100_000_000, pageSize: UInt32 = IdsRequest.maxLimit,
                       timeout: Duration? = nil) async throws(RPCError) -> (ids: [UInt64], version: UInt64) {
        var out: [UInt64] = []
        var version = version
        while true {
            let page = try await ids(IdsRequest(table: table, offset: UInt64(out.count), limit: pageSize, version: version), timeout: timeout)
            if out.isEmpty {
                guard page.rows <= UInt64(maxIDs) else {
                    throw RPCError(.failedPrecondition, "table '\(table)' holds \(page.rows) rows on this shard, more than the \(maxIDs) ids read at most")
                }
                version = page.version
                out.reserveCapacity(Int(page.rows))
            }
            out += page.ids
            if page.ids.isEmpty || out.count >= Int(page.rows) { break }
        }
        return (out, version)
    }

    public func info(timeout: Duration? = nil) async throws(RPCError) -> InfoResponse {
        try await channel.unary(ShardMethods.info, InfoRequest(), timeout: timeout)
    }
}

/// Typed stub for `grpc.health.v1.Health/Check`.
public struct HealthClient: Sendable {
    public let channel: RPCChannel
    public init(channel: RPCChannel) { self.channel = channel }

    public func check(service: String = "", timeout: Duration? = nil) async throws(RPCError) -> ServingStatus {
        try await channel.unary(HealthMethods.check, HealthCheckRequest(service: service), timeout: timeout).status
    }
}

/// A response that does not parse is the server's fault: INTERNAL, not INVALID_ARGUMENT.
func decodeResponse<T>(_ body: () throws(RPCError) -> T) throws(RPCError) -> T {
    do throws(RPCError) { return try body() } catch { throw RPCError(.internal, "bad response from server: \(error.message)") }
}
