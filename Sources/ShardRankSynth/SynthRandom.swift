#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// The seeded random source of the synthetic world: xoshiro256** (Blackman & Vigna), its state
/// filled by SplitMix64. Never the system RNG, so the same seed gives the same world on every run.
///
/// Each part of the world draws from its own stream, `SynthRandom(seed:stream:index:)`, so that the
/// items do not change when only the number of users changes, and user `u`'s history depends only
/// on the seed, the item side and `u`.
struct SynthRandom: RandomNumberGenerator {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64
    private var spareGaussian: Double?

    /// Named streams; the raw values are part of the format (changing one changes every world).
    enum Stream: UInt64 {
        case genres = 1, countries = 2, items = 3, popularity = 4, users = 5, titles = 6
    }

    init(seed: UInt64, stream: Stream, index: UInt64 = 0) {
        var sm = SplitMix64(state: SplitMix64.mix(seed ^ SplitMix64.mix(stream.rawValue &* 0x9E37_79B9_7F4A_7C15 ^ SplitMix64.mix(index))))
        s0 = sm.next(); s1 = sm.next(); s2 = sm.next(); s3 = sm.next()
        if s0 | s1 | s2 | s3 == 0 { s0 = 1 }  // the all-zero state is a fixed point
    }

    mutating func next() -> UInt64 {
        let result = rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = rotl(s3, 45)
        return result
    }

    @inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in [0, 1), 53 random bits.
    mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Uniform in (0, 1): safe under `log`.
    mutating func openUnit() -> Double { (Double(next() >> 11) + 0.5) * 0x1.0p-53 }

    /// Uniform integer in `0..<n` (Lemire's unbiased multiply-shift). `n` > 0.
    mutating func below(_ n: Int) -> Int {
        precondition(n > 0)
        let bound = UInt64(n)
        var m = next().multipliedFullWidth(by: bound)
        if m.low < bound {
            let threshold = (0 &- bound) % bound
            while m.low < threshold { m = next().multipliedFullWidth(by: bound) }
        }
        return Int(m.high)
    }

    /// Standard normal (Box–Muller; the second value of each pair is kept for the next call).
    mutating func gaussian() -> Double {
        if let g = spareGaussian { spareGaussian = nil; return g }
        let r = (-2 * log(openUnit())).squareRoot()
        let theta = 2 * Double.pi * unit()
        spareGaussian = r * sin(theta)
        return r * cos(theta)
    }

    /// Standard Gumbel: −log(−log U).
    mutating func gumbel() -> Double { -log(-log(openUnit())) }

    /// Exponential with mean 1.
    mutating func exponential() -> Double { -log(openUnit()) }
}

/// SplitMix64 (Steele, Lea & Flood 2014): seeds xoshiro and mixes stream indices. The same
/// generator as `ShardRankKernels.SplitMix64`, kept here because this module depends on nothing
/// (a test checks the two sequences are equal).
struct SplitMix64 {
    var state: UInt64

    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }
}
