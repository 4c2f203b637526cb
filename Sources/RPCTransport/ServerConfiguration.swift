internal import RPCHTTP2

/// Everything a server's transport can be told. Built once in `main`, passed down. Every limit is
/// checked before anything is allocated for what it limits.
public struct ServerConfiguration: Sendable {
    /// Address to bind; "127.0.0.1" for loopback-only (plaintext h2c is only for trusted networks).
    public var host: String = "127.0.0.1"
    /// Port to bind; 0 picks a free one (read it back from `RPCServer.port`).
    public var port: Int = 0
    /// Event loops (one per core by default): own the sockets and the HTTP/2 sessions.
    public var eventLoopThreads: Int = System.coreCount
    /// Worker threads for handlers placed `.workerPool`.
    public var workerThreads: Int = System.coreCount
    /// HTTP/2 settings: max concurrent streams per connection (256), header list bytes (8 KiB).
    public var http2 = HTTP2Settings()
    /// Largest request message (4 MiB, gRPC's default).
    public var maxMessageLength: Int = 4 << 20
    /// Handlers running at once in this process; beyond it a call fails RESOURCE_EXHAUSTED at once.
    public var maxInFlightHandlers: Int = 4096
    /// A connection with no open stream for this long gets a GOAWAY and is closed (gRPC's
    /// MAX_CONNECTION_IDLE); nil keeps idle connections forever.
    public var maxConnectionIdle: Duration? = .seconds(300)
    /// A connection whose socket stays unwritable (the peer stopped reading while answers wait)
    /// for this long is closed, releasing what it holds; nil: never.
    public var writeTimeout: Duration? = .seconds(30)
    /// A stream whose finished answer sends no byte for this long (the peer grants no HTTP/2
    /// flow-control window) is reset and its answer freed, counted CANCELLED; checked once per
    /// interval, so a stall is found after one to two intervals. A call's own `grpc-timeout`
    /// applies too (DEADLINE_EXCEEDED). nil: only `grpc-timeout`.
    public var streamSendTimeout: Duration? = .seconds(30)
    /// Bytes of answers one connection may hold unsent; an answer that would take it past this
    /// fails RESOURCE_EXHAUSTED instead of being queued (one answer on an otherwise empty
    /// connection is always queued: answers have their own bounds).
    public var maxConnectionQueuedBytes: Int = 64 << 20
    /// Bytes of unsent answers all connections together may hold; an answer that would pass it
    /// fails RESOURCE_EXHAUSTED (one answer on a connection holding nothing is always queued).
    public var maxQueuedBytes: Int = 1 << 30
    /// Bytes of requests not yet complete (partial messages of streams whose request has not
    /// ended) one connection may make the server buffer; the stream whose data would take it
    /// past this fails RESOURCE_EXHAUSTED and is reset. Without it, a connection's 256 streams
    /// could each buffer a 4 MiB message that never ends: 1 GiB.
    public var maxConnectionRequestBytes: Int = 32 << 20
    /// The same for all connections together.
    public var maxRequestBytes: Int = 1 << 30
    /// Connections open at once; one accepted beyond it is closed at once, before anything is
    /// read from it. nil: no limit.
    public var maxConnections: Int? = 10_000
    /// A connection must send its preface and SETTINGS, and every header block (HEADERS with its
    /// CONTINUATIONs) must be completed, within this long, else the connection is closed (checked
    /// once per interval: one to two intervals). nil: never.
    public var headerTimeout: Duration? = .seconds(10)
    /// A request stream that receives nothing for this long before its request is complete is
    /// answered CANCELLED and reset (checked once per interval: one to two intervals). nil: never
    /// (a call's `grpc-timeout` still applies).
    public var streamIdleTimeout: Duration? = .seconds(30)
    /// Told about every call's start and outcome (metrics); nil for none.
    public var observer: (any RPCServerObserver)?
    /// How long a graceful shutdown waits for in-flight calls before closing connections.
    public var drainTimeout: Duration = .seconds(10)
    /// TLS (ALPN `h2` only) in front of every connection; nil: cleartext h2c. `reload()` on it
    /// changes the certificates of connections accepted afterwards.
    public var tls: TLSContextSource?
    /// Asked before every call's handler runs (tokens, the peer certificate's role); nil: all run.
    public var authorizer: (any CallAuthorizer)?

    public init() {}
}

public enum System {
    /// Online CPUs.
    public static var coreCount: Int {
        #if canImport(Glibc)
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        #else
        return 2
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The HTTP/2 settings and limits of one connection, as the transport's users set them (the
/// HTTP/2 layer itself, RPCHTTP2, stays an implementation detail of the transport).
public struct HTTP2Settings: Sendable, Hashable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to the peer (server): streams beyond it are refused.
    public var maxConcurrentStreams: UInt32 = 256
    /// Largest header list accepted, counted as RFC 7540 does (name + value + 32 per field);
    /// advertised as SETTINGS_MAX_HEADER_LIST_SIZE. 8 KiB, gRPC's default for a server.
    public var maxHeaderListBytes: Int = 8 << 10
    /// SETTINGS_INITIAL_WINDOW_SIZE for streams, and the connection window opened up to.
    public var initialWindowSize: UInt32 = 1 << 20
    public var connectionWindowSize: Int32 = 16 << 20
    /// SETTINGS_MAX_FRAME_SIZE advertised.
    public var maxFrameSize: UInt32 = 16 << 10
    /// nghttp2's limiter of incoming RST_STREAM per connection (rapid reset): `resetBurst` at
    /// once, refilled at `resetRate` a second; beyond it GOAWAY. See `HTTP2Configuration`.
    public var resetBurst: UInt64 = 20_000
    public var resetRate: UInt64 = 5_000

    public init() {}

    /// The HTTP/2 layer's configuration with these values.
    var session: HTTP2Configuration {
        var c = HTTP2Configuration()
        c.maxConcurrentStreams = maxConcurrentStreams
        c.maxHeaderListBytes = maxHeaderListBytes
        c.initialWindowSize = initialWindowSize
        c.connectionWindowSize = connectionWindowSize
        c.maxFrameSize = maxFrameSize
        c.resetBurst = resetBurst
        c.resetRate = resetRate
        return c
    }
}
