import Testing
import TestSupport
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import RPCCore
import RPCTransport
import ShardRankClient
import ShardRankWire
import ShardServer

/// A service whose handlers let tests observe cancellation and overload.
final class ProbeService: RPCService, Sendable {
    let serviceName = "test.Probe"
    let cancelledHandlers = Atomic<Int>(0)
    let startedHandlers = Atomic<Int>(0)
    let finishedHandlers = Atomic<Int>(0)
    /// A loop-affine channel back to this server (set by a test), for "Relay".
    let relay = Mutex<RPCChannel?>(nil)

    /// 1 when the calling thread is one of NIO's event loops, else 0.
    static func onLoop() -> UInt8 { MultiThreadedEventLoopGroup.currentEventLoop == nil ? 0 : 1 }

    var methods: [RPCMethod] {
        [
            // Async handlers honour placement: where does each run?
            RPCMethod(service: serviceName, method: "WhereInline", placement: .inline, handler: .asyncUnary { _, _ in
                FramedMessage(payload: [ProbeService.onLoop()])
            }),
            RPCMethod(service: serviceName, method: "WherePool", placement: .workerPool, handler: .asyncUnary { _, _ in
                FramedMessage(payload: [ProbeService.onLoop()])
            }),
            // Calls Echo through the loop-affine `relay` channel: [1, 1] when the handler started on
            // an event loop and the answer resumed it on that same loop (no thread hop).
            RPCMethod(service: serviceName, method: "Relay", placement: .inline, handler: .asyncUnary { [self] req, _ throws(RPCError) in
                let before = MultiThreadedEventLoopGroup.currentEventLoop.map { ObjectIdentifier($0) }
                guard let ch = relay.withLock({ $0 }) else { throw RPCError(.failedPrecondition, "no relay channel") }
                _ = try await ch.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: req), timeout: .seconds(2))
                let after = MultiThreadedEventLoopGroup.currentEventLoop.map { ObjectIdentifier($0) }
                return FramedMessage(payload: [before == nil ? 0 : 1, before != nil && before == after ? 1 : 0])
            }),
            // Spins (on the worker pool) until cancelled or 5 s pass; counts what happened.
            RPCMethod(service: serviceName, method: "Spin", placement: .workerPool, handler: .unary { [self] _, ctx throws(RPCError) in
                startedHandlers.wrappingAdd(1, ordering: .relaxed)
                let end = ContinuousClock.now.advanced(by: .seconds(5))
                while ContinuousClock.now < end {
                    if ctx.isCancelled {
                        cancelledHandlers.wrappingAdd(1, ordering: .relaxed)
                        throw ctx.cancellationError ?? .cancelled()
                    }
                    usleep(1000)
                }
                finishedHandlers.wrappingAdd(1, ordering: .relaxed)
                return FramedMessage(payload: [1])
            }),
            // Sleeps `n` ms (first request byte × 10) and echoes.
            RPCMethod(service: serviceName, method: "Sleep", placement: .workerPool, handler: .unary { req, _ in
                usleep(UInt32(req.first ?? 0) * 10_000)
                return FramedMessage(payload: req)
            }),
            RPCMethod(service: serviceName, method: "Echo", placement: .inline, handler: .unary { req, ctx in
                var out = req
                if let b = ctx.metadata.binary("x-echo-bin") { out += b }
                return FramedMessage(payload: out)
            }),
        ]
    }
}

struct Harness {
    let server: RPCServer
    let channel: RPCChannel
    let probe: ProbeService
    let health: HealthService
    let port: Int

    static func start(synthetic: (Int, Int) = (1000, 16), configure: (inout ServerConfiguration) -> Void = { _ in }) throws -> Harness {
        var config = ServerConfiguration()
        config.eventLoopThreads = 2
        config.workerThreads = 2
        configure(&config)
        let probe = ProbeService()
        let health = HealthService(services: ["shardrank.v1.Shard", "test.Probe"])
        let backend = SyntheticBackend(table: SyntheticTable(rows: synthetic.0, dim: synthetic.1))
        let server = RPCServer(configuration: config, router: Router(services: [health, ShardService(backend: backend), probe]))
        let port = try server.start()
        let channel = try RPCChannel(target: "127.0.0.1:\(port)", group: MultiThreadedEventLoopGroup.singleton)
        return Harness(server: server, channel: channel, probe: probe, health: health, port: port)
    }

    func stop() async {
        await channel.close()
        await server.shutdownGracefully()
    }
}

@Suite(.serialized) struct RPCEndToEndTests {
    /// `.inline` async handlers run on the connection's event loop, `.workerPool` ones off it; a
    /// call made from an inline handler through a loop-affine channel resumes it on that loop.
    @Test func asyncHandlersHonourPlacementAndLoopAffineCallsStayOnTheLoop() async throws {
        let h = try Harness.start()
        defer { Task { await h.stop() } }
        var cc = ClientConfiguration()
        cc.loopAffinity = true
        let back = try RPCChannel(target: "127.0.0.1:\(h.port)", group: h.server.group, configuration: cc)
        h.probe.relay.withLock { $0 = back }
        for _ in 0 ..< 20 {
            #expect(try await h.channel.unary(path: "/test.Probe/WhereInline", request: FramedMessage(payload: [])) == [1])
            #expect(try await h.channel.unary(path: "/test.Probe/WherePool", request: FramedMessage(payload: [])) == [0])
            #expect(try await h.channel.unary(path: "/test.Probe/Relay", request: FramedMessage(payload: [7]), timeout: .seconds(5)) == [1, 1])
        }
        await back.close()
    }

    @Test func lookupBytesMatchTheSyntheticDefinition() async throws {
        let h = try Harness.start()
        defer { Task { await h.stop() } }
        let client = ShardClient(channel: h.channel)
        let ids: [UInt64] = [0, 5, 999, 1000, 5]
        let r = try await client.lookup(LookupRequest(table: "items", ids: ids), timeout: .seconds(30))
        #expect(r.missingIDs == [1000])
        #expect(r.dim == 16)
        var expected: [Float] = []
        for id in ids where id < 1000 { for j in 0 ..< 16 { expected.append(SyntheticTable.value(row: id, column: j)) } }
        let got = r.vectors.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        #expect(got == expected)
    }

    @Test func manyConcurrentCallsOnFewConnections() async throws {
        let h = try Harness.start()
        defer { Task { await h.stop() } }
        let client = ShardClient(channel: h.channel)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0 ..< 300 {
                group.addTask {
                    let id = UInt64(i % 1000)
                    let r = try await client.lookup(LookupRequest(table: "items", ids: [id]), timeout: .seconds(30))
                    let first = r.vectors.withUnsafeBytes { $0.load(as: Float.self) }
                    #expect(first == SyntheticTable.value(row: id, column: 0))
                }
            }
            try await group.waitForAll()
        }
    }

    @Test func deadlineExceededOnTimeAndHandlerCancelled() async throws {
        let h = try Harness.start()
        defer { Task { await h.stop() } }
        let t0 = ContinuousClock.now
        do {
            _ = try await h.channel.unary(path: "/test.Probe/Spin", request: FramedMessage(payload: []), timeout: .milliseconds(100))
            Issue.record("expected DEADLINE_EXCEEDED")
        } catch {
            #expect(error.code == .deadlineExceeded)
        }
        let elapsed = ContinuousClock.now - t0
        #expect(elapsed >= .milliseconds(95) && elapsed < .milliseconds(250), "elapsed \(elapsed)")
        // The server's own deadline cancelled the handler (no work after the deadline).
        try await waitUntil { h.probe.cancelledHandlers.load(ordering: .relaxed) == 1 }
        #expect(h.probe.finishedHandlers.load(ordering: .relaxed) == 0)
    }

    @Test func taskCancellationResetsTheStreamAndStopsTheHandler() async throws {
        let h = try Harness.start()
        defer { Task { await h.stop() } }
        let task = Task {
            try await h.channel.unary(path: "/test.Probe/Spin", request: FramedMessage(payload: []), timeout: .seconds(10))
        }
        try await waitUntil { h.probe.startedHandlers.load(ordering: .relaxed) == 1 }
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("expected CANCELLED")
        } catch let e as RPCError {
            #expect(e.code == .cancelled)
        }
        try await waitUntil { h.probe.cancelledHandlers.load(ordering: .relaxed) == 1 }
    }

    @Test func unavailableWhenNothingListensThenBackoffFailsFast() async throws {
        // Bind and release a port so nothing listens on it.
        let h = try Harness.start()
        let port = h.port
        await h.stop()
        let ch = try RPCChannel(target: "127.0.0.1:\(port)", group: MultiThreadedEventLoopGroup.singleton)
        do {
            _ = try await HealthClient(channel: ch).check(timeout: .seconds(2))
            Issue.record("expected UNAVAILABLE")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("127.0.0.1:\(port)"))
        }
        let t0 = ContinuousClock.now
        do { _ = try await HealthClient(channel: ch).check(timeout: .seconds(2)) } catch { #expect(error.code == .unavailable) }
        #expect(ContinuousClock.now - t0 < .milliseconds(50), "backoff must fail fast, not hang")
        await ch.close()
    }

    @Test func reconnectsAfterTheServerComesBack() async throws {
        let h1 = try Harness.start()
        let port = h1.port
        let ch = try RPCChannel(target: "127.0.0.1:\(port)", group: MultiThreadedEventLoopGroup.singleton)
        #expect(try await HealthClient(channel: ch).check(timeout: .seconds(2)) == .serving)
        await h1.stop()
        // Same port again.
        var config = ServerConfiguration()
        config.port = port
        let server = RPCServer(configuration: config, router: Router(services: [HealthService(services: [])]))
        try server.start()
        defer { Task { await ch.close(); await server.shutdownGracefully() } }
        try await waitUntil(timeout: .seconds(10)) {
            (try? await HealthClient(channel: ch).check(timeout: .seconds(1))) == .serving
        }
    }

    @Test func inFlightLimitAnswersResourceExhaustedAtOnce() async throws {
        let h = try Harness.start { $0.maxInFlightHandlers = 1 }
        defer { Task { await h.stop() } }
        let spin = Task { try await h.channel.unary(path: "/test.Probe/Spin", request: FramedMessage(payload: []), timeout: .seconds(10)) }
        try await waitUntil { h.probe.startedHandlers.load(ordering: .relaxed) == 1 }
        let t0 = ContinuousClock.now
        do {
            _ = try await h.channel.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [1]), timeout: .seconds(5))
            Issue.record("expected RESOURCE_EXHAUSTED")
        } catch {
            #expect(error.code == .resourceExhausted)
        }
        #expect(ContinuousClock.now - t0 < .milliseconds(200))
        #expect(h.server.overloadRejections == 1)
        spin.cancel()
        _ = try? await spin.value
    }

    @Test func binaryMetadataReachesTheHandler() async throws {
        let h = try Harness.start()
        defer { Task { await h.stop() } }
        var md = Metadata()
        md.add("x-echo-bin", binary: [0, 0xFF, 0x10])
        let r = try await h.channel.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [7]), metadata: md, timeout: .seconds(5))
        #expect(r == [7, 0, 0xFF, 0x10])
    }

    @Test func gracefulShutdownDrainsInFlightCalls() async throws {
        let h = try Harness.start()
        // Three calls of 300 ms each are in flight when shutdown starts; all must complete OK.
        let calls = (0 ..< 3).map { _ in
            Task { try await h.channel.unary(path: "/test.Probe/Sleep", request: FramedMessage(payload: [30]), timeout: .seconds(5)) }
        }
        try await waitUntil("3 calls in flight") { h.server.inFlightHandlers == 3 }
        h.health.setAllNotServing()
        let drained = await h.server.shutdownGracefully()
        #expect(drained)
        for c in calls { #expect(try await c.value == [30]) }
        // New calls are refused.
        do {
            _ = try await h.channel.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [1]), timeout: .seconds(1))
            Issue.record("server should be gone")
        } catch {
            #expect(error.code == .unavailable)
        }
        await h.channel.close()
    }
}


