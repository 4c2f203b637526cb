import ShardRankRouting
public import RPCCore
public import ShardRankWire

extension Recommender {
    /// `Recommender.Info`: what the cluster behind this coordinator serves, asked of every shard
    /// now (concurrently, within the request's deadline) and merged by `ClusterInfo.merge`.
    /// - Throws: UNAVAILABLE naming the first shard (by number) that did not answer.
    public func info(context ctx: ServerContext) async throws(RPCError) -> InfoResponse {
        let deadline = ctx.deadline ?? ContinuousClock.now.advanced(by: .microseconds(Int(settings.defaultDeadlineMs * 1000)))
        let fetcher = self.fetcher, requestID = ctx.requestID
        let answers = await withTaskGroup(of: (Int, Result<InfoResponse, RPCError>).self) { group in
            for s in 0 ..< shardCount {
                group.addTask {
                    do throws(RPCError) {
                        return (s, .success(try await fetcher.info(shard: s, deadline: deadline, requestID: requestID)))
                    } catch {
                        return (s, .failure(error))
                    }
                }
            }
            var out = [Result<InfoResponse, RPCError>?](repeating: nil, count: shardCount)
            for await (s, r) in group { out[s] = r }
            return out
        }
        var infos: [InfoResponse] = []
        for (s, r) in answers.enumerated() {
            switch r {
            case .success(let i)?: infos.append(i)
            case .failure(let e)?:
                if e.code == .unimplemented { throw e }
                throw RPCError(.unavailable, "shard \(s) of \(shardCount) did not answer Info: \(e)")
            case nil: throw RPCError(.internal, "shard \(s): no Info answer")
            }
        }
        let pinned = fetcher.pinned
        return ClusterInfo.merge(infos, shardCount: shardCount, version: pinned.version, hashSeed: pinned.hashSeed,
                                 usersTable: settings.usersTable, itemsTable: settings.itemsTable)
    }
}

/// The cluster's view assembled from every shard's `Info`.
public enum ClusterInfo {
    /// Each table once (by name, sorted), its rows summed over the shards, its id range the
    /// smallest `min_id` and largest `max_id` over the shards that hold rows of it; kind, dim and
    /// dtype of the first shard that has it. `version` and `hashSeed`: the pinned table set's
    /// (0: the lowest a shard reported, and the first seed reported). `source` says it is a
    /// coordinator's view.
    public static func merge(_ infos: [InfoResponse], shardCount: Int, version: UInt64, hashSeed: UInt64,
                             usersTable: String, itemsTable: String) -> InfoResponse {
        var tables: [String: TableInfo] = [:]
        for info in infos {
            for t in info.tables {
                guard var m = tables[t.name] else { tables[t.name] = t; continue }
                if t.rows > 0 && t.kind != .list {
                    if m.rows == 0 { m.minID = t.minID; m.maxID = t.maxID } else { m.minID = min(m.minID, t.minID); m.maxID = max(m.maxID, t.maxID) }
                }
                m.rows += t.rows
                tables[t.name] = m
            }
        }
        let v = version != 0 ? version : (infos.map(\.version).min() ?? 0)
        let seed = hashSeed != 0 ? hashSeed : (infos.first { $0.hashSeed != 0 }?.hashSeed ?? 0)
        return InfoResponse(version: v, shard: 0, shardCount: UInt32(shardCount), tables: tables.keys.sorted().map { tables[$0]! },
                            mappedBytes: infos.reduce(0) { $0 + $1.mappedBytes },
                            source: "coordinator over \(shardCount) shard\(shardCount == 1 ? "" : "s")",
                            hash: infos.first?.hash ?? StableHash.functionName, hashSeed: seed,
                            usersTable: usersTable, itemsTable: itemsTable)
    }
}
