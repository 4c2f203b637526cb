public import ShardRankRouting
/// One table of a loaded table set.
public enum LoadedTable: Sendable {
    case embedding(EmbeddingTable)
    case list(ListTable)
    case profile(ProfileTable)
    case attribute(AttributeTable)

    public var kind: TableKind {
        switch self {
        case .embedding: .embedding
        case .list: .list
        case .profile: .profile
        case .attribute: .attribute
        }
    }

    /// The numeric ids of the rows held by this shard, in row order; nil for a list table
    /// (string keys). Valid while the table set is alive.
    public var ids: UnsafeBufferPointer<UInt64>? {
        switch self {
        case .embedding(let t): t.ids
        case .list: nil
        case .profile(let t): t.ids
        case .attribute(let t): t.ids
        }
    }

    /// Rows (keys) held by this shard.
    public var rowCount: Int {
        switch self {
        case .embedding(let t): t.rowCount
        case .list(let t): t.keyCount
        case .profile(let t): t.rowCount
        case .attribute(let t): t.rowCount
        }
    }

    public var mappedBytes: Int {
        switch self {
        case .embedding(let t): t.mappedBytes
        case .list(let t): t.mappedBytes
        case .profile(let t): t.mappedBytes
        case .attribute(let t): t.mappedBytes
        }
    }

    func warm() {
        switch self {
        case .embedding(let t): t.warm()
        case .list(let t): t.warm()
        case .profile(let t): t.warm()
        case .attribute(let t): t.warm()
        }
    }

    func lockInMemory() -> String? {
        switch self {
        case .embedding(let t): t.lockInMemory()
        case .list(let t): t.lockInMemory()
        case .profile(let t): t.lockInMemory()
        case .attribute(let t): t.lockInMemory()
        }
    }
}

/// Shard I of S of one table-set version: every table's file for that shard, mapped and verified.
/// Immutable and `Sendable`; share it between serving threads and drop the last reference after a
/// switch has drained to unmap every file.
public final class LoadedTableSet: Sendable {
    public let root: String
    public let version: UInt64
    public let manifest: TableSetManifest
    public let shard: Int
    public let shardCount: Int
    /// The router of this table set (its shard count and seed).
    public let router: ShardRouter
    /// Tables by name.
    public let tables: [String: LoadedTable]
    /// ANN indexes by the name of the embedding table they index.
    public let indexes: [String: ANNIndexTable]
    /// The smallest and largest id of each table keyed by numeric ids that holds rows here.
    public let idRanges: [String: ClosedRange<UInt64>]

    init(root: String, version: UInt64, manifest: TableSetManifest, shard: Int, router: ShardRouter,
         tables: [String: LoadedTable], indexes: [String: ANNIndexTable] = [:]) {
        self.indexes = indexes
        self.root = root
        self.version = version
        self.manifest = manifest
        self.shard = shard
        self.shardCount = router.shardCount
        self.router = router
        self.tables = tables
        var ranges: [String: ClosedRange<UInt64>] = [:]
        for (name, t) in tables {
            guard let ids = t.ids, var lo = ids.first else { continue }
            var hi = lo
            for id in ids { lo = Swift.min(lo, id); hi = Swift.max(hi, id) }
            ranges[name] = lo ... hi
        }
        self.idRanges = ranges
    }

    public func embedding(_ name: String) -> EmbeddingTable? {
        if case .embedding(let t)? = tables[name] { return t } else { return nil }
    }

    public func list(_ name: String) -> ListTable? {
        if case .list(let t)? = tables[name] { return t } else { return nil }
    }

    public func profile(_ name: String) -> ProfileTable? {
        if case .profile(let t)? = tables[name] { return t } else { return nil }
    }

    public func attribute(_ name: String) -> AttributeTable? {
        if case .attribute(let t)? = tables[name] { return t } else { return nil }
    }

    /// The ANN index of embedding table `name`, if the table set has one.
    public func index(_ name: String) -> ANNIndexTable? { indexes[name] }

    /// Bytes mapped by all files of this shard.
    public var mappedBytes: Int { tables.values.reduce(0) { $0 + $1.mappedBytes } + indexes.values.reduce(0) { $0 + $1.mappedBytes } }

    /// Asks the kernel to page every file in (call before switching to this version).
    public func warm() {
        for t in tables.values { t.warm() }
        for i in indexes.values { i.warm() }
    }

    /// Locks every table's mapping in memory (`mlock`), so that serving never waits on a page
    /// fault: the kernel may otherwise drop clean file pages of a quiet table (memory pressure,
    /// or a VM's cold-page reclaim) and the next Lookup reads them back from disk on the event
    /// loop. Locked pages are released with the mapping.
    /// - Returns: one line per table that could not be locked (it still serves, unlocked).
    public func lockInMemory() -> [String] {
        tables.keys.sorted().compactMap { name in tables[name]!.lockInMemory().map { "table '\(name)': \($0)" } }
            + indexes.keys.sorted().compactMap { name in indexes[name]!.lockInMemory().map { "index of '\(name)': \($0)" } }
    }
}

/// The versions under a table-set root: `<root>/v<N>/` directories with a complete manifest.
public struct TableSetCatalog: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    /// N of every `v<N>` directory (complete or not), ascending. A missing root has none.
    public func versionDirectories() throws -> [UInt64] {
        guard FileIO.isDirectory(root) else { return [] }
        return try FileIO.listDirectory(root).compactMap(Self.parseVersionName).filter {
            FileIO.isDirectory(directory(of: $0))
        }.sorted()
    }

    /// Versions whose `manifest.json` exists (written last: its presence means the version is
    /// complete), ascending. Whether the files verify is checked by `TableSetLoader`.
    public func completeVersions() throws -> [UInt64] {
        try versionDirectories().filter { FileIO.exists(manifestPath(of: $0)) }
    }

    /// The newest complete version, if any.
    public func newestVersion() throws -> UInt64? { try completeVersions().last }

    public func directory(of version: UInt64) -> String { root + "/v\(version)" }

    public func manifestPath(of version: UInt64) -> String { directory(of: version) + "/manifest.json" }

    /// Reads and checks the manifest of `version`.
    public func manifest(of version: UInt64) throws -> TableSetManifest {
        let path = manifestPath(of: version)
        let bytes = try FileIO.readFile(path)
        guard bytes.count <= 64 << 20 else { throw TableError.corrupt(path, "manifest larger than 64 MiB") }
        let m = try TableSetManifest.decode(bytes, path: path)
        try m.validate(path: path, directoryVersion: version)
        return m
    }

    static func parseVersionName(_ name: String) -> UInt64? {
        guard name.hasPrefix("v"), name.count >= 2, name.count <= 20 else { return nil }
        let digits = name.dropFirst()
        guard digits.allSatisfy({ $0 >= "0" && $0 <= "9" }), !(digits.hasPrefix("0") && digits.count > 1) else { return nil }
        return UInt64(digits)
    }
}

/// Loads shard I of S of a table-set version, verifying everything before returning it.
public enum TableSetLoader {
    /// Loads `version` (or the newest complete version) of `root` for shard `shard` of `shardCount`.
    ///
    /// Reads the manifest, then maps and verifies each table's file for this shard: checksums,
    /// structure, that the header agrees with the manifest (kind, dtype, dim, rows, shard, shard
    /// count, seed, size, checksum) and that every key routes to this shard. Runs on the calling
    /// thread (call it off the serving threads); safe to call concurrently.
    ///
    /// - Throws: `TableError` — `.notFound` when there is no complete version, `.mismatch` when the
    ///   version's shard count is not `shardCount`, `.corrupt` for a bad file or manifest.
    public static func load(root: String, version: UInt64? = nil, shard: Int, of shardCount: Int) throws -> LoadedTableSet {
        let catalog = TableSetCatalog(root: root)
        guard shardCount >= 1, shard >= 0, shard < shardCount else {
            throw TableError(.mismatch, "shard \(shard) of \(shardCount) is not a valid shard")
        }
        let v: UInt64
        if let version {
            v = version
        } else {
            guard let newest = try catalog.newestVersion() else {
                throw TableError(.notFound, "no complete table-set version (v<N>/manifest.json) under \(root)")
            }
            v = newest
        }
        let manifest = try catalog.manifest(of: v)
        let mpath = catalog.manifestPath(of: v)
        guard manifest.shardCount == shardCount else {
            throw TableError(.mismatch, "version \(v) has \(manifest.shardCount) shards, this server is shard \(shard) of \(shardCount)", path: mpath)
        }
        let router = ShardRouter(shardCount: shardCount, seed: manifest.hash.seedValue!)
        var tables: [String: LoadedTable] = [:]
        var indexes: [String: ANNIndexTable] = [:]
        for t in manifest.tables {
            let entry = t.shards[shard]
            let path = catalog.directory(of: v) + "/" + entry.file
            let file = try TableFile.open(path: path)
            try check(file, against: t, entry: entry, shard: shard, router: router)
            let table: LoadedTable
            switch t.kind {
            case .embedding: table = .embedding(try EmbeddingTable(name: t.name, file: file))
            case .list: table = .list(try ListTable(name: t.name, file: file))
            case .profile: table = .profile(try ProfileTable(name: t.name, file: file, genres: manifest.genres, countries: manifest.countries))
            case .attribute: table = .attribute(try AttributeTable(name: t.name, file: file, genres: manifest.genres))
            case .annIndex: throw TableError.corrupt(mpath, "table \(t.name) has kind ann-index")
            }
            try checkRouting(table, file: file, shard: shard, router: router)
            tables[t.name] = table
            if let spec = t.index, case .embedding(let et) = table {
                indexes[t.name] = try loadIndex(spec, of: et, tableFile: file, directory: catalog.directory(of: v), shard: shard, router: router)
            }
        }
        return LoadedTableSet(root: root, version: v, manifest: manifest, shard: shard, router: router, tables: tables, indexes: indexes)
    }

    private static func check(_ file: TableFile, against t: TableSetManifest.Table, entry: TableSetManifest.File,
                              shard: Int, router: ShardRouter) throws {
        let p = file.path
        func mismatch(_ what: String) -> TableError {
            TableError(.mismatch, "file does not match the manifest: \(what)", path: p)
        }
        guard UInt64(file.mapping.bytes.count) == entry.bytes else { throw mismatch("\(file.mapping.bytes.count) bytes, manifest says \(entry.bytes)") }
        guard "xxh64:" + hex(file.headerChecksum).dropFirst(2) == entry.checksum else {
            throw mismatch("checksum \(hex(file.headerChecksum)), manifest says \(entry.checksum)")
        }
        guard file.kind == t.kind else { throw mismatch("kind \(file.kind), manifest says \(t.kind)") }
        guard file.dtype == t.dtype else { throw mismatch("dtype \(file.dtype?.name ?? "none"), manifest says \(t.dtype?.name ?? "none")") }
        guard file.dim == t.dim else { throw mismatch("dim \(file.dim), manifest says \(t.dim)") }
        guard UInt64(file.rows) == entry.rows else { throw mismatch("\(file.rows) rows, manifest says \(entry.rows)") }
        guard file.shard == shard, file.shardCount == router.shardCount else {
            throw mismatch("file is shard \(file.shard) of \(file.shardCount), expected \(shard) of \(router.shardCount)")
        }
        guard file.seed == router.seed else { throw mismatch("hash seed \(hex(file.seed)), manifest says \(hex(router.seed))") }
    }

    /// Maps and verifies shard `shard`'s index file of an embedding table.
    private static func loadIndex(_ spec: TableSetManifest.ANNIndexSpec, of table: EmbeddingTable, tableFile: TableFile,
                                  directory: String, shard: Int, router: ShardRouter) throws -> ANNIndexTable {
        let entry = spec.shards[shard]
        let file = try TableFile.open(path: directory + "/" + entry.file)
        func mismatch(_ what: String) -> TableError {
            TableError(.mismatch, "index file does not match the manifest: \(what)", path: file.path)
        }
        guard UInt64(file.mapping.bytes.count) == entry.bytes else { throw mismatch("\(file.mapping.bytes.count) bytes, manifest says \(entry.bytes)") }
        guard "xxh64:" + hex(file.headerChecksum).dropFirst(2) == entry.checksum else {
            throw mismatch("checksum \(hex(file.headerChecksum)), manifest says \(entry.checksum)")
        }
        guard file.shard == shard, file.shardCount == router.shardCount, file.seed == router.seed else {
            throw mismatch("file is shard \(file.shard) of \(file.shardCount), expected \(shard) of \(router.shardCount)")
        }
        return try ANNIndexTable(file: file, table: table, tableFile: tableFile, spec: spec)
    }

    /// Every key of the file must belong to this shard.
    private static func checkRouting(_ table: LoadedTable, file: TableFile, shard: Int, router: ShardRouter) throws {
        func bad(_ key: String) -> TableError {
            TableError(.mismatch, "key \(key) belongs to shard \(router.shard(ofKey: key)), not \(shard)", path: file.path)
        }
        switch table {
        case .embedding(let t):
            for id in t.ids where router.shard(ofID: id) != shard {
                throw TableError(.mismatch, "id \(id) belongs to shard \(router.shard(ofID: id)), not \(shard)", path: file.path)
            }
        case .profile(let t):
            for id in t.ids where router.shard(ofID: id) != shard {
                throw TableError(.mismatch, "user \(id) belongs to shard \(router.shard(ofID: id)), not \(shard)", path: file.path)
            }
        case .attribute(let t):
            for id in t.ids where router.shard(ofID: id) != shard {
                throw TableError(.mismatch, "item \(id) belongs to shard \(router.shard(ofID: id)), not \(shard)", path: file.path)
            }
        case .list(let t):
            for k in 0..<t.keyCount {
                let key = t.key(at: k)
                if router.shard(ofKey: key) != shard { throw bad(key) }
            }
        }
    }
}
