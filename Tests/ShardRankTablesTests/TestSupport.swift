import ShardRankRouting
import Foundation
import Testing
@testable import ShardRankTables

/// A fresh directory under the system temp dir, removed when the value is dropped... by the test
/// calling `cleanup()` (kept on failure would need a hook; tests are small).
struct TempDir {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "/srt-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name }

    func write(_ name: String, _ text: String) throws {
        let p = file(name)
        try FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: p, atomically: false, encoding: .utf8)
    }

    func write(_ name: String, bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: file(name)))
    }
}

func readBytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

func writeBytes(_ path: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

/// A `.npy` (format 1.0) file: `descr` e.g. `<f4`, raw little-endian element bytes.
func npyBytes(descr: String, shape: [Int], data: [UInt8], fortran: Bool = false, major: UInt8 = 1) -> [UInt8] {
    let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    var dict = "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': \(shapeText), }"
    let prefix = major == 1 ? 10 : 12
    while (prefix + dict.utf8.count + 1) % 64 != 0 { dict += " " }
    dict += "\n"
    var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [major, 0]
    let n = dict.utf8.count
    if major == 1 {
        out += [UInt8(n & 0xFF), UInt8(n >> 8)]
    } else {
        out += [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)]
    }
    return out + Array(dict.utf8) + data
}

func npyFloats(_ rows: [[Float]]) -> [UInt8] {
    let flat = rows.flatMap { $0 }
    return npyBytes(descr: "<f4", shape: [rows.count, rows.first?.count ?? 0], data: flat.withUnsafeBytes { Array($0) })
}

func npyIDs(_ ids: [Int64]) -> [UInt8] {
    npyBytes(descr: "<i8", shape: [ids.count], data: ids.withUnsafeBytes { Array($0) })
}

/// Deterministic pseudo-random floats in [-1, 1) from a SplitMix64 stream.
func testVectors(rows: Int, dim: Int, seed: UInt64 = 1) -> [Float] {
    var state = seed
    return (0..<(rows * dim)).map { _ in
        state &+= 0x9E37_79B9_7F4A_7C15
        let r = StableHash.mix64(state)
        return Float(r >> 40) / Float(1 << 24) * 2 - 1
    }
}

/// Builds one table set with every kind of table and returns the root.
struct SampleTableSet {
    let root: String
    let ids: [UInt64]
    let dim: Int
    let vectors: [Float]
    let lists: [RankedListRecord]
    let profiles: [UserProfileRecord]
    let attributes: [ItemAttributeRecord]
    let genres = ["Action", "Comedy", "Drama"]
    let countries = ["DE", "FR"]

    init(root: String, shards: Int, dtype: TableDType, rows: Int = 300, dim: Int = 7) throws {
        self.root = root
        self.dim = dim
        ids = (0..<rows).map { UInt64($0) * 1_000_003 + 17 }
        vectors = testVectors(rows: rows, dim: dim)
        lists = [
            RankedListRecord(key: "all", ids: [5, 4, 3], scores: [3, 2, 1]),
            RankedListRecord(key: "Action", ids: [17], scores: [0.5]),
            RankedListRecord(key: "empty", ids: [], scores: []),
            RankedListRecord(key: "ünïcode ключ", ids: [1, 2], scores: [-1, -2]),
        ] + (0..<50).map { RankedListRecord(key: "k\($0)", ids: [UInt64($0)], scores: [Float($0)]) }
        profiles = (0..<40).map { u in
            UserProfileRecord(userID: UInt64(u) * 31, recentItems: (0..<(u % 5)).map { UInt64($0 + u) },
                              topGenres: Array([2, 0, 1].prefix(u % 4)), country: u % 3 == 0 ? nil : u % 2)
        }
        attributes = (0..<60).map { i in
            ItemAttributeRecord(itemID: UInt64(i) * 7, attributes: ItemAttributes(genresMask: UInt64(i % 8), timestamp: Int64(i) - 30,
                                                                                   popularity: Float(i) / 2))
        }
        let b = try TableSetBuilder(root: root, shardCount: shards, genres: genres, countries: countries)
        try vectors.withUnsafeBufferPointer { v in
            try b.addEmbedding(name: "items", ids: ids, vectors: v, dim: dim, dtype: dtype)
        }
        try b.addList(name: "lists", lists: lists)
        try b.addProfiles(name: "profiles", profiles)
        try b.addAttributes(name: "attributes", attributes)
        try b.publish()
    }
}

/// Recomputes the block checksums and header checksum of a table file after a deliberate edit,
/// so that tests can reach the structural checks behind the checksums.
func reseal(_ path: String) throws {
    var b = try readBytes(path)
    guard b.count >= 128 else { return }
    func u32(_ o: Int) -> Int { Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt32.self) }) }
    func u64(_ o: Int) -> Int {
        let v = b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt64.self) }
        return v > UInt64(Int32.max) ? -1 : Int(v)  // garbage: makes the guard below skip resealing
    }
    let sections = u32(48), blockSize = u32(52), payload = u64(56), blocks = u64(72)
    let table = 128 + 32 * sections
    // Leave files whose layout fields are themselves garbage as they are (the loader rejects them).
    guard payload >= 0, blocks >= 0, sections <= 16, blockSize >= 4096, blockSize & (blockSize - 1) == 0, payload <= b.count, payload >= 128,
          blocks == (b.count - payload + blockSize - 1) / blockSize, table + 8 * blocks <= payload else { return }
    for i in 0..<blocks {
        let start = payload + i * blockSize, end = min(b.count, start + blockSize)
        let c = b[start..<end].withUnsafeBytes { StableHash.xxh64($0, seed: UInt64(i)) }
        b.withUnsafeMutableBytes { $0.storeBytes(of: c, toByteOffset: table + 8 * i, as: UInt64.self) }
    }
    for i in 0..<8 { b[120 + i] = 0 }
    let h = b[0..<payload].withUnsafeBytes { StableHash.xxh64($0) }
    b.withUnsafeMutableBytes { $0.storeBytes(of: h, toByteOffset: 120, as: UInt64.self) }
    try writeBytes(path, b)
}

/// Rewrites a version's manifest entry for `file` to match the file's current size and checksum.
func refreshManifest(root: String, version: UInt64, file: String) throws {
    let mpath = root + "/v\(version)/manifest.json"
    var m = try JSONDecoder().decode(TableSetManifest.self, from: Data(contentsOf: URL(fileURLWithPath: mpath)))
    let bytes = try readBytes(root + "/v\(version)/" + file)
    let checksum = bytes.count >= 128 ? bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 120, as: UInt64.self) } : 0
    for t in m.tables.indices {
        for s in m.tables[t].shards.indices where m.tables[t].shards[s].file == file {
            m.tables[t].shards[s].bytes = UInt64(bytes.count)
            m.tables[t].shards[s].checksum = "xxh64:" + String(hex(checksum).dropFirst(2))
        }
    }
    try JSONEncoder().encode(m).write(to: URL(fileURLWithPath: mpath))
}

/// Runs `body` and returns the `TableError` it throws (recording an issue if it does not throw one).
func expectTableError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> TableError? {
    do {
        try body()
        Issue.record("expected a TableError, nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let e as TableError {
        return e
    } catch {
        Issue.record("expected a TableError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
