// libFuzzer harness: the table-set manifest (ShardRankTables.TableSetManifest: JSON decoding
// into the Codable model, then `validate`, the structural checks the loader relies on).
// Input: the manifest.json bytes. A manifest that validates must survive encode → decode
// unchanged, and its file names must stay inside the version directory.
// `ShardRankFuzz manifest --write-seeds DIR` writes the seed corpus (real manifests from TableSetBuilder).
import Foundation
@testable import ShardRankTables

enum ManifestHarness {
    static func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        guard let data else { return 0 }
        let bytes = Array(UnsafeBufferPointer(start: data, count: size))
        guard let m = try? TableSetManifest.decode(bytes, path: "manifest.json") else { return 0 }
        guard (try? m.validate(path: "manifest.json", directoryVersion: m.version)) != nil else { return 0 }
        for t in m.tables {
            require(TableSetManifest.isValidTableName(t.name))
            for f in t.shards + (t.index?.shards ?? []) {
                require(!f.file.contains("/") && f.file != "." && f.file != "..", "file name \(f.file) leaves the directory")
            }
        }
        guard let again = try? TableSetManifest.decode(try! m.encoded(), path: "manifest.json") else {
            fatalError("a valid manifest's own encoding does not decode")
        }
        require(again == m, "manifest changed through encode → decode")
        return 0
    }

    static func writeSeeds(_ dir: String) throws {
        let root = NSTemporaryDirectory() + "/shardrank-fuzz-seeds-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        for shards in [1, 2] {
            try? FileManager.default.removeItem(atPath: root)
            let b = try TableSetBuilder(root: root, shardCount: shards, genres: ["Action", "Drama"], countries: ["DE"])
            let ids: [UInt64] = [1, 2, 3, 4]
            let vectors: [Float] = (0..<8).map { Float($0) }
            try vectors.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: ids, vectors: $0, dim: 2, dtype: .f16) }
            try b.addList(name: "lists", lists: [RankedListRecord(key: "all", ids: [1, 2], scores: [2, 1])])
            try b.addProfiles(name: "profiles", [UserProfileRecord(userID: 9, recentItems: [1], topGenres: [1], country: 0)])
            try b.addAttributes(name: "attributes", [ItemAttributeRecord(itemID: 1, attributes: ItemAttributes(genresMask: 1, timestamp: 5, popularity: 1))])
            try b.publish()
            let e = FileManager.default.enumerator(atPath: root)!
            while let f = e.nextObject() as? String {
                guard f.hasSuffix("manifest.json") else { continue }
                try Data(contentsOf: URL(fileURLWithPath: root + "/" + f)).write(to: URL(fileURLWithPath: "\(dir)/manifest-\(shards)-shards.json"))
            }
        }
    }
}
