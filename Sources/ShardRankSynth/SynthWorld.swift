#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// The model state of one world and the writer of its files (see `SynthParameters` for the model).
/// Item side in memory (factors, genres, popularity, alias table); user side streamed.
struct SynthWorld {
    let p: SynthParameters
    /// Latent dimensions (D − 1); coordinate D − 1 of every row is the popularity coordinate.
    let latent: Int
    let genreNames: [String]
    let countryNames: [String]
    /// Genre centroids, `genres × latent`, row-major.
    private(set) var centroids: [Double] = []
    /// Share of items whose primary genre is g (∝ (g+1)^−½).
    private(set) var genreWeights: [Double] = []
    /// Share of users in country c (∝ (c+1)^−0.7).
    private(set) var countryWeights: [Double] = []
    /// Per country, the distribution of preferred genres, `countries × genres`.
    private(set) var countryGenre: [Double] = []

    init(_ p: SynthParameters) {
        self.p = p
        self.latent = p.dim - 1
        self.genreNames = Synth.genreNames(p.genres)
        self.countryNames = Synth.countryNames(p.countries)
        var rng = SynthRandom(seed: p.seed, stream: .genres)
        let sd = 1 / Double(max(latent, 1)).squareRoot()
        centroids = (0..<(p.genres * latent)).map { _ in rng.gaussian() * sd }
        genreWeights = normalized((0..<p.genres).map { 1 / Double($0 + 1).squareRoot() })
        var crng = SynthRandom(seed: p.seed, stream: .countries)
        countryWeights = normalized((0..<p.countries).map { pow(Double($0 + 1), -0.7) })
        for _ in 0..<p.countries {
            countryGenre += normalized(genreWeights.map { $0 * exp(crng.gaussian()) })
        }
    }

    /// Writes every file of `Synth.fileNames` into `dir`.
    mutating func write(to dir: String, progress: ((SynthProgress) -> Void)?) throws -> SynthSummary {
        let m = p.items, d = p.dim
        func path(_ name: String) -> String { dir + "/" + name }

        // ---- Items: factors, genres, popularity -------------------------------------------------
        var factors = [Float](repeating: 0, count: m * d)
        var genreMask = [UInt64](repeating: 0, count: m)
        var primary = [UInt8](repeating: 0, count: m)
        var rank = [Int32](unsafeUninitializedCapacity: m) { b, n in
            for i in 0..<m { b[i] = Int32(truncatingIfNeeded: i) }
            n = m
        }
        // Zipf popularity over a random permutation (Fisher–Yates): rank[i] is item i's rank.
        var prng = SynthRandom(seed: p.seed, stream: .popularity)
        if m > 1 { for i in stride(from: m - 1, to: 0, by: -1) { rank.swapAt(i, prng.below(i + 1)) } }
        var irng = SynthRandom(seed: p.seed, stream: .items)
        let noise = p.factorNoise / Double(max(latent, 1)).squareRoot()
        var v = [Double](repeating: 0, count: latent)
        let every = max(1, m / 200)
        centroids.withUnsafeBufferPointer { mu in
            factors.withUnsafeMutableBufferPointer { f in
                for i in 0..<m {
                    let g = draw(genreWeights, &irng)
                    var mask = UInt64(1) << UInt64(g)
                    for k in 0..<latent { v[k] = mu[g * latent + k] }
                    // Secondary genres: one with probability 0.35, a second with 0.1.
                    for chance in [0.35, 0.1] where p.genres > 1 && irng.unit() < chance {
                        let h = draw(genreWeights, &irng)
                        if mask & (UInt64(1) << UInt64(h)) != 0 { continue }
                        mask |= UInt64(1) << UInt64(h)
                        for k in 0..<latent { v[k] += 0.5 * mu[h * latent + k] }
                    }
                    let row = i * d
                    for k in 0..<latent { f[row + k] = Float(p.itemScale * (v[k] + noise * irng.gaussian())) }
                    f[row + latent] = Float(-p.popularityExponent * log(Double(rank[i]) + 1))
                    genreMask[i] = mask
                    primary[i] = UInt8(g)
                    if i % every == 0 { progress?(SynthProgress(stage: "item factors", done: i, total: m)) }
                }
            }
        }
        progress?(SynthProgress(stage: "item factors", done: m, total: m))

        try writeMatrix(factors, rows: m, path: path("items.npy"), stage: "write items.npy", progress: progress)
        try writeIDs(count: m, path: path("item_ids.npy"))
        try writeItemsCSV(genreMask: genreMask, primary: primary, path: path("items.csv"), progress: progress)

        // Proposal for the candidate sets: q(i) ∝ exp(b_i) = (rank_i + 1)^−s.
        progress?(SynthProgress(stage: "popularity alias table", done: 0, total: 1))
        let alias = AliasTable(weights: (0..<m).map { exp(Double(factors[$0 * d + latent])) })
        rank = []
        progress?(SynthProgress(stage: "popularity alias table", done: 1, total: 1))

        // ---- Users and their histories (streamed) ------------------------------------------------
        let (interactions, heldout) = try writeUsers(factors: factors, alias: alias, dir: dir, progress: progress)
        try writeWorldJSON(path: path("world.json"), interactions: interactions, heldout: heldout)
        return SynthSummary(files: Synth.fileNames, interactions: interactions, heldout: heldout)
    }

    // MARK: - Users

    private func writeUsers(factors: [Float], alias: AliasTable, dir: String,
                            progress: ((SynthProgress) -> Void)?) throws -> (Int, Int) {
        let n = p.users, m = p.items, d = p.dim, latent = self.latent
        let usersNpy = try SynthFileWriter(path: dir + "/users.npy")
        try usersNpy.write(bytes: SynthFileWriter.npyHeader(descr: "<f4", shape: [n, d]))
        let usersCSV = try SynthFileWriter(path: dir + "/users.csv")
        try usersCSV.write("user_id,country\n")
        let train = try SynthFileWriter(path: dir + "/interactions.csv")
        let held = try SynthFileWriter(path: dir + "/heldout.csv")
        for w in [train, held] { try w.write("user_id,item_id,timestamp,rating\n") }

        var stamp = [Int32](repeating: -1, count: m)   // user index that last saw item i
        var slot = [Int32](repeating: 0, count: m)     // its candidate position
        var candidates: [Int] = [], multiplicity: [Int32] = []
        var scored: [(key: Double, affinity: Double, item: Int)] = []
        var x = [Float](repeating: 0, count: d)
        var interactions = 0, heldoutCount = 0
        let noise = p.factorNoise / Double(max(latent, 1)).squareRoot()
        let every = max(1, n / 200)

        try factors.withUnsafeBufferPointer { f in
            for u in 0..<n {
                var rng = SynthRandom(seed: p.seed, stream: .users, index: UInt64(u))
                // Country, preferred genres (1–3, without replacement from the country's distribution).
                let c = draw(countryWeights, &rng)
                var genreDist = Array(countryGenre[(c * p.genres)..<((c + 1) * p.genres)])
                let prefCount = min(1 + rng.below(3), p.genres)
                var mix = [Double](repeating: 0, count: latent)
                var weights: [Double] = [], chosen: [Int] = []
                for _ in 0..<prefCount {
                    let g = draw(genreDist, &rng)
                    genreDist[g] = 0
                    chosen.append(g)
                    weights.append(rng.exponential())
                }
                let wsum = weights.reduce(0, +)
                for (g, w) in zip(chosen, weights) {
                    for k in 0..<latent { mix[k] += w / wsum * centroids[g * latent + k] }
                }
                for k in 0..<latent { x[k] = Float(p.userScale * (mix[k] + noise * rng.gaussian())) }
                x[latent] = 1
                try x.withUnsafeBytes { try usersNpy.write($0) }
                try usersCSV.decimal(u + 1); try usersCSV.byte(0x2C); try usersCSV.write(countryNames[c]); try usersCSV.byte(0x0A)

                // History length K_u: log-normal around the mean, at least H + 1, at most M.
                let mean = Double(p.interactionsPerUser)
                var k = Int((mean * exp(0.5 * rng.gaussian() - 0.125)).rounded())
                k = min(max(k, p.heldout + 1, 1), m, 20 * p.interactionsPerUser)

                // Candidates: draws from the popularity proposal, deduplicated with multiplicities.
                candidates.removeAll(keepingCapacity: true)
                multiplicity.removeAll(keepingCapacity: true)
                let u32 = Int32(truncatingIfNeeded: u)
                func add(_ i: Int) {
                    if stamp[i] == u32 { multiplicity[Int(slot[i])] += 1; return }
                    stamp[i] = u32
                    slot[i] = Int32(truncatingIfNeeded: candidates.count)
                    candidates.append(i)
                    multiplicity.append(1)
                }
                for _ in 0..<max(p.candidateDraws, 20 * k) { add(alias.draw(&rng)) }
                if candidates.count < k {  // tiny or extremely skewed catalogues: fill in item order
                    var i = rng.below(m)
                    while candidates.count < k { if stamp[i] != u32 { add(i) }; i = (i + 1) % m }
                }
                // Sampling-importance-resampling: target ∝ exp(x·v), proposal ∝ exp(b), so the weight
                // of a candidate is multiplicity · exp(x'·v') (latent part only); Gumbel-top-k draws
                // k distinct items without replacement in proportion to it.
                scored.removeAll(keepingCapacity: true)
                for (j, i) in candidates.enumerated() {
                    var dot: Float = 0
                    let row = i * d
                    for t in 0..<latent { dot += x[t] * f[row + t] }
                    let a = Double(dot)
                    scored.append((a + log(Double(multiplicity[j])) + rng.gumbel(), a, i))
                }
                scored.sort { $0.key != $1.key ? $0.key > $1.key : $0.item < $1.item }
                var history = Array(scored.prefix(k))
                // Order in time: a random permutation (the draw order would put the favourites first).
                if history.count > 1 {
                    for t in stride(from: history.count - 1, to: 0, by: -1) { history.swapAt(t, rng.below(t + 1)) }
                }
                let half = p.interactionTimeSpan / 2
                var ts = p.interactionTimeStart + Int64(rng.below(Int(max(half, 1))))
                let meanGap = Double(max(half, 1)) / Double(k)
                for (t, h) in history.enumerated() {
                    ts += 1 + Int64(meanGap * rng.exponential())
                    let rating = min(5, max(1, Int((1 + 4 / (1 + exp(-(h.affinity - 2 + 0.5 * rng.gaussian())))).rounded())))
                    let w = t < k - p.heldout ? train : held
                    try w.decimal(u + 1); try w.byte(0x2C)
                    try w.decimal(h.item + 1); try w.byte(0x2C)
                    try w.decimal(ts); try w.byte(0x2C)
                    try w.decimal(rating); try w.byte(0x0A)
                }
                interactions += k - p.heldout
                heldoutCount += p.heldout
                if u % every == 0 { progress?(SynthProgress(stage: "users and interactions", done: u, total: n)) }
            }
        }
        progress?(SynthProgress(stage: "users and interactions", done: n, total: n))
        for w in [usersNpy, usersCSV, train, held] { try w.close() }
        try writeIDs(count: n, path: dir + "/user_ids.npy")
        return (interactions, heldoutCount)
    }

    // MARK: - Files

    private func writeMatrix(_ values: [Float], rows: Int, path: String, stage: String,
                             progress: ((SynthProgress) -> Void)?) throws {
        let w = try SynthFileWriter(path: path)
        try w.write(bytes: SynthFileWriter.npyHeader(descr: "<f4", shape: [rows, p.dim]))
        let chunkRows = max(1, (4 << 20) / (4 * p.dim))
        try values.withUnsafeBytes { all in
            var r = 0
            while r < rows {
                let end = min(rows, r + chunkRows)
                try w.write(UnsafeRawBufferPointer(rebasing: all[(r * p.dim * 4)..<(end * p.dim * 4)]))
                r = end
                progress?(SynthProgress(stage: stage, done: r, total: rows))
            }
        }
        try w.close()
    }

    /// `<i8` ids 1...count (row r has id r + 1).
    private func writeIDs(count: Int, path: String) throws {
        let w = try SynthFileWriter(path: path)
        try w.write(bytes: SynthFileWriter.npyHeader(descr: "<i8", shape: [count]))
        var chunk = [Int64](repeating: 0, count: 1 << 16)
        var next = 0
        while next < count {
            let n = min(chunk.count, count - next)
            for j in 0..<n { chunk[j] = Int64(next + j + 1) }
            try chunk.withUnsafeBytes { try w.write(UnsafeRawBufferPointer(rebasing: $0[0..<(n * 8)])) }
            next += n
        }
        try w.close()
    }

    private func writeItemsCSV(genreMask: [UInt64], primary: [UInt8], path: String,
                               progress: ((SynthProgress) -> Void)?) throws {
        let adjectives = ["Silent", "Crimson", "Hidden", "Last", "Golden", "Broken", "Distant", "Electric", "Frozen", "Wild",
                          "Secret", "Burning", "Lonely", "Iron", "Midnight", "Paper", "Velvet", "Hollow", "Bright", "Northern"]
        let nouns = ["River", "Empire", "Garden", "Signal", "Harbor", "Kingdom", "Mirror", "Voyage", "Machine", "Orchard",
                     "Frontier", "Lantern", "Storm", "Circus", "Archive", "Comet", "Island", "Promise", "Tower", "Echo"]
        let names = genreNames.map { Array($0.utf8) }
        let w = try SynthFileWriter(path: path)
        try w.write("item_id,genres,timestamp,title\n")
        var rng = SynthRandom(seed: p.seed, stream: .titles)
        let span = Int(p.interactionTimeStart - p.itemTimeStart)
        let every = max(1, p.items / 200)
        for i in 0..<p.items {
            try w.decimal(i + 1); try w.byte(0x2C)
            // Primary genre first, then the secondary ones in genre order.
            let g = Int(primary[i])
            try names[g].withUnsafeBytes { try w.write($0) }
            var rest = genreMask[i] & ~(UInt64(1) << UInt64(g))
            while rest != 0 {
                let h = rest.trailingZeroBitCount
                rest &= rest - 1
                try w.byte(0x7C)
                try names[h].withUnsafeBytes { try w.write($0) }
            }
            try w.byte(0x2C)
            try w.decimal(p.itemTimeStart + Int64(rng.below(span)))
            try w.byte(0x2C)
            try w.write(adjectives[rng.below(adjectives.count)]); try w.byte(0x20)
            try w.write(nouns[rng.below(nouns.count)]); try w.byte(0x20)
            try w.decimal(i + 1); try w.byte(0x0A)
            if i % every == 0 { progress?(SynthProgress(stage: "write items.csv", done: i, total: p.items)) }
        }
        progress?(SynthProgress(stage: "write items.csv", done: p.items, total: p.items))
        try w.close()
    }

    private func writeWorldJSON(path: String, interactions: Int, heldout: Int) throws {
        func list(_ xs: [String]) -> String { "[" + xs.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }
        let json = """
        {
          "formatVersion": \(Synth.formatVersion),
          "generator": "shardrank synth",
          "model": "latent-factor: P(item i | user u) ∝ exp(users[u] · items[i]); last coordinate = popularity bias (items) and 1 (users)",
          "parameters": {
            "users": \(p.users),
            "items": \(p.items),
            "dim": \(p.dim),
            "genres": \(p.genres),
            "countries": \(p.countries),
            "seed": \(p.seed),
            "heldout": \(p.heldout),
            "interactionsPerUser": \(p.interactionsPerUser),
            "popularityExponent": \(p.popularityExponent),
            "userScale": \(p.userScale),
            "itemScale": \(p.itemScale),
            "factorNoise": \(p.factorNoise),
            "candidateDraws": \(p.candidateDraws),
            "itemTimeStart": \(p.itemTimeStart),
            "interactionTimeStart": \(p.interactionTimeStart),
            "interactionTimeSpan": \(p.interactionTimeSpan)
          },
          "genreNames": \(list(genreNames)),
          "countryNames": \(list(countryNames)),
          "ids": "items 1...\(p.items), users 1...\(p.users) (row r of items.npy / users.npy has id r + 1)",
          "files": \(list(Synth.fileNames)),
          "counts": { "interactions": \(interactions), "heldout": \(heldout) }
        }

        """
        let w = try SynthFileWriter(path: path)
        try w.write(json)
        try w.close()
    }
}

// MARK: - Helpers

private func normalized(_ xs: [Double]) -> [Double] {
    let s = xs.reduce(0, +)
    return xs.map { $0 / s }
}

/// A draw from a small discrete distribution `weights` (summing to ~1) by linear CDF search;
/// zero-weight outcomes are never returned.
private func draw(_ weights: [Double], _ rng: inout SynthRandom) -> Int {
    let total = weights.reduce(0, +)
    var r = rng.unit() * total
    var last = 0
    for (i, w) in weights.enumerated() where w > 0 {
        last = i
        if r < w { return i }
        r -= w
    }
    return last
}

extension SynthFileWriter {
    func write(bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }
}
