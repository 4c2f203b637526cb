import Foundation
import Testing
import ShardRankKernels
@testable import ShardRankTables

/// ANN index files: written with the table set, loaded and verified with it, refused when
/// corrupt, truncated or built for other rows.
@Suite struct ANNIndexFileTests {
    static let rows = 600, dim = 9

    /// A two-shard table set whose items have an index (16 lists per shard).
    @discardableResult
    func build(_ root: String, seed: UInt64 = 1, vectorsSeed: UInt64 = 0, dtype: TableDType = .int8) throws -> TableSetBuilder.ANNIndexReport {
        let ids = (0..<Self.rows).map { UInt64($0) * 13 + 5 }
        var v = testVectors(rows: Self.rows, dim: Self.dim)
        if vectorsSeed != 0 { for i in v.indices { v[i] += 0.01 * Float(vectorsSeed) } }
        let b = try TableSetBuilder(root: root, shardCount: 2)
        try v.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: ids, vectors: $0, dim: Self.dim, dtype: dtype) }
        let report = try b.addANNIndex(table: "items", options: IVFPQBuildOptions(lists: 16, seed: seed),
                                       defaults: ANNSearchParameters(nprobe: 8, rerank: 40), pool: nil, recallSample: 60)
        try b.publish()
        return report
    }

    @Test(arguments: TableDType.allCases)
    func indexIsPublishedLoadedAndSearchable(dtype: TableDType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let report = try build(dir.path, dtype: dtype)
        #expect(report.recallAt10 >= 0.9)
        let m = try TableSetCatalog(root: dir.path).manifest(of: 1)
        let spec = try #require(m.table(named: "items")?.index)
        #expect(spec.kind == "ivfpq4" && spec.lists == 16 && spec.nprobe == 8 && spec.rerank == 40 && spec.shards.count == 2)
        #expect(spec.recallAt10 != nil)
        for shard in 0..<2 {
            let ts = try TableSetLoader.load(root: dir.path, shard: shard, of: 2)
            let index = try #require(ts.index("items"))
            let table = try #require(ts.embedding("items"))
            #expect(index.table === table && index.annByDefault)
            #expect(ts.mappedBytes > table.mappedBytes + index.mappedBytes - 1)
            // A stored row as the query finds itself (its own score is the largest for these data).
            var q = [Float](repeating: 0, count: Self.dim)
            q.withUnsafeMutableBufferPointer { table.decodeRow(at: 3, into: $0) }
            let got = q.withUnsafeBufferPointer {
                index.index.search(query: $0.baseAddress!, k: 5, parameters: index.defaults, rows: table.rowMatrix, ids: table.ids.baseAddress!).items
            }
            #expect(got.count == 5)
        }
    }

    /// The probe-bonus weight the build chose travels in the index file (parameter 6, Float
    /// bits) and comes back at load, and the search's per-list bonuses are that weight times the
    /// lists' spread computed from the codes.
    @Test func probeBonusWeightIsStoredLoadedAndChecked() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try build(dir.path)
        let path = dir.path + "/v1/" + TableSetManifest.indexFileName(table: "items", shard: 0, shardCount: 2)
        let file = try TableFile.open(path: path)
        let stored = file.typed(.annParams, as: UInt64.self)[6]
        let ts = try TableSetLoader.load(root: dir.path, shard: 0, of: 2)
        let index = try #require(ts.index("items"))
        #expect(UInt64(index.probeBonusWeight.bitPattern) == stored)
        #expect(IVFPQIndex.probeBonusWeights.contains(index.probeBonusWeight))
        // The bonuses the search uses are the weight times the lists' spread.
        var spread = [Float](repeating: 0, count: index.index.listCount)
        spread.withUnsafeMutableBufferPointer { index.index.computeListSpread(into: $0.baseAddress!) }
        let bonus = try #require(index.index.listBonus)
        for l in 0..<index.index.listCount { #expect(bonus[l] == index.probeBonusWeight * spread[l]) }
    }

    @Test func corruptOrTruncatedIndexIsRefused() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try build(dir.path)
        let path = dir.file("v1/items.1-of-2.ann.srt")
        let original = try readBytes(path)
        // A flipped bit anywhere (header, sections, payload) and a truncation are caught.
        for offset in stride(from: 0, to: original.count, by: max(1, original.count / 97)) {
            var b = original
            b[offset] ^= 0x10
            try writeBytes(path, b)
            let e = expectTableError { _ = try TableSetLoader.load(root: dir.path, shard: 1, of: 2) }
            #expect(e != nil, "bit flip at \(offset) not detected")
        }
        try writeBytes(path, Array(original.prefix(original.count - 8)))
        let e = expectTableError { _ = try TableSetLoader.load(root: dir.path, shard: 1, of: 2) }
        #expect(e?.path?.hasSuffix("items.1-of-2.ann.srt") == true)
        try writeBytes(path, original)
        _ = try TableSetLoader.load(root: dir.path, shard: 1, of: 2)
    }

    @Test func indexBuiltForOtherRowsIsRefused() throws {
        // Two versions with different rows; v2's manifest is made to point at v1's index file
        // (with v1's size and checksum, so only the row check can catch it).
        let dir = try TempDir()
        defer { dir.cleanup() }
        try build(dir.path)
        try build(dir.path, vectorsSeed: 5)
        let mpath = dir.file("v2/manifest.json")
        var m = try TableSetCatalog(root: dir.path).manifest(of: 2)
        let v1 = try TableSetCatalog(root: dir.path).manifest(of: 1)
        try FileManager.default.copyItem(atPath: dir.file("v1/items.0-of-2.ann.srt"), toPath: dir.file("v2/old.ann.srt"))
        let ti = m.tables.firstIndex { $0.name == "items" }!
        var f = v1.table(named: "items")!.index!.shards[0]
        f.file = "old.ann.srt"
        m.tables[ti].index!.shards[0] = f
        try writeBytes(mpath, try m.encoded())
        let e = expectTableError { _ = try TableSetLoader.load(root: dir.path, version: 2, shard: 0, of: 2) }
        #expect(e?.code == .mismatch)
        #expect(e.map { "\($0)".contains("built for other rows") } == true)
    }

    @Test func unknownTableOrNonEmbeddingIsRefused() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let b = try TableSetBuilder(root: dir.path, shardCount: 1)
        try b.addList(name: "lists", lists: [RankedListRecord(key: "a", ids: [1], scores: [1])])
        let e1 = expectTableError { try b.addANNIndex(table: "nope", options: IVFPQBuildOptions(), defaults: .init(nprobe: 1, rerank: 1), pool: nil) }
        #expect(e1?.code == .invalidInput)
        let e2 = expectTableError { try b.addANNIndex(table: "lists", options: IVFPQBuildOptions(), defaults: .init(nprobe: 1, rerank: 1), pool: nil) }
        #expect(e2?.code == .invalidInput)
    }
}
