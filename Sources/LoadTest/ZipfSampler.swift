import Foundation

/// Draws ranks `1...count` with P(k) ∝ 1 / k^exponent (exponent 0 is uniform), in O(1) time and
/// memory per draw: rejection-inversion sampling (Hörmann & Derflinger 1996, the algorithm of
/// Apache Commons RNG's `RejectionInversionZipfSampler`). Rank 1 is the most frequent.
public struct ZipfSampler: Sendable {
    public let count: Int
    public let exponent: Double
    private let hIntegralX1: Double
    private let hIntegralN: Double
    private let s: Double

    /// - Precondition: `count ≥ 1`, `exponent ≥ 0` and finite (validated by the caller).
    public init(count: Int, exponent: Double) {
        precondition(count >= 1 && exponent >= 0 && exponent.isFinite, "ZipfSampler(count: \(count), exponent: \(exponent))")
        self.count = count
        self.exponent = exponent
        if exponent == 0 {
            hIntegralX1 = 0; hIntegralN = 0; s = 0
        } else {
            hIntegralX1 = Self.hIntegral(1.5, exponent) - 1
            hIntegralN = Self.hIntegral(Double(count) + 0.5, exponent)
            s = 2 - Self.hIntegralInverse(Self.hIntegral(2.5, exponent) - Self.h(2, exponent), exponent)
        }
    }

    /// A rank in `1...count`.
    public func sample<G: RandomNumberGenerator>(using rng: inout G) -> Int {
        if exponent == 0 { return Int.random(in: 1 ... count, using: &rng) }
        while true {
            let unit = Double(rng.next() >> 11) * 0x1.0p-53
            let u = hIntegralN + unit * (hIntegralX1 - hIntegralN)
            let x = Self.hIntegralInverse(u, exponent)
            var k = Int(x + 0.5)
            if k < 1 { k = 1 } else if k > count { k = count }
            if Double(k) - x <= s || u >= Self.hIntegral(Double(k) + 0.5, exponent) - Self.h(Double(k), exponent) {
                return k
            }
        }
    }

    /// Exact P(rank = k) (for tests and reports): 1 / (k^s · H(count, s)). O(count).
    public static func probabilities(count: Int, exponent: Double) -> [Double] {
        var p = (1 ... count).map { 1 / pow(Double($0), exponent) }
        let total = p.reduce(0, +)
        for i in p.indices { p[i] /= total }
        return p
    }

    private static func h(_ x: Double, _ e: Double) -> Double { exp(-e * log(x)) }

    private static func hIntegral(_ x: Double, _ e: Double) -> Double {
        let logX = log(x)
        return helper2((1 - e) * logX) * logX
    }

    private static func hIntegralInverse(_ x: Double, _ e: Double) -> Double {
        var t = x * (1 - e)
        if t < -1 { t = -1 }
        return exp(helper1(t) * x)
    }

    /// log1p(x) / x, accurate near 0.
    private static func helper1(_ x: Double) -> Double {
        abs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x))
    }

    /// expm1(x) / x, accurate near 0.
    private static func helper2(_ x: Double) -> Double {
        abs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x * (1.0 / 3) * (1 + 0.25 * x))
    }
}
