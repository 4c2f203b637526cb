import Testing
import TestSupport
import NIOCore
import NIOPosix
import RPCCore
import RPCTransport

/// Reads and drops everything: a peer that accepted the connection and then went silent (as a
/// host lost to a power cut or a partition looks from the other side, before TCP gives up).
private final class Blackhole: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

@Suite struct KeepaliveTests {
    /// A call to a silent peer fails UNAVAILABLE once a keepalive PING goes unanswered, long
    /// before its own deadline; without keepalive it waits for the deadline.
    @Test func aSilentPeerIsFoundByAnUnansweredPing() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(Blackhole()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        let port = server.localAddress!.port!
        var config = ClientConfiguration()
        config.keepaliveInterval = .milliseconds(100)
        config.keepaliveTimeout = .milliseconds(200)
        let ch = try RPCChannel(target: "127.0.0.1:\(port)", group: MultiThreadedEventLoopGroup.singleton, configuration: config)
        defer { Task { await ch.close() } }
        let t0 = ContinuousClock.now
        do {
            _ = try await ch.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [1]), timeout: .seconds(10))
            Issue.record("a silent peer answered")
        } catch {
            #expect(error.code == .unavailable && error.message.contains("keepalive PING not acknowledged"), "\(error)")
        }
        #expect(ContinuousClock.now - t0 < .seconds(3), "found by the ping (≈ 0.3 s), not the 10 s deadline")

        var off = ClientConfiguration()
        off.keepaliveInterval = nil
        let quiet = try RPCChannel(target: "127.0.0.1:\(port)", group: MultiThreadedEventLoopGroup.singleton, configuration: off)
        defer { Task { await quiet.close() } }
        do {
            _ = try await quiet.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [1]), timeout: .milliseconds(600))
            Issue.record("a silent peer answered")
        } catch {
            #expect(error.code == .deadlineExceeded, "without keepalive only the deadline ends it: \(error)")
        }
    }

    /// A live server answers every PING: a connection pinged every 20 ms for half a second keeps
    /// serving calls, including one longer than several keepalive timeouts.
    @Test func aLiveServerKeepsItsConnection() async throws {
        let h = try Harness.start()
        defer { Task { await h.stop() } }
        var config = ClientConfiguration()
        config.connections = 1
        config.keepaliveInterval = .milliseconds(20)
        config.keepaliveTimeout = .milliseconds(100)
        let ch = try RPCChannel(target: "127.0.0.1:\(h.port)", group: MultiThreadedEventLoopGroup.singleton, configuration: config)
        defer { Task { await ch.close() } }
        #expect(try await ch.unary(path: "/test.Probe/Sleep", request: FramedMessage(payload: [30]), timeout: .seconds(5)) == [30])
        try await Task.sleep(for: .milliseconds(300))   // pings go back and forth on the idle connection
        let accepted = h.server.acceptedCalls
        #expect(try await ch.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [7]), timeout: .seconds(2)) == [7])
        #expect(h.server.acceptedCalls == accepted + 1)
    }
}
