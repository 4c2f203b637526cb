public import RPCCore
public import ShardRankIDs

// The hand-written parts of the Profiles messages (generated: Generated/ShardrankV1Shard.swift).

extension UserProfile {
    /// Checks a decoded profile's `history` against its `history_count`.
    static func checkHistoryCount(_ history: PackedIDs, _ count: UInt32) throws(RPCError) {
        guard history.count == Int(count) else {
            throw RPCError(.invalidArgument, "UserProfile.history_count is \(count) but UserProfile.history holds \(history.count) ids")
        }
    }
}
