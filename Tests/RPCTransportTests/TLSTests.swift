import Testing
import NIOCore
import NIOPosix
import RPCCore
import RPCTransport
import ShardRankCerts
import ShardRankWire
import ShardRankClient
#if canImport(Glibc)
import Glibc
#endif

/// A development CA (and a second, unrelated one) written to a temporary directory.
private struct TestPKI {
    let dir: String

    init() throws {
        var template = Array("/tmp/shardrank-tls-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw RPCServerError("mkdtemp failed") }
        dir = String(cString: p)
        for (prefix, ca) in [("", try DevCertificateAuthority(days: 1)), ("other-", try DevCertificateAuthority(days: 1))] {
            try Self.write("\(dir)/\(prefix)ca.pem", try ca.certificatePEM)
            for role in ["coordinator", "shard", "client"] {
                let (cert, key) = try ca.issue(role: role, commonName: role, hosts: ["127.0.0.1", "localhost"], days: 1)
                try Self.write("\(dir)/\(prefix)\(role).pem", cert)
                try Self.write("\(dir)/\(prefix)\(role)-key.pem", key)
            }
        }
    }

    static func write(_ path: String, _ text: String) throws {
        guard let f = fopen(path, "w") else { throw RPCServerError("cannot write \(path)") }
        defer { fclose(f) }
        _ = Array(text.utf8).withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
    }

    func files(_ role: String?, ca: String = "ca", prefix: String = "") -> TLSFiles {
        TLSFiles(certificate: role.map { "\(dir)/\(prefix)\($0).pem" }, key: role.map { "\(dir)/\(prefix)\($0)-key.pem" }, ca: "\(dir)/\(ca).pem")
    }

    func remove() {
        for name in ["", "other-"].flatMap({ p in ["ca", "coordinator", "shard", "client", "coordinator-key", "shard-key", "client-key"].map { "\(p)\($0).pem" } }) {
            unlink("\(dir)/\(name)")
        }
        rmdir(dir)
    }
}

/// Accepts a connection and reads nothing back: a host that took TCP and went silent.
private final class Silent: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

@Suite(.serialized) struct TLSTests {
    private func client(_ port: Int, _ files: TLSFiles?) throws -> RPCChannel {
        var c = ClientConfiguration()
        c.connections = 1
        c.tls = try files.map { try TLSContextSource(files: $0, side: .client) }
        return try RPCChannel(target: "127.0.0.1:\(port)", group: MultiThreadedEventLoopGroup.singleton, configuration: c)
    }

    /// A TLS server answers a TLS client (ALPN h2); a cleartext client and a client that does not
    /// trust the server's CA get UNAVAILABLE, the latter naming the failed handshake.
    @Test func tlsClientAndServer() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let h = try Harness.start { c in c.tls = try! TLSContextSource(files: pki.files("shard"), side: .server) }
        defer { Task { await h.stop() } }
        let good = try client(h.port, pki.files(nil))
        defer { Task { await good.close() } }
        #expect(try await good.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [1, 2, 3]), timeout: .seconds(5)) == [1, 2, 3])
        #expect(try await HealthClient(channel: good).check(service: "", timeout: .seconds(5)) == .serving)
        // Large answers, many at once: under TLS a flush's frames are copied into one buffer up
        // to 256 KiB and go as slices past it (ServerConnectionHandler.tlsCoalesceBytes); every
        // byte arrives in order either way.
        let sizes = [5_000, 70_000, 300_000, 1_000_000]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, n) in (sizes + sizes.reversed()).enumerated() {
                group.addTask {
                    let payload = (0 ..< n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
                    let got = try await good.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: payload), timeout: .seconds(20))
                    #expect(got == payload, "answer \(i) of \(n) bytes")
                }
            }
            try await group.waitForAll()
        }
        let plain = try client(h.port, nil)
        defer { Task { await plain.close() } }
        do {
            _ = try await plain.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [1]), timeout: .seconds(5))
            Issue.record("a cleartext client was answered by a TLS server")
        } catch {
            #expect(error.code == .unavailable, "\(error)")
        }
        let stranger = try client(h.port, pki.files(nil, ca: "other-ca"))
        defer { Task { await stranger.close() } }
        do {
            _ = try await stranger.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [1]), timeout: .seconds(5))
            Issue.record("a client trusting another CA accepted the server")
        } catch {
            #expect(error.code == .unavailable && error.message.contains("TLS handshake failed"), "\(error)")
        }
    }

    /// Mutual TLS with the data methods pinned to the coordinator role: its certificate reads,
    /// another role's gets PERMISSION_DENIED (Info still answers), no certificate is refused.
    @Test func mutualTLSPinsTheCoordinatorRole() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let h = try Harness.start { c in
            c.tls = try! TLSContextSource(files: pki.files("shard"), side: .server, requireClientCertificate: true)
            c.authorizer = RoleAuthorizer(role: PeerRole.coordinator, paths: ["/shardrank.v1.Shard/Lookup", "/shardrank.v1.Shard/Search"])
        }
        defer { Task { await h.stop() } }
        let request = LookupRequest(table: "items", ids: [1, 2, 3])
        let coordinator = try client(h.port, pki.files("coordinator"))
        defer { Task { await coordinator.close() } }
        #expect(try await ShardClient(channel: coordinator).lookup(request, timeout: .seconds(5)).dim == 16)
        let other = try client(h.port, pki.files("client"))
        defer { Task { await other.close() } }
        do {
            _ = try await ShardClient(channel: other).lookup(request, timeout: .seconds(5))
            Issue.record("a client-role certificate read table data")
        } catch {
            #expect(error.code == .permissionDenied && error.message.contains("spiffe://shardrank/coordinator"), "\(error)")
        }
        #expect(try await ShardClient(channel: other).info(timeout: .seconds(5)).shardCount == 1)
        let anonymous = try client(h.port, pki.files(nil))
        defer { Task { await anonymous.close() } }
        do {
            _ = try await ShardClient(channel: anonymous).info(timeout: .seconds(5))
            Issue.record("a client without a certificate was served by a mutual-TLS server")
        } catch {
            #expect(error.code == .unavailable, "\(error)")
        }
        let foreign = try client(h.port, pki.files("coordinator", prefix: "other-"))
        defer { Task { await foreign.close() } }
        do {
            _ = try await ShardClient(channel: foreign).lookup(request, timeout: .seconds(5))
            Issue.record("a coordinator certificate of another CA was accepted")
        } catch {
            #expect(error.code == .unavailable, "\(error)")
        }
    }

    /// A peer that accepts TCP and never answers the TLS ClientHello: the handshake fails after
    /// the connect timeout (UNAVAILABLE, naming it), not at the call's much later deadline, and
    /// the connection slot is freed for the next try.
    @Test func aSilentPeerFailsTheHandshakeAtTheConnectTimeout() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(Silent()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        var c = ClientConfiguration()
        c.connections = 1
        c.connectTimeout = .milliseconds(300)
        c.initialBackoff = .milliseconds(10)
        c.tls = try TLSContextSource(files: pki.files(nil), side: .client)
        let ch = try RPCChannel(target: "127.0.0.1:\(server.localAddress!.port!)", group: MultiThreadedEventLoopGroup.singleton, configuration: c)
        defer { Task { await ch.close() } }
        for _ in 0 ..< 2 {
            let t0 = ContinuousClock.now
            do {
                _ = try await ch.unary(path: "/test.Probe/Echo", request: FramedMessage(payload: [1]), timeout: .seconds(10))
                Issue.record("a silent peer answered")
            } catch {
                #expect(error.code == .unavailable && error.message.contains("TLS handshake not finished"), "\(error)")
            }
            // (The second call meets the slot in backoff or reconnecting: either way it names the
            // handshake failure and does not wait for its deadline.)
            #expect(ContinuousClock.now - t0 < .seconds(5), "failed at the connect timeout, not the 10 s deadline")
        }
    }

    @Test func tokenFilesAndScopes() throws {
        let scopes = ["/s.R/Recommend": "recommend", "/s.R/RecordEvents": "events"]
        let good = "aaaaaaaaaaaaaaaaaaaa recommend\n# comment\n\nbbbbbbbbbbbbbbbbbbbb events,recommend  # both\ncccccccccccccccccccc *\n"
        let auth = try TokenAuthorizer(path: "t.txt", scopeOfPath: scopes, readFile: { _ in good })
        #expect(auth.tokenCount == 3)
        func md(_ v: String?) -> Metadata { var m = Metadata(); if let v { m.add("authorization", v) }; return m }
        #expect(auth.authorize(path: "/s.R/Recommend", metadata: md(nil), peer: .anonymous)?.code == .unauthenticated)
        #expect(auth.authorize(path: "/s.R/Recommend", metadata: md("Bearer nope-nope-nope-nope"), peer: .anonymous)?.code == .unauthenticated)
        #expect(auth.authorize(path: "/s.R/Recommend", metadata: md("Basic aaaaaaaaaaaaaaaaaaaa"), peer: .anonymous)?.code == .unauthenticated)
        #expect(auth.authorize(path: "/s.R/Recommend", metadata: md("Bearer aaaaaaaaaaaaaaaaaaaa"), peer: .anonymous) == nil)
        let denied = auth.authorize(path: "/s.R/RecordEvents", metadata: md("Bearer aaaaaaaaaaaaaaaaaaaa"), peer: .anonymous)
        #expect(denied?.code == .permissionDenied && denied!.message.contains("scope 'events'"))
        #expect(auth.authorize(path: "/s.R/RecordEvents", metadata: md("bearer bbbbbbbbbbbbbbbbbbbb"), peer: .anonymous) == nil)
        #expect(auth.authorize(path: "/s.R/RecordEvents", metadata: md("Bearer cccccccccccccccccccc"), peer: .anonymous) == nil)
        #expect(auth.authorize(path: "/grpc.health.v1.Health/Check", metadata: md(nil), peer: .anonymous) == nil, "health needs no token")
        for (text, words) in [("aaaaaaaaaaaaaaaaaaaa\n", "t.txt:1: expected 'TOKEN SCOPE[,SCOPE]'"), ("x recommend\n", "t.txt:1: a token must be at least 16"),
                              ("\naaaaaaaaaaaaaaaaaaaa nope\n", "t.txt:2: unknown scope 'nope'"),
                              ("aaaaaaaaaaaaaaaaaaaa events\naaaaaaaaaaaaaaaaaaaa events\n", "t.txt:2: the token is listed twice")] {
            do {
                _ = try TokenAuthorizer(path: "t.txt", scopeOfPath: scopes, readFile: { _ in text })
                Issue.record("accepted \(text)")
            } catch {
                #expect("\(error)".contains(words), "\(error)")
            }
        }
    }

    @Test func loopbackListenAddresses() {
        for h in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"] { #expect(isLoopbackListenAddress(h), "\(h)") }
        for h in ["0.0.0.0", "::", "10.0.0.1", "192.0.2.1", "128.0.0.1", "127.0.0", "example.com", ""] { #expect(!isLoopbackListenAddress(h), "\(h)") }
    }
}
