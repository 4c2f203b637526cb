import ShardRankRouting
#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif

/// `manifest.json` of a table-set version (`<root>/v<N>/manifest.json`): the last file written
/// when a version is published; a version directory without a complete, parseable manifest is not
/// a version. Field names are the JSON keys; see `docs/table-format.md`.
public struct TableSetManifest: Codable, Sendable, Equatable {
    /// The table-set format version (1).
    public var formatVersion: Int
    /// N of `v<N>`.
    public var version: UInt64
    /// UTC creation time, ISO 8601 (`2026-11-23T05:00:00Z`).
    public var createdAt: String
    /// Number of shards S every table is split into.
    public var shardCount: Int
    public var hash: HashSpec
    /// Genre vocabulary: attribute masks and profile genre indices refer to it.
    public var genres: [String]
    /// Country vocabulary: profile country indices refer to it.
    public var countries: [String]
    public var tables: [Table]

    public struct HashSpec: Codable, Sendable, Equatable {
        /// `StableHash.functionName` (`splitmix64+jump-v1`).
        public var function: String
        /// The seed as `0x` + 16 hex digits.
        public var seed: String

        public var seedValue: UInt64? {
            guard seed.hasPrefix("0x") else { return nil }
            return UInt64(seed.dropFirst(2), radix: 16)
        }
    }

    public struct Table: Codable, Sendable, Equatable {
        public var name: String
        public var kind: TableKind
        /// Vector dimension (embedding tables); genre slots per row (profile tables, 3); 0 otherwise.
        public var dim: Int
        /// Row element type (embedding tables only).
        public var dtype: TableDType?
        /// Rows (keys) over all shards.
        public var rows: UInt64
        /// One file per shard, `shards[i].shard == i`.
        public var shards: [File]
        /// The approximate-nearest-neighbour index of an embedding table (absent: none).
        public var index: ANNIndexSpec?
    }

    /// An embedding table's ANN index: one file per shard (IVF-PQ4 over that shard's rows), the
    /// parameters it was built with and the search defaults.
    public struct ANNIndexSpec: Codable, Sendable, Equatable {
        /// `ivfpq4`: k-means lists + 4-bit product-quantised residuals + exact re-rank.
        public var kind: String
        public var lists: Int
        public var subspaces: Int
        public var subspaceDim: Int
        /// Whether each row is also filed in a second list (SOAR).
        public var spill: Bool?
        /// The build seed as `0x` + 16 hex digits.
        public var seed: String
        /// The search mode a request with mode UNSPECIFIED gets: `ann` or `exact`.
        public var defaultMode: String
        /// Search defaults (a request's 0 means these).
        public var nprobe: Int
        public var rerank: Int
        /// recall@10 of the default knobs against exact search on a sample of the rows, measured
        /// by the builder (nil when not measured).
        public var recallAt10: Double?
        public var shards: [File]
    }

    public struct File: Codable, Sendable, Equatable {
        public var shard: Int
        /// File name inside the version directory (no path separators).
        public var file: String
        /// Rows (keys) in this shard's file.
        public var rows: UInt64
        /// Exact file size.
        public var bytes: UInt64
        /// `xxh64:` + 16 hex digits: the file's header checksum, which covers the header, the section
        /// table and every block checksum, hence the whole file.
        public var checksum: String
    }

    /// The table named `name`.
    public func table(named name: String) -> Table? { tables.first { $0.name == name } }

    func encoded() throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array(try e.encode(self)) + [0x0A]
    }

    static func decode(_ bytes: [UInt8], path: String) throws -> TableSetManifest {
        do {
            return try JSONDecoder().decode(TableSetManifest.self, from: Data(bytes))
        } catch {
            throw TableError.corrupt(path, "manifest does not parse: \(error)")
        }
    }

    /// Structural checks of a manifest read from disk.
    func validate(path: String, directoryVersion: UInt64) throws {
        guard formatVersion == Int(TableFormat.formatVersion) else {
            throw TableError.corrupt(path, "unsupported table-set format version \(formatVersion)")
        }
        guard version == directoryVersion else {
            throw TableError.corrupt(path, "manifest says version \(version) inside v\(directoryVersion)")
        }
        guard shardCount >= 1 && shardCount <= 65_536 else { throw TableError.corrupt(path, "bad shard count \(shardCount)") }
        guard hash.function == StableHash.functionName, hash.seedValue != nil else {
            throw TableError.corrupt(path, "unsupported hash \(hash.function) seed \(hash.seed) (this build: \(StableHash.functionName))")
        }
        guard genres.count <= 64 else { throw TableError.corrupt(path, "more than 64 genres") }
        var names = Set<String>()
        for t in tables {
            guard TableSetManifest.isValidTableName(t.name) else { throw TableError.corrupt(path, "bad table name \(t.name)") }
            guard names.insert(t.name).inserted else { throw TableError.corrupt(path, "table \(t.name) listed twice") }
            guard t.shards.count == shardCount else {
                throw TableError.corrupt(path, "table \(t.name) has \(t.shards.count) files for \(shardCount) shards")
            }
            for (i, f) in t.shards.enumerated() {
                guard f.shard == i else { throw TableError.corrupt(path, "table \(t.name): file \(i) is for shard \(f.shard)") }
                guard TableSetManifest.isValidFileName(f.file) else { throw TableError.corrupt(path, "bad file name \(f.file)") }
            }
            var sum: UInt64 = 0, overflow = false
            for f in t.shards {
                let (v, o) = sum.addingReportingOverflow(f.rows)
                sum = v
                overflow = overflow || o
            }
            guard !overflow, sum == t.rows else {
                throw TableError.corrupt(path, "table \(t.name): rows per shard do not add up to \(t.rows)")
            }
            switch t.kind {
            case .embedding:
                guard t.dtype != nil, t.dim >= 1 else { throw TableError.corrupt(path, "embedding table \(t.name) needs dtype and dim") }
            case .profile:
                guard t.dim == TableFormat.profileGenreSlots else { throw TableError.corrupt(path, "profile table \(t.name) has dim \(t.dim)") }
            case .list, .attribute:
                break
            case .annIndex:
                throw TableError.corrupt(path, "table \(t.name) has kind ann-index, which only an embedding table's index may have")
            }
            if let ix = t.index {
                guard t.kind == .embedding else { throw TableError.corrupt(path, "table \(t.name) is not an embedding table but has an index") }
                guard ix.kind == "ivfpq4" else { throw TableError.corrupt(path, "table \(t.name): unknown index kind \(ix.kind)") }
                guard ix.defaultMode == "ann" || ix.defaultMode == "exact" else {
                    throw TableError.corrupt(path, "table \(t.name): index default mode \(ix.defaultMode) is not ann or exact")
                }
                guard ix.nprobe >= 1, ix.rerank >= 1, ix.lists >= 1 else { throw TableError.corrupt(path, "table \(t.name): bad index parameters") }
                guard ix.shards.count == shardCount else {
                    throw TableError.corrupt(path, "table \(t.name)'s index has \(ix.shards.count) files for \(shardCount) shards")
                }
                for (i, f) in ix.shards.enumerated() {
                    guard f.shard == i, TableSetManifest.isValidFileName(f.file), f.rows == t.shards[i].rows else {
                        throw TableError.corrupt(path, "table \(t.name)'s index file \(i) is not for shard \(i)'s rows")
                    }
                }
            }
        }
    }

    /// Table names: 1–64 of `[A-Za-z0-9_-]`.
    public static func isValidTableName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D
        }
    }

    static func isValidFileName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 200 && !name.hasPrefix(".") && name.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D || b == 0x2E
        }
    }

    /// The file name of (table, shard): `<table>.<shard>-of-<S>.srt`.
    static func fileName(table: String, shard: Int, shardCount: Int) -> String {
        "\(table).\(shard)-of-\(shardCount).srt"
    }

    /// The file name of a table's ANN index for a shard: `<table>.<shard>-of-<S>.ann.srt`.
    static func indexFileName(table: String, shard: Int, shardCount: Int) -> String {
        "\(table).\(shard)-of-\(shardCount).ann.srt"
    }
}
