import Foundation

/// How open-loop requests arrive.
public enum Arrivals: String, Sendable, CaseIterable, Codable {
    /// Evenly spaced: request i is due at `phase + i / rate`.
    case constant
    /// A Poisson process: exponential gaps with mean `1 / rate`.
    case poisson
}

/// The intended send times of an open-loop worker, as offsets in seconds from the start of the
/// run. Latency is measured from these times, not from when the request actually left, so a
/// server (or a driver) that falls behind is charged for the whole wait: no coordinated omission.
public struct ArrivalSchedule: Sendable {
    public let rate: Double
    public let arrivals: Arrivals
    private var rng: Xoshiro256
    private var index: UInt64 = 0
    private var last: Double

    /// - Parameters:
    ///   - rate: requests per second of this schedule (> 0).
    ///   - phase: offset of the first send, in seconds (staggers workers).
    public init(rate: Double, arrivals: Arrivals, seed: UInt64, phase: Double = 0) {
        precondition(rate > 0 && rate.isFinite)
        self.rate = rate
        self.arrivals = arrivals
        self.rng = Xoshiro256(seed: seed)
        self.last = phase
    }

    /// The next intended send time (seconds from the start), non-decreasing.
    public mutating func next() -> Double {
        switch arrivals {
        case .constant:
            let t = last + Double(index) / rate
            index += 1
            return t
        case .poisson:
            // -ln(1 - U) / rate, U in [0, 1): never infinite.
            last += -log1p(-rng.nextUnit()) / rate
            return last
        }
    }
}
