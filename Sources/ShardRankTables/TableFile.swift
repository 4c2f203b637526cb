import ShardRankRouting
/// One mapped and verified table file: the header fields and bounds-checked sections.
///
/// `open(path:)` checks, before any section byte is touched: the file size against the header, the
/// header checksum, every block checksum, and that every section lies inside the file, is aligned,
/// does not overlap another and has the length its element count implies. A truncated or
/// bit-flipped file is a thrown `TableError(.corrupt)`, never a fault. Immutable, `Sendable`.
final class TableFile: @unchecked Sendable {
    let mapping: MappedFile
    var path: String { mapping.path }
    let kind: TableKind
    let dtype: TableDType?
    let dim: Int
    let rows: Int
    let shard: Int
    let shardCount: Int
    let seed: UInt64
    let indexCapacity: Int
    let headerChecksum: UInt64
    private let sections: [UInt32: (offset: Int, length: Int, count: Int)]

    static func open(path: String) throws -> TableFile {
        try TableFile(mapping: MappedFile(path: path))
    }

    private init(mapping: MappedFile) throws {
        self.mapping = mapping
        let path = mapping.path
        let b = mapping.bytes
        let size = b.count
        guard size >= TableFormat.headerSize else {
            throw TableError.corrupt(path, "file is \(size) bytes, shorter than the \(TableFormat.headerSize)-byte header (truncated?)")
        }
        func u32(_ off: Int) -> UInt32 { UInt32(littleEndian: b.loadUnaligned(fromByteOffset: off, as: UInt32.self)) }
        func u64(_ off: Int) -> UInt64 { UInt64(littleEndian: b.loadUnaligned(fromByteOffset: off, as: UInt64.self)) }
        guard Array(b[0..<8]) == TableFormat.magic else {
            throw TableError.corrupt(path, "bad magic: not a ShardRank table file")
        }
        let version = u32(TableFormat.offFormatVersion)
        guard version == TableFormat.formatVersion else {
            throw TableError.corrupt(path, "unsupported format version \(version) (this build reads \(TableFormat.formatVersion))")
        }
        guard let kind = TableKind(rawValue: u32(TableFormat.offKind)) else {
            throw TableError.corrupt(path, "unknown table kind \(u32(TableFormat.offKind))")
        }
        let rawDType = u32(TableFormat.offDType)
        let dtype = TableDType(rawValue: rawDType)
        if kind == .embedding ? dtype == nil : rawDType != 0 {
            throw TableError.corrupt(path, "bad dtype \(rawDType) for a \(kind) table")
        }
        let fileSize = u64(TableFormat.offFileSize)
        guard fileSize == UInt64(size) else {
            throw TableError.corrupt(path, "file is \(size) bytes but its header says \(fileSize) (truncated or appended to)")
        }
        let sectionCount = Int(u32(TableFormat.offSectionCount))
        guard sectionCount <= TableFormat.maxSections else {
            throw TableError.corrupt(path, "section count \(sectionCount) exceeds \(TableFormat.maxSections)")
        }
        let blockSize = Int(u32(TableFormat.offBlockSize))
        guard blockSize >= 4096, blockSize & (blockSize - 1) == 0, blockSize <= 1 << 30 else {
            throw TableError.corrupt(path, "bad block size \(blockSize)")
        }
        let payloadOffset64 = u64(TableFormat.offPayloadOffset)
        guard payloadOffset64 <= UInt64(size) else {
            throw TableError.corrupt(path, "payload offset \(payloadOffset64) beyond end of file")
        }
        let payloadOffset = Int(payloadOffset64)
        let payloadLength = size - payloadOffset
        let blockCount = (payloadLength + blockSize - 1) / blockSize
        guard u64(TableFormat.offBlockCount) == UInt64(blockCount) else {
            throw TableError.corrupt(path, "block count \(u64(TableFormat.offBlockCount)) does not match the payload length")
        }
        let tableEnd = TableFormat.headerSize + TableFormat.sectionEntrySize * sectionCount + 8 * blockCount
        guard payloadOffset == TableFormat.align(tableEnd) else {
            throw TableError.corrupt(path, "payload offset \(payloadOffset) does not follow the header tables")
        }
        // Header checksum over [0, payloadOffset) with the checksum field read as zero.
        let stored = u64(TableFormat.offHeaderChecksum)
        var head = [UInt8](b[0..<payloadOffset])
        for i in 0..<8 { head[TableFormat.offHeaderChecksum + i] = 0 }
        let computed = head.withUnsafeBytes { StableHash.xxh64($0) }
        guard computed == stored else {
            throw TableError.corrupt(path, "header checksum mismatch (stored \(hex(stored)), computed \(hex(computed)))")
        }
        // Block checksums (in parallel above a few blocks).
        let checksumBase = TableFormat.headerSize + TableFormat.sectionEntrySize * sectionCount
        let bad = Self.firstBadBlock(b, payloadOffset: payloadOffset, blockSize: blockSize, blockCount: blockCount) { i in
            u64(checksumBase + 8 * i)
        }
        if let bad {
            throw TableError.corrupt(path, "checksum mismatch in block \(bad) (bytes \(payloadOffset + bad * blockSize)..<\(min(size, payloadOffset + (bad + 1) * blockSize)))")
        }
        // Section table.
        var sections: [UInt32: (offset: Int, length: Int, count: Int)] = [:]
        var spans: [(Int, Int)] = []
        for i in 0..<sectionCount {
            let e = TableFormat.headerSize + i * TableFormat.sectionEntrySize
            let id = u32(e)
            guard let sid = SectionID(rawValue: id) else { throw TableError.corrupt(path, "unknown section id \(id)") }
            let elem = u32(e + 4), off = u64(e + 8), len = u64(e + 16), count = u64(e + 24)
            guard elem == UInt32(sid.elementSize) else { throw TableError.corrupt(path, "section \(sid) has element size \(elem)") }
            guard off >= UInt64(payloadOffset), off <= UInt64(size), len <= UInt64(size) - off else {
                throw TableError.corrupt(path, "section \(sid) (offset \(off), length \(len)) lies outside the file")
            }
            guard off % UInt64(TableFormat.alignment) == 0 else { throw TableError.corrupt(path, "section \(sid) is misaligned") }
            let (product, overflow) = count.multipliedReportingOverflow(by: UInt64(elem))
            guard !overflow, product == len else { throw TableError.corrupt(path, "section \(sid) length \(len) ≠ \(count) × \(elem)") }
            guard sections[id] == nil else { throw TableError.corrupt(path, "duplicate section \(sid)") }
            sections[id] = (Int(off), Int(len), Int(count))
            spans.append((Int(off), Int(len)))
        }
        spans.sort { $0.0 < $1.0 }
        for i in spans.indices.dropFirst() where spans[i - 1].0 + spans[i - 1].1 > spans[i].0 {
            throw TableError.corrupt(path, "sections overlap")
        }
        self.kind = kind
        self.dtype = dtype
        self.dim = Int(u32(TableFormat.offDim))
        let rows = u64(TableFormat.offRows)
        guard rows <= UInt64(TableFormat.maxRowsPerFile) else { throw TableError.corrupt(path, "row count \(rows) too large") }
        self.rows = Int(rows)
        self.shard = Int(u32(TableFormat.offShard))
        self.shardCount = Int(u32(TableFormat.offShardCount))
        guard shardCount >= 1, shard < shardCount else {
            throw TableError.corrupt(path, "bad shard \(shard) of \(shardCount)")
        }
        self.seed = u64(TableFormat.offSeed)
        let cap = u64(TableFormat.offIndexCapacity)
        guard cap <= UInt64(1) << 40 else { throw TableError.corrupt(path, "bad index capacity \(cap)") }
        self.indexCapacity = Int(cap)
        self.headerChecksum = stored
        self.sections = sections
        // One of the kind's section sets, exactly.
        let present = Set(sections.keys)
        guard SectionID.acceptedSections(for: kind, dtype: dtype).contains(where: { present == Set($0.map(\.rawValue)) }) else {
            throw TableError.corrupt(path, "sections \(sections.keys.sorted()) do not match a \(kind) table")
        }
    }

    private static func firstBadBlock(_ b: UnsafeRawBufferPointer, payloadOffset: Int, blockSize: Int, blockCount: Int,
                                      stored: (Int) -> UInt64) -> Int? {
        let expected = (0..<blockCount).map(stored)
        func check(_ i: Int) -> Bool {
            let start = payloadOffset + i * blockSize
            let end = min(b.count, start + blockSize)
            return StableHash.xxh64(UnsafeRawBufferPointer(rebasing: b[start..<end]), seed: UInt64(i)) == expected[i]
        }
        if blockCount < 8 {
            return (0..<blockCount).first { !check($0) }
        }
        let results = UnsafeMutableBufferPointer<Bool>.allocate(capacity: blockCount)
        defer { results.deallocate() }
        let base = results.baseAddress!
        let stripes = 8
        Parallel.forEach(stripes) { s in
            var i = s
            while i < blockCount {
                base[i] = check(i)
                i += stripes
            }
        }
        return results.firstIndex(of: false)
    }

    /// The bytes of a section (the section table guarantees it exists for this kind).
    func section(_ id: SectionID) -> UnsafeRawBufferPointer {
        let s = sections[id.rawValue]!
        return UnsafeRawBufferPointer(rebasing: mapping.bytes[s.offset..<(s.offset + s.length)])
    }

    func count(_ id: SectionID) -> Int { sections[id.rawValue]!.count }

    /// Whether the file has section `id` (for the optional sections of a kind).
    func has(_ id: SectionID) -> Bool { sections[id.rawValue] != nil }

    /// A typed view of a section. Sections are 64-byte aligned in a page-aligned mapping.
    func typed<T>(_ id: SectionID, as type: T.Type) -> UnsafeBufferPointer<T> {
        let s = section(id)
        precondition(MemoryLayout<T>.stride == id.elementSize || id == .vectors)
        guard let base = s.baseAddress else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: base.assumingMemoryBound(to: T.self), count: s.count / MemoryLayout<T>.stride)
    }

    /// Checks a section's element count.
    func expectCount(_ id: SectionID, _ n: Int, _ what: String) throws {
        guard count(id) == n else {
            throw TableError.corrupt(path, "section \(id) has \(count(id)) elements, expected \(n) (\(what))")
        }
    }

    /// Checks an offsets section (`u64[rows + 1]`): starts at 0, never decreases, ends at `total`.
    func validateOffsets(_ offsets: UnsafeBufferPointer<UInt64>, total: Int, _ what: SectionID) throws {
        guard offsets.count >= 1, offsets[0] == 0, offsets[offsets.count - 1] == UInt64(total) else {
            throw TableError.corrupt(path, "offsets section \(what) does not span 0..<\(total)")
        }
        var prev: UInt64 = 0
        for o in offsets {
            guard o >= prev else { throw TableError.corrupt(path, "offsets section \(what) decreases") }
            prev = o
        }
    }
}

func hex(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: 16 - s.count) + s
}
