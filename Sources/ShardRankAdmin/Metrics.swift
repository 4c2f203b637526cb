public import Prometheus
import Metrics
public import RPCCore
public import RPCTransport
import Synchronization

/// The process's metrics: a Prometheus registry (also the swift-metrics backend, so any library
/// using swift-metrics lands in it), RPC counters and latency histograms fed by the server's
/// observer hook, and gauges refreshed by collectors right before each scrape.
public final class ServerMetrics: RPCServerObserver, Sendable {
    public let registry: PrometheusCollectorRegistry
    private let handles = Mutex<[String: MethodHandles]>([:])
    private let collectors = Mutex<[@Sendable (ServerMetrics) -> Void]>([])
    private let inFlight: Prometheus.Gauge
    public static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(1000),
    ]

    struct MethodHandles: @unchecked Sendable {
        let latency: DurationHistogram
        var byStatus: [RPCStatusCode: Prometheus.Counter]
    }

    /// - Parameter bootstrapSwiftMetrics: also make this registry the swift-metrics backend
    ///   (once per process).
    public init(bootstrapSwiftMetrics: Bool = false) {
        registry = PrometheusCollectorRegistry()
        inFlight = registry.gauge(name: "shardrank_rpc_in_flight", help: "Calls being handled")
        if bootstrapSwiftMetrics {
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        }
    }

    public func callStarted(path: String) {
        inFlight.increment()
    }

    /// One lock acquisition per call: the (method, status) counter and the method's histogram,
    /// created on first use.
    public func callFinished(path: String, status: RPCStatusCode, duration: Duration) {
        if path != "unknown" { inFlight.decrement() }
        let (counter, latency) = handles.withLock { h -> (Prometheus.Counter, DurationHistogram) in
            var m = h[path] ?? MethodHandles(
                latency: registry.durationHistogram(name: "shardrank_rpc_duration_seconds", labels: [("method", path)],
                                                        buckets: Self.latencyBuckets,
                                                        help: "Latency of calls from request headers to the status"),
                byStatus: [:])
            let c = m.byStatus[status] ?? registry.counter(name: "shardrank_rpc_requests_total",
                                                               labels: [("method", path), ("code", status.description)],
                                                               help: "Calls by method and gRPC status")
            if m.byStatus[status] == nil {
                m.byStatus[status] = c
                h[path] = m
            }
            return (c, m.latency)
        }
        counter.increment()
        if path != "unknown" { latency.record(duration) }
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
