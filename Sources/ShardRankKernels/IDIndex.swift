/// A small open-addressing hash map from 64-bit ids to row numbers, for the per-request maps
/// of the coordinator (candidate positions, merged candidates): a multiplicative hash and
/// linear probing over one flat slot buffer, sized once for `capacity` keys (load ≤ 1/2) — no
/// per-insert allocation, no copy-on-write check and no SipHash, which a
/// `Dictionary<UInt64, Int>` pays on every probe.
///
/// A reference type: one request's scratch map, never shared between threads.
public final class IDIndex {
    /// (key, value + 1) pairs; value 0 marks an empty slot.
    @usableFromInline let slots: UnsafeMutablePointer<(key: UInt64, value: UInt32)>
    @usableFromInline let mask: Int
    public var count: Int { stored }
    @usableFromInline var stored = 0

    public init(capacity: Int) {
        var size = 16
        while size < 2 * max(1, capacity) { size <<= 1 }
        slots = .allocate(capacity: size)
        slots.initialize(repeating: (0, 0), count: size)
        mask = size - 1
    }

    deinit { slots.deallocate() }

    @inline(__always) @usableFromInline func slot(_ id: UInt64) -> Int {
        Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The value of `id`, or nil.
    @inlinable @inline(__always) public func get(_ id: UInt64) -> Int? {
        var i = slot(id)
        while slots[i].value != 0 {
            if slots[i].key == id { return Int(slots[i].value) - 1 }
            i = (i + 1) & mask
        }
        return nil
    }

    /// Inserts `id → value` unless `id` is present; returns the value now stored and whether
    /// it was inserted. At most `capacity` distinct keys; values in 0 ..< 2³² - 1.
    @inlinable @inline(__always) @discardableResult
    public func insert(_ id: UInt64, _ value: Int) -> (value: Int, inserted: Bool) {
        var i = slot(id)
        while slots[i].value != 0 {
            if slots[i].key == id { return (Int(slots[i].value) - 1, false) }
            i = (i + 1) & mask
        }
        precondition(stored * 2 < mask + 1, "IDIndex over capacity")
        precondition(value >= 0 && value < Int(UInt32.max), "IDIndex value out of range")
        slots[i] = (id, UInt32(truncatingIfNeeded: value + 1))
        stored += 1
        return (value, true)
    }
}
