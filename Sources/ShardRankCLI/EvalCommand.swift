import ArgumentParser
import Foundation
import NIOPosix
import RPCCore
import RPCTransport
import ShardRankClient
import ShardRankEval
import ShardRankWire

/// `shardrank eval`: how many candidates should retrieval fetch? Replays held-out users against a
/// live coordinator per retrieval budget, beside the exhaustive ceiling and a popularity baseline.
struct EvalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Offline evaluation: precision/recall/MAP/NDCG@K, coverage and latency against the retrieval budget.")

    @Option(help: "Coordinator address HOST:PORT; several: HOST:PORT,HOST:PORT,... (each user goes to the one the coordinator ring picks: docs/operations.md).")
    var target: String

    @Option(help: "Held-out interactions CSV (user_id,item_id,timestamp[,rating]).")
    var heldout: String

    @Option(help: "Comma-separated cut-offs K.")
    var k: String = "10,20,50"

    @Option(help: "Comma-separated total retrieval budgets.")
    var budgets: String = "50,100,200,500,1000,2000"

    @Option(help: "Comma-separated ranking models to compare at every budget: dot, mlp, or the name of a learned ranker the coordinator serves.")
    var models: String = "dot"

    @Option(help: "\"Now\" of every request in Unix seconds (item ages); default: the latest timestamp of the training interactions (--train; the moment the split was cut), else the coordinator's clock.")
    var now: Int64?

    @Option(name: .customLong("max-users"), help: "Evaluate at most this many held-out users (the lowest ids; 0 = all).")
    var users: Int = 1000

    @Option(help: "Requests in flight.")
    var concurrency: Int = 4

    @Option(help: timeoutHelp)
    var timeoutMs: Int = clientTimeoutMs

    @OptionGroup var security: ClientSecurityOptions

    func validate() throws {
        guard timeoutMs >= 1 else { throw ValidationError("--timeout-ms must be ≥ 1 (got \(timeoutMs))") }
        guard users >= 0 else { throw ValidationError("--max-users must be ≥ 0 (0 = all; got \(users))") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be ≥ 1 (got \(concurrency))") }
    }

    @Option(help: "Training interactions CSV: answers are checked never to hold one of the user's (seen_returned must be 0). Default: interactions.csv next to the held-out file when it exists; 'none' skips the check.")
    var train: String?

    @Option(name: .customLong("protocol"), help: "budgets: every model at every budget beside the exhaustive and popularity baselines; sequential: each user's held-out events replayed one at a time through RecordEvents (stored vector vs query tower, with and without events, and new users) at the first budget.")
    var evalProtocol: String = "budgets"

    @Option(help: "Catalog size for coverage (default: the rows of item_ids.npy next to the held-out file).")
    var catalogSize: Int?

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Option(help: "Also write the JSON report to this file.")
    var out: String?

    /// Comma-separated positive integers, each at most `max` (the wire carries them as uint32;
    /// the coordinator refuses more than its own limits anyway, naming them).
    func parseList(_ s: String, _ flag: String, max: Int = 1_000_000) throws -> [Int] {
        let v = try s.split(separator: ",").map { part -> Int in
            guard let x = Int(part.trimmingCharacters(in: .whitespaces)), x > 0 else { throw ValidationError("\(flag): '\(part)' is not a positive integer") }
            guard x <= max else { throw ValidationError("\(flag): \(x) is more than \(max)") }
            return x
        }
        guard !v.isEmpty else { throw ValidationError("\(flag) is empty") }
        return v
    }

    func run() async throws {
        let ks = try parseList(k, "--k").sorted()
        guard ["budgets", "sequential"].contains(evalProtocol) else { throw ValidationError("--protocol must be budgets or sequential (got '\(evalProtocol)')") }
        let modelList = models.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !modelList.isEmpty else { throw ValidationError("--models is empty") }
        let budgetList = try parseList(budgets, "--budgets")
        guard ks.last! <= 1000 else { throw ValidationError("--k values must be <= 1000") }
        let held: Interactions
        var heldOut: HeldOut
        do {
            held = try Interactions.read(path: heldout, requireTimestamp: evalProtocol == "sequential")
            heldOut = try HeldOut(path: heldout, held)
        } catch {
            FileHandleStderr.write("shardrank eval: \(error)\n")
            throw ExitCode(2)
        }
        let dir = (heldout as NSString).deletingLastPathComponent
        let trainPath = train ?? ((dir.isEmpty ? "." : dir) + "/interactions.csv")
        var trained: Interactions?
        if trainPath != "none" && (train != nil || FileManager.default.fileExists(atPath: trainPath)) {
            do { trained = try Interactions.read(path: trainPath, requireTimestamp: evalProtocol == "sequential") } catch {
                FileHandleStderr.write("shardrank eval: \(error)\n")
                throw ExitCode(2)
            }
            heldOut.seen = trained!.itemSets
        }
        if evalProtocol == "sequential" && trained == nil {
            throw ValidationError("--protocol sequential needs the training interactions (--train FILE, or interactions.csv next to the held-out file)")
        }
        let catalog = catalogSize ?? Self.npyRows((dir.isEmpty ? "." : dir) + "/item_ids.npy")
        let nowSeconds = now ?? trained?.latest ?? 0
        var ids = heldOut.relevant.keys.sorted()
        if users > 0 { ids = Array(ids.prefix(users)) }
        let group = MultiThreadedEventLoopGroup.singleton
        let targets = target.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !targets.isEmpty else { throw ValidationError("--target is empty") }
        var channels: [RPCChannel] = []
        for t in targets {
            var config = ClientConfiguration()
            try security.apply(to: &config)
            config.metadata = try security.metadata()
            do { channels.append(try RPCChannel(target: t, group: group, configuration: config)) } catch { throw ValidationError(error.message) }
        }
        // Check first (as loadtest does): every coordinator must answer its health check with
        // SERVING, so a dead or unready one fails in a second with a human message, not after
        // every configuration has run.
        for (t, channel) in zip(targets, channels) {
            var problem: String?
            do {
                let s = try await HealthClient(channel: channel).check(timeout: .milliseconds(timeoutMs))
                if s != .serving { problem = "it is not SERVING (\(s)): its shards are not all reachable yet, or no table-set version is pinned" }
            } catch {
                problem = error.message + ((error.code == .unavailable || error.code == .deadlineExceeded) && !error.message.contains("running")
                                           ? " (is the coordinator running? `shardrank health --target \(t)`)" : "")
            }
            if let problem {
                FileHandleStderr.write("shardrank eval: cannot evaluate against \(t): \(problem)\n")
                for c in channels { await c.close() }
                throw ExitCode(1)
            }
        }
        let ring = targets.count > 1 ? CoordinatorRing(targets) : nil
        var rows: [EvalRow] = []
        if evalProtocol == "sequential" {
            for m in modelList {
                let seq = SequentialEvaluation(channels: channels, ring: ring, ks: ks, budget: budgetList[0], model: m, now: nowSeconds,
                                               concurrency: concurrency, timeout: .milliseconds(timeoutMs))
                rows += await seq.run(heldOut: held, train: trained!, users: ids) { FileHandleStderr.write($0 + "\n") }
            }
        } else {
            let eval = Evaluation(channels: channels, ring: ring, ks: ks, budgets: budgetList,
                                  models: modelList, now: nowSeconds, concurrency: concurrency, timeout: .milliseconds(timeoutMs), catalogSize: catalog)
            rows = await eval.run(heldOut: heldOut, users: ids) { FileHandleStderr.write($0 + "\n") }
        }
        for c in channels { await c.close() }
        if rows.allSatisfy({ $0.users == 0 }) {
            FileHandleStderr.write("shardrank eval: every request failed (is the coordinator at \(target) up?)\n")
            throw ExitCode(1)
        }
        var report = EvalReport(coordinator: target, heldout: heldout, models: modelList, nowUnixS: nowSeconds, ks: ks, catalogSize: catalog, rows: rows)
        report.protocol = evalProtocol
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.keyEncodingStrategy = .convertToSnakeCase
        let data = try enc.encode(report)
        if let out { try data.write(to: URL(fileURLWithPath: out)) }
        if json {
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("held-out users evaluated: \(ids.count)  models: \(modelList.joined(separator: ","))  catalog: \(catalog.map(String.init) ?? "?")  now: \(nowSeconds)")
        for kk in ks {
            print("\n@K=\(kk)")
            let heads: [String] = ["recall", "prec", "MAP", "MAPcrs", "NDCG", "cover", "cands", "seen", "p50ms", "p99ms"]
            print("config".padding(28) + heads.map { $0.leftPadded(8) }.joined() + "  fail/degr")
            for r in rows {
                let m = r.metrics[String(kk)] ?? [:]
                func f(_ x: Double?) -> String { String(format: "%.4f", x ?? 0) }
                let name = r.budget > 0 ? "\(r.name) \(r.model) B=\(r.budget)" : r.name
                let cells: [String] = [f(m["recall"]), f(m["precision"]), f(m["map_common"]), f(m["map_course"]), f(m["ndcg"]),
                                       f(r.catalogCoverage), String(format: "%.0f", r.candidatesMean), String(r.seenReturned),
                                       String(format: "%.1f", r.latencyP50Ms), String(format: "%.1f", r.latencyP99Ms)]
                print(name.padding(28) + cells.map { $0.leftPadded(8) }.joined() + "  \(r.failed)/\(r.degraded)")
            }
        }
        print("\ncands = mean candidates ranked per request; seen = answer items the user already had in training (must be 0).")
        print("MAP = common AP@K (÷ min(K, #relevant)); MAPcrs = course AP@N = (1/N) Σ P(k)·rel(k).")
    }

    /// Rows of a 1-D `.npy` file from its header, or nil.
    static func npyRows(_ path: String) -> Int? {
        guard let h = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? h.close() }
        guard let head = try? h.read(upToCount: 256), head.count > 10 else { return nil }
        let text = String(decoding: head, as: UTF8.self)
        guard let r = text.range(of: "'shape': (") else { return nil }
        let rest = text[r.upperBound...]
        return Int(rest.prefix { $0.isNumber })
    }
}
