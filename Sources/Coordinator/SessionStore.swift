import Synchronization
public import ShardRankWire

/// What users just did (`RecordEvents`), held in this coordinator's memory: per user a ring of
/// the latest events (item, kind, time), so that the user's next `Recommend` — a few
/// milliseconds later — excludes those items and starts its recent items with them.
///
/// Bounds (docs/operations.md gives the memory they imply):
/// - per user, `eventsPerUser` events: a full ring overwrites its oldest event;
/// - in total, `users` users: a new user on a full store takes the place of the
///   least-recently-updated user of its stripe (O(1): a dictionary and an intrusive LRU list);
/// - in time, `ttlSeconds`: an event whose timestamp is older than `now − ttl` is ignored, and a
///   user whose newest event has expired is reclaimed lazily — when it is read or written, or
///   when it reaches the LRU tail of its stripe while the stripe is written.
///
/// Concurrency: users are spread by a hash of their id over `stripeCount` stripes (a power of
/// two, at most 64), each behind its own mutex, so the coordinator's event loops (one request
/// per loop at a time) rarely meet on a lock; a lock is held for O(eventsPerUser) work at most,
/// and nothing is allocated under it in steady state (an evicted user's ring storage is reused
/// by the user that takes its place). The LRU order is per stripe: eviction takes the
/// least-recently-updated user of the new user's stripe, which is the globally oldest one up to
/// the hash's spread.
///
/// State lives in this process only: a restart loses every session (the next table build
/// recovers the interactions from the logs the caller keeps).
public final class SessionStore: Sendable {
    /// One recorded event.
    public struct Recorded: Sendable, Hashable {
        public var itemID: UInt64
        public var kind: EventKind
        /// Unix seconds (the coordinator's clock when the caller sent 0).
        public var timestamp: Int64
    }

    /// What a `Recommend` reads of a session.
    public struct Session: Sendable, Equatable {
        /// The session's distinct items, most recent first.
        public var items: [UInt64] = []
        /// The live (unexpired) events they came from.
        public var events = 0
        public init(items: [UInt64] = [], events: Int = 0) { self.items = items; self.events = events }
    }

    /// An event as stored: 16 bytes (the item, then the timestamp shifted left by 8 with the
    /// kind in the low byte; timestamps are below 2^55).
    struct Stored {
        var itemID: UInt64
        var stamp: UInt64
        @inline(__always) var timestamp: Int64 { Int64(bitPattern: stamp >> 8) }
        @inline(__always) var kind: UInt8 { UInt8(truncatingIfNeeded: stamp) }
        init(itemID: UInt64, timestamp: Int64, kind: UInt8) {
            self.itemID = itemID
            stamp = UInt64(bitPattern: timestamp) << 8 | UInt64(kind)
        }
    }

    /// One user's place in a stripe: the LRU links and the ring.
    struct Slot {
        var user: UInt64 = 0
        /// Towards the most recently updated (`prev`) and the least (`next`); -1 = none.
        var prev: Int32 = -1
        var next: Int32 = -1
        /// The oldest event once the ring is full (0 while it fills).
        var start: Int32 = 0
        /// The newest event's timestamp: the user expires with it.
        var newest: Int64 = .min
        /// Ring storage: grows to `eventsPerUser`, then overwritten oldest first.
        var events: [Stored] = []
    }

    struct Stripe {
        var index: [UInt64: Int32] = [:]
        var slots: [Slot] = []
        /// Slots of reclaimed (expired) users, for reuse.
        var free: [Int32] = []
        /// The most and the least recently updated users' slots; -1 = empty.
        var head: Int32 = -1
        var tail: Int32 = -1
        /// Events stored (expired ones not yet overwritten or reclaimed included).
        var events = 0
        var evictions = 0
        var expirations = 0
    }

    /// A stripe on its own heap object (a `Mutex` cannot live in an array), padded so that two
    /// stripes' locks do not share a cache line.
    final class Box: Sendable {
        let state = Mutex(Stripe())
        let capacity: Int
        private let padding: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        init(capacity: Int) { self.capacity = capacity }
    }

    public let eventsPerUser: Int
    public let users: Int
    public let ttlSeconds: Int64
    /// Unix seconds now (injected in tests).
    let clock: @Sendable () -> Int64
    let stripes: [Box]
    let stripeMask: UInt64

    /// Largest timestamp stored (2^55 − 1 s, a billion years): the kind takes the low byte.
    public static let maxTimestamp: Int64 = (1 << 55) - 1

    /// - Parameters:
    ///   - eventsPerUser: at least 1.
    ///   - users: at least 1.
    ///   - ttlSeconds: at least 1.
    ///   - clock: Unix seconds now.
    ///   - stripes: the number of stripes (a power of two ≤ `users`; tests); nil: the largest
    ///     power of two ≤ min(64, users), so that every stripe holds at least one user and the
    ///     stripes' capacities add up to exactly `users`.
    public init(eventsPerUser: Int, users: Int, ttlSeconds: Int64, stripes: Int? = nil,
                clock: @escaping @Sendable () -> Int64 = SessionStore.wallClock) {
        precondition(eventsPerUser >= 1 && users >= 1 && ttlSeconds >= 1)
        precondition(stripes.map { $0 >= 1 && $0 <= users && $0 & ($0 - 1) == 0 } ?? true, "stripes: a power of two <= users")
        self.eventsPerUser = eventsPerUser
        self.users = users
        self.ttlSeconds = ttlSeconds
        self.clock = clock
        var n = 1
        while n * 2 <= min(64, users) { n *= 2 }
        if let stripes { n = stripes }
        self.stripes = (0 ..< n).map { i in Box(capacity: users / n + (i < users % n ? 1 : 0)) }
        stripeMask = UInt64(n - 1)
    }

    public convenience init(settings: CoordinatorSettings, clock: @escaping @Sendable () -> Int64 = SessionStore.wallClock) {
        self.init(eventsPerUser: settings.sessionEventsPerUser, users: settings.sessionUsers, ttlSeconds: Int64(settings.sessionTTLSeconds),
                  clock: clock)
    }

    /// The wall clock in Unix seconds.
    public static let wallClock: @Sendable () -> Int64 = { Int64(PostRanking.unixNow()) }

    var stripeCount: Int { stripes.count }

    @inline(__always) func stripe(of user: UInt64) -> Box {
        // A different mix than the coordinator ring's (which picks users by mix64 of the id).
        var z = user ^ 0x5851_F42D_4C95_7F2D
        z = (z ^ (z >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        z = (z ^ (z >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        z ^= z >> 33
        return stripes[Int(z & stripeMask)]
    }

    // MARK: - Writing

    /// Appends `events` (in the order they happened, oldest first) to `user`'s session; an event
    /// with timestamp 0 is stamped with the clock. Answers how many live events the user now
    /// has. The caller validated the events (`Recommender.validate(_: RecordEventsRequest)`).
    /// With `replace`, the user's earlier events are dropped first (no events: the session is
    /// cleared).
    @discardableResult
    public func record(user: UInt64, events: [Event], replace: Bool = false) -> Int {
        let now = clock()
        let cutoff = now &- ttlSeconds
        let perUser = eventsPerUser
        // Only the last `perUser` events can stay.
        let kept = events.count > perUser ? events[(events.count - perUser)...] : events[...]
        let box = stripe(of: user)
        return box.state.withLock { s in
            // Lazy reclamation: a user or two whose sessions expired leave from the LRU tail.
            for _ in 0 ..< 2 {
                let t = s.tail
                guard t >= 0, s.slots[Int(t)].newest < cutoff, s.slots[Int(t)].user != user else { break }
                Self.reclaim(&s, t)
                s.expirations += 1
            }
            let slot: Int32
            if let at = s.index[user] {
                slot = at
                Self.unlink(&s, slot)
                if replace || s.slots[Int(slot)].newest < cutoff {  // replaced, or all expired: start afresh
                    s.events -= s.slots[Int(slot)].events.count
                    Self.reset(&s.slots[Int(slot)], user: user)
                }
            } else if s.index.count >= box.capacity {
                // Full: the least-recently-updated user's slot (and its storage) is reused.
                slot = s.tail
                s.index.removeValue(forKey: s.slots[Int(slot)].user)
                Self.unlink(&s, slot)
                s.evictions += 1
                s.events -= s.slots[Int(slot)].events.count
                Self.reset(&s.slots[Int(slot)], user: user)
                s.index[user] = slot
            } else {
                if let f = s.free.popLast() {
                    slot = f
                } else {
                    slot = Int32(s.slots.count)
                    s.slots.append(Slot())
                }
                Self.reset(&s.slots[Int(slot)], user: user)
                s.index[user] = slot
            }
            Self.pushFront(&s, slot)
            let before = s.slots[Int(slot)].events.count
            let live = Self.append(&s.slots[Int(slot)], kept, now: now, perUser: perUser, cutoff: cutoff)
            s.events += s.slots[Int(slot)].events.count - before
            return live
        }
    }

    /// Appends to the ring and answers the live events held.
    private static func append(_ slot: inout Slot, _ events: ArraySlice<Event>, now: Int64, perUser: Int, cutoff: Int64) -> Int {
        for e in events {
            let ts = e.timestampUnixSeconds == 0 ? now : min(e.timestampUnixSeconds, maxTimestamp)
            let stored = Stored(itemID: e.itemID, timestamp: ts, kind: UInt8(truncatingIfNeeded: e.kindValue))
            if slot.events.count < perUser {
                if slot.events.count == slot.events.capacity {
                    // Grow towards `perUser`, never past it (Array's own doubling would).
                    slot.events.reserveCapacity(min(perUser, max(4, 2 * slot.events.count)))
                }
                slot.events.append(stored)
            } else {
                slot.events[Int(slot.start)] = stored
                slot.start = slot.start + 1 == Int32(perUser) ? 0 : slot.start + 1
            }
            if ts > slot.newest { slot.newest = ts }
        }
        var live = 0
        for e in slot.events where e.timestamp >= cutoff { live += 1 }
        return live
    }

    private static func reset(_ slot: inout Slot, user: UInt64) {
        slot.user = user
        slot.start = 0
        slot.newest = .min
        slot.events.removeAll(keepingCapacity: true)
    }

    /// Removes an expired user and frees its ring storage.
    private static func reclaim(_ s: inout Stripe, _ slot: Int32) {
        s.index.removeValue(forKey: s.slots[Int(slot)].user)
        unlink(&s, slot)
        s.events -= s.slots[Int(slot)].events.count
        s.slots[Int(slot)].events = []
        s.slots[Int(slot)].newest = .min
        s.free.append(slot)
    }

    private static func unlink(_ s: inout Stripe, _ i: Int32) {
        let p = s.slots[Int(i)].prev, n = s.slots[Int(i)].next
        if p >= 0 { s.slots[Int(p)].next = n } else { s.head = n }
        if n >= 0 { s.slots[Int(n)].prev = p } else { s.tail = p }
        s.slots[Int(i)].prev = -1
        s.slots[Int(i)].next = -1
    }

    private static func pushFront(_ s: inout Stripe, _ i: Int32) {
        s.slots[Int(i)].prev = -1
        s.slots[Int(i)].next = s.head
        if s.head >= 0 { s.slots[Int(s.head)].prev = i }
        s.head = i
        if s.tail < 0 { s.tail = i }
    }

    // MARK: - Reading

    /// `user`'s live session: its distinct items, most recent first, and how many live events it
    /// holds. Reading does not count as an update (the LRU order is by writes); a user whose
    /// events have all expired is reclaimed here.
    public func session(of user: UInt64) -> Session {
        let cutoff = clock() &- ttlSeconds
        return stripe(of: user).state.withLock { s in
            guard let at = s.index[user] else { return Session() }
            let slot = s.slots[Int(at)]
            if slot.newest < cutoff {
                Self.reclaim(&s, at)
                s.expirations += 1
                return Session()
            }
            var out = Session()
            let n = slot.events.count
            out.items.reserveCapacity(n)
            // Repeats are found by a linear scan in short sessions (the default 50 events), by a
            // set in long ones.
            var seen: Set<UInt64>? = n > 64 ? Set(minimumCapacity: n) : nil
            // Newest first: logical position n-1 down to 0, physical (start + i) mod n.
            var i = n - 1
            while i >= 0 {
                var p = Int(slot.start) + i
                if p >= n { p -= n }
                let e = slot.events[p]
                i -= 1
                guard e.timestamp >= cutoff else { continue }
                out.events += 1
                let repeated = seen == nil ? out.items.contains(e.itemID) : !seen!.insert(e.itemID).inserted
                if !repeated { out.items.append(e.itemID) }
            }
            return out
        }
    }

    /// Every live event of `user`, oldest first (tests, tools).
    public func events(of user: UInt64) -> [Recorded] {
        let cutoff = clock() &- ttlSeconds
        return stripe(of: user).state.withLock { s in
            guard let at = s.index[user] else { return [] }
            let slot = s.slots[Int(at)]
            let n = slot.events.count
            return (0 ..< n).compactMap { i -> Recorded? in
                let e = slot.events[(Int(slot.start) + i) % n]
                guard e.timestamp >= cutoff else { return nil }
                return Recorded(itemID: e.itemID, kind: EventKind(rawValue: UInt32(e.kind)) ?? .unspecified, timestamp: e.timestamp)
            }
        }
    }

    /// Users held and events stored (expired ones not yet reclaimed included), and the users
    /// evicted for room and reclaimed after expiring since start (tests, metrics). O(stripes).
    public var usage: (users: Int, events: Int, evictions: Int, expirations: Int) {
        var u = 0, e = 0, ev = 0, ex = 0
        for b in stripes {
            b.state.withLock { s in
                u += s.index.count
                e += s.events
                ev += s.evictions
                ex += s.expirations
            }
        }
        return (u, e, ev, ex)
    }

    /// Checks every stripe's structure (tests): the LRU list runs head to tail through exactly
    /// the indexed users with consistent links, each ring holds at most `eventsPerUser` events
    /// and its storage stays within it (up to the allocator's rounding), the event counters add up, and no stripe holds more
    /// users than its share. Returns the first problem found.
    func checkInvariants() -> String? {
        for (b, box) in stripes.enumerated() {
            let problem: String? = box.state.withLock { s in
                guard s.index.count <= box.capacity else { return "stripe \(b): \(s.index.count) users, capacity \(box.capacity)" }
                var seen = 0, events = 0, prev: Int32 = -1, at = s.head
                while at >= 0 {
                    let slot = s.slots[Int(at)]
                    guard slot.prev == prev else { return "stripe \(b): slot \(at) links back to \(slot.prev), not \(prev)" }
                    guard s.index[slot.user] == at else { return "stripe \(b): slot \(at) (user \(slot.user)) is not indexed" }
                    guard slot.events.count <= eventsPerUser, slot.events.capacity <= eventsPerUser + 2 else {
                        return "stripe \(b): user \(slot.user) holds \(slot.events.count) events (capacity \(slot.events.capacity))"
                    }
                    events += slot.events.count
                    seen += 1
                    guard seen <= s.index.count else { return "stripe \(b): the LRU list loops" }
                    prev = at
                    at = slot.next
                }
                guard prev == s.tail else { return "stripe \(b): the list ends at \(prev), the tail is \(s.tail)" }
                guard seen == s.index.count else { return "stripe \(b): \(seen) users listed, \(s.index.count) indexed" }
                guard events == s.events else { return "stripe \(b): \(events) events held, counted \(s.events)" }
                return nil
            }
            if let problem { return problem }
        }
        return nil
    }

    /// The most memory one user's session takes, approximately: its slot (40 bytes), its
    /// dictionary entry (≤ 32 bytes at the dictionary's lowest load), the ring's heap object
    /// (48 bytes of header and allocator overhead) and `eventsPerUser` × 16 bytes of events.
    public static func bytesPerUser(eventsPerUser: Int) -> Int { 120 + 16 * eventsPerUser }

    /// The bound on the store's memory: `users` × `bytesPerUser` (≈ 0.92 GB at the defaults).
    public var maxBytes: Int { users * Self.bytesPerUser(eventsPerUser: eventsPerUser) }
}
