import Synchronization

/// Item attributes (genres, timestamp, popularity) already fetched, per table-set version, and
/// the attribute table's genre vocabulary. Attributes are immutable within a version, so a hit is
/// what the shard would answer. Entries of older versions are dropped when a newer one shows up;
/// the cache is cleared when it reaches `capacity` items (about 80 bytes each with the
/// dictionary's overhead: 500 000 items ≈ 40 MB).
final class AttributeCache: Sendable {
    private struct State {
        var version: UInt64 = 0
        var items: [UInt64: ItemAttributes] = [:]
        var genres: [String] = []
        var hits = 0, misses = 0
    }
    private let state = Mutex<State>(State())
    let capacity: Int

    init(capacity: Int = 500_000) { self.capacity = capacity }

    /// The cached attributes among `ids` and the ids to fetch, with the vocabulary when known.
    func get(version: UInt64, ids: [UInt64]) -> (found: [UInt64: ItemAttributes], missing: [UInt64], genres: [String]) {
        guard version != 0 else { return ([:], ids, []) }
        return state.withLock { s in
            guard s.version == version else { s.misses += ids.count; return ([:], ids, []) }
            var found: [UInt64: ItemAttributes] = [:]
            found.reserveCapacity(ids.count)
            var missing: [UInt64] = []
            for id in ids {
                if let a = s.items[id] { found[id] = a } else { missing.append(id) }
            }
            s.hits += found.count
            s.misses += missing.count
            return (found, missing, s.genres)
        }
    }

    func put(version: UInt64, _ items: [UInt64: ItemAttributes], genres: [String]) {
        guard version != 0 else { return }
        state.withLock { s in
            if version > s.version { s.version = version; s.items.removeAll(keepingCapacity: true); s.genres = [] }
            guard version == s.version else { return }
            if s.items.count + items.count > capacity { s.items.removeAll(keepingCapacity: true) }
            for (id, a) in items { s.items[id] = a }
            if s.genres.isEmpty { s.genres = genres }
        }
    }

    var counts: (hits: Int, misses: Int) { state.withLock { ($0.hits, $0.misses) } }
}
