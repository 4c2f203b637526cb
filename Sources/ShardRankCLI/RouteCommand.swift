import ShardRankRouting
import ArgumentParser
import ShardRankTables
import ShardRankWire

/// `shardrank route`: which shard holds each id — the table set's own hash (`ShardRouter`: the
/// seeded SplitMix64 then jump consistent hashing), with the shard count and seed asked of a
/// running shard or coordinator (`Info`), or read from a table set's manifest.
struct RouteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route",
        abstract: "Say which shard holds each id (the table set's hash), asking a shard or coordinator, or reading a table set.",
        discussion: """
        One line per id, in the order given: "id 3 → shard 1 of 2". The shard count and hash seed come from \
        --target (a shard's Info, or a coordinator's Info for its cluster) or from --tables (the newest \
        version's manifest.json). Ids of every kind (items, users) route the same way.
          shardrank route --target 127.0.0.1:7000 --ids 1,2,3
          shardrank route --tables tables --ids 42 --json
        """)

    @Option(help: "Server address HOST:PORT: a shard, or a coordinator (for its cluster).")
    var target: String?

    @Option(help: "Table-set root: read the newest version's manifest instead of asking a server.")
    var tables: String?

    @Option(help: "Comma-separated ids.")
    var ids: String

    @Option(help: timeoutHelp)
    var timeoutMs: Int = clientTimeoutMs

    @OptionGroup var security: ClientSecurityOptions

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard (target == nil) != (tables == nil) else { throw ValidationError("give exactly one of --target HOST:PORT or --tables ROOT") }
        guard timeoutMs >= 1 else { throw ValidationError("--timeout-ms must be ≥ 1 (got \(timeoutMs))") }
        _ = try parsedIDs()
    }

    func parsedIDs() throws -> [UInt64] {
        let list = try ids.split(separator: ",").map { part -> UInt64 in
            guard let v = UInt64(part.trimmingCharacters()) else { throw ValidationError("--ids: '\(part)' is not an unsigned integer") }
            return v
        }
        guard !list.isEmpty else { throw ValidationError("--ids is empty") }
        return list
    }

    func run() async throws {
        let idList = try parsedIDs()
        let router: ShardRouter, version: UInt64, source: String
        if let tables {
            let catalog = TableSetCatalog(root: tables)
            do {
                guard let newest = try catalog.newestVersion() else {
                    throw TableError(.notFound, "no complete table-set version under \(tables) (expected \(tables)/v<N>/manifest.json)")
                }
                let m = try catalog.manifest(of: newest)
                guard m.hash.function == StableHash.functionName, let seed = m.hash.seedValue else {
                    throw TableError(.mismatch, "hash \(m.hash.function) seed \(m.hash.seed) is not this build's (\(StableHash.functionName))")
                }
                router = ShardRouter(shardCount: m.shardCount, seed: seed)
                version = newest
                source = catalog.manifestPath(of: newest)
            } catch {
                FileHandleStderr.write("shardrank route: \(error)\n")
                throw ExitCode(2)
            }
        } else {
            let options = try clientOptions(target: target!, timeoutMs: timeoutMs, security: security)
            let (info, coordinator) = try await fetchInfo(options)
            let count = Int(info.shardCount)
            guard count >= 1 else {
                FileHandleStderr.write("shardrank route: \(target!) reports no shard count\n")
                throw ExitCode(1)
            }
            // A synthetic shard ("none") is the whole table: one shard. 0: a shard predating the seed field.
            if count > 1 && info.hash != StableHash.functionName {
                FileHandleStderr.write("shardrank route: \(target!) shards with hash '\(info.hash)', not \(StableHash.functionName): cannot route\n")
                throw ExitCode(1)
            }
            router = ShardRouter(shardCount: count, seed: info.hashSeed == 0 ? StableHash.defaultSeed : info.hashSeed)
            version = info.version
            source = coordinator ? "coordinator \(target!)" : "shard \(info.shard) at \(target!)"
        }
        let shards = idList.map { router.shard(ofID: $0) }
        if json {
            let rows = zip(idList, shards).map { "{\"id\":\($0),\"shard\":\($1)}" }.joined(separator: ",")
            print("{\"source\":\"\(source)\",\"version\":\(version),\"shard_count\":\(router.shardCount),"
                  + "\"hash\":\"\(StableHash.functionName)\",\"hash_seed\":\"0x\(String(router.seed, radix: 16))\",\"ids\":[\(rows)]}")
        } else {
            for (id, s) in zip(idList, shards) { print("id \(id) → shard \(s) of \(router.shardCount)") }
        }
    }
}
