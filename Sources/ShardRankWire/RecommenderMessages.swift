public import RPCCore

// The hand-written parts of the `shardrank.v1.Recommender` messages: the value types, their
// decode and encode are generated from proto/ (Generated/ShardrankV1Recommender.swift).

/// Rows compare by bit pattern, so NaN (a missing feature) equals itself.
extension CandidateFeatures: Hashable {
    public static func == (a: Self, b: Self) -> Bool {
        a.names == b.names && a.itemIDs == b.itemIDs && a.values.count == b.values.count
            && zip(a.values, b.values).allSatisfy { $0.bitPattern == $1.bitPattern }
    }
    public func hash(into h: inout Hasher) { h.combine(names); h.combine(itemIDs); h.combine(values.count) }
}

/// `kindValue` is the kind as sent: a value outside `EventKind` is kept as is (the coordinator
/// refuses it, naming the event).
extension Event {
    public var kind: EventKind? { EventKind(rawValue: kindValue) }

    public init(itemID: UInt64, kind: EventKind = .view, timestampUnixSeconds: Int64 = 0) {
        self.itemID = itemID; self.kindValue = kind.rawValue; self.timestampUnixSeconds = timestampUnixSeconds
    }
}
