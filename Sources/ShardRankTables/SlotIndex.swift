import ShardRankRouting
/// The open-addressing id index of a table file: `capacity` (a power of two) `u32` slots holding
/// `row + 1`, or 0 for empty; a key with stable hash `h` starts at slot
/// `StableHash.indexHash(h) & (capacity - 1)` and probes linearly. Lookups never allocate and
/// take at most `capacity` probes even on a hostile file (the loader has also checked that every
/// row is found and that an empty slot exists).
struct SlotIndex: @unchecked Sendable {
    let slots: UnsafeBufferPointer<UInt32>
    let mask: Int

    init(slots: UnsafeBufferPointer<UInt32>) {
        self.slots = slots
        self.mask = slots.count - 1
    }

    /// The row whose key has stable hash `hash` and for which `matches(row)` is true.
    @inline(__always)
    func find(hash: UInt64, matches: (Int) -> Bool) -> Int? {
        guard mask >= 0 else { return nil }
        var i = Int(truncatingIfNeeded: StableHash.indexHash(hash)) & mask
        var probes = 0
        while probes <= mask {
            let v = slots[i]
            if v == TableFormat.emptySlot { return nil }
            let row = Int(v) - 1
            if matches(row) { return row }
            i = (i + 1) & mask
            probes += 1
        }
        return nil
    }

    /// Builds the slots for keys with these stable hashes (row `r` has `hashes[r]`).
    static func build(hashes: [UInt64]) -> [UInt32] {
        let cap = TableFormat.indexCapacity(rows: hashes.count)
        let mask = cap - 1
        var slots = [UInt32](repeating: TableFormat.emptySlot, count: cap)
        for (row, h) in hashes.enumerated() {
            var i = Int(truncatingIfNeeded: StableHash.indexHash(h)) & mask
            while slots[i] != TableFormat.emptySlot { i = (i + 1) & mask }
            slots[i] = UInt32(row + 1)
        }
        return slots
    }

    /// The row of `id` in an id-keyed table whose row ids are `ids` (embedding, profile and
    /// attribute tables all index their ids this way).
    @inline(__always)
    func row(of id: UInt64, ids: UnsafeBufferPointer<UInt64>, seed: UInt64) -> Int? {
        find(hash: StableHash.hash(id: id, seed: seed)) { ids[$0] == id }
    }

    /// `validate` for an id-keyed table: every row's id must be found at its own row.
    static func validate(_ file: TableFile, ids: UnsafeBufferPointer<UInt64>, seed: UInt64) throws -> SlotIndex {
        try validate(file, rows: ids.count) { index, r in index.row(of: ids[r], ids: ids, seed: seed) }
    }

    /// Structural checks of a loaded index against `rows` keys; `lookupRow(r)` must find row `r`
    /// (which also proves the keys are unique). Throws `TableError(.corrupt)`.
    static func validate(_ file: TableFile, rows: Int, lookupRow: (SlotIndex, Int) -> Int?) throws -> SlotIndex {
        let slots = file.typed(.index, as: UInt32.self)
        let cap = slots.count
        guard cap == file.indexCapacity, cap >= 16, cap & (cap - 1) == 0, cap > rows else {
            throw TableError.corrupt(file.path, "index has \(cap) slots (header says \(file.indexCapacity)) for \(rows) rows")
        }
        var used = 0
        for v in slots where v != TableFormat.emptySlot {
            guard Int(v) <= rows else { throw TableError.corrupt(file.path, "index slot points at row \(v - 1) of \(rows)") }
            used += 1
        }
        guard used == rows else { throw TableError.corrupt(file.path, "index has \(used) used slots for \(rows) rows") }
        let index = SlotIndex(slots: slots)
        for r in 0..<rows {
            guard let found = lookupRow(index, r) else {
                throw TableError.corrupt(file.path, "row \(r) is not reachable through the index")
            }
            guard found == r else { throw TableError.corrupt(file.path, "rows \(found) and \(r) have the same key") }
        }
        return index
    }
}
