internal import CProtobufC
internal import CShardRankProto
public import RPCCore
public import ShardRankIDs

public struct ProfilesRequest: Sendable, Hashable {
    public var table: String
    public var userIDs: [UInt64]
    public var version: UInt64
    public init(table: String = "profiles", userIDs: [UInt64], version: UInt64 = 0) {
        self.table = table; self.userIDs = userIDs; self.version = version
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> ProfilesRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.ProfilesRequest", unpack: shardrank__v1__profiles_request__unpack,
                          free: shardrank__v1__profiles_request__free_unpacked) { m in
            ProfilesRequest(table: ProtoC.string(m.pointee.table), userIDs: ProtoC.array(m.pointee.user_ids, m.pointee.n_user_ids),
                            version: m.pointee.version)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__ProfilesRequest()
        shardrank__v1__profiles_request__init(&m)
        m.table = arena.string(table)
        m.n_user_ids = userIDs.count
        m.user_ids = arena.array(userIDs)
        m.version = version
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct UserProfile: Sendable, Hashable {
    public var userID: UInt64
    /// Most recent first.
    public var recentItemIDs: [UInt64]
    /// Every item the user interacted with, as its delta-varint bytes (fields `history` and
    /// `history_count`); empty from a shard that predates them.
    public var history: PackedIDs
    public var topGenres: [String]
    public var country: String
    public init(userID: UInt64, recentItemIDs: [UInt64], history: PackedIDs = PackedIDs(), topGenres: [String], country: String) {
        self.userID = userID; self.recentItemIDs = recentItemIDs; self.history = history; self.topGenres = topGenres; self.country = country
    }

    /// Checks a profile's `history` bytes against its `history_count`.
    static func history(_ bytes: [UInt8], count: UInt32) throws(RPCError) -> PackedIDs {
        let packed: PackedIDs
        do throws(DeltaVarint.DecodeError) {
            packed = try PackedIDs(validating: bytes)
        } catch {
            throw RPCError(.invalidArgument, "UserProfile.history is not a delta-varint id set: \(error)")
        }
        guard packed.count == Int(count) else {
            throw RPCError(.invalidArgument, "UserProfile.history_count is \(count) but UserProfile.history holds \(packed.count) ids")
        }
        return packed
    }
}

public struct ProfilesResponse: Sendable, Hashable {
    public var profiles: [UserProfile]
    public var missingUserIDs: [UInt64]
    public var version: UInt64
    public var shard: UInt32
    public var shardCount: UInt32
    public init(profiles: [UserProfile], missingUserIDs: [UInt64], version: UInt64, shard: UInt32 = 0, shardCount: UInt32 = 1) {
        self.profiles = profiles; self.missingUserIDs = missingUserIDs; self.version = version; self.shard = shard; self.shardCount = shardCount
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> ProfilesResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.ProfilesResponse", unpack: shardrank__v1__profiles_response__unpack,
                          free: shardrank__v1__profiles_response__free_unpacked) { (m) throws(RPCError) in
            let p = m.pointee
            var profiles: [UserProfile] = []
            profiles.reserveCapacity(p.n_profiles)
            for i in 0 ..< p.n_profiles {
                let u = p.profiles[i]!.pointee
                profiles.append(UserProfile(userID: u.user_id, recentItemIDs: ProtoC.array(u.recent_item_ids, u.n_recent_item_ids),
                                            history: try UserProfile.history(ProtoC.bytes(u.history), count: u.history_count),
                                            topGenres: (0 ..< u.n_top_genres).map { ProtoC.string(u.top_genres[$0]) },
                                            country: ProtoC.string(u.country)))
            }
            return ProfilesResponse(profiles: profiles, missingUserIDs: ProtoC.array(p.missing_user_ids, p.n_missing_user_ids),
                                    version: p.version, shard: p.shard, shardCount: p.shard_count)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__ProfilesResponse()
        shardrank__v1__profiles_response__init(&m)
        m.n_profiles = profiles.count
        m.profiles = arena.pointerArray(profiles.map { u in
            var c = Shardrank__V1__UserProfile()
            shardrank__v1__user_profile__init(&c)
            c.user_id = u.userID
            c.n_recent_item_ids = u.recentItemIDs.count
            c.recent_item_ids = arena.array(u.recentItemIDs)
            c.n_top_genres = u.topGenres.count
            c.top_genres = arena.array(u.topGenres.map { Optional(arena.string($0)) })
            c.country = arena.string(u.country)
            if !u.history.isEmpty {
                c.history = ProtobufCBinaryData(len: u.history.bytes.count, data: arena.array(u.history.bytes))
                c.history_count = UInt32(u.history.count)
            }
            return c
        })
        m.n_missing_user_ids = missingUserIDs.count
        m.missing_user_ids = arena.array(missingUserIDs)
        m.version = version
        m.shard = shard
        m.shard_count = shardCount
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct AttributesRequest: Sendable, Hashable {
    public var table: String
    public var itemIDs: [UInt64]
    public var version: UInt64
    public init(table: String = "attributes", itemIDs: [UInt64], version: UInt64 = 0) {
        self.table = table; self.itemIDs = itemIDs; self.version = version
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> AttributesRequest {
        try ProtoC.unpack(bytes, "shardrank.v1.AttributesRequest", unpack: shardrank__v1__attributes_request__unpack,
                          free: shardrank__v1__attributes_request__free_unpacked) { m in
            AttributesRequest(table: ProtoC.string(m.pointee.table), itemIDs: ProtoC.array(m.pointee.item_ids, m.pointee.n_item_ids),
                              version: m.pointee.version)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__AttributesRequest()
        shardrank__v1__attributes_request__init(&m)
        m.table = arena.string(table)
        m.n_item_ids = itemIDs.count
        m.item_ids = arena.array(itemIDs)
        m.version = version
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}

public struct AttributesResponse: Sendable, Hashable {
    public var itemIDs: [UInt64]
    public var genreMasks: [UInt64]
    public var timestamps: [Int64]
    public var popularity: [Float]
    public var genres: [String]
    public var missingItemIDs: [UInt64]
    public var version: UInt64
    public var shard: UInt32
    public var shardCount: UInt32

    public init(itemIDs: [UInt64], genreMasks: [UInt64], timestamps: [Int64], popularity: [Float], genres: [String],
                missingItemIDs: [UInt64], version: UInt64, shard: UInt32 = 0, shardCount: UInt32 = 1) {
        self.itemIDs = itemIDs; self.genreMasks = genreMasks; self.timestamps = timestamps; self.popularity = popularity
        self.genres = genres; self.missingItemIDs = missingItemIDs; self.version = version; self.shard = shard; self.shardCount = shardCount
    }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> AttributesResponse {
        try ProtoC.unpack(bytes, "shardrank.v1.AttributesResponse", unpack: shardrank__v1__attributes_response__unpack,
                          free: shardrank__v1__attributes_response__free_unpacked) { m in
            let p = m.pointee
            return AttributesResponse(itemIDs: ProtoC.array(p.item_ids, p.n_item_ids), genreMasks: ProtoC.array(p.genre_masks, p.n_genre_masks),
                                      timestamps: ProtoC.array(p.timestamps, p.n_timestamps), popularity: ProtoC.array(p.popularity, p.n_popularity),
                                      genres: (0 ..< p.n_genres).map { ProtoC.string(p.genres[$0]) },
                                      missingItemIDs: ProtoC.array(p.missing_item_ids, p.n_missing_item_ids), version: p.version,
                                      shard: p.shard, shardCount: p.shard_count)
        }
    }

    public func encoded() -> FramedMessage {
        let arena = CArena()
        var m = Shardrank__V1__AttributesResponse()
        shardrank__v1__attributes_response__init(&m)
        m.n_item_ids = itemIDs.count; m.item_ids = arena.array(itemIDs)
        m.n_genre_masks = genreMasks.count; m.genre_masks = arena.array(genreMasks)
        m.n_timestamps = timestamps.count; m.timestamps = arena.array(timestamps)
        m.n_popularity = popularity.count; m.popularity = arena.array(popularity)
        m.n_genres = genres.count; m.genres = arena.array(genres.map { Optional(arena.string($0)) })
        m.n_missing_item_ids = missingItemIDs.count; m.missing_item_ids = arena.array(missingItemIDs)
        m.version = version
        m.shard = shard
        m.shard_count = shardCount
        return withExtendedLifetime(arena) { ProtoC.pack(&m) }
    }
}
