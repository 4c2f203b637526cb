import Testing
import RPCCore
import ShardRankIDs
@testable import ShardRankWire

/// The delta-varint fields: UserProfile.history / history_count, SearchRequest.exclude_sorted,
/// and InfoResponse.hash_seed — round trips, their field numbers on the wire, and malformed
/// streams refused as INVALID_ARGUMENT naming the field.
@Suite struct HistoryWireTests {
    static let history = PackedIDs((0 ..< 3000).map { UInt64($0) * 13 + 1_000_000 })

    @Test func profilesCarryTheHistory() throws {
        let r = ProfilesResponse(profiles: [
            UserProfile(userID: 7, recentItemIDs: [1_000_013, 1_000_000], history: Self.history, topGenres: ["Drama"], country: "DE"),
            UserProfile(userID: 8, recentItemIDs: [], topGenres: [], country: ""),
        ], missingUserIDs: [9], version: 2)
        let back = try ProfilesResponse.decode(Array(r.encoded().payload))
        #expect(back == r)
        #expect(back.profiles[0].history.count == 3000 && back.profiles[0].history.decoded() == Self.history.decoded())
        #expect(back.profiles[1].history.isEmpty)
    }

    @Test func searchCarriesSortedExclusionsAndInfoTheSeed() throws {
        let q = SearchRequest(table: "items", queries: [1, 2], dim: 2, k: 5, excludeIDs: [9, 3, 1_000_013], excludeSorted: Self.history)
        let back = try SearchRequest.decode(Array(q.encoded().payload))
        #expect(back == q)
        #expect(back.excludedCountBound == 3003)
        #expect(back.allExcludedIDs() == Array(Set(Self.history.decoded() + [9, 3])).sorted(), "the union, sorted, once")
        #expect(SearchRequest(table: "t", queries: [1], dim: 1, k: 1, excludeIDs: [4, 2, 4]).allExcludedIDs() == [2, 4])
        let i = InfoResponse(version: 3, shard: 0, shardCount: 2, tables: [], mappedBytes: 0, source: "/t", hash: "splitmix64+jump-v1",
                             hashSeed: 0x5EED_0000_0000_0001)
        #expect(try InfoResponse.decode(Array(i.encoded().payload)) == i)
    }

    /// The documented field numbers, from hand-written wire bytes.
    @Test func fieldNumbersAreTheDocumentedOnes() throws {
        // SearchRequest: dim (3) = 1, queries (2) = one f32, k (4) = 3, exclude_sorted (11) = {5, 7}.
        let one: [UInt8] = [0x00, 0x00, 0x80, 0x3F]
        let search: [UInt8] = [0x18, 0x01, 0x12, 0x04] + one + [0x20, 0x03, 0x5A, 0x02, 0x05, 0x02]
        #expect(try SearchRequest.decode(search).allExcludedIDs() == [5, 7])
        // InfoResponse: hash_seed (8) = 300.
        #expect(try InfoResponse.decode([0x40, 0xAC, 0x02]).hashSeed == 300)
        // ProfilesResponse.profiles (1) holding a UserProfile with user_id (1) = 4, history (5) = {1, 3},
        // history_count (6) = 2.
        let profile: [UInt8] = [0x08, 0x04, 0x2A, 0x02, 0x01, 0x02, 0x30, 0x02]
        let decoded = try ProfilesResponse.decode([0x0A, UInt8(profile.count)] + profile)
        #expect(decoded.profiles.first?.history.decoded() == [1, 3])
    }

    @Test(arguments: [[UInt8]([0x80]), [5, 0], [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], [1, 0x81]])
    func malformedStreamsAreInvalidArgumentNamingTheField(bad: [UInt8]) {
        let broken = PackedIDs(trustedBytes: bad, count: 1)
        do {
            _ = try SearchRequest.decode(Array(SearchRequest(table: "t", queries: [1], dim: 1, k: 1, excludeSorted: broken).encoded().payload))
            Issue.record("accepted exclude_sorted \(bad)")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("SearchRequest.exclude_sorted"), "\(error)")
        }
        let r = ProfilesResponse(profiles: [UserProfile(userID: 1, recentItemIDs: [], history: broken, topGenres: [], country: "")],
                                 missingUserIDs: [], version: 1)
        do {
            _ = try ProfilesResponse.decode(Array(r.encoded().payload))
            Issue.record("accepted history \(bad)")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("UserProfile.history"), "\(error)")
        }
    }

    @Test func aHistoryCountThatDisagreesIsInvalidArgument() {
        let wrong = PackedIDs(trustedBytes: PackedIDs([1, 2, 3]).bytes, count: 2)
        let r = ProfilesResponse(profiles: [UserProfile(userID: 1, recentItemIDs: [], history: wrong, topGenres: [], country: "")],
                                 missingUserIDs: [], version: 1)
        do {
            _ = try ProfilesResponse.decode(Array(r.encoded().payload))
            Issue.record("accepted a history_count of 2 for 3 ids")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("UserProfile.history_count"), "\(error)")
        }
    }
}
