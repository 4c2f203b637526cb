public import Histogram

/// An HDR histogram of latencies in nanoseconds (1 ns … 1 h, 3 significant digits: every
/// percentile is within 0.1 % of the exact value). Values above an hour are clamped to it.
public struct LatencyHistogram: Sendable {
    public static let highest: UInt64 = 3_600_000_000_000
    public private(set) var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: LatencyHistogram.highest,
                                                         numberOfSignificantValueDigits: .three)
    public init() {}

    public var count: UInt64 { histogram.totalCount }

    public mutating func record(nanoseconds: UInt64) {
        _ = histogram.record(Swift.min(Swift.max(nanoseconds, 1), Self.highest))
    }

    public mutating func record(_ d: Duration) { record(nanoseconds: d.nanoseconds) }

    /// Adds every value of `other` (merging workers' histograms gives the exact histogram of all values).
    public mutating func merge(_ other: LatencyHistogram) { histogram.add(other.histogram) }

    /// Value at `percentile` (0...100) in nanoseconds; 0 when empty.
    public func value(atPercentile p: Double) -> UInt64 {
        count == 0 ? 0 : histogram.valueAtPercentile(p)
    }

    public var summary: LatencySummary {
        guard count > 0 else { return LatencySummary() }
        func ms(_ ns: UInt64) -> Double { Double(ns) / 1e6 }
        return LatencySummary(count: Int(count), meanMs: histogram.mean / 1e6,
                              p50Ms: ms(value(atPercentile: 50)), p90Ms: ms(value(atPercentile: 90)),
                              p99Ms: ms(value(atPercentile: 99)), p999Ms: ms(value(atPercentile: 99.9)),
                              maxMs: ms(histogram.max))
    }
}

/// Percentiles of a latency histogram, in milliseconds.
public struct LatencySummary: Sendable, Codable, Equatable {
    public var count = 0
    public var meanMs = 0.0
    public var p50Ms = 0.0
    public var p90Ms = 0.0
    public var p99Ms = 0.0
    public var p999Ms = 0.0
    public var maxMs = 0.0

    enum CodingKeys: String, CodingKey {
        case count, meanMs = "mean_ms", p50Ms = "p50_ms", p90Ms = "p90_ms", p99Ms = "p99_ms", p999Ms = "p99_9_ms", maxMs = "max_ms"
    }
}

extension Duration {
    /// Whole nanoseconds, clamped at 0.
    var nanoseconds: UInt64 {
        let c = components
        if c.seconds < 0 { return 0 }
        return UInt64(c.seconds) &* 1_000_000_000 &+ UInt64(c.attoseconds / 1_000_000_000)
    }

    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }

    static func seconds(double s: Double) -> Duration { .nanoseconds(Int64((s * 1e9).rounded())) }
}
