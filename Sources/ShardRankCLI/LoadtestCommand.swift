import ArgumentParser
import Foundation
import LoadTest
import ShardRankWire

/// `shardrank loadtest`: the load driver (Sources/LoadTest). Open loop at a rate (constant or
/// Poisson, latency from the intended send time) or closed loop at a concurrency, against a shard
/// (Lookup/Search) or a coordinator (Recommend/Rank/Similar). See docs/loadtest.md.
struct LoadtestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadtest",
        abstract: "Drive load at a shard or a coordinator and report latency percentiles and throughput.",
        discussion: """
        Exactly one of --rate (open loop), --concurrency (closed loop) or --sweep (open-loop rates, \
        with --p99-target-ms). Runs --warmup seconds (not counted) then --duration seconds, and stops by itself.
        Examples:
          shardrank loadtest --target 127.0.0.1:7101 --mix lookup --batch 256 --concurrency 16 --duration 10
          shardrank loadtest --target 127.0.0.1:7101 --mix lookup:0.9,search:0.1 --rate 2000 --arrivals poisson --json
          shardrank loadtest --target 127.0.0.1:7001 --mix recommend:0.8,rank:0.1,similar:0.1 --rate 500
          shardrank loadtest --target 127.0.0.1:7101 --sweep 1000:1000:20000 --p99-target-ms 5
        """)

    @Option(help: "Server address HOST:PORT (a shard or a coordinator); several coordinators: HOST:PORT,HOST:PORT,... (each user's requests go to one of them, chosen by the coordinator ring: docs/operations.md).")
    var target: String

    @Option(help: "Open loop: requests per second in total.")
    var rate: Double?

    @Option(help: "Open-loop arrivals: constant or poisson.")
    var arrivals: String = "constant"

    @Option(help: "Closed loop: requests in flight in total.")
    var concurrency: Int?

    @Option(help: "Open-loop rates START:STEP:MAX; reports the highest meeting --p99-target-ms.")
    var sweep: String?

    @Option(name: .customLong("p99-target-ms"), help: "Sweep: p99 target in milliseconds.")
    var p99Target: Double?

    @Option(help: "Largest share of failed requests a run may have (a sweep: a passing rate); above it the run exits with status 3.")
    var maxErrorShare: Double = 0.01

    @Option(help: "Worker threads, each with its own event loop and connections.")
    var threads: Int = 1

    @Option(help: "Connections in total, spread over the threads.")
    var connections: Int = 2

    @Option(help: "Warm-up seconds (sent, not counted).")
    var warmup: Double = 1

    @Option(help: "Measured seconds.")
    var duration: Double = 10

    @Option(help: "Operations and weights: lookup, search, lookup:0.9,search:0.1 (shard) or recommend:0.8,rank:0.1,similar:0.1 (coordinator).")
    var mix: String = "lookup"

    @Option(help: "Shard: table name.")
    var table: String = "items"

    @Option(help: "Lookup: ids per call.")
    var batch: Int = 256

    @Option(help: "Lookup: wanted dtype f32, f16 or int8 (default: the table's).")
    var dtype: String?

    @Option(help: "Search: top-k (default 100); Recommend/Rank/Similar: items (default 10).")
    var k: Int?

    @Option(help: "Search: query vectors per call.")
    var queries: Int = 1

    @Option(help: "Search: query dimension (default: the table's, from Info).")
    var dim: Int?

    @Option(name: .customLong("search-mode"), help: "Search: exact, ann, or default (the table set's).")
    var searchMode: String = "default"

    @Option(help: "Zipf exponent of item and user ids (0 = uniform).")
    var zipf: Double = 0.99

    @Option(help: "Item ids are N ids from 0 (shard) or from 1 (coordinator), Zipf-ranked (default: the ids the target holds: a shard's own ids of --table, read with Info and Ids; a coordinator's items table's id range, from its Info).")
    var idSpace: Int?

    @Option(help: "Draw item ids from this file (one per line; the first is the hottest).")
    var idsFrom: String?

    @Option(name: .customLong("user-space"), help: "Coordinator: user ids are 1...N, Zipf-ranked (default: the id range of the coordinator's users table, from its Info).")
    var users: Int?

    @Option(help: "Rank: candidate ids per call.")
    var candidates: Int = 100

    @Option(help: "Recommend/Rank: ranking model NAME, dot, mlp or a learned ranker the coordinator serves (default: the coordinator's, dot).")
    var model: String?

    @Option(name: .customLong("user-vector"), help: "Recommend: which user vector to ask for: auto, stored or tower (tower needs a coordinator with --query-tower).")
    var userVector: String = "auto"

    @Option(name: .customLong("record-batch"), help: "Record: users per call (one view each); 1 calls RecordEvents, more call RecordEventsBatch (one --target).")
    var recordBatch: Int = 1

    @Option(help: timeoutHelp)
    var timeoutMs: Int = clientTimeoutMs

    @Option(help: "Open loop: most requests in flight; later sends wait (and are charged for it).")
    var maxInFlight: Int = 10_000

    @Option(help: "Seed of the id, query and arrival streams.")
    var seed: UInt64 = 1

    @Option(help: "Write one CSV line per measured request (op,intended_us,latency_us,status) to this file.")
    var latencyLog: String?

    @Flag(help: "Print one JSON object with everything (instead of the text summary).")
    var json = false

    @Flag(help: "No progress line on stderr.")
    var quiet = false

    @OptionGroup var security: ClientSecurityOptions

    func configuration() throws -> LoadTestConfiguration {
        var c = LoadTestConfiguration(target: target)
        c.tls = try security.clientSource()
        c.tlsServerName = security.serverName
        c.metadata = try security.metadata()
        let modes = [rate != nil, concurrency != nil, sweep != nil].filter { $0 }.count
        guard modes == 1 else { throw ValidationError("give exactly one of --rate (open loop), --concurrency (closed loop) or --sweep") }
        guard let arr = Arrivals(rawValue: arrivals) else { throw ValidationError("--arrivals must be constant or poisson (got '\(arrivals)')") }
        if let concurrency {
            guard arrivals == "constant" else { throw ValidationError("--arrivals applies to open loop (--rate or --sweep), not --concurrency") }
            c.mode = .closed(concurrency: concurrency)
        } else {
            c.mode = .open(rate: rate ?? 1, arrivals: arr)
        }
        if sweep == nil, p99Target != nil { throw ValidationError("--p99-target-ms goes with --sweep") }
        c.threads = threads
        c.connections = connections
        guard warmup.isFinite, warmup >= 0, warmup <= 3600 else { throw ValidationError("--warmup must be 0...3600 seconds") }
        guard duration.isFinite, duration > 0, duration <= 86400 else { throw ValidationError("--duration must be > 0 and at most 86400 seconds") }
        c.warmup = .nanoseconds(Int64(warmup * 1e9))
        c.duration = .nanoseconds(Int64(duration * 1e9))
        do { c.mix = try RequestMix.parse(mix) } catch { throw ValidationError(error.message) }
        c.table = table
        c.batch = batch
        if let d = dtype {
            guard let x = DType.allCases.first(where: { $0.description == d }), x != .unspecified else {
                throw ValidationError("--dtype must be f32, f16 or int8 (got '\(d)')")
            }
            c.dtype = x
        }
        c.k = k
        c.queries = queries
        switch searchMode {
        case "default": c.searchMode = .unspecified
        case "exact": c.searchMode = .exact
        case "ann": c.searchMode = .ann
        default: throw ValidationError("--search-mode must be exact, ann or default (got '\(searchMode)')")
        }
        c.dim = dim
        c.zipf = zipf
        if let idSpace, idSpace < 1 { throw ValidationError("--id-space must be ≥ 1 (got \(idSpace))") }
        c.idSpace = idSpace
        if let idsFrom {
            guard let data = FileManager.default.contents(atPath: idsFrom) else { throw ValidationError("--ids-from: cannot read '\(idsFrom)'") }
            do { c.ids = try LoadTestConfiguration.parseIDs(String(decoding: data, as: UTF8.self), file: idsFrom) } catch {
                throw ValidationError("--ids-from: \(error.message)")
            }
        }
        if let users, users < 1 { throw ValidationError("--user-space must be ≥ 1 (got \(users))") }
        if let users, c.mix.targetsShard { throw ValidationError("--user-space \(users) is for a coordinator (recommend, rank, record): a shard's mix has no users") }
        c.users = users
        c.candidates = candidates
        c.model = model ?? ""
        guard let uv = UserVectorMode.allCases.first(where: { $0.description == userVector }) else {
            throw ValidationError("--user-vector must be auto, stored or tower (got '\(userVector)')")
        }
        c.userVector = uv
        c.recordBatch = recordBatch
        guard timeoutMs >= 1 else { throw ValidationError("--timeout-ms must be ≥ 1") }
        c.timeout = .milliseconds(timeoutMs)
        c.maxInFlight = maxInFlight
        c.seed = seed
        c.keepLatencyLog = latencyLog != nil
        do { try c.validate() } catch { throw ValidationError(error.message) }
        return c
    }

    func run() async throws {
        let c = try configuration()
        guard maxErrorShare >= 0, maxErrorShare <= 1 else { throw ValidationError("--max-error-share must be 0...1") }
        let sink: (@Sendable (String) -> Void)? = quiet ? nil : { @Sendable line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        if let sweep {
            let parts = sweep.split(separator: ":").map { Double($0) }
            guard parts.count == 3, let s = parts[0], let st = parts[1], let m = parts[2] else {
                throw ValidationError("--sweep must be START:STEP:MAX in requests per second (got '\(sweep)')")
            }
            guard let target = p99Target else { throw ValidationError("--sweep needs --p99-target-ms MS") }
            let r: SweepReport
            do { r = try await LoadDriver.sweep(c, start: s, step: st, max: m, p99TargetMs: target, maxErrorShare: maxErrorShare, progress: sink) } catch {
                FileHandle.standardError.write(Data("shardrank loadtest: \(error.message)\n".utf8))
                throw ExitCode(1)
            }
            print(json ? jsonText(r) : r.text)
            return
        }
        let result: LoadResult
        do { result = try await LoadDriver.run(c, progress: sink) } catch {
            FileHandle.standardError.write(Data("shardrank loadtest: \(error.message)\n".utf8))
            throw ExitCode(1)
        }
        if let path = latencyLog {
            var out = "op,intended_us,latency_us,status\n"
            for r in result.latencyLog {
                out += "\(r.operation.rawValue),\(r.intendedMicros),\(Double(r.latencyNanos) / 1000),\(r.status)\n"
            }
            guard FileManager.default.createFile(atPath: path, contents: Data(out.utf8)) else {
                throw ValidationError("--latency-log: cannot write '\(path)'")
            }
        }
        print(json ? jsonText(result.report) : result.report.text)
        // A run whose requests mostly failed measured nothing: say so in the exit status.
        let rep = result.report
        let finished = max(rep.completed, rep.ok + rep.errorCount)
        if rep.sent > 0 && (finished == 0 || Double(rep.errorCount) / Double(finished) > maxErrorShare) {
            let share = finished == 0 ? 100 : 100 * Double(rep.errorCount) / Double(finished)
            FileHandle.standardError.write(Data(("shardrank loadtest: \(rep.errorCount) of \(finished) finished requests failed "
                + "(\(String(format: "%.1f", share)) %), above --max-error-share \(maxErrorShare)\n").utf8))
            throw ExitCode(3)
        }
    }
}
