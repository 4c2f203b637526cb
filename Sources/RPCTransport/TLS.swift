public import NIOCore
import NIOPosix
public import NIOSSL
import NIOTLS
public import RPCCore
import Synchronization

/// Where a process's TLS material lives (PEM files; docs/operations.md "Security").
public struct TLSFiles: Sendable, Hashable {
    /// This process's certificate chain (leaf first).
    public var certificate: String?
    /// The private key of `certificate`.
    public var key: String?
    /// CA certificates trusted for the peer. On a shard it also turns on mutual TLS (a client
    /// certificate is required); on a client it replaces the system's trust store.
    public var ca: String?

    public init(certificate: String? = nil, key: String? = nil, ca: String? = nil) {
        self.certificate = certificate
        self.key = key
        self.ca = ca
    }
}

/// A TLS problem a person can act on: the file and what is wrong with it.
public struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}

/// The roles of the certificates `shardrank certs` makes: a URI SAN `spiffe://shardrank/<role>`.
public enum PeerRole {
    public static let uriPrefix = "spiffe://shardrank/"
    public static let coordinator = "coordinator"
    public static let shard = "shard"
    public static let client = "client"
}

/// Who is at the other end of a connection, as its certificate says (empty without TLS or
/// without a client certificate). Computed once per connection.
public struct PeerIdentity: Sendable {
    /// The URI SANs of the peer's (verified) certificate.
    public let uris: [String]
    /// The roles among them (`spiffe://shardrank/<role>` → `<role>`).
    public let roles: [String]
    public static let anonymous = PeerIdentity(uris: [])

    public init(uris: [String]) {
        self.uris = uris
        self.roles = uris.compactMap { $0.hasPrefix(PeerRole.uriPrefix) ? String($0.dropFirst(PeerRole.uriPrefix.count)) : nil }
    }

    public func hasRole(_ role: String) -> Bool { roles.contains(role) }

    /// The identity of the peer certificate on `channel`'s TLS handler, if any.
    static func of(_ pipeline: ChannelPipeline.SynchronousOperations) -> PeerIdentity {
        guard let cert = try? pipeline.nioSSL_peerCertificate() else { return .anonymous }
        var uris: [String] = []
        for name in cert._subjectAlternativeNames() where name.nameType == .uri {
            uris.append(String(decoding: name.contents, as: UTF8.self))
        }
        return PeerIdentity(uris: uris)
    }
}

/// Decides whether a call may run, before its handler starts: nil lets it run, an error
/// (UNAUTHENTICATED, PERMISSION_DENIED) is its answer. Called on the connection's event loop
/// for every call: keep it short and non-blocking.
public protocol CallAuthorizer: Sendable {
    func authorize(path: String, metadata: Metadata, peer: PeerIdentity) -> RPCError?
}

/// Builds NIOSSL contexts from PEM files, and swaps them on `reload()`: connections accepted or
/// made after a reload handshake with the new certificates, open ones keep theirs.
public final class TLSContextSource: Sendable {
    public enum Side: Sendable { case server, client }
    public let files: TLSFiles
    public let side: Side
    /// Server side: whether a client certificate is required (mutual TLS).
    public let requiresClientCertificate: Bool
    private let current: Mutex<NIOSSLContext>

    /// - Parameters:
    ///   - side: `.server` needs a certificate and key; with `files.ca` and
    ///     `requireClientCertificate` it demands a client certificate signed by that CA.
    ///     `.client` verifies the server against `files.ca` (else the system's trust store) and
    ///     presents `files.certificate` when given.
    /// - Throws: `TLSSetupError` naming the file that cannot be used.
    public init(files: TLSFiles, side: Side, requireClientCertificate: Bool = false) throws {
        self.files = files
        self.side = side
        self.requiresClientCertificate = side == .server && requireClientCertificate && files.ca != nil
        self.current = Mutex(try Self.makeContext(files, side: side, requireClientCertificate: side == .server && requireClientCertificate))
    }

    /// The context new connections use.
    public var context: NIOSSLContext { current.withLock { $0 } }

    /// Reads the files again and uses them for new connections; on an error the old context stays.
    public func reload() throws {
        let fresh = try Self.makeContext(files, side: side, requireClientCertificate: requiresClientCertificate)
        current.withLock { $0 = fresh }
    }

    static func makeContext(_ files: TLSFiles, side: Side, requireClientCertificate: Bool) throws -> NIOSSLContext {
        var chain: [NIOSSLCertificateSource] = []
        var key: NIOSSLPrivateKeySource?
        if let certPath = files.certificate {
            guard let keyPath = files.key else { throw TLSSetupError("--tls-cert \(certPath) needs --tls-key") }
            let certs: [NIOSSLCertificate]
            do { certs = try NIOSSLCertificate.fromPEMFile(certPath) } catch {
                throw TLSSetupError("cannot read the certificate \(certPath) (PEM expected): \(error)")
            }
            guard !certs.isEmpty else { throw TLSSetupError("no certificate in \(certPath) (PEM expected)") }
            chain = certs.map { .certificate($0) }
            do { key = .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem)) } catch {
                throw TLSSetupError("cannot read the private key \(keyPath) (PEM expected): \(error)")
            }
        } else if files.key != nil {
            throw TLSSetupError("--tls-key needs --tls-cert")
        }
        var trust: NIOSSLTrustRoots?
        if let caPath = files.ca {
            do {
                let roots = try NIOSSLCertificate.fromPEMFile(caPath)
                guard !roots.isEmpty else { throw TLSSetupError("no certificate in \(caPath) (PEM expected)") }
                trust = .certificates(roots)
            } catch let e as TLSSetupError { throw e } catch {
                throw TLSSetupError("cannot read the CA certificates \(caPath) (PEM expected): \(error)")
            }
        }
        var config: TLSConfiguration
        switch side {
        case .server:
            guard let key, !chain.isEmpty else { throw TLSSetupError("a TLS server needs --tls-cert and --tls-key") }
            config = .makeServerConfiguration(certificateChain: chain, privateKey: key)
            if requireClientCertificate, let trust {
                config.trustRoots = trust
                config.certificateVerification = .noHostnameVerification
            }
        case .client:
            config = .makeClientConfiguration()
            config.certificateChain = chain
            config.privateKey = key
            if let trust { config.trustRoots = trust }
            config.certificateVerification = .fullVerification
        }
        config.minimumTLSVersion = .tlsv12
        config.applicationProtocols = ["h2"]
        do { return try NIOSSLContext(configuration: config) } catch {
            let what = [files.certificate, files.key, files.ca].compactMap { $0 }.joined(separator: ", ")
            throw TLSSetupError("cannot set up TLS from \(what): \(error) (does the key belong to the certificate?)")
        }
    }
}

/// Whether `host` (a listen address) is a loopback address: 127.0.0.0/8, ::1 or `localhost`.
/// Plaintext listeners are allowed only there unless the operator says otherwise.
public func isLoopbackListenAddress(_ host: String) -> Bool {
    var h = host.lowercased()
    if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
    if h == "localhost" || h == "::1" || h == "0:0:0:0:0:0:0:1" { return true }
    let parts = h.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
}

/// Fires `promise` when the TLS handshake finished (or failed) on the client side, so that a
/// connection counts as made only once it can carry calls, and a handshake failure is reported
/// as the connection's error (an unknown CA, a server without `h2`).
final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private var promise: EventLoopPromise<Void>?
    private let timeout: Duration
    private var timer: Scheduled<Void>?

    /// - Parameter timeout: a handshake not finished by then fails and closes the connection (a
    ///   peer that accepted TCP and says nothing must not hold the connection slot forever).
    init(promise: EventLoopPromise<Void>, timeout: Duration) {
        self.promise = promise
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let channel = context.channel
        let timeout = self.timeout
        timer = context.eventLoop.scheduleTask(in: .nanoseconds(timeout.clampedNanoseconds)) {
            bound.value.fail(TLSSetupError("TLS handshake not finished within \(timeout.millisecondsValue) ms"))
            channel.close(promise: nil)
        }
    }

    private func fail(_ error: TLSSetupError) {
        timer?.cancel()
        promise?.fail(error)
        promise = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted(let proto) = e {
            timer?.cancel()
            if proto == "h2" {
                promise?.succeed(())
            } else {
                promise?.fail(TLSSetupError("the server did not agree on HTTP/2 (ALPN h2) during the TLS handshake"))
            }
            promise = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(TLSSetupError("TLS handshake failed: \(error)"))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(TLSSetupError("the connection closed during the TLS handshake"))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        fail(TLSSetupError("the connection closed during the TLS handshake"))
    }
}

/// Carries a client connection's handshake outcome to the code that made the connection (a
/// marker in the pipeline, removed as soon as the connection is made).
final class TLSHandshakeResult: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let result: EventLoopFuture<Void>
    init(_ result: EventLoopFuture<Void>) { self.result = result }
}
