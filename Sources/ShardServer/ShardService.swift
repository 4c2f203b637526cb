public import RPCCore
public import ShardRankWire

/// Limits of the shard service, with their defaults.
public struct ShardLimits: Sendable, Hashable {
    /// Ids in one Lookup.
    public var maxLookupIDs = 100_000
    /// Queries in one Search, and the largest k.
    public var maxSearchQueries = 1024
    public var maxSearchK = 10_000
    /// Keys in one Lists call.
    public var maxListKeys = 10_000
    /// Ids one Search may exclude (`exclude_ids` and `exclude_sorted` together).
    public var maxExcludedIDs = 1_000_000
    public init() {}
}

/// What a shard serves its calls from: the synthetic table, or a loaded table set.
public protocol ShardBackend: Sendable {
    func lookup(_ request: LookupRequest, context: ServerContext) throws(RPCError) -> FramedMessage
    func search(_ request: SearchRequest, context: ServerContext) throws(RPCError) -> SearchResponse
    /// Search that answers through `respond` (once, from any thread), called on the connection's
    /// event loop: the backend answers at once when the work is short (an ANN query) and hands
    /// longer work to its own threads (a batched exact pass) without blocking the loop. Only
    /// called when `deferredSearch` is true.
    func searchDeferred(_ request: SearchRequest, context: ServerContext,
                        respond: @escaping @Sendable (Result<SearchResponse, RPCError>) -> Void)
    /// True when Search is served through `searchDeferred`; false: `search` on the worker pool.
    var deferredSearch: Bool { get }
    func lists(_ request: ListsRequest, context: ServerContext) throws(RPCError) -> ListsResponse
    func profiles(_ request: ProfilesRequest, context: ServerContext) throws(RPCError) -> ProfilesResponse
    func attributes(_ request: AttributesRequest, context: ServerContext) throws(RPCError) -> AttributesResponse
    func info() -> InfoResponse
    /// A page of the ids table `request.table` holds, in row order (`limit` already checked).
    func ids(_ request: IdsRequest, context: ServerContext) throws(RPCError) -> IdsResponse
}

extension ShardBackend {
    /// A backend that cannot list its ids.
    public func ids(_ request: IdsRequest, context: ServerContext) throws(RPCError) -> IdsResponse {
        throw RPCError(.unimplemented, "this shard backend does not list its ids")
    }

    public var deferredSearch: Bool { false }
    public func searchDeferred(_ request: SearchRequest, context: ServerContext,
                               respond: @escaping @Sendable (Result<SearchResponse, RPCError>) -> Void) {
        do throws(RPCError) { respond(.success(try search(request, context: context))) } catch { respond(.failure(error)) }
    }

    /// `searchDeferred` awaited (tests, tools).
    public func searchAsync(_ request: SearchRequest, context: ServerContext) async throws(RPCError) -> SearchResponse {
        let result: Result<SearchResponse, RPCError> = await withCheckedContinuation { c in
            searchDeferred(request, context: context) { c.resume(returning: $0) }
        }
        return try result.get()
    }
}

/// `shardrank.v1.Shard`: decodes, validates what is common to every backend, and calls the backend.
/// Lookup runs inline on the connection's event loop (a gather is a few µs); Search is handed to a
/// table-set backend on the loop (an ANN query answers there at once, an exact scan joins the
/// backend's batcher), or runs on the worker pool for the synthetic backend.
public struct ShardService: RPCService {
    public let serviceName = ShardMethods.serviceName
    public let backend: any ShardBackend
    public let limits: ShardLimits

    public init(backend: any ShardBackend, limits: ShardLimits = ShardLimits()) {
        self.backend = backend
        self.limits = limits
    }

    static func decodeSearch(_ bytes: [UInt8], _ limits: ShardLimits) throws(RPCError) -> SearchRequest {
        let req = try SearchRequest.decode(bytes)
        guard req.queryCount >= 1 else { throw RPCError(.invalidArgument, "Search needs at least one query") }
        guard req.queryCount <= limits.maxSearchQueries else {
            throw RPCError(.invalidArgument, "Search of \(req.queryCount) queries exceeds the limit of \(limits.maxSearchQueries)")
        }
        guard req.k >= 1 && req.k <= limits.maxSearchK else {
            throw RPCError(.invalidArgument, "Search k=\(req.k) is out of range 1...\(limits.maxSearchK)")
        }
        guard req.excludedCountBound <= limits.maxExcludedIDs else {
            throw RPCError(.invalidArgument, "Search excludes \(req.excludedCountBound) ids (exclude_ids + exclude_sorted), more than the limit of \(limits.maxExcludedIDs)")
        }
        guard req.queries.allSatisfy({ $0.isFinite }) else {
            throw RPCError(.invalidArgument, "Search queries contain NaN or infinite values")
        }
        return req
    }

    public var methods: [RPCMethod] {
        let backend = self.backend, limits = self.limits
        return [
            // Lookup and Search answer with buffers the backend encodes itself (rows copied once),
            // and Lookup decodes its request directly (its fast path), not through the descriptor.
            RPCMethod(ShardMethods.lookup, placement: .inline, handler: .unary { bytes, ctx throws(RPCError) in
                let req = try LookupRequest.decode(bytes)
                guard req.ids.count <= limits.maxLookupIDs else {
                    throw RPCError(.invalidArgument, "Lookup of \(req.ids.count) ids exceeds the limit of \(limits.maxLookupIDs) per call")
                }
                return try backend.lookup(req, context: ctx)
            }),
            RPCMethod(ShardMethods.search, placement: .workerPool, handler: backend.deferredSearch
                ? .deferredUnary { bytes, ctx, respond in
                    let req: SearchRequest
                    do throws(RPCError) { req = try Self.decodeSearch(bytes, limits) } catch { respond(.failure(error)); return }
                    backend.searchDeferred(req, context: ctx) { respond($0.map { $0.encoded() }) }
                }
                : .unary { bytes, ctx throws(RPCError) in
                    try backend.search(try Self.decodeSearch(bytes, limits), context: ctx).encoded()
                }),
            .unary(ShardMethods.lists, placement: .inline) { req, ctx throws(RPCError) in
                guard req.keys.count <= limits.maxListKeys else {
                    throw RPCError(.invalidArgument, "Lists of \(req.keys.count) keys exceeds the limit of \(limits.maxListKeys)")
                }
                return try backend.lists(req, context: ctx)
            },
            .unary(ShardMethods.profiles, placement: .inline) { req, ctx throws(RPCError) in
                guard req.userIDs.count <= limits.maxLookupIDs else {
                    throw RPCError(.invalidArgument, "Profiles of \(req.userIDs.count) users exceeds the limit of \(limits.maxLookupIDs)")
                }
                return try backend.profiles(req, context: ctx)
            },
            .unary(ShardMethods.attributes, placement: .inline) { req, ctx throws(RPCError) in
                guard req.itemIDs.count <= limits.maxLookupIDs else {
                    throw RPCError(.invalidArgument, "Attributes of \(req.itemIDs.count) items exceeds the limit of \(limits.maxLookupIDs)")
                }
                return try backend.attributes(req, context: ctx)
            },
            .unary(ShardMethods.info, placement: .inline) { _, _ throws(RPCError) in backend.info() },
            .unary(ShardMethods.ids, placement: .inline) { req, ctx throws(RPCError) in
                guard req.limit <= IdsRequest.maxLimit else {
                    throw RPCError(.invalidArgument, "Ids limit \(req.limit) exceeds the limit of \(IdsRequest.maxLimit) ids per call")
                }
                return try backend.ids(req, context: ctx)
            },
        ]
    }
}
