import ArgumentParser
import NIOPosix
import RPCCore
import RPCTransport
import ShardRankClient
import ShardRankWire
#if canImport(Glibc)
import Glibc
#endif

/// The deadline of a client command's calls when `--timeout-ms` is not given: one default for
/// every client command (docs/cli.md).
let clientTimeoutMs = 5000

/// The help of `--timeout-ms`, the same in every client command.
let timeoutHelp: ArgumentHelp = "Deadline of each call in milliseconds."

/// Options every client command shares.
struct ClientOptions: ParsableArguments {
    @Option(help: "Server address HOST:PORT.")
    var target: String

    @Option(help: timeoutHelp)
    var timeoutMs: Int = clientTimeoutMs

    @OptionGroup var security: ClientSecurityOptions

    /// A client configuration with these options' TLS and token.
    func clientConfiguration() throws -> ClientConfiguration {
        var config = ClientConfiguration()
        try security.apply(to: &config)
        config.metadata = try security.metadata()
        return config
    }

    func validate() throws {
        guard timeoutMs >= 1 else { throw ValidationError("--timeout-ms must be ≥ 1 (got \(timeoutMs))") }
    }
}

/// Client options for `target` with a command's own timeout and security options.
func clientOptions(target: String, timeoutMs: Int, security: ClientSecurityOptions) throws -> ClientOptions {
    var o = try ClientOptions.parse(["--target", target, "--timeout-ms", String(timeoutMs)])
    o.security = security
    return o
}

/// Runs `body` with a channel to the target; an RPC error becomes a message on stderr and exit 1.
func withChannel<T>(_ options: ClientOptions, _ body: (RPCChannel) async throws(RPCError) -> T) async throws -> T {
    let group = MultiThreadedEventLoopGroup.singleton
    var config = try options.clientConfiguration()
    config.connections = 1
    config.connectTimeout = .milliseconds(max(1, min(options.timeoutMs, 2000)))
    let channel: RPCChannel
    do { channel = try RPCChannel(target: options.target, group: group, configuration: config) } catch {
        throw ValidationError(error.message)
    }
    do {
        let r = try await body(channel)
        await channel.close()
        return r
    } catch {
        await channel.close()
        FileHandleStderr.write("shardrank: \(error)\n")
        throw ExitCode(1)
    }
}

enum FileHandleStderr {
    static func write(_ s: String) {
        var b = Array(s.utf8)
        _ = b.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

/// Prints a line to stdout and flushes at once (scripts read the bound port from it).
func printFlushed(_ s: String) {
    var b = Array((s + "\n").utf8)
    _ = b.withUnsafeMutableBytes { Glibc.write(1, $0.baseAddress, $0.count) }
}

/// `shardrank lookup`: fetch rows of an embedding table from a shard and print them.
struct LookupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lookup", abstract: "Look up vectors on a shard and print them.")

    @OptionGroup var client: ClientOptions

    @Option(help: "Table name.")
    var table: String = "items"

    @Option(help: "Comma-separated ids.")
    var ids: String

    @Option(help: "Wanted dtype: f32, f16 or int8 (default: the table's).")
    var dtype: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        var idList: [UInt64] = []
        for part in ids.split(separator: ",") {
            guard let v = UInt64(part.trimmingCharacters()) else { throw ValidationError("--ids: '\(part)' is not an unsigned integer") }
            idList.append(v)
        }
        var want = DType.unspecified
        if let d = dtype {
            guard let x = DType.allCases.first(where: { $0.description == d }), x != .unspecified else {
                throw ValidationError("--dtype must be f32, f16 or int8")
            }
            want = x
        }
        let request = LookupRequest(table: table, ids: idList, dtype: want)
        let timeout = Duration.milliseconds(client.timeoutMs)
        let resp = try await withChannel(client) { (ch) throws(RPCError) in
            try await ShardClient(channel: ch).lookup(request, timeout: timeout)
        }
        let flat = resp.floatRows()
        let rows = resp.dim == 0 ? [] : stride(from: 0, to: flat.count, by: Int(resp.dim)).map { Array(flat[$0 ..< $0 + Int(resp.dim)]) }
        let missing = Set(resp.missingIDs)
        let found = idList.filter { !missing.contains($0) }
        if json {
            var out = "{\"version\":\(resp.version),\"dim\":\(resp.dim),\"dtype\":\"\(resp.dtype)\",\"rows\":["
            out += zip(found, rows).map { "{\"id\":\($0),\"vector\":[\($1.map { String($0) }.joined(separator: ","))]}" }.joined(separator: ",")
            out += "],\"missing\":[\(resp.missingIDs.map(String.init).joined(separator: ","))]}"
            print(out)
        } else {
            print("table \(table)  version \(resp.version)  dim \(resp.dim)  dtype \(resp.dtype)  shard \(resp.shard)/\(resp.shardCount)")
            for (id, row) in zip(found, rows) {
                let shown = row.prefix(8).map { String(format3($0)) }.joined(separator: " ")
                print(String(id).leftPadded(10) + "  " + shown + (row.count > 8 ? " … (\(row.count) values)" : ""))
            }
            if !resp.missingIDs.isEmpty { print("missing: " + resp.missingIDs.map(String.init).joined(separator: ",")) }
        }
    }
}

/// `shardrank health`: `grpc.health.v1.Health/Check`; exit 0 when SERVING, 2 otherwise.
struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "health", abstract: "Check a server's gRPC health (exit 0 when SERVING).")

    @OptionGroup var client: ClientOptions

    @Option(help: "Service name ('' = the whole server).")
    var service: String = ""

    @Option(help: "Wait up to this many seconds for SERVING, asking every 100 ms (a server still starting, or not ready yet); 0 = ask once.")
    var wait: Double = 0

    func validate() throws {
        guard wait.isFinite, wait >= 0, wait <= 3600 else { throw ValidationError("--wait must be 0...3600 seconds (got \(wait))") }
    }

    static func name(_ s: ServingStatus) -> String { s == .serving ? "SERVING" : s == .notServing ? "NOT_SERVING" : "\(s)" }

    func run() async throws {
        let timeout = Duration.milliseconds(client.timeoutMs)
        let service = self.service
        if wait == 0 {
            let status = try await withChannel(client) { (ch) throws(RPCError) in
                try await HealthClient(channel: ch).check(service: service, timeout: timeout)
            }
            print(Self.name(status))
            if status != .serving { throw ExitCode(2) }
            return
        }
        // Poll until SERVING or the wait is over; a refused connection counts as "not yet".
        let deadline = ContinuousClock.now + .milliseconds(Int(wait * 1000))
        var config = try client.clientConfiguration()
        config.connections = 1
        config.connectTimeout = .milliseconds(max(1, min(client.timeoutMs, 1000)))
        let channel: RPCChannel
        do { channel = try RPCChannel(target: client.target, group: MultiThreadedEventLoopGroup.singleton, configuration: config) } catch {
            throw ValidationError(error.message)
        }
        var last = "no answer yet"
        var everAnswered = false
        while true {
            do throws(RPCError) {
                let left = ContinuousClock.now.duration(to: deadline)
                let status = try await HealthClient(channel: channel).check(service: service, timeout: min(timeout, max(left, .milliseconds(50))))
                everAnswered = true
                if status == .serving {
                    await channel.close()
                    print("SERVING")
                    return
                }
                last = Self.name(status)
            } catch {
                last = error.description
            }
            if ContinuousClock.now >= deadline { break }
            try? await Task.sleep(for: .milliseconds(100))
        }
        await channel.close()
        print(everAnswered ? last : "UNREACHABLE")
        FileHandleStderr.write("shardrank health: \(client.target) not SERVING after \(wait) s (last: \(last))\n")
        throw ExitCode(everAnswered ? 2 : 1)
    }
}

/// `shardrank info`: what a shard serves, or (a coordinator) what the cluster behind it serves.
struct InfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show what a shard serves, or what the cluster behind a coordinator serves.")

    @OptionGroup var client: ClientOptions

    func run() async throws {
        let (info, coordinator) = try await fetchInfo(client)
        if coordinator {
            print("\(info.source)  version \(info.version)  hash \(info.hash) seed 0x\(String(info.hashSeed, radix: 16))  mapped \(info.mappedBytes) bytes"
                  + "  users table '\(info.usersTable)'  items table '\(info.itemsTable)'")
        } else {
            print("source \(info.source)  version \(info.version)  shard \(info.shard) of \(info.shardCount)  hash \(info.hash) seed 0x\(String(info.hashSeed, radix: 16))  mapped \(info.mappedBytes) bytes")
        }
        for t in info.tables {
            // (0...0 for many rows: a shard that does not report id ranges)
            let ids = t.kind != .list && t.rows > 0 && (t.maxID > 0 || t.rows == 1) ? "  ids \(t.minID)...\(t.maxID)" : ""
            print("  \(t.name.padding(12))  \(String(describing: t.kind).padding(10))  dim \(t.dim)  \(t.dtype)  rows \(t.rows)\(ids)")
        }
    }
}

/// What the server at `options.target` serves: a shard's `Shard.Info`, or (when the target is a
/// coordinator) `Recommender.Info` for the cluster behind it; `coordinator` says which answered.
func fetchInfo(_ options: ClientOptions) async throws -> (info: InfoResponse, coordinator: Bool) {
    let timeout = Duration.milliseconds(options.timeoutMs)
    return try await withChannel(options) { (ch) throws(RPCError) -> (InfoResponse, Bool) in
        do throws(RPCError) {
            return (try await ShardClient(channel: ch).info(timeout: timeout), false)
        } catch {
            // Not a shard: a coordinator answers Recommender.Info for its cluster.
            guard error.code == .unimplemented else { throw error }
            do throws(RPCError) {
                return (try await RecommenderClient(channel: ch).info(timeout: timeout), true)
            } catch let e where e.code == .unimplemented {
                // A coordinator older than Recommender.Info.
                if (try? await HealthClient(channel: ch).check(service: "shardrank.v1.Recommender", timeout: timeout)) != nil {
                    throw RPCError(.unimplemented, "\(ch.target) is a coordinator that does not answer Info (an older version): "
                                   + "ask it with `shardrank recommend` or `shardrank health`")
                }
                throw error
            }
        }
    }
}

func format3(_ x: Float) -> String {
    let v = (Double(x) * 1000).rounded() / 1000
    return String(v)
}

extension String {
    func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

extension Substring {
    func trimmingCharacters() -> Substring {
        var s = self
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return s
    }
}
