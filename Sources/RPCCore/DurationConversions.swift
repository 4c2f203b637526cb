/// `Duration` as the numbers the transport, metrics and logs need, in one place (Swift's
/// `Duration` offers only its (seconds, attoseconds) components).
extension Duration {
    /// Whole nanoseconds, clamped to 0...Int64.max (negative durations are 0).
    public var clampedNanoseconds: Int64 {
        let (s, a) = components
        if s < 0 { return 0 }
        if s >= Int64.max / 1_000_000_000 { return .max }
        return s * 1_000_000_000 + a / 1_000_000_000
    }

    /// Whole microseconds, clamped to 0...Int64.max.
    public var clampedMicroseconds: Int64 { clampedNanoseconds / 1000 }

    /// Seconds as a Double (may be negative).
    public var secondsValue: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }

    /// Milliseconds as a Double (may be negative).
    public var millisecondsValue: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}
