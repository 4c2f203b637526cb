import ShardRankRouting
import Foundation
import Testing
@testable import ShardRankTables

/// Damaged table sets must be rejected with a clear thrown error, never a crash or SIGBUS.
@Suite struct CorruptionTests {
    static let itemsFile = "v1/items.0-of-1.srt"

    func smallSet(_ dir: TempDir, dtype: TableDType = .int8) throws -> SampleTableSet {
        try SampleTableSet(root: dir.path, shards: 1, dtype: dtype, rows: 20, dim: 3)
    }

    func load(_ dir: TempDir) throws { _ = try TableSetLoader.load(root: dir.path, shard: 0, of: 1) }

    @Test func intactSetLoads() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try smallSet(dir)
        try load(dir)
    }

    @Test(arguments: [0, 7, 64, 127, 128, 200, -64, -1])
    func truncatedFileIsRejected(keep: Int) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try smallSet(dir)
        let path = dir.file(Self.itemsFile)
        let bytes = try readBytes(path)
        let n = keep >= 0 ? keep : bytes.count + keep
        try writeBytes(path, Array(bytes.prefix(n)))
        let e = expectTableError { try load(dir) }
        #expect(e?.code == .corrupt)
        #expect(e?.path?.hasSuffix("items.0-of-1.srt") == true)
    }

    @Test(arguments: ["items.0-of-1.srt", "lists.0-of-1.srt", "profiles.0-of-1.srt", "attributes.0-of-1.srt"])
    func everySingleBitFlipIsDetected(file: String) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try smallSet(dir)
        let path = dir.file("v1/" + file)
        let original = try readBytes(path)
        var undetected: [Int] = []
        for offset in 0..<original.count {
            var b = original
            b[offset] ^= UInt8(1) << UInt8(offset % 8)
            try writeBytes(path, b)
            do {
                try load(dir)
                undetected.append(offset)
            } catch let e as TableError {
                if e.code != .corrupt && e.code != .mismatch { undetected.append(offset) }
            }
        }
        #expect(undetected.count == 0, "flips not detected at offsets \(undetected.prefix(20))")
        try writeBytes(path, original)
        try load(dir)
    }

    @Test func appendedBytesAreRejected() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try smallSet(dir)
        let path = dir.file(Self.itemsFile)
        try writeBytes(path, try readBytes(path) + [0])
        let e = expectTableError { try load(dir) }
        #expect(e?.message.contains("header says") == true)
    }

    @Test func wrongDimFileIsRejected() throws {
        let a = try TempDir(), b = try TempDir()
        defer { a.cleanup(); b.cleanup() }
        _ = try SampleTableSet(root: a.path, shards: 1, dtype: .f32, rows: 20, dim: 3)
        _ = try SampleTableSet(root: b.path, shards: 1, dtype: .f32, rows: 20, dim: 4)
        try writeBytes(a.file(Self.itemsFile), try readBytes(b.file(Self.itemsFile)))
        // Detected against the manifest's size/checksum first...
        let e1 = expectTableError { try load(a) }
        #expect(e1?.code == .mismatch)
        // ...and against its dim once size and checksum are made to agree.
        try refreshManifest(root: a.path, version: 1, file: "items.0-of-1.srt")
        let e2 = expectTableError { try load(a) }
        #expect(e2?.code == .mismatch)
        #expect(e2?.message.contains("dim 4, manifest says 3") == true)
    }

    @Test func swappedShardFilesAreRejected() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try SampleTableSet(root: dir.path, shards: 2, dtype: .f32, rows: 50, dim: 3)
        let f0 = dir.file("v1/lists.0-of-2.srt"), f1 = dir.file("v1/lists.1-of-2.srt")
        let b0 = try readBytes(f0), b1 = try readBytes(f1)
        try writeBytes(f0, b1)
        try writeBytes(f1, b0)
        try refreshManifest(root: dir.path, version: 1, file: "lists.0-of-2.srt")
        try refreshManifest(root: dir.path, version: 1, file: "lists.1-of-2.srt")
        let e = expectTableError { _ = try TableSetLoader.load(root: dir.path, shard: 0, of: 2) }
        #expect(e?.code == .mismatch)
    }

    // Hostile files whose checksums are valid: the structural checks behind them.

    func patch(_ path: String, at offset: Int, _ value: UInt64, width: Int = 8) throws {
        var b = try readBytes(path)
        for i in 0..<width { b[offset + i] = UInt8((value >> (8 * UInt64(i))) & 0xFF) }
        try writeBytes(path, b)
        try reseal(path)
    }

    func sectionEntry(_ path: String, id: UInt32) throws -> Int {
        let b = try readBytes(path)
        let count = Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 48, as: UInt32.self) })
        for i in 0..<count {
            let e = 128 + 32 * i
            if b.withUnsafeBytes({ $0.loadUnaligned(fromByteOffset: e, as: UInt32.self) }) == id { return e }
        }
        Issue.record("section \(id) not found")
        return 0
    }

    func sectionOffset(_ path: String, id: UInt32) throws -> Int {
        let e = try sectionEntry(path, id: id)
        return Int(try readBytes(path).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: e + 8, as: UInt64.self) })
    }

    @Test func resealedStructuralDamageIsRejected() throws {
        struct Case { var name: String; var expect: String; var apply: (String, CorruptionTests) throws -> Void }
        let cases: [Case] = [
            Case(name: "rows larger than the sections", expect: "rows") { p, t in try t.patch(p, at: 24, 21) },
            Case(name: "section beyond end of file", expect: "outside the file") { p, t in
                try t.patch(p, at: try t.sectionEntry(p, id: 10) + 8, 1 << 40)
            },
            Case(name: "misaligned section", expect: "misaligned") { p, t in
                try t.patch(p, at: try t.sectionEntry(p, id: 10) + 8, UInt64(try t.sectionOffset(p, id: 10) + 4))
            },
            Case(name: "overlapping sections", expect: "overlap") { p, t in
                try t.patch(p, at: try t.sectionEntry(p, id: 10) + 8, UInt64(try t.sectionOffset(p, id: 1)))
            },
            Case(name: "duplicate id", expect: "same key") { p, t in
                let ids = try t.sectionOffset(p, id: 1)
                let first = try readBytes(p).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: ids, as: UInt64.self) }
                try t.patch(p, at: ids + 8, first)
            },
            Case(name: "index slot out of range", expect: "points at row") { p, t in
                let idx = try t.sectionOffset(p, id: 2)
                let b = try readBytes(p)
                var slot = idx
                while b.withUnsafeBytes({ $0.loadUnaligned(fromByteOffset: slot, as: UInt32.self) }) == 0 { slot += 4 }
                try t.patch(p, at: slot, 1000, width: 4)
            },
            Case(name: "emptied index slot", expect: "used slots") { p, t in
                let idx = try t.sectionOffset(p, id: 2)
                let b = try readBytes(p)
                var slot = idx
                while b.withUnsafeBytes({ $0.loadUnaligned(fromByteOffset: slot, as: UInt32.self) }) == 0 { slot += 4 }
                try t.patch(p, at: slot, 0, width: 4)
            },
            Case(name: "unknown kind", expect: "kind") { p, t in try t.patch(p, at: 12, 9, width: 4) },
            Case(name: "bad dtype", expect: "dtype") { p, t in try t.patch(p, at: 16, 7, width: 4) },
            Case(name: "future format version", expect: "format version") { p, t in try t.patch(p, at: 8, 2, width: 4) },
            Case(name: "NaN scale", expect: "scale") { p, t in
                try t.patch(p, at: try t.sectionOffset(p, id: 11), UInt64(Float.nan.bitPattern), width: 4)
            },
            Case(name: "shard out of range", expect: "shard") { p, t in try t.patch(p, at: 32, 5, width: 4) },
        ]
        for c in cases {
            let dir = try TempDir()
            defer { dir.cleanup() }
            _ = try smallSet(dir, dtype: .int8)
            let path = dir.file(Self.itemsFile)
            try c.apply(path, self)
            try refreshManifest(root: dir.path, version: 1, file: "items.0-of-1.srt")
            let e = expectTableError { try load(dir) }
            #expect(e?.code == .corrupt || e?.code == .mismatch, "\(c.name)")
            #expect(e?.message.contains(c.expect) == true, "\(c.name): \(e?.description ?? "no error")")
        }
    }

    @Test func damagedManifestsAreRejected() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try smallSet(dir)
        let mpath = dir.file("v1/manifest.json")
        let good = try String(contentsOfFile: mpath, encoding: .utf8)
        try String(good.prefix(good.count / 2)).write(toFile: mpath, atomically: false, encoding: .utf8)
        #expect(expectTableError { try load(dir) }?.code == .corrupt)
        try good.replacingOccurrences(of: "items.0-of-1.srt", with: "../items.0-of-1.srt").write(toFile: mpath, atomically: false, encoding: .utf8)
        #expect(expectTableError { try load(dir) }?.message.contains("bad file name") == true)
        try good.replacingOccurrences(of: "splitmix64+jump-v1", with: "murmur").write(toFile: mpath, atomically: false, encoding: .utf8)
        #expect(expectTableError { try load(dir) }?.message.contains("unsupported hash") == true)
        try good.replacingOccurrences(of: "\"version\" : 1", with: "\"version\" : 2").write(toFile: mpath, atomically: false, encoding: .utf8)
        #expect(expectTableError { try load(dir) }?.message.contains("inside v1") == true)
        try FileManager.default.removeItem(atPath: dir.file("v1/lists.0-of-1.srt"))
        try good.write(toFile: mpath, atomically: false, encoding: .utf8)
        #expect(expectTableError { try load(dir) }?.code == .notFound)
    }
}

@Suite struct MultiBlockTests {
    @Test(arguments: [0, 1, 2])
    func flipInAnyBlockNamesTheBlock(block: Int) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        // 30,000 × 16 f32 = 1.8 MiB of rows + 0.23 MiB ids + 0.25 MiB index: three 1-MiB blocks.
        _ = try SampleTableSet(root: dir.path, shards: 1, dtype: .f32, rows: 30_000, dim: 16)
        let path = dir.file("v1/items.0-of-1.srt")
        var b = try readBytes(path)
        let payload = Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 56, as: UInt64.self) })
        let blocks = Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 72, as: UInt64.self) })
        #expect(blocks == 3)
        let offset = min(b.count - 1, payload + block * (1 << 20) + 4321)
        b[offset] ^= 0x10
        try writeBytes(path, b)
        let e = expectTableError { _ = try TableSetLoader.load(root: dir.path, shard: 0, of: 1) }
        #expect(e?.code == .corrupt)
        #expect(e?.message.contains("checksum mismatch in block \(block) ") == true, "\(e?.description ?? "-")")
    }
}

/// Random damage, resealed so that it gets past the checksums: the loader must throw a
/// `TableError` or load a valid table, and never trap.
@Suite struct TableFileFuzzTests {
    @Test(arguments: ["items", "lists", "profiles", "attributes"])
    func randomResealedDamageNeverCrashes(table: String) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try SampleTableSet(root: dir.path, shards: 1, dtype: .int8, rows: 40, dim: 3)
        let file = "\(table).0-of-1.srt"
        let path = dir.file("v1/" + file)
        let original = try readBytes(path)
        let payload = Int(original.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 56, as: UInt64.self) })
        var state: UInt64 = 12345
        func next() -> UInt64 { state &+= 0x9E37_79B9_7F4A_7C15; return StableHash.mix64(state) }
        var rejected = 0, loaded = 0
        for round in 0..<300 {
            var b = original
            let n = Int(next() % 8) + 1
            // Half the rounds hit the header and section table, half anywhere.
            let limit = round % 2 == 0 ? min(payload, 128 + 32 * 16) : b.count
            for _ in 0..<n {
                b[Int(next() % UInt64(limit))] = UInt8(truncatingIfNeeded: next())
            }
            if round % 10 == 0 { b = Array(b.prefix(Int(next() % UInt64(b.count)))) }
            try writeBytes(path, b)
            try reseal(path)
            try refreshManifest(root: dir.path, version: 1, file: file)
            do {
                _ = try TableSetLoader.load(root: dir.path, shard: 0, of: 1)
                loaded += 1
            } catch is TableError {
                rejected += 1
            }
        }
        #expect(rejected + loaded == 300)
        #expect(rejected > 100, "most random damage must be rejected (\(rejected) rejected, \(loaded) loaded)")
    }
}
