public import RPCCore

/// The per-stage timings a `Recommend` response reports, by name (as in `StageTimings`).
public let stageNames = ["retrieve", "filter", "gather", "rank", "post_rank", "total"]

/// What one worker (or, merged, the whole run) saw in the measured phase. Merging is exact:
/// counts add and histograms merge bucket by bucket.
public struct PhaseStats: Sendable {
    /// Every completed request, successful or not, from its intended send time to its completion.
    public var latency = LatencyHistogram()
    public var byOperation: [LoadOperation: LatencyHistogram] = [:]
    public var sentByOperation: [LoadOperation: Int] = [:]
    /// Server-reported stage latencies of Recommend responses (microseconds on the wire).
    public var stages: [String: LatencyHistogram] = [:]
    public var sent = 0
    public var ok = 0
    /// Successful responses whose coverage says `degraded` (a subset of `ok`).
    public var degraded = 0
    /// Successful Recommend responses with `cold_start` set: the user had no stored vector,
    /// profile or session (a subset of `ok`).
    public var coldStarts = 0
    /// Successful responses by operation.
    public var okByOperation: [LoadOperation: Int] = [:]
    /// Rows returned by Lookup calls.
    public var vectors = 0
    public var errors: [RPCStatusCode: Int] = [:]
    /// Open loop: the most a send was late against its intended time (the driver falling behind).
    public var maxSendLagNanos: UInt64 = 0

    public init() {}

    public var completed: Int { ok + errors.values.reduce(0, +) }
    public var errorCount: Int { errors.values.reduce(0, +) }

    public mutating func merge(_ o: PhaseStats) {
        latency.merge(o.latency)
        for (k, v) in o.byOperation { byOperation[k, default: LatencyHistogram()].merge(v) }
        for (k, v) in o.sentByOperation { sentByOperation[k, default: 0] += v }
        for (k, v) in o.stages { stages[k, default: LatencyHistogram()].merge(v) }
        for (k, v) in o.okByOperation { okByOperation[k, default: 0] += v }
        sent += o.sent; ok += o.ok; degraded += o.degraded; coldStarts += o.coldStarts; vectors += o.vectors
        for (k, v) in o.errors { errors[k, default: 0] += v }
        maxSendLagNanos = max(maxSendLagNanos, o.maxSendLagNanos)
    }

    mutating func noteSent(_ op: LoadOperation, lagNanos: UInt64) {
        sent += 1
        sentByOperation[op, default: 0] += 1
        maxSendLagNanos = max(maxSendLagNanos, lagNanos)
    }

    mutating func record(_ op: LoadOperation, latencyNanos: UInt64, outcome: Outcome) {
        latency.record(nanoseconds: latencyNanos)
        byOperation[op, default: LatencyHistogram()].record(nanoseconds: latencyNanos)
        switch outcome {
        case .ok(let v, let deg, let timings, let cold):
            ok += 1
            okByOperation[op, default: 0] += 1
            vectors += v
            if deg { degraded += 1 }
            if cold { coldStarts += 1 }
            if let t = timings {
                for (name, micros) in zip(stageNames, t) { stages[name, default: LatencyHistogram()].record(nanoseconds: micros &* 1000) }
            }
        case .failed(let code):
            errors[code, default: 0] += 1
        }
    }
}

/// How one request ended.
public enum Outcome: Sendable, Equatable {
    /// `vectors`: Lookup rows returned; `timings`: Recommend stage timings in µs, in `stageNames`
    /// order; `coldStart`: a Recommend answered as a cold start.
    case ok(vectors: Int, degraded: Bool, timings: [UInt64]?, coldStart: Bool = false)
    case failed(RPCStatusCode)
}
