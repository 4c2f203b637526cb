import Synchronization
import ShardRankWire

/// Ranked lists (item → similar, genre → top, country → top, popular) already fetched, keyed by
/// table-set version, table and key. Lists are immutable within a version, so a hit is exactly
/// what the shard would answer; entries of other versions are dropped when a new version shows
/// up, and the cache is cleared when it reaches `capacity` entries. A list fetched with limit L
/// answers requests for at most L items (or any limit when it came back shorter than L: then it
/// is the whole list).
final class ListCache: Sendable {
    struct Key: Hashable { let table: String; let key: String }
    struct Entry { let list: RankedList; let complete: Bool }
    private struct State {
        var version: UInt64 = 0; var entries: [Key: Entry] = [:]; var hits = 0; var misses = 0
        /// Tables the version does not have (a shard answered NOT_FOUND for them).
        var absent: Set<String> = []
    }
    private let state = Mutex<State>(State())
    let capacity: Int

    init(capacity: Int = 20_000) { self.capacity = capacity }

    /// The cached list of `key`, when it holds at least `limit` items or is complete; it may be
    /// longer than `limit` (the caller takes its prefix).
    func get(version: UInt64, table: String, key: String, limit: Int) -> RankedList? {
        guard version != 0 else { return nil }
        return state.withLock { s in
            guard s.version == version, let e = s.entries[Key(table: table, key: key)], e.complete || e.list.ids.count >= limit else {
                s.misses += 1
                return nil
            }
            s.hits += 1
            // Possibly longer than `limit`: callers take what they need (no copy here).
            return e.list
        }
    }

    func put(version: UInt64, table: String, list: RankedList, limit: Int) {
        guard version != 0 else { return }
        state.withLock { s in
            if version > s.version { s.version = version; s.entries.removeAll(keepingCapacity: true); s.absent = [] }
            guard version == s.version else { return }
            if s.entries.count >= capacity { s.entries.removeAll(keepingCapacity: true) }
            let k = Key(table: table, key: list.key)
            if let old = s.entries[k], old.complete || old.list.ids.count >= list.ids.count { return }
            s.entries[k] = Entry(list: list, complete: list.ids.count < limit)
        }
    }

    /// Records that `version` has no table `table` (so no request pinned to it asks again).
    func putAbsent(version: UInt64, table: String) {
        guard version != 0 else { return }
        state.withLock { s in
            if version > s.version { s.version = version; s.entries.removeAll(keepingCapacity: true); s.absent = [] }
            if version == s.version { s.absent.insert(table) }
        }
    }

    func isAbsent(version: UInt64, table: String) -> Bool {
        version != 0 && state.withLock { $0.version == version && $0.absent.contains(table) }
    }

    /// Hits and misses so far (for tests and metrics).
    var counts: (hits: Int, misses: Int) { state.withLock { ($0.hits, $0.misses) } }
}

/// Item rows (f32) the coordinator already fetched with a Lookup, for one table-set version (a
/// published version never changes, so a cached row is exactly what the shard would send): the
/// hot candidates of the list sources (popular, genre, country, similar items) need no Lookup
/// once seen. Bounded by bytes; when full it is cleared (the hot set refills it within a few
/// requests). A new version empties it.
final class RowCache: Sendable {
    private struct State {
        var version: UInt64 = 0
        var dim = 0
        var index: [UInt64: Int] = [:]
        var storage: [Float] = []
        var hits = 0, misses = 0
    }
    private let state = Mutex(State())
    let capacityBytes: Int

    init(capacityBytes: Int) { self.capacityBytes = capacityBytes }

    /// The row width cached for `version`, if any.
    func dimension(version: UInt64) -> Int? {
        state.withLock { $0.version == version && $0.dim > 0 && version != 0 ? $0.dim : nil }
    }

    /// Fills the unfilled rows of `rows` whose id is cached for `version`.
    func copy(version: UInt64, ids: [UInt64], into rows: CandidateRows) {
        guard version != 0, capacityBytes > 0 else { return }
        state.withLock { s in
            guard s.version == version, s.dim == rows.dim else { return }
            s.storage.withUnsafeBufferPointer { st in
                for (i, id) in ids.enumerated() where !rows.filled[i] {
                    if let at = s.index[id] {
                        (rows.base + i * rows.dim).update(from: st.baseAddress! + at, count: rows.dim)
                        rows.markFilled(i)
                        s.hits += 1
                    } else {
                        s.misses += 1
                    }
                }
            }
        }
    }

    /// Remembers rows `which` of `rows` (ids[i] for row i) for `version`.
    func insert(version: UInt64, ids: [UInt64], rows which: [Int], from rows: CandidateRows) {
        guard version != 0, capacityBytes > 0 else { return }
        let dim = rows.dim
        state.withLock { s in
            if version > s.version || s.dim != dim {
                guard version >= s.version else { return }
                s = State(version: version, dim: dim, hits: s.hits, misses: s.misses)
            }
            guard version == s.version else { return }
            if (s.storage.count + which.count * dim) * MemoryLayout<Float>.stride > capacityBytes {
                s.storage.removeAll(keepingCapacity: true)
                s.index.removeAll(keepingCapacity: true)
            }
            for r in which where s.index[ids[r]] == nil {
                guard (s.storage.count + dim) * MemoryLayout<Float>.stride <= capacityBytes else { break }
                s.index[ids[r]] = s.storage.count
                s.storage.append(contentsOf: UnsafeBufferPointer(start: rows.base + r * dim, count: dim))
            }
        }
    }

    /// Hits and misses so far (tests, metrics).
    var counts: (hits: Int, misses: Int) { state.withLock { ($0.hits, $0.misses) } }
}

/// Users' stored vectors and profiles already fetched, for one table-set version (immutable
/// within it): a returning user's Recommend skips the first round trip. Only complete answers
/// (both calls answered from the pinned version) are kept; an unknown user is kept as such.
/// Bounded by entries *and* by bytes: a profile carries the user's whole history, kept as its
/// compact delta-varint bytes (decoded per request), so entries differ in size by 100× between a
/// new user and a heavy one. Cleared when either bound would be passed, or when a newer version
/// shows up.
final class UserCache: Sendable {
    struct Entry: Sendable {
        let vector: [Float]?
        let profile: UserProfile?

        /// What the entry holds in memory, approximately: the vector, the recent items, the
        /// history's bytes, the strings, and a fixed overhead for the dictionary slot, the arrays'
        /// headers and the strings' storage.
        var bytes: Int {
            var n = 160 + 4 * (vector?.count ?? 0)
            if let p = profile {
                n += 8 * p.recentItemIDs.count + p.history.bytes.count + p.country.utf8.count
                for g in p.topGenres { n += 16 + g.utf8.count }
            }
            return n
        }
    }
    private struct State {
        var version: UInt64 = 0; var entries: [UInt64: Entry] = [:]; var bytes = 0; var hits = 0; var misses = 0
    }
    private let state = Mutex(State())
    let capacity: Int
    let capacityBytes: Int

    init(capacity: Int, capacityBytes: Int = .max) {
        self.capacity = capacity
        self.capacityBytes = capacityBytes
    }

    func get(version: UInt64, user: UInt64) -> Entry? {
        guard version != 0, capacity > 0, capacityBytes > 0 else { return nil }
        return state.withLock { s in
            guard s.version == version, let e = s.entries[user] else { s.misses += 1; return nil }
            s.hits += 1
            return e
        }
    }

    func put(version: UInt64, user: UInt64, _ entry: Entry) {
        guard version != 0, capacity > 0 else { return }
        let size = entry.bytes
        guard size <= capacityBytes else { return }
        state.withLock { s in
            if version > s.version { s.version = version; s.entries.removeAll(keepingCapacity: true); s.bytes = 0 }
            guard version == s.version else { return }
            if let old = s.entries[user] { s.bytes -= old.bytes }
            if s.entries.count >= capacity || s.bytes + size > capacityBytes {
                s.entries.removeAll(keepingCapacity: true)
                s.bytes = 0
            }
            s.entries[user] = entry
            s.bytes += size
        }
    }

    var counts: (hits: Int, misses: Int) { state.withLock { ($0.hits, $0.misses) } }
    /// Entries and their bytes now (tests, metrics).
    var usage: (entries: Int, bytes: Int) { state.withLock { ($0.entries.count, $0.bytes) } }
}
