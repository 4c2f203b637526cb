import ArgumentParser
import Coordinator
import Logging
import NIOPosix
import RPCCore
import RPCTransport
import ShardRankKernels
import ShardRankWire

/// `shardrank coordinator`: serves `shardrank.v1.Recommender` over the shards of a topology.
struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Serve Recommend/Rank/Similar over the shards named in a topology file.")

    @Option(help: "Topology file (JSON: tables, shards[replicas], coordinators; see docs/operations.md).")
    var topology: String

    @Option(help: "MLP weights (.safetensors) for model 'mlp'; its JSON config is --model-config or FILE with .json.")
    var model: String?

    @Option(help: "MLP config JSON (default: the --model path with its extension replaced by .json).")
    var modelConfig: String?

    @OptionGroup var server: ServerOptions

    func run() async throws {
        let logger = makeLogger("shardrank.coordinator", level: server.logLevel)
        let topo: Topology
        do { topo = try Topology.load(path: topology) } catch {
            logger.error("\(error)")
            throw ExitCode(2)
        }
        var mlp: MLPModel?
        if let model {
            let config = modelConfig ?? (model.hasSuffix(".safetensors") ? String(model.dropLast(".safetensors".count)) + ".json" : model + ".json")
            do { mlp = try MLPModel(weightsPath: model, configPath: config) } catch {
                logger.error("cannot load model \(model) (config \(config)): \(error)")
                throw ExitCode(2)
            }
            if mlp!.denseDimension > 0 || mlp!.attributeCount > 0 {
                logger.error("model \(model) needs dense or attribute features, which the coordinator does not provide yet")
                throw ExitCode(2)
            }
        }
        let cluster: ShardCluster
        do { cluster = try ShardCluster(topology: topo, group: MultiThreadedEventLoopGroup.singleton, logger: logger) } catch {
            logger.error("\(error)")
            throw ExitCode(2)
        }
        await cluster.checkAll()
        cluster.startHealthChecks()
        let pool = WorkerPool(threadCount: server.workers ?? WorkerPool.defaultThreadCount)
        let recommender = Recommender(cluster: cluster, model: mlp, pool: pool, logger: logger)
        let health = HealthService(services: ["shardrank.v1.Recommender"])
        let router = Router(services: [health, RecommenderService(recommender: recommender)])
        logger.info("coordinator over \(topo.shardCount) shards (\(topo.shards.map(\.count).reduce(0, +)) replicas), pinned version \(cluster.pinnedVersion)")
        try await serve(router: router, health: health, options: server, logger: logger, what: "coordinator")
        await cluster.stop()
    }
}
