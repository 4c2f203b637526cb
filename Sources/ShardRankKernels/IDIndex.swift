/// A small open-addressing hash map from 64-bit ids to row numbers, for the per-request maps
/// of the coordinator (candidate positions, merged candidates): a multiplicative hash and
/// linear probing over one flat buffer, sized once for `capacity` keys (load ≤ 1/2) — no
/// per-insert allocation and no SipHash, which a `Dictionary<UInt64, Int>` pays on every probe.
public struct IDIndex {
    private var keys: [UInt64]
    private var values: [Int32]
    private var used: [Bool]
    private let mask: Int
    public private(set) var count = 0

    public init(capacity: Int) {
        var size = 16
        while size < 2 * max(1, capacity) { size <<= 1 }
        keys = [UInt64](repeating: 0, count: size)
        values = [Int32](repeating: 0, count: size)
        used = [Bool](repeating: false, count: size)
        mask = size - 1
    }

    @inline(__always) private func slot(_ id: UInt64) -> Int {
        Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The value of `id`, or nil.
    @inline(__always) public func get(_ id: UInt64) -> Int? {
        var i = slot(id)
        while used[i] {
            if keys[i] == id { return Int(values[i]) }
            i = (i + 1) & mask
        }
        return nil
    }

    /// Inserts `id → value` unless `id` is present; returns the value now stored and whether
    /// it was inserted. At most `capacity` distinct keys.
    @inline(__always) @discardableResult
    public mutating func insert(_ id: UInt64, _ value: Int) -> (value: Int, inserted: Bool) {
        var i = slot(id)
        while used[i] {
            if keys[i] == id { return (Int(values[i]), false) }
            i = (i + 1) & mask
        }
        precondition(count * 2 < keys.count, "IDIndex over capacity")
        used[i] = true
        keys[i] = id
        values[i] = Int32(truncatingIfNeeded: value)
        count += 1
        return (value, true)
    }
}
