public import Prometheus
import Metrics
import RPCCore
public import RPCTransport
import Synchronization

/// The process's metrics: a Prometheus registry (also the swift-metrics backend, so any library
/// using swift-metrics lands in it), RPC counters and latency histograms fed by the server's
/// observer hook, and gauges refreshed by collectors right before each scrape.
public final class ServerMetrics: RPCServerObserver, Sendable {
    public let registry: PrometheusCollectorRegistry
    private let collectors = Mutex<[@Sendable (ServerMetrics) -> Void]>([])
    private let inFlight: Prometheus.Gauge
    public static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(1000),
    ]

    /// - Parameter bootstrapSwiftMetrics: also make this registry the swift-metrics backend
    ///   (once per process).
    public init(bootstrapSwiftMetrics: Bool = false) {
        registry = PrometheusCollectorRegistry()
        inFlight = registry.gauge(name: "shardrank_rpc_in_flight", help: "Calls being handled")
        if bootstrapSwiftMetrics {
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        }
    }

    /// One method's metrics, made when the server is: its latency histogram and OK counter exist
    /// from the start (exposed as 0 until used), counters of other codes on first use.
    public func methodObserver(path: String) -> any RPCMethodObserver {
        MethodMetrics(registry: registry, path: path, inFlight: path == "unknown" ? nil : inFlight)
    }

    /// Registers work run before every scrape (to refresh gauges of other components).
    public func addCollector(_ body: @escaping @Sendable (ServerMetrics) -> Void) {
        collectors.withLock { $0.append(body) }
    }

    /// The Prometheus text exposition of every metric, collectors run first.
    public func exposition() -> [UInt8] {
        for c in collectors.withLock({ $0 }) { c(self) }
        return registry.emitToBuffer()
    }
}

/// The metrics of one method (or of the calls that resolved to none: `path` "unknown", which
/// has neither a latency histogram nor an in-flight count). A call that ends OK touches only
/// atomics and the histogram; a lock is taken for the other codes' counters.
final class MethodMetrics: RPCMethodObserver, Sendable {
    private let registry: PrometheusCollectorRegistry
    private let path: String
    private let inFlight: Prometheus.Gauge?
    private let latency: DurationHistogram?
    private let ok: Prometheus.Counter?
    private let byStatus = Mutex<[RPCStatusCode: Prometheus.Counter]>([:])

    init(registry: PrometheusCollectorRegistry, path: String, inFlight: Prometheus.Gauge?) {
        self.registry = registry
        self.path = path
        self.inFlight = inFlight
        let known = path != "unknown"
        latency = known ? registry.durationHistogram(name: "shardrank_rpc_duration_seconds", labels: [("method", path)],
                                                     buckets: ServerMetrics.latencyBuckets,
                                                     help: "Latency of calls from request headers to the status") : nil
        ok = known ? Self.counter(registry, path, .ok) : nil
    }

    static func counter(_ registry: PrometheusCollectorRegistry, _ path: String, _ status: RPCStatusCode) -> Prometheus.Counter {
        registry.counter(name: "shardrank_rpc_requests_total", labels: [("method", path), ("code", status.description)],
                         help: "Calls by method and gRPC status")
    }

    func callStarted() {
        inFlight?.increment()
    }

    func callFinished(status: RPCStatusCode, duration: Duration) {
        inFlight?.decrement()
        if status == .ok, let ok {
            ok.increment()
        } else {
            byStatus.withLock { counters -> Prometheus.Counter in
                if let c = counters[status] { return c }
                let c = Self.counter(registry, path, status)
                counters[status] = c
                return c
            }.increment()
        }
        latency?.record(duration)
    }
}
/// The registry's metric makers under their full Prometheus names (swift-prometheus deprecated
/// the name-and-help forms in favour of a `MetricNameDescriptor`; the whole name goes in
/// `metricName`, so the exposed names do not change).
extension PrometheusCollectorRegistry {
    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    public func gauge(name: String, help: String) -> Prometheus.Gauge {
        makeGauge(descriptor: Self.descriptor(name, help))
    }

    public func gauge(name: String, labels: [(String, String)], help: String) -> Prometheus.Gauge {
        makeGauge(descriptor: Self.descriptor(name, help), labels: labels)
    }

    public func counter(name: String, help: String) -> Prometheus.Counter {
        makeCounter(descriptor: Self.descriptor(name, help))
    }

    public func counter(name: String, labels: [(String, String)], help: String) -> Prometheus.Counter {
        makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
    }

    public func durationHistogram(name: String, labels: [(String, String)], buckets: [Duration], help: String) -> DurationHistogram {
        makeDurationHistogram(descriptor: Self.descriptor(name, help), labels: labels, buckets: buckets)
    }
}
