import Foundation

/// Everything one run measured; `--json` prints it (keys in snake_case, latencies in ms).
public struct LoadReport: Sendable, Codable {
    public struct OperationReport: Sendable, Codable {
        public var sent: Int
        public var completed: Int
        public var latency: LatencySummary
    }

    public var target: String
    public var mode: String
    public var arrivals: String?
    public var rateRPS: Double?
    public var concurrency: Int?
    public var threads: Int
    public var connections: Int
    public var warmupS: Double
    public var durationS: Double
    public var mix: [String: Double]
    public var table: String?
    public var batch: Int?
    public var dtype: String?
    public var k: Int?
    public var zipf: Double
    /// How many item ids were drawn from, and where they came from (nil: no operation uses item ids).
    public var idSpace: Int?
    public var idSource: String?
    /// How many user ids were drawn from, and where they came from (nil: no operation uses users).
    public var users: Int?
    public var userSource: String?

    public var sent: Int
    public var completed: Int
    public var ok: Int
    public var errors: [String: Int]
    public var errorCount: Int
    public var degraded: Int
    public var degradedShare: Double
    /// Recommend answers with `cold_start` set (the user had no stored vector, profile or session),
    /// and their share of the ok Recommend answers.
    public var coldStarts: Int
    public var coldStartShare: Double
    /// Completed requests (ok or not) per second of the measured phase.
    public var throughputRPS: Double
    public var okRPS: Double
    public var vectors: Int
    public var vectorsPerS: Double
    /// Open loop: the most a send left after its intended time.
    public var maxSendLagMs: Double
    public var latency: LatencySummary
    public var operations: [String: OperationReport]
    /// Recommend responses' own stage timings.
    public var stages: [String: LatencySummary]?

    enum CodingKeys: String, CodingKey {
        case target, mode, arrivals, rateRPS = "rate_rps", concurrency, threads, connections, warmupS = "warmup_s",
             durationS = "duration_s", mix, table, batch, dtype, k, zipf, idSpace = "id_space", idSource = "id_source", users,
             userSource = "user_source", sent, completed, ok, errors,
             errorCount = "error_count", degraded, degradedShare = "degraded_share", coldStarts = "cold_starts",
             coldStartShare = "cold_start_share", throughputRPS = "throughput_rps",
             okRPS = "ok_rps", vectors, vectorsPerS = "vectors_per_s", maxSendLagMs = "max_send_lag_ms", latency, operations, stages
    }

    public init(configuration c: LoadTestConfiguration, shape: RequestShape, stats s: PhaseStats) {
        target = c.target
        switch c.mode {
        case .open(let r, let a): mode = "open"; rateRPS = r; arrivals = a.rawValue
        case .closed(let n): mode = "closed"; concurrency = n
        }
        threads = c.threads; connections = c.connections
        warmupS = c.warmup.seconds; durationS = c.duration.seconds
        mix = Dictionary(uniqueKeysWithValues: c.mix.entries.map { ($0.operation.rawValue, $0.weight) })
        let shard = c.mix.targetsShard
        table = shard ? c.table : nil
        batch = c.mix.contains(.lookup) ? c.batch : nil
        dtype = c.mix.contains(.lookup) ? c.dtype.description : nil
        k = c.mix.contains(.lookup) && c.mix.entries.count == 1 ? nil : (c.k ?? (c.mix.contains(.search) ? 100 : 10))
        zipf = c.zipf
        if shape.usesItemIDs { idSpace = shape.items.count; idSource = shape.items.source }
        if shape.usesUsers { users = shape.users.count; userSource = shape.users.source }
        sent = s.sent; completed = s.completed; ok = s.ok
        errors = Dictionary(uniqueKeysWithValues: s.errors.map { ($0.key.description, $0.value) })
        errorCount = s.errorCount; degraded = s.degraded
        degradedShare = s.ok > 0 ? Double(s.degraded) / Double(s.ok) : 0
        coldStarts = s.coldStarts
        let okRecommends = s.okByOperation[.recommend] ?? 0
        coldStartShare = okRecommends > 0 ? Double(s.coldStarts) / Double(okRecommends) : 0
        let secs = c.duration.seconds
        throughputRPS = Double(s.completed) / secs; okRPS = Double(s.ok) / secs
        vectors = s.vectors; vectorsPerS = Double(s.vectors) / secs
        maxSendLagMs = Double(s.maxSendLagNanos) / 1e6
        latency = s.latency.summary
        var ops: [String: OperationReport] = [:]
        for e in c.mix.entries {
            let h = s.byOperation[e.operation] ?? LatencyHistogram()
            ops[e.operation.rawValue] = OperationReport(sent: s.sentByOperation[e.operation] ?? 0, completed: Int(h.count), latency: h.summary)
        }
        operations = ops
        stages = s.stages.isEmpty ? nil : s.stages.mapValues { h in
            var x = h.summary
            x.count = Int(h.count)
            return x
        }
    }

    /// A readable multi-line summary.
    public var text: String {
        var l: [String] = []
        let how = mode == "open" ? "open loop, \(fmtRate(rateRPS ?? 0)) req/s \(arrivals ?? "")" : "closed loop, concurrency \(concurrency ?? 0)"
        l.append("target \(target): \(how), \(threads) thread(s), \(connections) connection(s), warm-up \(warmupS) s, measured \(durationS) s")
        l.append("mix \(mix.sorted { $0.key < $1.key }.map { "\($0.key):\(formatWeight($0.value))" }.joined(separator: ","))"
                 + (batch.map { ", batch \($0)" } ?? "") + (dtype.map { ", dtype \($0)" } ?? "") + (k.map { ", k \($0)" } ?? "")
                 + ", zipf \(zipf)")
        if let idSource { l.append("item ids: \(idSource)") }
        if let userSource { l.append("user ids: \(userSource)") }
        l.append("requests: sent \(sent), ok \(ok), errors \(errorCount)" + (errors.isEmpty ? "" : " (" + errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")")
                 + ", degraded \(degraded) (\(fmt(degradedShare * 100)) %)"
                 + (mix["recommend"] != nil ? ", cold starts \(coldStarts) (\(fmt(coldStartShare * 100)) % of ok Recommends)" : ""))
        l.append("throughput: \(fmtRate(throughputRPS)) req/s" + (vectors > 0 ? ", \(fmtRate(vectorsPerS)) vectors/s" : "")
                 + (mode == "open" ? ", max send lag \(fmt(maxSendLagMs)) ms" : ""))
        l.append("latency ms: " + line(latency))
        if operations.count > 1 {
            for (op, r) in operations.sorted(by: { $0.key < $1.key }) { l.append("  \(op): sent \(r.sent)  " + line(r.latency)) }
        }
        if let stages {
            for name in stageNames { if let s = stages[name] { l.append("  stage \(name): " + line(s)) } }
        }
        return l.joined(separator: "\n")
    }

    func line(_ s: LatencySummary) -> String {
        "p50 \(fmt(s.p50Ms))  p90 \(fmt(s.p90Ms))  p99 \(fmt(s.p99Ms))  p99.9 \(fmt(s.p999Ms))  max \(fmt(s.maxMs))  (n=\(s.count))"
    }
}

func fmtRate(_ x: Double) -> String { x >= 100 ? String(Int(x.rounded())) : fmt(x) }

/// The result of `--sweep`: one report per rate tried, and the highest rate that met the target.
public struct SweepReport: Sendable, Codable {
    public var p99TargetMs: Double
    /// Largest error share a passing step may have.
    public var maxErrorShare: Double
    public var bestRateRPS: Double?
    public var steps: [LoadReport]
    enum CodingKeys: String, CodingKey {
        case p99TargetMs = "p99_target_ms", maxErrorShare = "max_error_share", bestRateRPS = "best_rate_rps", steps
    }

    /// A step passes when its p99 is within the target and at most `maxErrorShare` of its requests failed.
    public static func passes(_ r: LoadReport, p99TargetMs: Double, maxErrorShare: Double) -> Bool {
        r.completed > 0 && r.latency.p99Ms <= p99TargetMs && Double(r.errorCount) <= maxErrorShare * Double(max(1, r.completed))
    }

    public var text: String {
        var l = steps.map { r in
            "rate \(fmtRate(r.rateRPS ?? 0)) req/s: achieved \(fmtRate(r.throughputRPS)), p99 \(fmt(r.latency.p99Ms)) ms, errors \(r.errorCount) → "
                + (Self.passes(r, p99TargetMs: p99TargetMs, maxErrorShare: maxErrorShare) ? "ok" : "over target")
        }
        l.append(bestRateRPS.map { "highest rate meeting p99 ≤ \(fmt(p99TargetMs)) ms: \(fmtRate($0)) req/s" }
                 ?? "no rate met p99 ≤ \(fmt(p99TargetMs)) ms")
        return l.joined(separator: "\n")
    }
}

extension LoadDriver {
    /// Open-loop runs at `start, start+step, …, max` (stopping after the first step over the
    /// target); every step gets its own warm-up and measured phase.
    public static func sweep(_ config: LoadTestConfiguration, start: Double, step: Double, max: Double, p99TargetMs: Double,
                             maxErrorShare: Double = 0.01,
                             progress: (@Sendable (String) -> Void)? = nil) async throws(LoadTestError) -> SweepReport {
        guard start > 0, step > 0, max >= start, start.isFinite, step.isFinite, max.isFinite else {
            throw LoadTestError("--sweep START:STEP:MAX needs 0 < START ≤ MAX and STEP > 0")
        }
        guard p99TargetMs > 0, p99TargetMs.isFinite else { throw LoadTestError("--p99-target-ms must be a positive number of ms") }
        guard ((max - start) / step) < 1000 else { throw LoadTestError("--sweep would run more than 1000 steps") }
        let arrivals: Arrivals = if case .open(_, let a) = config.mode { a } else { .constant }
        var c = config
        c.mode = .open(rate: start, arrivals: arrivals)
        try c.validate()
        let shape = try await resolveShape(c)
        var out = SweepReport(p99TargetMs: p99TargetMs, maxErrorShare: maxErrorShare, bestRateRPS: nil, steps: [])
        var rate = start
        while rate <= max + step * 1e-9 {
            c.mode = .open(rate: rate, arrivals: arrivals)
            try c.validate()
            progress?("sweep: rate \(fmtRate(rate)) req/s")
            let r = await execute(c, shape: shape, progress: progress).report
            out.steps.append(r)
            if SweepReport.passes(r, p99TargetMs: p99TargetMs, maxErrorShare: maxErrorShare) { out.bestRateRPS = rate } else { break }
            rate += step
        }
        return out
    }
}

/// JSON text of a report (sorted keys, pretty-printed).
public func jsonText<T: Encodable>(_ value: T) -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .prettyPrinted]
    guard let d = try? e.encode(value) else { return "{}" }
    return String(decoding: d, as: UTF8.self)
}
