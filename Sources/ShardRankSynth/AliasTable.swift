/// Walker's alias method (Vose's construction): O(1) draws from a fixed discrete distribution.
/// Memory: 12 bytes per outcome (10M outcomes: 120 MB).
struct AliasTable {
    private var probability: [Double]
    private var alias: [Int32]

    var count: Int { probability.count }

    /// `weights`: non-negative, finite, at least one positive; at most `Int32.max` entries.
    init(weights: [Double]) {
        let n = weights.count
        precondition(n > 0 && n <= Int(Int32.max))
        let total = weights.reduce(0, +)
        precondition(total > 0 && total.isFinite)
        var scaled = weights.map { $0 * Double(n) / total }
        var prob = [Double](repeating: 1, count: n)
        var alias = [Int32](repeating: 0, count: n)
        var small: [Int32] = [], large: [Int32] = []
        small.reserveCapacity(n); large.reserveCapacity(n)
        for i in 0..<n { if scaled[i] < 1 { small.append(Int32(i)) } else { large.append(Int32(i)) } }
        while let s = small.last, let l = large.last {
            small.removeLast()
            prob[Int(s)] = scaled[Int(s)]
            alias[Int(s)] = l
            scaled[Int(l)] = (scaled[Int(l)] + scaled[Int(s)]) - 1
            if scaled[Int(l)] < 1 { large.removeLast(); small.append(l) }
        }
        // Leftovers (rounding): probability 1, alias to themselves.
        for i in large { prob[Int(i)] = 1; alias[Int(i)] = i }
        for i in small { prob[Int(i)] = 1; alias[Int(i)] = i }
        self.probability = prob
        self.alias = alias
    }

    func draw(_ rng: inout SynthRandom) -> Int {
        let i = rng.below(probability.count)
        return rng.unit() < probability[i] ? i : Int(alias[i])
    }
}
