import ShardRankRouting
/// A buffered, block-checksumming output stream for the payload of one table file.
///
/// Bytes are appended in file order; every `TableFormat.blockSize` bytes of payload get an xxHash64
/// (seed = block index) and are written with `pwrite`. Not thread-safe; one per file.
final class PayloadSink {
    private let file: DurableFileWriter
    private let payloadOffset: Int
    private var buffer: UnsafeMutableRawBufferPointer
    private var filled = 0
    private(set) var blockChecksums: [UInt64] = []
    /// Bytes of payload appended so far.
    private(set) var position = 0

    init(file: DurableFileWriter, payloadOffset: Int) {
        self.file = file
        self.payloadOffset = payloadOffset
        self.buffer = .allocate(byteCount: TableFormat.blockSize, alignment: 64)
    }

    deinit { buffer.deallocate() }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var src = 0
        while src < bytes.count {
            let n = min(bytes.count - src, buffer.count - filled)
            (buffer.baseAddress! + filled).copyMemory(from: bytes.baseAddress! + src, byteCount: n)
            filled += n
            src += n
            position += n
            if filled == buffer.count { try flushBlock() }
        }
    }

    func append<T: BitwiseCopyable>(_ value: T) throws {
        var v = value
        try withUnsafeBytes(of: &v) { try append($0) }
    }

    func append<T: BitwiseCopyable>(contentsOf values: [T]) throws {
        try values.withUnsafeBytes { try append($0) }
    }

    func appendZeros(_ count: Int) throws {
        var left = count
        let zeros = [UInt8](repeating: 0, count: min(count, 4096))
        while left > 0 {
            let n = min(left, zeros.count)
            try zeros.withUnsafeBytes { try append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            left -= n
        }
    }

    private func flushBlock() throws {
        guard filled > 0 else { return }
        let block = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<filled])
        let index = blockChecksums.count
        blockChecksums.append(StableHash.xxh64(block, seed: UInt64(index)))
        try file.write(block, at: payloadOffset + index * TableFormat.blockSize)
        filled = 0
    }

    /// Writes the last, partial block.
    func finish() throws { try flushBlock() }
}

/// One section to write: its id, its length in elements, and a producer that appends exactly
/// `count * id.elementSize` bytes to the sink.
struct SectionSpec {
    var id: SectionID
    var count: Int
    var produce: (PayloadSink) throws -> Void

    var byteLength: Int { count * id.elementSize }
}

/// What the header of a table file says, before layout.
struct TableFileDescriptor {
    var kind: TableKind
    var dtype: TableDType?
    var dim: Int
    var rows: Int
    var shard: Int
    var shardCount: Int
    var seed: UInt64
    var indexCapacity: Int
}

/// The result of writing one table file: what the manifest records about it.
struct WrittenTableFile {
    var fileSize: Int
    var headerChecksum: UInt64
}

/// Writes one table file (format version 1, see `docs/table-format.md`) durably: temp name, fsync,
/// rename. Lays the sections out first, streams the payload through a `PayloadSink`, then writes
/// the header, section table and block-checksum table at the front.
enum TableFileWriter {
    static func write(path: String, descriptor d: TableFileDescriptor, sections: [SectionSpec]) throws -> WrittenTableFile {
        precondition(sections.count <= TableFormat.maxSections)
        // Layout.
        var relative: [Int] = []  // section offsets relative to payload start
        var cursor = 0
        for s in sections {
            cursor = TableFormat.align(cursor)
            relative.append(cursor)
            cursor += s.byteLength
        }
        let payloadLength = cursor
        let blockCount = (payloadLength + TableFormat.blockSize - 1) / TableFormat.blockSize
        let payloadOffset = TableFormat.align(
            TableFormat.headerSize + TableFormat.sectionEntrySize * sections.count + 8 * blockCount)
        let fileSize = payloadOffset + payloadLength

        let file = try DurableFileWriter(finalPath: path)
        let sink = PayloadSink(file: file, payloadOffset: payloadOffset)
        for (i, s) in sections.enumerated() {
            if sink.position < relative[i] { try sink.appendZeros(relative[i] - sink.position) }
            let start = sink.position
            try s.produce(sink)
            precondition(sink.position - start == s.byteLength,
                         "section \(s.id) produced \(sink.position - start) bytes, expected \(s.byteLength)")
        }
        try sink.finish()
        precondition(sink.blockChecksums.count == blockCount)

        // Header region.
        var head = [UInt8](repeating: 0, count: payloadOffset)
        head.withUnsafeMutableBytes { h in
            func put<T: FixedWidthInteger>(_ v: T, _ off: Int) { h.storeBytes(of: v.littleEndian, toByteOffset: off, as: T.self) }
            for (i, b) in TableFormat.magic.enumerated() { h[i] = b }
            put(TableFormat.formatVersion, TableFormat.offFormatVersion)
            put(d.kind.rawValue, TableFormat.offKind)
            put(d.dtype?.rawValue ?? 0, TableFormat.offDType)
            put(UInt32(d.dim), TableFormat.offDim)
            put(UInt64(d.rows), TableFormat.offRows)
            put(UInt32(d.shard), TableFormat.offShard)
            put(UInt32(d.shardCount), TableFormat.offShardCount)
            put(d.seed, TableFormat.offSeed)
            put(UInt32(sections.count), TableFormat.offSectionCount)
            put(UInt32(TableFormat.blockSize), TableFormat.offBlockSize)
            put(UInt64(payloadOffset), TableFormat.offPayloadOffset)
            put(UInt64(fileSize), TableFormat.offFileSize)
            put(UInt64(blockCount), TableFormat.offBlockCount)
            put(UInt64(d.indexCapacity), TableFormat.offIndexCapacity)
            var off = TableFormat.headerSize
            for (i, s) in sections.enumerated() {
                put(s.id.rawValue, off)
                put(UInt32(s.id.elementSize), off + 4)
                put(UInt64(payloadOffset + relative[i]), off + 8)
                put(UInt64(s.byteLength), off + 16)
                put(UInt64(s.count), off + 24)
                off += TableFormat.sectionEntrySize
            }
            for c in sink.blockChecksums {
                put(c, off)
                off += 8
            }
        }
        let checksum = head.withUnsafeBytes { StableHash.xxh64($0) }
        head.withUnsafeMutableBytes { $0.storeBytes(of: checksum.littleEndian, toByteOffset: TableFormat.offHeaderChecksum, as: UInt64.self) }
        try head.withUnsafeBytes { try file.write($0, at: 0) }
        try file.commit()
        return WrittenTableFile(fileSize: fileSize, headerChecksum: checksum)
    }
}
