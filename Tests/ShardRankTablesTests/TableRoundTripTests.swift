import ShardRankRouting
import Foundation
import Testing
@testable import ShardRankTables
import ShardRankKernels

@Suite struct TableRoundTripTests {
    /// Loads every shard and returns them.
    func loadAll(_ root: String, shards: Int) throws -> [LoadedTableSet] {
        try (0..<shards).map { try TableSetLoader.load(root: root, shard: $0, of: shards) }
    }

    @Test(arguments: [TableDType.f32, .f16, .int8], [1, 3, 4])
    func embeddingRoundTrip(dtype: TableDType, shards: Int) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let sample = try SampleTableSet(root: dir.path, shards: shards, dtype: dtype)
        let sets = try loadAll(dir.path, shards: shards)
        let router = ShardRouter(shardCount: shards)
        var total = 0
        for set in sets {
            #expect(set.version == 1)
            #expect(set.shardCount == shards)
            let t = try #require(set.embedding("items"))
            #expect(t.dim == sample.dim && t.dtype == dtype)
            #expect(t.rowStride == sample.dim * dtype.elementSize)
            total += t.rowCount
            for id in t.ids { #expect(router.shard(ofID: id) == set.shard) }
        }
        #expect(total == sample.ids.count)
        var decoded = [Float](repeating: 0, count: sample.dim)
        for (r, id) in sample.ids.enumerated() {
            let set = sets[router.shard(ofID: id)]
            let t = set.embedding("items")!
            let row = try #require(t.rowIndex(of: id))
            #expect(t.ids[row] == id)
            // Not on any other shard.
            for other in sets where other.shard != set.shard { #expect(other.embedding("items")!.rowIndex(of: id) == nil) }
            decoded.withUnsafeMutableBufferPointer { t.decodeRow(at: row, into: $0) }
            let original = Array(sample.vectors[(r * sample.dim)..<((r + 1) * sample.dim)])
            switch dtype {
            case .f32:
                #expect(decoded == original)
                let raw = t.withRowBytes(at: row) { Array($0.bindMemory(to: Float.self)) }
                #expect(raw == original)
            case .f16:
                #expect(decoded == original.map { Float(Float16($0)) })
            case .int8:
                let scale = t.scale(at: row)
                let maxAbs = original.map(abs).max()!
                #expect(abs(scale - maxAbs / 127) <= 1e-6 * maxAbs)
                for (a, b) in zip(decoded, original) { #expect(abs(a - b) <= scale / 2 + 1e-6) }
            }
        }
        // Ids that are nowhere.
        for missing: UInt64 in [0, 1, 18, 999_999_999_999] {
            #expect(sets[router.shard(ofID: missing)].embedding("items")!.rowIndex(of: missing) == nil)
        }
    }

    @Test(arguments: [TableDType.f32, .int8])
    func copyRowsGathersInRequestOrder(dtype: TableDType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let sample = try SampleTableSet(root: dir.path, shards: 2, dtype: dtype)
        let set = try TableSetLoader.load(root: dir.path, shard: 1, of: 2)
        let t = set.embedding("items")!
        let mine = Array(t.ids.prefix(5))
        let request: [UInt64] = [mine[3], 12345, mine[0], mine[3], 0, mine[4]]
        var out = [UInt8](repeating: 0xAA, count: request.count * t.rowStride)
        var scales = [Float](repeating: -1, count: request.count)
        var missing: [Int] = []
        let found = request.withUnsafeBufferPointer { req in
            out.withUnsafeMutableBytes { dst in
                scales.withUnsafeMutableBufferPointer { sc in
                    t.copyRows(ids: req, into: dst, scales: sc) { missing.append($0) }
                }
            }
        }
        #expect(found == 4)
        #expect(missing == [1, 4])
        let foundIDs = request.enumerated().filter { !missing.contains($0.offset) }.map(\.element)
        for (k, id) in foundIDs.enumerated() {
            let row = t.rowIndex(of: id)!
            let expected = t.withRowBytes(at: row) { Array($0) }
            #expect(Array(out[(k * t.rowStride)..<((k + 1) * t.rowStride)]) == expected)
            #expect(scales[k] == t.scale(at: row))
        }
        _ = sample
    }

    @Test(arguments: [1, 2, 5])
    func listProfileAttributeRoundTrip(shards: Int) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let sample = try SampleTableSet(root: dir.path, shards: shards, dtype: .f32)
        let sets = try loadAll(dir.path, shards: shards)
        let router = ShardRouter(shardCount: shards)
        #expect(sets.reduce(0) { $0 + $1.list("lists")!.keyCount } == sample.lists.count)
        for l in sample.lists {
            let set = sets[router.shard(ofKey: l.key)]
            let view = try #require(set.list("lists")!.list(forKey: l.key), "key \(l.key)")
            #expect(Array(view.ids) == l.ids)
            #expect(Array(view.scores) == l.scores)
            for other in sets where other.shard != set.shard { #expect(other.list("lists")!.list(forKey: l.key) == nil) }
        }
        #expect(sets.allSatisfy { $0.list("lists")!.list(forKey: "nope") == nil })
        #expect(Set(sets.flatMap { $0.list("lists")!.keys }) == Set(sample.lists.map(\.key)))

        for p in sample.profiles {
            let t = sets[router.shard(ofID: p.userID)].profile("profiles")!
            let v = try #require(t.profile(forUser: p.userID))
            #expect(Array(v.recentItems) == p.recentItems)
            #expect(v.topGenres == p.topGenres)
            #expect(v.countryIndex.map(Int.init) == p.country)
            #expect(t.topGenreNames(v) == p.topGenres.map { sample.genres[$0] })
            #expect(t.countryName(v) == p.country.map { sample.countries[$0] })
        }
        for a in sample.attributes {
            let t = sets[router.shard(ofID: a.itemID)].attribute("attributes")!
            #expect(t.attributes(forItem: a.itemID) == a.attributes)
        }
        #expect(sets[0].attribute("attributes")!.genreNames(0b101) == ["Action", "Drama"])
        #expect(sets.allSatisfy { $0.profile("profiles")!.profile(forUser: 1) == nil })
        // Kinds and names through the enum.
        #expect(sets[0].tables["items"]?.kind == .embedding)
        #expect(sets[0].tables["lists"]?.kind == .list)
        #expect(sets[0].mappedBytes > 0)
    }

    @Test func versionsIncreaseAndIncompleteOnesAreIgnored() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try SampleTableSet(root: dir.path, shards: 2, dtype: .f32)
        _ = try SampleTableSet(root: dir.path, shards: 2, dtype: .f16)
        let catalog = TableSetCatalog(root: dir.path)
        #expect(try catalog.completeVersions() == [1, 2])
        // A half-written v3 (no manifest) is ignored; the next build skips past it.
        try FileManager.default.createDirectory(atPath: dir.file("v3"), withIntermediateDirectories: false)
        #expect(try catalog.newestVersion() == 2)
        #expect(try TableSetLoader.load(root: dir.path, shard: 0, of: 2).version == 2)
        #expect(try TableSetLoader.load(root: dir.path, version: 1, shard: 0, of: 2).embedding("items")!.dtype == .f32)
        _ = try SampleTableSet(root: dir.path, shards: 2, dtype: .int8)
        #expect(try catalog.completeVersions() == [1, 2, 4])
        #expect(try TableSetLoader.load(root: dir.path, shard: 1, of: 2).embedding("items")!.dtype == .int8)
        // Junk names are not versions.
        try FileManager.default.createDirectory(atPath: dir.file("v07"), withIntermediateDirectories: false)
        try dir.write("vx/manifest.json", "{}")
        #expect(try catalog.completeVersions() == [1, 2, 4])
    }

    @Test func emptyRootAndWrongShardCount() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let none = expectTableError { _ = try TableSetLoader.load(root: dir.path, shard: 0, of: 1) }
        #expect(none?.code == .notFound)
        _ = try SampleTableSet(root: dir.path, shards: 3, dtype: .f32)
        let wrong = expectTableError { _ = try TableSetLoader.load(root: dir.path, shard: 0, of: 2) }
        #expect(wrong?.code == .mismatch)
        #expect(wrong?.description.contains("3 shards") == true)
        let bad = expectTableError { _ = try TableSetLoader.load(root: dir.path, shard: 3, of: 3) }
        #expect(bad?.code == .mismatch)
    }

    @Test func unpublishedBuilderLeavesNothing() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        do {
            let b = try TableSetBuilder(root: dir.path, shardCount: 2)
            let v: [Float] = [1, 2, 3, 4]
            try v.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: [1, 2], vectors: $0, dim: 2) }
            #expect(FileManager.default.fileExists(atPath: dir.file("v1/items.0-of-2.srt")))
            // dropped without publish()
        }
        #expect(!FileManager.default.fileExists(atPath: dir.file("v1")))
        #expect(try TableSetCatalog(root: dir.path).completeVersions().isEmpty)
    }

    @Test func builderRejectsBadEmbeddings() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let b = try TableSetBuilder(root: dir.path, shardCount: 2)
        let nan: [Float] = [1, 2, .nan, 4]
        let e1 = expectTableError { try nan.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: [1, 2], vectors: $0, dim: 2) } }
        #expect(e1?.line == 2)
        let ok: [Float] = [1, 2, 3, 4]
        let e2 = expectTableError { try ok.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: [9, 9], vectors: $0, dim: 2) } }
        #expect(e2?.line == 2)
        #expect(e2?.message.contains("duplicate id 9") == true)
        let e3 = expectTableError { try ok.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: [1, 2, 3], vectors: $0, dim: 2) } }
        #expect(e3?.code == .invalidInput)
        let big: [Float] = [1e6, 0]
        let e4 = expectTableError { try big.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: [1], vectors: $0, dim: 2, dtype: .f16) } }
        #expect(e4?.message.contains("f16") == true)
        let e5 = expectTableError { try ok.withUnsafeBufferPointer { try b.addEmbedding(name: "../x", ids: [1, 2], vectors: $0, dim: 2) } }
        #expect(e5?.code == .invalidInput)
    }

    @Test func int8AllZeroRowAndExtremes() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let b = try TableSetBuilder(root: dir.path, shardCount: 1)
        let v: [Float] = [0, 0, 0, -2, 1, 2, 1e-30, -1e-30, 0]
        try v.withUnsafeBufferPointer { try b.addEmbedding(name: "e", ids: [1, 2, 3], vectors: $0, dim: 3, dtype: .int8) }
        try b.publish()
        let t = try TableSetLoader.load(root: dir.path, shard: 0, of: 1).embedding("e")!
        #expect(t.scale(at: t.rowIndex(of: 1)!) == 1)
        let r2 = t.rowIndex(of: 2)!
        #expect(t.withRowBytes(at: r2) { $0.map { Int8(bitPattern: $0) } } == [-127, 64, 127])
        var out = [Float](repeating: 9, count: 3)
        out.withUnsafeMutableBufferPointer { t.decodeRow(at: r2, into: $0) }
        #expect(out[0] == -2 && out[2] == 2)
    }
}

@Suite struct RowMatrixSearchTests {
    @Test(arguments: [TableDType.f32, .f16, .int8])
    func rowMatrixFeedsTheSearchKernel(dtype: TableDType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try SampleTableSet(root: dir.path, shards: 2, dtype: dtype, rows: 400, dim: 7)
        let t = try TableSetLoader.load(root: dir.path, shard: 1, of: 2).embedding("items")!
        let query = testVectors(rows: 1, dim: 7, seed: 5)
        let got = query.withUnsafeBufferPointer {
            Search.topK(queries: $0.baseAddress!, queryCount: 1, rows: t.rowMatrix, ids: t.ids.baseAddress!, k: 10)[0]
        }
        // Reference: decode every row to f32 and score it in Double.
        var row = [Float](repeating: 0, count: 7)
        var reference: [(UInt64, Double)] = []
        for r in 0..<t.rowCount {
            row.withUnsafeMutableBufferPointer { t.decodeRow(at: r, into: $0) }
            reference.append((t.ids[r], zip(row, query).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }))
        }
        reference.sort { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        #expect(got.count == 10)
        #expect(got.map(\.id) == reference.prefix(10).map(\.0))
        for (g, r) in zip(got, reference) { #expect(abs(Double(g.score) - r.1) < 1e-4) }
    }
}

@Suite struct ConvertingGatherTests {
    @Test(arguments: [TableDType.f32, .f16, .int8], [TableDType.f32, .f16, .int8])
    func copyRowsConvertsToTheWantedDType(stored: TableDType, wanted: TableDType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try SampleTableSet(root: dir.path, shards: 1, dtype: stored, rows: 50, dim: 5)
        let t = try TableSetLoader.load(root: dir.path, shard: 0, of: 1).embedding("items")!
        let request: [UInt64] = [t.ids[7], 3, t.ids[0]]
        var out = [UInt8](repeating: 0, count: request.count * 5 * wanted.elementSize)
        var scales = [Float](repeating: 0, count: request.count)
        var scratch = [Float](repeating: 0, count: 5)
        var missing: [Int] = []
        let found = request.withUnsafeBufferPointer { req in
            out.withUnsafeMutableBytes { dst in
                scales.withUnsafeMutableBufferPointer { sc in
                    scratch.withUnsafeMutableBufferPointer { scr in
                        t.copyRows(ids: req, as: wanted, into: dst, scales: sc, scratch: scr) { missing.append($0) }
                    }
                }
            }
        }
        #expect(found == 2 && missing == [1])
        for (k, row) in [7, 0].enumerated() {
            var original = [Float](repeating: 0, count: 5)
            original.withUnsafeMutableBufferPointer { t.decodeRow(at: row, into: $0) }
            let got: [Float] = out.withUnsafeBytes { b in
                let base = b.baseAddress! + k * 5 * wanted.elementSize
                switch wanted {
                case .f32: return (0..<5).map { base.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
                case .f16: return (0..<5).map { Float(Float16(bitPattern: base.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) }
                case .int8: return (0..<5).map { Float(base.load(fromByteOffset: $0, as: Int8.self)) * scales[k] }
                }
            }
            let tolerance: Float = switch wanted {
            case .f32: 0
            case .f16: 1e-3
            case .int8: original.map(abs).max()! / 254 + 1e-6
            }
            for (a, b) in zip(got, original) { #expect(abs(a - b) <= tolerance, "\(stored)→\(wanted): \(got) vs \(original)") }
        }
    }
}
