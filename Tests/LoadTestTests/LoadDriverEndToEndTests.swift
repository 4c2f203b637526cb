import Foundation
import NIOPosix
import RPCCore
import RPCTransport
import ShardRankWire
import ShardServer
import Testing
@testable import LoadTest

/// An in-process synthetic shard on a loopback port (as RPCTransportTests' `Harness`).
struct SyntheticShard {
    let server: RPCServer
    let port: Int

    static func start(rows: Int = 10_000, dim: Int = 16) throws -> SyntheticShard {
        var config = ServerConfiguration()
        config.eventLoopThreads = 1
        config.workerThreads = 1
        let backend = SyntheticBackend(table: SyntheticTable(rows: rows, dim: dim))
        let server = RPCServer(configuration: config, router: Router(services: [
            HealthService(services: ["shardrank.v1.Shard"]), ShardService(backend: backend),
        ]))
        return SyntheticShard(server: server, port: try server.start())
    }

    var target: String { "127.0.0.1:\(port)" }

    func stop() async { _ = await server.shutdownGracefully() }
}

@Suite(.serialized) struct LoadDriverEndToEndTests {
    func config(_ shard: SyntheticShard, _ edit: (inout LoadTestConfiguration) -> Void) -> LoadTestConfiguration {
        var c = LoadTestConfiguration(target: shard.target)
        c.warmup = .milliseconds(100)
        c.duration = .milliseconds(300)
        c.timeout = .seconds(2)
        c.batch = 8
        edit(&c)
        return c
    }

    /// Closed loop: every request is accounted for and every Lookup returns its whole batch.
    @Test func closedLoopLookupAccountsForEveryRequest() async throws {
        let shard = try SyntheticShard.start()
        let lines = LinesBox()
        let start = ContinuousClock.now
        let r = try await LoadDriver.run(config(shard) { c in
            c.mode = .closed(concurrency: 4)
            c.threads = 2
            c.connections = 2
            c.zipf = 0
            c.keepLatencyLog = true
        }, progress: { lines.append($0) })
        let elapsed = ContinuousClock.now - start
        await shard.stop()
        let rep = r.report
        #expect(rep.ok > 10)
        #expect(rep.errorCount == 0, "errors \(rep.errors)")
        #expect(rep.sent == rep.completed && rep.completed == rep.ok)
        #expect(rep.vectors == rep.ok * 8)
        #expect(rep.latency.count == rep.completed)
        #expect(abs(rep.throughputRPS - Double(rep.completed) / 0.3) < 1e-6)
        #expect(rep.idSpace == 10_000)          // from Info
        #expect(r.latencyLog.count == rep.completed)
        #expect(r.latencyLog.allSatisfy { $0.intendedMicros >= 0 && $0.intendedMicros < 300_000 && $0.status == .ok })
        // Bounded in time and stops by itself: warm-up + duration + at most one 2 s timeout to drain,
        // with room for a loaded 2-core machine (a driver that never stopped would hang here).
        #expect(elapsed < .seconds(10), "run took \(elapsed)")
        #expect(elapsed >= .milliseconds(400))
        _ = lines
    }

    /// Open loop at a constant rate sends exactly rate × duration requests, measured from their
    /// intended times; the latency log recomputes the same percentiles.
    @Test func openLoopConstantRateSendsOnSchedule() async throws {
        let shard = try SyntheticShard.start()
        let r = try await LoadDriver.run(config(shard) { c in
            c.mode = .open(rate: 1000, arrivals: .constant)
            c.zipf = 1.1
            c.keepLatencyLog = true
        })
        await shard.stop()
        let rep = r.report
        #expect(abs(rep.sent - 300) <= 1, "sent \(rep.sent)")
        #expect(rep.completed == rep.sent && rep.errorCount == 0)
        #expect(rep.mode == "open" && rep.arrivals == "constant" && rep.rateRPS == 1000)
        // Intended times are 1 ms apart.
        let t = r.latencyLog.map(\.intendedMicros)
        for (a, b) in zip(t, t.dropFirst()) { #expect(abs((b - a) - 1000) <= 1, "\(a) → \(b)") }
        // Independent check: p99 from the raw latencies matches the HDR figure to 1 %.
        let sorted = r.latencyLog.map { Double($0.latencyNanos) / 1e6 }.sorted()
        let rank = Int((0.99 * Double(sorted.count)).rounded(.up)) - 1
        let p99 = sorted[max(0, rank)]
        #expect(abs(rep.latency.p99Ms - p99) <= p99 * 0.01, "hdr \(rep.latency.p99Ms) vs raw \(p99)")
        #expect(abs(rep.latency.maxMs - sorted.last!) <= sorted.last! * 0.01)
    }

    /// A driver that cannot keep up still accounts for every intended request: with one request
    /// in flight at most, most of 20,000 req/s cannot be sent; the overdue ones fail as
    /// DEADLINE_EXCEEDED (charged from their intended time) and the run still ends on time.
    @Test func openLoopFallingBehindCountsEveryIntendedRequest() async throws {
        let shard = try SyntheticShard.start()
        let start = ContinuousClock.now
        let r = try await LoadDriver.run(config(shard) { c in
            c.mode = .open(rate: 20_000, arrivals: .constant)
            c.warmup = .zero      // (behind already in a warm-up, every measured request would be overdue)
            c.maxInFlight = 1
            c.timeout = .milliseconds(50)
        })
        let elapsed = ContinuousClock.now - start
        await shard.stop()
        let rep = r.report
        #expect(abs(rep.sent - 6000) <= 1, "sent \(rep.sent)")
        #expect(rep.completed == rep.sent)
        #expect(rep.ok > 0 && rep.ok < rep.sent)
        #expect((rep.errors["DEADLINE_EXCEEDED"] ?? 0) > 0)
        #expect(rep.maxSendLagMs > 100)
        #expect(rep.latency.maxMs > 100)     // the overdue requests' wait is in the latency
        #expect(elapsed < .seconds(5), "run took \(elapsed)")
    }

    /// Poisson arrivals: the count is near rate × duration; a mix of Lookup and Search goes to
    /// the right methods.
    @Test func openLoopPoissonMix() async throws {
        let shard = try SyntheticShard.start()
        let r = try await LoadDriver.run(config(shard) { c in
            c.mode = .open(rate: 2000, arrivals: .poisson)
            c.mix = try! RequestMix.parse("lookup:0.7,search:0.3")
            c.k = 5
        })
        await shard.stop()
        let rep = r.report
        #expect(rep.sent > 450 && rep.sent < 750, "sent \(rep.sent)")
        #expect(rep.errorCount == 0, "errors \(rep.errors)")
        let lookups = rep.operations["lookup"]?.completed ?? 0, searches = rep.operations["search"]?.completed ?? 0
        #expect(lookups + searches == rep.completed)
        #expect(searches > rep.completed / 10 && lookups > searches)
        #expect(rep.vectors == lookups * 8)
    }

    /// Failed requests are counted by gRPC status, not thrown: a query of the wrong dimension is
    /// INVALID_ARGUMENT every time.
    @Test func errorsAreCountedByStatus() async throws {
        let shard = try SyntheticShard.start()
        let r = try await LoadDriver.run(config(shard) { c in
            c.mode = .closed(concurrency: 2)
            c.mix = try! RequestMix.parse("search")
            c.dim = 7
        })
        await shard.stop()
        #expect(r.report.ok == 0)
        #expect(r.report.errorCount > 0 && r.report.errorCount == r.report.completed)
        #expect(r.report.errors == ["INVALID_ARGUMENT": r.report.errorCount])
        let json = jsonText(r.report)
        let obj = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect((obj?["errors"] as? [String: Int])?["INVALID_ARGUMENT"] == r.report.errorCount)
        #expect((obj?["latency"] as? [String: Any])?["p99_ms"] != nil)
    }

    @Test func unknownTableAndUnreachableTargetAreClearErrors() async throws {
        let shard = try SyntheticShard.start()
        await #expect(throws: LoadTestError("--table 'users' is not served by \(shard.target) (it has: items)")) {
            _ = try await LoadDriver.run(config(shard) { $0.table = "users" })
        }
        let port = shard.port
        await shard.stop()
        do {
            _ = try await LoadDriver.run(config(shard) { $0.target = "127.0.0.1:\(port)" })
            Issue.record("ran against a stopped server")
        } catch {
            #expect(error.message.contains("cannot get Info"), "\(error.message)")
        }
    }

    /// The sweep stops at the first rate over the target: with an impossible target no rate passes.
    @Test func sweepFindsNoRateForAnImpossibleTargetAndSomeForAnEasyOne() async throws {
        let shard = try SyntheticShard.start()
        var c = config(shard) { $0.duration = .milliseconds(200); $0.warmup = .milliseconds(50) }
        c.mode = .open(rate: 1, arrivals: .constant)
        let easy = try await LoadDriver.sweep(c, start: 200, step: 200, max: 400, p99TargetMs: 1000)
        #expect(easy.steps.count == 2 && easy.bestRateRPS == 400)
        let impossible = try await LoadDriver.sweep(c, start: 200, step: 200, max: 1000, p99TargetMs: 0.000001)
        #expect(impossible.steps.count == 1 && impossible.bestRateRPS == nil)
        await shard.stop()
    }
}

final class LinesBox: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
}
