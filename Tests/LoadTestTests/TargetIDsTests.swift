import ShardRankRouting
import Foundation
import NIOPosix
import RPCCore
import RPCTransport
import ShardRankClient
import ShardRankKernels
import ShardRankTables
import ShardRankWire
import ShardServer
import Synchronization
import Testing
@testable import LoadTest

/// One shard of a table set of `shards` over items `1 ... items` (ids start at 1, as a synthetic
/// world's), served on a loopback port.
struct TableSetShard {
    let server: RPCServer
    let port: Int
    let root: String
    let backend: TableSetBackend

    static let dim = 4

    /// Builds the table set (once per call) and serves shard `shard` of it.
    static func start(items: Int = 3000, shards: Int = 3, shard: Int = 1) throws -> TableSetShard {
        let root = NSTemporaryDirectory() + "shardrank-loadtest-\(UInt64.random(in: 0 ... .max))"
        let b = try TableSetBuilder(root: root, shardCount: shards, genres: ["A"], countries: ["DE"])
        let ids = (1 ... UInt64(items)).map { $0 }
        let vectors = (0 ..< items * dim).map { Float($0 % 17) }
        try vectors.withUnsafeBufferPointer { try b.addEmbedding(name: "items", ids: ids, vectors: $0, dim: dim) }
        try b.addList(name: "popular", lists: [RankedListRecord(key: "all", ids: [1, 2], scores: [2, 1])])
        _ = try b.publish()
        let backend = try TableSetBackend(root: root, shard: shard, of: shards, pool: WorkerPool(threadCount: 1))
        var config = ServerConfiguration()
        config.eventLoopThreads = 1
        config.workerThreads = 1
        let server = RPCServer(configuration: config, router: Router(services: [
            HealthService(services: ["shardrank.v1.Shard"]), ShardService(backend: backend),
        ]))
        return TableSetShard(server: server, port: try server.start(), root: root, backend: backend)
    }

    var target: String { "127.0.0.1:\(port)" }

    func stop() async {
        _ = await server.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: root)
    }
}

/// A coordinator stand-in on a loopback port: gRPC health, `Recommender.Info` reporting a users
/// table `1...40` and an items table `1000...1399` (unless `info` is false: an older
/// coordinator), and Recommend / Rank / Similar / RecordEvents answering like a coordinator
/// whose users are `1...40` and items `1000...1399` (a Recommend for another user is a cold
/// start; Rank for another user or Similar of another item is NOT_FOUND). It records the ids it
/// was asked for.
final class FakeCoordinator: Sendable {
    let server: RPCServer
    let port: Int
    /// What it was asked for: users (with counts), items.
    let seen = Seen()

    final class Seen: Sendable {
        let users = Mutex<[UInt64: Int]>([:])
        let items = Mutex<Set<UInt64>>([])
    }

    static let knownUsers: ClosedRange<UInt64> = 1 ... 40
    static let knownItems: ClosedRange<UInt64> = 1000 ... 1399

    init(info: Bool = true) throws {
        var config = ServerConfiguration()
        config.eventLoopThreads = 1
        config.workerThreads = 1
        let seen = self.seen
        let name = "shardrank.v1.Recommender"
        var methods = [
            RPCMethod(service: name, method: "Recommend", placement: .inline, handler: .unary { bytes, _ throws(RPCError) in
                let r = try RecommendRequest.decode(bytes)
                seen.users.withLock { $0[r.userID, default: 0] += 1 }
                let known = Self.knownUsers.contains(r.userID)
                return RecommendResponse(items: [ScoredItem(itemID: 1000, score: 1)], version: 1, coldStart: !known).encoded()
            }),
            RPCMethod(service: name, method: "Rank", placement: .inline, handler: .unary { bytes, _ throws(RPCError) in
                let r = try RankRequest.decode(bytes)
                seen.users.withLock { $0[r.userID, default: 0] += 1 }
                seen.items.withLock { $0.formUnion(r.candidateIDs) }
                guard Self.knownUsers.contains(r.userID) else { throw RPCError(.notFound, "user \(r.userID) has no stored vector") }
                return ItemsResponse(items: [], version: 1).encodedAsRank()
            }),
            RPCMethod(service: name, method: "Similar", placement: .inline, handler: .unary { bytes, _ throws(RPCError) in
                let r = try SimilarRequest.decode(bytes)
                seen.items.withLock { _ = $0.insert(r.itemID) }
                guard Self.knownItems.contains(r.itemID) else { throw RPCError(.notFound, "item \(r.itemID) is not in table 'items'") }
                return ItemsResponse(items: [], version: 1).encodedAsSimilar()
            }),
            RPCMethod(service: name, method: "RecordEvents", placement: .inline, handler: .unary { bytes, _ throws(RPCError) in
                let r = try RecordEventsRequest.decode(bytes)
                seen.users.withLock { $0[r.userID, default: 0] += 1 }
                seen.items.withLock { $0.formUnion(r.events.map(\.itemID)) }
                return RecordEventsResponse(accepted: UInt32(r.events.count), sessionEvents: 1).encoded()
            }),
        ]
        if info {
            methods.append(RPCMethod(service: name, method: "Info", placement: .inline, handler: .unary { _, _ throws(RPCError) in
                InfoResponse(version: 1, shard: 0, shardCount: 2, tables: [
                    TableInfo(name: "items", kind: .embedding, dim: 4, dtype: .f32, rows: 400, minID: 1000, maxID: 1399),
                    TableInfo(name: "popular", kind: .list, dim: 0, dtype: .unspecified, rows: 1),
                    TableInfo(name: "users", kind: .embedding, dim: 4, dtype: .f32, rows: 40, minID: 1, maxID: 40),
                ], mappedBytes: 0, source: "coordinator over 2 shards", hash: StableHash.functionName, hashSeed: StableHash.defaultSeed,
                             usersTable: "users", itemsTable: "items").encoded()
            }))
        }
        server = RPCServer(configuration: config, router: Router(services: [
            HealthService(services: [name]), FakeService(serviceName: name, methods: methods),
        ]))
        port = try server.start()
    }

    var target: String { "127.0.0.1:\(port)" }

    func stop() async { _ = await server.shutdownGracefully() }
}

struct FakeService: RPCService {
    let serviceName: String
    let methods: [RPCMethod]
}

@Suite(.serialized) struct TargetIDsTests {
    func config(_ target: String, _ edit: (inout LoadTestConfiguration) -> Void) -> LoadTestConfiguration {
        var c = LoadTestConfiguration(target: target)
        c.warmup = .milliseconds(50)
        c.duration = .milliseconds(300)
        c.timeout = .seconds(2)
        c.mode = .closed(concurrency: 2)
        c.batch = 16
        edit(&c)
        return c
    }

    /// Against shard 1 of 3 the Lookups ask only for ids that shard holds (read with `Ids`):
    /// none is refused as another shard's, none is missing, and no id outside the table (id 0)
    /// is drawn. (Drawing from `0..<rows` asked for other shards' ids: INVALID_ARGUMENT.)
    @Test func lookupsAgainstOneShardOfSeveralAskOnlyForItsOwnIDs() async throws {
        let shard = try TableSetShard.start()
        let own = (1 ... 3000 as ClosedRange<UInt64>).filter { ShardRouter(shardCount: 3).shard(ofID: $0) == 1 }
        let c = config(shard.target) { $0.zipf = 0.5 }
        let shape = try await LoadDriver.resolveShape(c)
        let drawn = Set(shape.items.ids ?? [])
        #expect(drawn == Set(own), "\(drawn.subtracting(own).count) ids not the shard's, \(Set(own).subtracting(drawn).count) of its ids left out")
        #expect(shape.items.count == own.count)
        #expect(shape.items.source.contains("shard 1 of 3"), "\(shape.items.source)")
        let r = try await LoadDriver.run(c)
        await shard.stop()
        let rep = r.report
        #expect(rep.ok > 10)
        #expect(rep.errorCount == 0, "errors \(rep.errors)")
        #expect(rep.vectors == rep.ok * 16, "every id asked for is found")
        #expect(rep.idSpace == own.count)
        #expect(rep.idSource?.contains("table 'items' on shard 1 of 3") == true, "\(rep.idSource ?? "nil")")
        #expect(rep.text.contains("item ids: the \(own.count) ids of table 'items' on shard 1 of 3"), "\(rep.text)")
        #expect(rep.users == nil && rep.userSource == nil)
    }

    /// `--id-space` and `--ids-from` still override what the shard holds.
    @Test func explicitIDsOverrideTheShardsIDs() async throws {
        let shard = try TableSetShard.start(shards: 1, shard: 0)
        // One slice of dense ids 1...3000: the range itself, no paging.
        let dense = try await LoadDriver.resolveShape(config(shard.target) { _ in })
        #expect(dense.items.ids == nil && dense.items.first == 1 && dense.items.count == 3000)
        #expect(dense.items.source == "1...3000: all 3000 ids of table 'items' on shard 0 of 1 (\(shard.target))")
        let space = try await LoadDriver.resolveShape(config(shard.target) { $0.idSpace = 10 })
        #expect(space.items.ids == nil && space.items.first == 0 && space.items.count == 10)
        #expect(space.items.source == "0...9 (--id-space 10)")
        let file = try await LoadDriver.resolveShape(config(shard.target) { $0.ids = [7, 5, 3] })
        #expect(file.items.ids == [7, 5, 3] && file.items.source.contains("--ids-from"))
        await shard.stop()
    }

    /// `Ids` pages a table's ids in row order from one version; past the end is empty; a list
    /// table, an unknown table and a page over the limit are clear errors.
    @Test func idsPagesATablesIDs() async throws {
        let shard = try TableSetShard.start()
        let channel = try RPCChannel(target: shard.target, group: MultiThreadedEventLoopGroup.singleton)
        let client = ShardClient(channel: channel)
        let all = try await client.allIDs(table: "items", pageSize: 100)
        let inFile = Array(try shard.backend.ids(IdsRequest(table: "items", limit: IdsRequest.maxLimit), context: Self.context()).ids)
        #expect(all.ids == inFile && all.version == 1)
        #expect(Set(all.ids) == Set((1 ... 3000 as ClosedRange<UInt64>).filter { ShardRouter(shardCount: 3).shard(ofID: $0) == 1 }))
        let page = try await client.ids(IdsRequest(table: "items", offset: 5, limit: 3))
        #expect(page.ids == Array(all.ids[5 ..< 8]) && page.rows == UInt64(all.ids.count) && page.shard == 1 && page.shardCount == 3)
        #expect(try await client.ids(IdsRequest(table: "items", offset: 1_000_000)).ids.isEmpty)
        do {
            _ = try await client.ids(IdsRequest(table: "items", limit: 262_145))
            Issue.record("a page over the limit was answered")
        } catch {
            #expect(error.code == .invalidArgument && error.message == "Ids limit 262145 exceeds the limit of 262144 ids per call", "\(error)")
        }
        do {
            _ = try await client.ids(IdsRequest(table: "popular"))
            Issue.record("a list table listed its ids")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("list table"), "\(error)")
        }
        do {
            _ = try await client.ids(IdsRequest(table: "nope"))
            Issue.record("an unknown table listed its ids")
        } catch {
            #expect(error.code == .notFound, "\(error)")
        }
        // Info reports the id range of the slice.
        let info = try await client.info()
        let items = info.tables.first { $0.name == "items" }
        #expect(items?.minID == all.ids.min() && items?.maxID == all.ids.max())
        #expect(info.tables.first { $0.name == "popular" }.map { $0.minID == 0 && $0.maxID == 0 } == true)
        await channel.close()
        await shard.stop()
        // The synthetic shard: 0..<rows.
        let synthetic = try SyntheticShard.start(rows: 50, dim: 4)
        let ch2 = try RPCChannel(target: synthetic.target, group: MultiThreadedEventLoopGroup.singleton)
        #expect(try await ShardClient(channel: ch2).allIDs(table: "items", pageSize: 7).ids == Array(0 ..< 50))
        await ch2.close()
        await synthetic.stop()
    }

    static func context() -> ServerContext {
        ServerContext(path: "/shardrank.v1.Shard/Ids", deadline: ContinuousClock.now.advanced(by: .seconds(5)))
    }

    /// Against a coordinator, the users are the users table's id range from its `Info` (no cold
    /// start), and Rank/Similar/Record items the items table's; `--user-space N` beyond the users
    /// table gives cold starts, which the report counts and shows.
    @Test func coordinatorUsersAndItemsComeFromItsInfoAndColdStartsAreCounted() async throws {
        let coord = try FakeCoordinator()
        let r = try await LoadDriver.run(config(coord.target) { c in
            c.mix = try! RequestMix.parse("recommend:0.7,rank:0.1,similar:0.1,record:0.1")
        })
        let rep = r.report
        #expect(rep.ok > 10)
        #expect(rep.errorCount == 0, "errors \(rep.errors)")
        #expect(rep.coldStarts == 0 && rep.coldStartShare == 0)
        #expect(rep.users == 40 && rep.idSpace == 400)
        #expect(rep.userSource == "1...40 of table 'users' (40 rows over 2 shards; from the coordinator's Info)")
        #expect(rep.idSource == "1000...1399 of table 'items' (400 rows over 2 shards; from the coordinator's Info)")
        let seenUsers = coord.seen.users.withLock { $0 }
        let strangers = seenUsers.keys.filter { !FakeCoordinator.knownUsers.contains($0) }
        #expect(strangers.isEmpty, "users outside the users table: \(strangers.prefix(10))")
        #expect(seenUsers[1] == seenUsers.values.max(), "user 1 is the hottest: \(seenUsers)")
        let unknownItems = coord.seen.items.withLock { $0 }.filter { !FakeCoordinator.knownItems.contains($0) }
        #expect(unknownItems.isEmpty, "items outside the items table: \(unknownItems.prefix(10))")
        #expect(rep.text.contains("user ids: 1...40 of table 'users'") && rep.text.contains("cold starts 0 (0.000 % of ok Recommends)"),
                "\(rep.text)")

        // --user-space 100: users 41...100 are cold starts, counted and reported.
        let wide = try await LoadDriver.run(config(coord.target) { c in
            c.mix = try! RequestMix.parse("recommend")
            c.users = 100
            c.zipf = 0
        }).report
        #expect(wide.errorCount == 0 && wide.ok > 10)
        #expect(wide.coldStarts > 0 && wide.coldStarts < wide.ok, "cold starts \(wide.coldStarts) of \(wide.ok)")
        #expect(abs(wide.coldStartShare - Double(wide.coldStarts) / Double(wide.ok)) < 1e-12)
        #expect(wide.users == 100 && wide.userSource == "1...100 (--user-space 100)")
        #expect(wide.text.contains("cold starts \(wide.coldStarts) ("), "\(wide.text)")
        let obj = try JSONSerialization.jsonObject(with: Data(jsonText(wide).utf8)) as? [String: Any]
        #expect(obj?["cold_starts"] as? Int == wide.coldStarts && obj?["users"] as? Int == 100)
        #expect((obj?["user_source"] as? String)?.contains("--user-space 100") == true && obj?["cold_start_share"] != nil)
        await coord.stop()
    }

    /// A coordinator that does not answer Info: a one-line error naming the flags to give; with
    /// them the run needs no Info.
    @Test func aCoordinatorWithoutInfoNeedsTheFlags() async throws {
        let coord = try FakeCoordinator(info: false)
        do {
            _ = try await LoadDriver.run(config(coord.target) { $0.mix = try! RequestMix.parse("recommend") })
            Issue.record("ran without a user space")
        } catch {
            #expect(error.message == "coordinator \(coord.target) does not answer Info (an older coordinator): give --user-space N", "\(error.message)")
        }
        do {
            _ = try await LoadDriver.run(config(coord.target) { $0.mix = try! RequestMix.parse("similar") })
            Issue.record("ran without an item space")
        } catch {
            #expect(error.message.contains("--id-space N or --ids-from FILE"), "\(error.message)")
        }
        let r = try await LoadDriver.run(config(coord.target) { c in
            c.mix = try! RequestMix.parse("recommend,similar")
            c.users = 40
            c.idSpace = 5
        }).report
        #expect(r.userSource == "1...40 (--user-space 40)" && r.idSource == "1...5 (--id-space 5)")
        #expect(r.ok > 0)
        await coord.stop()
    }
}
