internal import CProtobufC
internal import CShardRankProto
public import RPCCore
public import ShardRankIDs

// Swift values of the `shardrank.v1.Shard` messages. `decode` throws INVALID_ARGUMENT for bytes
// that are not the message; `encoded()` returns a gRPC-framed buffer ready for the transport.

public struct LookupRequest: Sendable, Hashable {
    public var table: String
    public var ids: [UInt64]
    public var dtype: DType
    public var version: UInt64

    public init(table: String, ids: [UInt64], dtype: DType = .unspecified, version: UInt64 = 0) {
        self.table = table; self.ids = ids; self.dtype = dtype; self.version = version
    }

    /// Decodes a request: the common shape by `decodeCanonical` (the hot path of every Lookup),
    /// anything else by protobuf-c, whose answer and errors are the reference.
    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> LookupRequest {
        if let r = decodeCanonical(bytes) { return r }
        return try decodeWithProtobufC(bytes)
    }

    static func decodeWithProtobufC(_ bytes: [UInt8]) throws(RPCError) -> LookupRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.LookupRequest", unpack: shardrank__v1__lookup_request__unpack, free: shardrank__v1__lookup_request__free_unpacked) { (m) throws(RPCError) in
            LookupRequest(table: ProtoC.string(m.pointee.table), ids: ProtoC.array(m.pointee.ids, m.pointee.n_ids),
                          dtype: try DType(wire: m.pointee.dtype.rawValue, field: "LookupRequest.dtype"), version: m.pointee.version)
        }
    }

    /// A direct walk of the wire format for the shape clients send — fields 1 (table), 2 (ids,
    /// packed or not), 3 (dtype), 4 (version), in any order and repeated as protobuf allows (last
    /// scalar wins, ids concatenate) — that returns exactly what protobuf-c would, or nil for
    /// anything else (an unknown field, a truncated or over-long varint, a table name with a NUL
    /// byte, a dtype beyond 32 bits), which then goes to protobuf-c. The 256 packed ids of a
    /// typical Lookup decode here without protobuf-c's two passes and temporary array.
    static func decodeCanonical(_ bytes: [UInt8]) -> LookupRequest? {
        bytes.withUnsafeBufferPointer { b -> LookupRequest? in
            var c = WireCursor(b)
            var table = ""
            var ids: [UInt64] = []
            var dtype: UInt64 = 0
            var version: UInt64 = 0
            while c.i < c.end {
                // The keys below are one byte; a longer encoding of one (protobuf-c reads tags of
                // up to 5 bytes) goes to protobuf-c.
                let keyStart = c.i
                guard let key = c.varint(), c.i - keyStart == 1 else { return nil }
                switch key {
                case 0x0A:  // 1: table, length-delimited
                    guard let s = c.lengthDelimited() else { return nil }
                    if s.contains(0) { return nil }  // protobuf-c's C string would end there
                    table = String(decoding: s, as: UTF8.self)
                case 0x12:  // 2: ids, packed
                    guard let s = c.lengthDelimited() else { return nil }
                    guard let decoded = WireCursor.packedVarints(s, count: WireCursor.varintCount(s)) else { return nil }
                    // The usual case is one packed field: its array becomes `ids`, no copy.
                    if ids.isEmpty { ids = decoded } else { ids += decoded }
                case 0x10:  // 2: one id, unpacked
                    guard let v = c.varint() else { return nil }
                    ids.append(v)
                case 0x18:  // 3: dtype
                    guard let v = c.varint(), v <= UInt64(Int32.max) else { return nil }
                    dtype = v
                case 0x20:  // 4: version
                    guard let v = c.varint() else { return nil }
                    version = v
                default:
                    return nil
                }
            }
            guard let d = DType(rawValue: UInt32(dtype)) else { return nil }  // protobuf-c path names the error
            return LookupRequest(table: table, ids: ids, dtype: d, version: version)
        }
    }

    public func encoded() -> FramedMessage {
        var m = Shardrank__V1__LookupRequest()
        shardrank__v1__lookup_request__init(&m)
        var ids = self.ids
        return ProtoC.withCString(table) { t in
            ids.withUnsafeMutableBufferPointer { idp in
                m.table = t
                m.n_ids = idp.count
                m.ids = idp.baseAddress
                m.dtype = Shardrank__V1__DType(rawValue: dtype.rawValue)
                m.version = version
                return ProtoC.pack(&m)
            }
        }
    }
}

public struct LookupResponse: Sendable, Hashable {
    public var dim: UInt32
    public var dtype: DType
    /// found rows × dim elements, row-major little-endian.
    public var vectors: [UInt8]
    public var missingIDs: [UInt64]
    public var version: UInt64
    /// int8 only: one little-endian f32 per found row.
    public var scales: [UInt8]
    public var shard: UInt32
    public var shardCount: UInt32

    public init(dim: UInt32, dtype: DType, vectors: [UInt8], missingIDs: [UInt64], version: UInt64,
                scales: [UInt8] = [], shard: UInt32 = 0, shardCount: UInt32 = 1) {
        self.dim = dim; self.dtype = dtype; self.vectors = vectors; self.missingIDs = missingIDs
        self.version = version; self.scales = scales; self.shard = shard; self.shardCount = shardCount
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> LookupResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.LookupResponse", unpack: shardrank__v1__lookup_response__unpack, free: shardrank__v1__lookup_response__free_unpacked) { (m) throws(RPCError) in
            LookupResponse(dim: m.pointee.dim, dtype: try DType(wire: m.pointee.dtype.rawValue, field: "LookupResponse.dtype"),
                           vectors: ProtoC.bytes(m.pointee.vectors), missingIDs: ProtoC.array(m.pointee.missing_ids, m.pointee.n_missing_ids),
                           version: m.pointee.version, scales: ProtoC.bytes(m.pointee.scales),
                           shard: m.pointee.shard, shardCount: m.pointee.shard_count)
        }
    }

    public func encoded() -> FramedMessage {
        vectors.withUnsafeBytes { v in
            LookupResponse.encode(dim: dim, dtype: dtype, missingIDs: missingIDs, version: version, scales: scales,
                                  shard: shard, shardCount: shardCount, vectorBytes: v.count) { dst in
                if v.count > 0 { dst.copyMemory(from: v) }
            }
        }
    }

    /// Encodes a response whose `vectors` field (`vectorBytes` long) is written in place by
    /// `fillVectors` directly into the framed buffer: the gather is the only copy of the rows.
    /// The largest `vectors` payload one Lookup answer may carry (64 MiB). The id count alone does
    /// not bound it (100,000 ids of a 16,384-dim f32 table are 6.5 GB): beyond it the call is
    /// RESOURCE_EXHAUSTED, decided before anything is allocated.
    public static let maxVectorBytes = 64 << 20

    /// Servers call this before building an answer of `vectorBytes` bytes of rows.
    /// - Throws: `RPCError(.resourceExhausted)` when it exceeds `maxVectorBytes`.
    public static func checkSize(vectorBytes: Int, dim: Int, dtype: DType) throws(RPCError) {
        guard vectorBytes <= maxVectorBytes else {
            throw RPCError(.resourceExhausted, "a Lookup answer of \(vectorBytes) bytes of rows exceeds the limit of \(maxVectorBytes) "
                           + "(\(dim) dims of \(dtype)): ask for fewer ids, or for dtype f16 or int8")
        }
    }

    public static func encode(dim: UInt32, dtype: DType, missingIDs: [UInt64], version: UInt64, scales: [UInt8],
                              shard: UInt32, shardCount: UInt32, vectorBytes: Int,
                              fillVectors: (UnsafeMutableRawBufferPointer) -> Void) -> FramedMessage {
        var m = Shardrank__V1__LookupResponse()
        shardrank__v1__lookup_response__init(&m)
        var missing = missingIDs
        var sc = scales
        return missing.withUnsafeMutableBufferPointer { mp in
            sc.withUnsafeMutableBufferPointer { sp in
                m.dim = dim
                m.dtype = Shardrank__V1__DType(rawValue: dtype.rawValue)
                m.n_missing_ids = mp.count
                m.missing_ids = mp.baseAddress
                m.version = version
                m.scales = ProtobufCBinaryData(len: sp.count, data: sp.baseAddress)
                m.shard = shard
                m.shard_count = shardCount
                return ProtoC.pack(&m, appendingBytesField: 3, length: vectorBytes, fill: fillVectors)
            }
        }
    }
}

/// How a Search is answered (proto `shardrank.v1.SearchMode`).
public enum SearchMode: UInt32, Sendable, Hashable, CaseIterable {
    /// The table set's default (requests only).
    case unspecified = 0
    /// A scan of the whole slice.
    case exact = 1
    /// Through the slice's approximate-nearest-neighbour index.
    case ann = 2
}

public struct SearchRequest: Sendable, Hashable {
    public var table: String
    /// queryCount × dim little-endian f32.
    public var queries: [Float]
    public var dim: UInt32
    public var k: UInt32
    public var excludeIDs: [UInt64]
    public var version: UInt64
    public var mode: SearchMode
    /// ANN knobs; 0 = the index's defaults.
    public var nprobe: UInt32
    public var rerank: UInt32
    /// Also return the hits' rows (in the table's own dtype).
    public var withRows: Bool
    /// More ids never to return, delta-varint packed (`exclude_sorted`): the shard excludes the
    /// union of these and `excludeIDs`.
    public var excludeSorted: PackedIDs

    public init(table: String, queries: [Float], dim: UInt32, k: UInt32, excludeIDs: [UInt64] = [], version: UInt64 = 0,
                mode: SearchMode = .unspecified, nprobe: UInt32 = 0, rerank: UInt32 = 0, withRows: Bool = false,
                excludeSorted: PackedIDs = PackedIDs()) {
        self.table = table; self.queries = queries; self.dim = dim; self.k = k; self.excludeIDs = excludeIDs; self.version = version
        self.mode = mode; self.nprobe = nprobe; self.rerank = rerank; self.withRows = withRows; self.excludeSorted = excludeSorted
    }

    public var queryCount: Int { dim == 0 ? 0 : queries.count / Int(dim) }

    /// How many ids the request excludes, counting an id in both fields twice (an upper bound
    /// that needs no decoding).
    public var excludedCountBound: Int { excludeIDs.count + excludeSorted.count }

    /// Every excluded id (`exclude_ids` ∪ `exclude_sorted`), ascending and unique: one decode
    /// per request, ready for the kernels' binary searches.
    public func allExcludedIDs() -> [UInt64] {
        if excludeIDs.isEmpty { return excludeSorted.decoded() }
        let listed = SortedIDs.sortedUnique(excludeIDs)
        return excludeSorted.isEmpty ? listed : SortedIDs.union(listed, excludeSorted.decoded())
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> SearchRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.SearchRequest", unpack: shardrank__v1__search_request__unpack, free: shardrank__v1__search_request__free_unpacked) { (m) throws(RPCError) in
            let q = m.pointee.queries
            let dim = m.pointee.dim
            guard dim > 0 else { throw RPCError(.invalidArgument, "SearchRequest.dim must be > 0") }
            guard q.len % (4 * Int(dim)) == 0 else {
                throw RPCError(.invalidArgument, "SearchRequest.queries has \(q.len) bytes, not a multiple of dim \(dim) × 4")
            }
            var floats = [Float](repeating: 0, count: q.len / 4)
            if q.len > 0 { floats.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: q.data, count: q.len)) } }
            guard let mode = SearchMode(rawValue: m.pointee.mode.rawValue) else {
                throw RPCError(.invalidArgument, "SearchRequest.mode \(m.pointee.mode.rawValue) is not a known SearchMode")
            }
            let excludeSorted: PackedIDs
            do throws(DeltaVarint.DecodeError) {
                excludeSorted = try PackedIDs(validating: ProtoC.bytes(m.pointee.exclude_sorted))
            } catch {
                throw RPCError(.invalidArgument, "SearchRequest.exclude_sorted is not a delta-varint id set: \(error)")
            }
            return SearchRequest(table: ProtoC.string(m.pointee.table), queries: floats, dim: dim, k: m.pointee.k,
                                 excludeIDs: ProtoC.array(m.pointee.exclude_ids, m.pointee.n_exclude_ids), version: m.pointee.version,
                                 mode: mode, nprobe: m.pointee.nprobe, rerank: m.pointee.rerank, withRows: m.pointee.with_rows != 0,
                                 excludeSorted: excludeSorted)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__SearchRequest()
        shardrank__v1__search_request__init(&m)
        m.table = arena.string(table)
        let q = queries.withUnsafeBytes { Array($0) }
        m.queries = ProtobufCBinaryData(len: q.count, data: arena.array(q))
        m.dim = dim
        m.k = k
        m.n_exclude_ids = excludeIDs.count
        m.exclude_ids = arena.array(excludeIDs)
        m.version = version
        m.mode = Shardrank__V1__SearchMode(rawValue: mode.rawValue)
        m.nprobe = nprobe
        m.rerank = rerank
        m.with_rows = withRows ? 1 : 0
        if !excludeSorted.isEmpty {
            m.exclude_sorted = ProtobufCBinaryData(len: excludeSorted.bytes.count, data: arena.array(excludeSorted.bytes))
        }
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct SearchHits: Sendable, Hashable {
    public var ids: [UInt64]
    public var scores: [Float]
    /// With `SearchRequest.withRows`: ids.count × dim elements of the response's dtype.
    public var vectors: [UInt8]
    /// For int8 rows: one f32 scale per row.
    public var scales: [Float]
    public init(ids: [UInt64], scores: [Float], vectors: [UInt8] = [], scales: [Float] = []) {
        self.ids = ids; self.scores = scores; self.vectors = vectors; self.scales = scales
    }
}

public struct SearchResponse: Sendable, Hashable {
    public var results: [SearchHits]
    public var version: UInt64
    public var shard: UInt32
    public var shardCount: UInt32
    /// `.exact` or `.ann`: how the queries were answered.
    public var mode: SearchMode
    /// With rows: their width and element type (0 / `.unspecified` without).
    public var dim: UInt32
    public var dtype: DType

    public init(results: [SearchHits], version: UInt64, shard: UInt32 = 0, shardCount: UInt32 = 1, mode: SearchMode = .exact,
                dim: UInt32 = 0, dtype: DType = .unspecified) {
        self.results = results; self.version = version; self.shard = shard; self.shardCount = shardCount; self.mode = mode
        self.dim = dim; self.dtype = dtype
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> SearchResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.SearchResponse", unpack: shardrank__v1__search_response__unpack, free: shardrank__v1__search_response__free_unpacked) { m in
            var results: [SearchHits] = []
            for i in 0 ..< m.pointee.n_results {
                let h = m.pointee.results[i]!.pointee
                let vectors = h.vectors.len > 0 ? Array(UnsafeRawBufferPointer(start: h.vectors.data, count: h.vectors.len)) : []
                let scaleCount = h.scales.len / 4
                var scales = [Float](repeating: 0, count: scaleCount)
                if scaleCount > 0 {
                    scales.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: h.scales.data, count: scaleCount * 4)) }
                }
                results.append(SearchHits(ids: ProtoC.array(h.ids, h.n_ids), scores: ProtoC.array(h.scores, h.n_scores),
                                          vectors: vectors, scales: scales))
            }
            return SearchResponse(results: results, version: m.pointee.version, shard: m.pointee.shard, shardCount: m.pointee.shard_count,
                                  mode: SearchMode(rawValue: m.pointee.mode.rawValue) ?? .unspecified,
                                  dim: m.pointee.dim, dtype: DType(rawValue: m.pointee.dtype.rawValue) ?? .unspecified)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__SearchResponse()
        shardrank__v1__search_response__init(&m)
        m.n_results = results.count
        m.results = arena.pointerArray(results.map { r in
            var h = Shardrank__V1__SearchHits()
            shardrank__v1__search_hits__init(&h)
            h.n_ids = r.ids.count
            h.ids = arena.array(r.ids)
            h.n_scores = r.scores.count
            h.scores = arena.array(r.scores)
            if !r.vectors.isEmpty { h.vectors = ProtobufCBinaryData(len: r.vectors.count, data: arena.array(r.vectors)) }
            if !r.scales.isEmpty {
                let b = r.scales.withUnsafeBytes { Array($0) }
                h.scales = ProtobufCBinaryData(len: b.count, data: arena.array(b))
            }
            return h
        })
        m.version = version
        m.shard = shard
        m.shard_count = shardCount
        m.mode = Shardrank__V1__SearchMode(rawValue: mode.rawValue)
        m.dim = dim
        m.dtype = Shardrank__V1__DType(rawValue: dtype.rawValue)
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct RankedList: Sendable, Hashable {
    public var key: String
    public var ids: [UInt64]
    public var scores: [Float]
    public init(key: String, ids: [UInt64], scores: [Float]) { self.key = key; self.ids = ids; self.scores = scores }
}

public struct ListsRequest: Sendable, Hashable {
    public var table: String
    public var keys: [String]
    public var limit: UInt32
    public var version: UInt64

    public init(table: String, keys: [String], limit: UInt32 = 0, version: UInt64 = 0) {
        self.table = table; self.keys = keys; self.limit = limit; self.version = version
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> ListsRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.ListsRequest", unpack: shardrank__v1__lists_request__unpack, free: shardrank__v1__lists_request__free_unpacked) { m in
            let keys = (0 ..< m.pointee.n_keys).map { ProtoC.string(m.pointee.keys[$0]) }
            return ListsRequest(table: ProtoC.string(m.pointee.table), keys: keys, limit: m.pointee.limit, version: m.pointee.version)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__ListsRequest()
        shardrank__v1__lists_request__init(&m)
        m.table = arena.string(table)
        m.n_keys = keys.count
        m.keys = arena.array(keys.map { Optional(arena.string($0)) })
        m.limit = limit
        m.version = version
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct ListsResponse: Sendable, Hashable {
    public var lists: [RankedList]
    public var missingKeys: [String]
    public var version: UInt64
    public var shard: UInt32
    public var shardCount: UInt32

    public init(lists: [RankedList], missingKeys: [String], version: UInt64, shard: UInt32 = 0, shardCount: UInt32 = 1) {
        self.lists = lists; self.missingKeys = missingKeys; self.version = version; self.shard = shard; self.shardCount = shardCount
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> ListsResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.ListsResponse", unpack: shardrank__v1__lists_response__unpack, free: shardrank__v1__lists_response__free_unpacked) { m in
            let lists = (0 ..< m.pointee.n_lists).map { i -> RankedList in
                let l = m.pointee.lists[i]!.pointee
                return RankedList(key: ProtoC.string(l.key), ids: ProtoC.array(l.ids, l.n_ids), scores: ProtoC.array(l.scores, l.n_scores))
            }
            let missing = (0 ..< m.pointee.n_missing_keys).map { ProtoC.string(m.pointee.missing_keys[$0]) }
            return ListsResponse(lists: lists, missingKeys: missing, version: m.pointee.version, shard: m.pointee.shard,
                                 shardCount: m.pointee.shard_count)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__ListsResponse()
        shardrank__v1__lists_response__init(&m)
        m.n_lists = lists.count
        m.lists = arena.pointerArray(lists.map { l in
            var c = Shardrank__V1__RankedList()
            shardrank__v1__ranked_list__init(&c)
            c.key = arena.string(l.key)
            c.n_ids = l.ids.count
            c.ids = arena.array(l.ids)
            c.n_scores = l.scores.count
            c.scores = arena.array(l.scores)
            return c
        })
        m.n_missing_keys = missingKeys.count
        m.missing_keys = arena.array(missingKeys.map { Optional(arena.string($0)) })
        m.version = version
        m.shard = shard
        m.shard_count = shardCount
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct InfoRequest: Sendable, Hashable {
    public init() {}
    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> InfoRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.InfoRequest", unpack: shardrank__v1__info_request__unpack, free: shardrank__v1__info_request__free_unpacked) { _ in InfoRequest() }
    }
    public func encoded() -> FramedMessage {
        var m = Shardrank__V1__InfoRequest()
        shardrank__v1__info_request__init(&m)
        return ProtoC.pack(&m)
    }
}

public struct TableInfo: Sendable, Hashable {
    public var name: String
    public var kind: TableKind
    public var dim: UInt32
    public var dtype: DType
    public var rows: UInt64
    /// The smallest and largest id of the rows (0 and 0: a list table, or no rows).
    public var minID: UInt64
    public var maxID: UInt64
    public init(name: String, kind: TableKind, dim: UInt32, dtype: DType, rows: UInt64, minID: UInt64 = 0, maxID: UInt64 = 0) {
        self.name = name; self.kind = kind; self.dim = dim; self.dtype = dtype; self.rows = rows; self.minID = minID; self.maxID = maxID
    }
}

public struct InfoResponse: Sendable, Hashable {
    public var version: UInt64
    public var shard: UInt32
    public var shardCount: UInt32
    public var tables: [TableInfo]
    public var mappedBytes: UInt64
    public var source: String
    public var hash: String
    /// The hash function's seed (the manifest's); 0 = not reported (a shard predating the field).
    public var hashSeed: UInt64
    /// A coordinator's Info: the tables it reads user and item vectors from ("" from a shard).
    public var usersTable: String
    public var itemsTable: String

    public init(version: UInt64, shard: UInt32, shardCount: UInt32, tables: [TableInfo], mappedBytes: UInt64, source: String, hash: String,
                hashSeed: UInt64 = 0, usersTable: String = "", itemsTable: String = "") {
        self.version = version; self.shard = shard; self.shardCount = shardCount; self.tables = tables
        self.mappedBytes = mappedBytes; self.source = source; self.hash = hash; self.hashSeed = hashSeed
        self.usersTable = usersTable; self.itemsTable = itemsTable
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> InfoResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.InfoResponse", unpack: shardrank__v1__info_response__unpack, free: shardrank__v1__info_response__free_unpacked) { m in
            let tables = (0 ..< m.pointee.n_tables).map { i -> TableInfo in
                let t = m.pointee.tables[i]!.pointee
                return TableInfo(name: ProtoC.string(t.name), kind: TableKind(rawValue: t.kind.rawValue) ?? .unspecified,
                                 dim: t.dim, dtype: DType(rawValue: t.dtype.rawValue) ?? .unspecified, rows: t.rows,
                                 minID: t.min_id, maxID: t.max_id)
            }
            return InfoResponse(version: m.pointee.version, shard: m.pointee.shard, shardCount: m.pointee.shard_count,
                                tables: tables, mappedBytes: m.pointee.mapped_bytes, source: ProtoC.string(m.pointee.source),
                                hash: ProtoC.string(m.pointee.hash), hashSeed: m.pointee.hash_seed,
                                usersTable: ProtoC.string(m.pointee.users_table), itemsTable: ProtoC.string(m.pointee.items_table))
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__InfoResponse()
        shardrank__v1__info_response__init(&m)
        m.version = version
        m.shard = shard
        m.shard_count = shardCount
        m.n_tables = tables.count
        m.tables = arena.pointerArray(tables.map { t in
            var c = Shardrank__V1__TableInfo()
            shardrank__v1__table_info__init(&c)
            c.name = arena.string(t.name)
            c.kind = Shardrank__V1__TableKind(rawValue: t.kind.rawValue)
            c.dim = t.dim
            c.dtype = Shardrank__V1__DType(rawValue: t.dtype.rawValue)
            c.rows = t.rows
            c.min_id = t.minID
            c.max_id = t.maxID
            return c
        })
        m.mapped_bytes = mappedBytes
        m.source = arena.string(source)
        m.hash = arena.string(hash)
        m.hash_seed = hashSeed
        m.users_table = arena.string(usersTable)
        m.items_table = arena.string(itemsTable)
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

/// `Ids`: a page of the ids a table holds on one shard, in row order.
public struct IdsRequest: Sendable, Hashable {
    /// The page size a `limit` of 0 asks for, and the most one call may ask for.
    public static let defaultLimit: UInt32 = 65_536
    public static let maxLimit: UInt32 = 262_144
    public var table: String
    public var offset: UInt64
    /// 0: `defaultLimit`.
    public var limit: UInt32
    public var version: UInt64

    public init(table: String, offset: UInt64 = 0, limit: UInt32 = 0, version: UInt64 = 0) {
        self.table = table; self.offset = offset; self.limit = limit; self.version = version
    }

    /// The page size asked for (`limit`, or `defaultLimit` for 0).
    public var pageSize: Int { Int(limit == 0 ? Self.defaultLimit : limit) }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> IdsRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.IdsRequest", unpack: shardrank__v1__ids_request__unpack, free: shardrank__v1__ids_request__free_unpacked) { m in
            IdsRequest(table: ProtoC.string(m.pointee.table), offset: m.pointee.offset, limit: m.pointee.limit, version: m.pointee.version)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__IdsRequest()
        shardrank__v1__ids_request__init(&m)
        m.table = arena.string(table)
        m.offset = offset
        m.limit = limit
        m.version = version
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct IdsResponse: Sendable, Hashable {
    public var ids: [UInt64]
    /// Rows the table holds on this shard.
    public var rows: UInt64
    public var version: UInt64
    public var shard: UInt32
    public var shardCount: UInt32

    public init(ids: [UInt64], rows: UInt64, version: UInt64, shard: UInt32 = 0, shardCount: UInt32 = 1) {
        self.ids = ids; self.rows = rows; self.version = version; self.shard = shard; self.shardCount = shardCount
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> IdsResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.IdsResponse", unpack: shardrank__v1__ids_response__unpack, free: shardrank__v1__ids_response__free_unpacked) { m in
            let p = m.pointee
            return IdsResponse(ids: ProtoC.array(p.ids, p.n_ids), rows: p.rows, version: p.version, shard: p.shard, shardCount: p.shard_count)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__IdsResponse()
        shardrank__v1__ids_response__init(&m)
        m.n_ids = ids.count; m.ids = arena.array(ids)
        m.rows = rows
        m.version = version
        m.shard = shard
        m.shard_count = shardCount
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

extension LookupResponse {
    /// The found rows as f32, row-major (`found × dim` floats): f16 widened, int8 × its row scale.
    public func floatRows() -> [Float] {
        let dim = Int(self.dim)
        guard dim > 0 else { return [] }
        switch dtype {
        case .f32, .unspecified:
            return vectors.withUnsafeBytes { b in
                (0 ..< b.count / 4).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
        case .f16:
            return vectors.withUnsafeBytes { b in
                (0 ..< b.count / 2).map { Float(Float16(bitPattern: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)))) }
            }
        case .int8:
            let n = vectors.count / dim
            var out = [Float](repeating: 0, count: n * dim)
            vectors.withUnsafeBytes { v in
                scales.withUnsafeBytes { s in
                    for i in 0 ..< n {
                        let scale = Float(bitPattern: UInt32(littleEndian: s.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                        for j in 0 ..< dim { out[i * dim + j] = Float(v.load(fromByteOffset: i * dim + j, as: Int8.self)) * scale }
                    }
                }
            }
            return out
        }
    }
}

/// Reads protobuf wire-format primitives from a buffer (the fast paths that bypass protobuf-c).
struct WireCursor {
    let b: UnsafeBufferPointer<UInt8>
    var i = 0
    let end: Int

    init(_ b: UnsafeBufferPointer<UInt8>) {
        self.b = b
        end = b.count
    }

    /// A varint as protobuf-c reads it (at most 10 bytes), or nil when it is truncated or has
    /// bits past 64 (the caller then leaves the message to protobuf-c).
    @inline(__always)
    mutating func varint() -> UInt64? {
        guard i < end else { return nil }
        let first = b[i]
        if first < 0x80 { i += 1; return UInt64(first) }
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while i < end {
            let byte = b[i]
            i += 1
            if shift == 63 && byte > 1 { return nil }
            v |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return v }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    /// How many varints `s` holds: its bytes without the continuation bit, counted 8 at a time.
    static func varintCount(_ s: UnsafeBufferPointer<UInt8>) -> Int {
        guard let base = s.baseAddress else { return 0 }
        let raw = UnsafeRawPointer(base)
        var count = 0, i = 0
        while i + 8 <= s.count {
            count &+= (~raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080).nonzeroBitCount
            i += 8
        }
        while i < s.count {
            count &+= Int((base[i] >> 7) ^ 1)
            i += 1
        }
        return count
    }

    /// The varints of a packed field holding `count` of them (its bytes without the continuation
    /// bit), decoded as `varint()` does into a new array; nil when one is truncated or has bits
    /// past 64. Each decoded varint consumes one terminating byte, so at most `count` are written.
    static func packedVarints(_ s: UnsafeBufferPointer<UInt8>, count: Int) -> [UInt64]? {
        guard let base = s.baseAddress, count > 0 else { return s.isEmpty ? [] : nil }
        var ok = true
        let out = [UInt64](unsafeUninitializedCapacity: count) { dst, initialized in
            var p = base
            let end = base + s.count
            var k = 0
            decoding: while p < end {
                let first = p.pointee
                if first < 0x80 {
                    dst[k] = UInt64(first)
                    k += 1
                    p += 1
                    continue
                }
                // Ids below 2^21 (the usual catalog) take 2 or 3 bytes: unrolled.
                if end - p >= 3 {
                    let second = p[1], third = p[2]
                    if second < 0x80 {
                        dst[k] = UInt64(first & 0x7F) | UInt64(second) << 7
                        k += 1
                        p += 2
                        continue
                    }
                    if third < 0x80 {
                        dst[k] = UInt64(first & 0x7F) | UInt64(second & 0x7F) << 7 | UInt64(third) << 14
                        k += 1
                        p += 3
                        continue
                    }
                }
                p += 1
                var v = UInt64(first & 0x7F)
                var shift: UInt64 = 7
                while p < end {
                    let byte = p.pointee
                    p += 1
                    if shift == 63 && byte > 1 { break }
                    v |= UInt64(byte & 0x7F) << shift
                    if byte & 0x80 == 0 {
                        dst[k] = v
                        k += 1
                        continue decoding
                    }
                    shift += 7
                    if shift > 63 { break }
                }
                ok = false  // truncated, or too long
                break
            }
            initialized = k
        }
        return ok ? out : nil
    }

    /// A length prefix and the bytes it covers, or nil when they run past the end or the prefix
    /// is longer than the 5 bytes protobuf-c reads (which refuses such a message).
    @inline(__always)
    mutating func lengthDelimited() -> UnsafeBufferPointer<UInt8>? {
        let start = i
        guard let len = varint(), i - start <= 5, len <= UInt64(end - i) else { return nil }
        let s = UnsafeBufferPointer(rebasing: b[i ..< i + Int(len)])
        i += Int(len)
        return s
    }
}
