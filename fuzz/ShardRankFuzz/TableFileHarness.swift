// libFuzzer harness: the table-file reader (ShardRankTables.TableFile.open) and the typed tables
// built on it (embedding, list, profile, attribute). Input: byte 0 bit 0 asks the harness to
// "reseal" the file first (fix the file-size, payload-offset and block-count fields and recompute
// the block and header checksums, as a writer would), so the fuzzer reaches the structural checks
// behind the checksums; the rest is the file. A file that opens must be safe to read through
// every accessor: the checks in `open` and the table initialisers are what the serving path
// trusts.
// `ShardRankFuzz table-file --write-seeds DIR` writes the seed corpus (small real table files).
import Foundation
import ShardRankRouting
@testable import ShardRankTables

enum TableFileHarness {
    static func reseal(_ b: inout [UInt8]) {
        guard b.count >= TableFormat.headerSize else { return }
        func u32(_ o: Int) -> Int { Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt32.self) }) }
        func put64(_ v: UInt64, _ o: Int) { b.withUnsafeMutableBytes { $0.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt64.self) } }
        let sections = u32(TableFormat.offSectionCount), blockSize = u32(TableFormat.offBlockSize)
        guard sections <= TableFormat.maxSections, blockSize >= 4096, blockSize & (blockSize - 1) == 0, blockSize <= 1 << 30 else { return }
        let table = TableFormat.headerSize + TableFormat.sectionEntrySize * sections
        var blocks = 0, payload = TableFormat.align(table)
        for _ in 0..<4 {  // payload offset and block count depend on each other: iterate to the fixed point
            payload = TableFormat.align(table + 8 * blocks)
            guard payload <= b.count else { return }
            blocks = (b.count - payload + blockSize - 1) / blockSize
        }
        guard payload == TableFormat.align(table + 8 * blocks) else { return }
        put64(UInt64(b.count), TableFormat.offFileSize)
        put64(UInt64(payload), TableFormat.offPayloadOffset)
        put64(UInt64(blocks), TableFormat.offBlockCount)
        for i in 0..<blocks {
            let start = payload + i * blockSize, end = min(b.count, start + blockSize)
            put64(b[start..<end].withUnsafeBytes { StableHash.xxh64($0, seed: UInt64(i)) }, table + 8 * i)
        }
        put64(0, TableFormat.offHeaderChecksum)
        put64(b[0..<payload].withUnsafeBytes { StableHash.xxh64($0) }, TableFormat.offHeaderChecksum)
    }

    static let scratch = scratchFile("table")
    static let genres = ["Action", "Comedy", "Drama"]
    static let countries = ["DE", "FR"]

    static func readAll(_ file: TableFile) throws {
        var sink: Float = 0
        switch file.kind {
        case .embedding:
            let t = try EmbeddingTable(name: "t", file: file)
            var row = [Float](repeating: 0, count: t.dim)
            for r in 0..<min(t.rowCount, 64) {
                row.withUnsafeMutableBufferPointer { t.decodeRow(at: r, into: $0) }
                sink += row.reduce(0, +)
                if t.dtype == .int8 { sink += t.scale(at: r) }
                require(t.rowIndex(of: t.ids[r]) != nil, "row \(r)'s id is not found")
            }
            _ = t.rowIndex(of: 12345)
        case .list:
            let t = try ListTable(name: "t", file: file)
            for k in 0..<min(t.keyCount, 64) {
                let key = t.key(at: k)
                let l = t.list(at: k)
                require(l.ids.count == l.scores.count, "list \(k): \(l.ids.count) ids, \(l.scores.count) scores")
                sink += l.scores.reduce(0, +)
                _ = t.keyIndex(of: key)
            }
            _ = t.list(forKey: "all")
        case .profile:
            let t = try ProfileTable(name: "t", file: file, genres: genres, countries: countries)
            for r in 0..<min(t.rowCount, 64) {
                let p = t.profile(at: r)
                sink += Float(p.recentItems.count + t.history(of: p).decoded().count)
                _ = t.topGenreNames(p)
                _ = t.countryName(p)
                _ = t.profile(forUser: t.ids[r])
            }
        case .attribute:
            let t = try AttributeTable(name: "t", file: file, genres: genres)
            for r in 0..<min(t.rowCount, 64) {
                let a = t.attributes(at: r)
                sink += a.popularity + Float(t.genreNames(a.genresMask).count)
                _ = t.attributes(forItem: t.ids[r])
            }
        case .annIndex:
            break
        }
        withExtendedLifetime(sink) {}
    }

    static func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        guard let data, size >= 1 else { return 0 }
        var b = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
        if data[0] & 1 != 0 { reseal(&b) }
        b.withUnsafeBytes { writeScratch(scratch, $0.baseAddress, $0.count) }
        guard let file = try? TableFile.open(path: scratch) else { return 0 }
        try? readAll(file)
        return 0
    }

    /// Small table files of every kind and dtype, from the real writer (TableSetBuilder).
    static func writeSeeds(_ dir: String) throws {
        let root = NSTemporaryDirectory() + "/shardrank-fuzz-seeds-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        var n = 0
        for dtype in [TableDType.f32, .f16, .int8] {
            try? FileManager.default.removeItem(atPath: root)
            let b = try TableSetBuilder(root: root, shardCount: 1, genres: genres, countries: countries)
            let ids: [UInt64] = (0..<5).map { UInt64($0) * 1_000_003 + 17 }
            let vectors: [Float] = (0..<20).map { Float($0) / 7 - 1 }
            try vectors.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: ids, vectors: $0, dim: 4, dtype: dtype) }
            if dtype == .f32 {
                try b.addList(name: "lists", lists: [RankedListRecord(key: "all", ids: [5, 4, 3], scores: [3, 2, 1]),
                                                     RankedListRecord(key: "empty", ids: [], scores: [])])
                try b.addProfiles(name: "profiles", [UserProfileRecord(userID: 31, recentItems: [1, 2], history: [1, 2, 9], topGenres: [2, 0], country: 1),
                                                     UserProfileRecord(userID: 62, recentItems: [], topGenres: [], country: nil)])
                try b.addAttributes(name: "attributes", [ItemAttributeRecord(itemID: 7, attributes: ItemAttributes(genresMask: 5, timestamp: -3, popularity: 0.5))])
            }
            try b.publish()
            let e = FileManager.default.enumerator(atPath: root)!
            while let f = e.nextObject() as? String {
                let p = root + "/" + f
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue, !f.hasSuffix(".json") else { continue }
                let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: p)))
                guard bytes.count >= 8, Array(bytes[0..<8]) == TableFormat.magic else { continue }
                n += 1
                try Data([0] + bytes).write(to: URL(fileURLWithPath: "\(dir)/table-\(n)"))
                try Data([1] + bytes).write(to: URL(fileURLWithPath: "\(dir)/table-\(n)-reseal"))
            }
        }
    }
}
