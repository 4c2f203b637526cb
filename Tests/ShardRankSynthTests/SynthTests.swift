import Foundation
import Testing
import ShardRankTables
import ShardRankKernels
@testable import ShardRankSynth

/// A small world: fast in a debug build, big enough for the statistics below.
private func smallParameters(seed: UInt64 = 7) -> SynthParameters {
    var p = SynthParameters()
    p.users = 300
    p.items = 2000
    p.dim = 16
    p.genres = 6
    p.countries = 4
    p.seed = seed
    p.heldout = 3
    p.interactionsPerUser = 20
    p.candidateDraws = 400
    return p
}

private func tempDir(_ tag: String) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("synth-\(tag)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

private func generated(_ p: SynthParameters, _ tag: String) throws -> String {
    let dir = try tempDir(tag)
    try Synth.generate(p, outputDirectory: dir)
    return dir
}

private func bytes(_ dir: String, _ name: String) throws -> Data {
    try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
}

/// A minimal `.npy` reader for the test: v1 header, `<f4` or `<i8`.
private struct Npy {
    var descr: String
    var shape: [Int]
    var payload: Data

    init(_ data: Data) throws {
        let d = [UInt8](data)
        try #require(d.count >= 10 && d[0..<6] == [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59] && d[6] == 1 && d[7] == 0)
        let len = Int(d[8]) | Int(d[9]) << 8
        #expect((10 + len) % 64 == 0, "data must start 64-byte aligned")
        let header = String(decoding: d[10..<(10 + len)], as: UTF8.self)
        #expect(header.hasSuffix("\n"))
        #expect(header.contains("'fortran_order': False"))
        descr = header.contains("'<f4'") ? "<f4" : header.contains("'<i8'") ? "<i8" : "?"
        let shapeText = header.split(separator: "(")[1].split(separator: ")")[0]
        shape = shapeText.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        payload = data.subdata(in: (10 + len)..<data.count)
    }

    var floats: [Float] { payload.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } }
    var int64s: [Int64] { payload.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) } }
}

private struct Interaction { var user: Int; var item: Int; var timestamp: Int64; var rating: Int }

private func csvRows(_ dir: String, _ name: String) throws -> (header: String, rows: [[Substring]]) {
    let text = String(decoding: try bytes(dir, name), as: UTF8.self)
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    #expect(lines.last == "", "\(name) must end with a newline")
    lines.removeLast()
    return (String(lines[0]), lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false) })
}

private func interactions(_ dir: String, _ name: String) throws -> [Interaction] {
    let (header, rows) = try csvRows(dir, name)
    #expect(header == "user_id,item_id,timestamp,rating")
    return try rows.map { r in
        try #require(r.count == 4)
        return Interaction(user: Int(r[0])!, item: Int(r[1])!, timestamp: Int64(r[2])!, rating: Int(r[3])!)
    }
}

@Suite("shardrank synth")
struct SynthTests {
    @Test func sameSeedSameBytesDifferentSeedDifferentBytes() throws {
        let p = smallParameters()
        let a = try generated(p, "a"), b = try generated(p, "b"), c = try generated(smallParameters(seed: 8), "c")
        defer { for d in [a, b, c] { try? FileManager.default.removeItem(atPath: d) } }
        for name in Synth.fileNames {
            let x = try bytes(a, name)
            #expect(!x.isEmpty, "\(name) is empty")
            #expect(x == (try bytes(b, name)), "\(name) differs between two runs with the same seed")
        }
        for name in ["items.npy", "users.npy", "items.csv", "users.csv", "interactions.csv", "heldout.csv", "world.json"] {
            #expect(try bytes(a, name) != bytes(c, name), "\(name) is the same for seeds 7 and 8")
        }
    }

    @Test func shapesAndValueRanges() throws {
        let p = smallParameters()
        let dir = try generated(p, "shapes")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let items = try Npy(bytes(dir, "items.npy")), itemIDs = try Npy(bytes(dir, "item_ids.npy"))
        let users = try Npy(bytes(dir, "users.npy")), userIDs = try Npy(bytes(dir, "user_ids.npy"))
        #expect(items.descr == "<f4" && items.shape == [p.items, p.dim])
        #expect(users.descr == "<f4" && users.shape == [p.users, p.dim])
        #expect(itemIDs.descr == "<i8" && itemIDs.shape == [p.items])
        #expect(userIDs.descr == "<i8" && userIDs.shape == [p.users])
        #expect(itemIDs.int64s == (1...Int64(p.items)).map { $0 })
        #expect(userIDs.int64s == (1...Int64(p.users)).map { $0 })
        let v = items.floats, x = users.floats
        #expect(v.count == p.items * p.dim && x.count == p.users * p.dim)
        #expect(v.allSatisfy { $0.isFinite && abs($0) < 100 } && x.allSatisfy { $0.isFinite && abs($0) < 100 })
        // Popularity coordinate: items −s·ln(rank + 1) (one item has rank 0), users exactly 1.
        let bias = (0..<p.items).map { v[$0 * p.dim + p.dim - 1] }
        #expect(bias.allSatisfy { $0 <= 0 && $0 >= Float(-p.popularityExponent * log(Double(p.items)) - 1e-3) })
        #expect(bias.filter { $0 == 0 }.count == 1)
        #expect((0..<p.users).allSatisfy { x[$0 * p.dim + p.dim - 1] == 1 })

        let genreNames = Set(Synth.genreNames(p.genres))
        let (ih, irows) = try csvRows(dir, "items.csv")
        #expect(ih == "item_id,genres,timestamp,title")
        #expect(irows.map { Int($0[0])! } == Array(1...p.items))
        for r in irows {
            #expect(r.count == 4)
            let gs = r[1].split(separator: "|").map(String.init)
            #expect(!gs.isEmpty && gs.count <= 3 && Set(gs).count == gs.count && gs.allSatisfy(genreNames.contains))
            let t = Int64(r[2])!
            #expect(t >= p.itemTimeStart && t < p.interactionTimeStart)
            #expect(!r[3].isEmpty)
        }
        let countries = Set(Synth.countryNames(p.countries))
        let (uh, urows) = try csvRows(dir, "users.csv")
        #expect(uh == "user_id,country")
        #expect(urows.map { Int($0[0])! } == Array(1...p.users))
        #expect(urows.allSatisfy { $0.count == 2 && countries.contains(String($0[1])) })

        let all = try interactions(dir, "interactions.csv") + interactions(dir, "heldout.csv")
        var perUser = [Int: [Int]]()
        for e in all {
            #expect((1...p.users).contains(e.user) && (1...p.items).contains(e.item) && (1...5).contains(e.rating))
            #expect(e.timestamp >= p.interactionTimeStart && e.timestamp < p.interactionTimeStart + 2 * p.interactionTimeSpan)
            perUser[e.user, default: []].append(e.item)
        }
        #expect(perUser.count == p.users, "every user has a history")
        #expect(perUser.values.allSatisfy { Set($0).count == $0.count }, "a history never repeats an item")
        let mean = Double(all.count) / Double(p.users)
        #expect(mean > 0.7 * Double(p.interactionsPerUser) && mean < 1.3 * Double(p.interactionsPerUser))
        #expect(Set(all.map(\.rating)).count >= 3, "ratings use the scale")

        let world = String(decoding: try bytes(dir, "world.json"), as: UTF8.self)
        let json = try JSONSerialization.jsonObject(with: Data(world.utf8)) as? [String: Any]
        #expect(json?["formatVersion"] as? Int == Synth.formatVersion)
        let params = json?["parameters"] as? [String: Any]
        #expect(params?["items"] as? Int == p.items && params?["seed"] as? Int == Int(p.seed))
        let counts = json?["counts"] as? [String: Any]
        #expect(counts?["heldout"] as? Int == p.users * p.heldout)
        #expect((counts?["interactions"] as? Int).map { $0 + p.users * p.heldout } == all.count)
    }

    @Test func heldoutIsTheLastHPerUserByTime() throws {
        let p = smallParameters()
        let dir = try generated(p, "heldout")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let train = try interactions(dir, "interactions.csv"), held = try interactions(dir, "heldout.csv")
        #expect(held.count == p.users * p.heldout)
        var lastTrain = [Int: Int64](), firstHeld = [Int: Int64](), heldCount = [Int: Int]()
        for e in train { lastTrain[e.user] = max(lastTrain[e.user] ?? .min, e.timestamp) }
        for e in held {
            firstHeld[e.user] = min(firstHeld[e.user] ?? .max, e.timestamp)
            heldCount[e.user, default: 0] += 1
        }
        #expect(heldCount.count == p.users && heldCount.values.allSatisfy { $0 == p.heldout })
        for u in 1...p.users {
            let lt = try #require(lastTrain[u], "user \(u) has no training interactions")
            #expect(lt < firstHeld[u]!, "user \(u): a training interaction is not before every held-out one")
        }
        // Each file is in time order per user (users ascending).
        for rows in [train, held] {
            for (a, b) in zip(rows, rows.dropFirst()) {
                #expect(a.user < b.user || (a.user == b.user && a.timestamp < b.timestamp))
            }
        }
    }

    @Test func popularityIsHeavyTailed() throws {
        var p = smallParameters()
        p.users = 600
        let dir = try generated(p, "popularity")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let all = try interactions(dir, "interactions.csv") + interactions(dir, "heldout.csv")
        var counts = [Int](repeating: 0, count: p.items + 1)
        for e in all { counts[e.item] += 1 }
        let sorted = counts.dropFirst().sorted(by: >)
        let top1 = Double(sorted.prefix(p.items / 100).reduce(0, +)) / Double(all.count)
        // Uniform popularity would give the top 1% about 1–2% of the interactions.
        #expect(top1 > 0.08, "top 1% of items hold \(top1) of the interactions")
        #expect(Double(sorted[0]) > 10 * Double(sorted[p.items / 2]), "max \(sorted[0]) vs median \(sorted[p.items / 2])")
    }

    /// The written factors are the model: held-out items score far above random items under x_u · v_i.
    @Test func heldoutItemsRankHighUnderTheWrittenFactors() throws {
        let p = smallParameters()
        let dir = try generated(p, "model")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let v = try Npy(bytes(dir, "items.npy")).floats, x = try Npy(bytes(dir, "users.npy")).floats
        let held = try interactions(dir, "heldout.csv")
        var percentileSum = 0.0
        v.withUnsafeBufferPointer { v in
            x.withUnsafeBufferPointer { x in
                for e in held {
                    let u = e.user - 1
                    var scores = [Float](repeating: 0, count: p.items)
                    for i in 0..<p.items {
                        var s: Float = 0
                        for t in 0..<p.dim { s += x[u * p.dim + t] * v[i * p.dim + t] }
                        scores[i] = s
                    }
                    let s = scores[e.item - 1]
                    percentileSum += Double(scores.filter { $0 > s }.count) / Double(p.items)
                }
            }
        }
        let meanPercentile = percentileSum / Double(held.count)
        #expect(meanPercentile < 0.1, "held-out items sit at mean rank percentile \(meanPercentile) (random: 0.5)")
    }

    /// The IVF index's probe bonus on the data it exists for: in a synth world a user's best
    /// items are the popular ones (popularity coordinate near 0 where most items sit near
    /// −0.8·ln(rank)), spread over every genre and far from their lists' centroids, so probing
    /// lists by centroid score alone misses them at a small nprobe. The weight the builder
    /// chooses on some users must be above 0 and raise recall@10 on other users.
    @Test func annProbeBonusFindsThePopularItemsCentroidScoresMiss() throws {
        var p = smallParameters()
        p.items = 20000
        p.dim = 64
        p.genres = 24
        let dir = try generated(p, "ann")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let x = try Npy(bytes(dir, "items.npy")).floats, users = try Npy(bytes(dir, "users.npy")).floats
        let n = p.items, d = p.dim
        let ids = (0..<UInt64(n)).map { $0 }
        let knob = ANNSearchParameters(nprobe: 1, rerank: 100)
        try x.withUnsafeBufferPointer { xp in try ids.withUnsafeBufferPointer { ip in try users.withUnsafeBufferPointer { up in
            let rows = RowMatrix(f32: xp.baseAddress!, count: n, dimension: d)
            let data = try IVFPQBuilder.build(rows: rows, options: IVFPQBuildOptions(lists: 64), pool: WorkerPool(threadCount: 2))
            func recall(from first: Int, count: Int) -> Double {
                var hits = 0
                let exact = Search.topK(queries: up.baseAddress! + first * d, queryCount: count, rows: rows, ids: ip.baseAddress!, k: 10)
                for t in 0..<count {
                    let want = Set(exact[t].map(\.id))
                    hits += data.index.search(query: up.baseAddress! + (first + t) * d, k: 10, parameters: knob, rows: rows,
                                              ids: ip.baseAddress!).items.filter { want.contains($0.id) }.count
                }
                return Double(hits) / Double(10 * count)
            }
            data.setProbeBonusWeight(0)
            let plain = recall(from: 100, count: 150)
            let chosen = IVFPQBuilder.chooseProbeBonusWeight(data, rows: rows, ids: ip.baseAddress!, queries: up.baseAddress!,
                                                             count: 100, parameters: knob)
            #expect(chosen.weight > 0, "chosen weight \(chosen.weight)")
            let boosted = recall(from: 100, count: 150)
            #expect(boosted >= plain + 0.05, "recall@10 at nprobe 2: \(plain) by centroid scores, \(boosted) with weight \(chosen.weight)")
            withExtendedLifetime(data) {}
        } } }
    }

    @Test func outputBuildsAsATableSet() throws {
        let p = smallParameters()
        let dir = try generated(p, "build")
        let root = try tempDir("root")
        defer { for d in [dir, root] { try? FileManager.default.removeItem(atPath: d) } }
        let version = try TableSetBuilder.build(inputDirectory: dir, root: root, options: BuildOptions(shardCount: 2))
        #expect(version == 1)
        let manifest = try TableSetCatalog(root: root).manifest(of: version)
        #expect(manifest.genres == Synth.genreNames(p.genres).sorted())
        #expect(manifest.countries == Synth.countryNames(p.countries).sorted())
        let rows = Dictionary(uniqueKeysWithValues: manifest.tables.map { ($0.name, $0.rows) })
        #expect(rows["items"] == UInt64(p.items) && rows["users"] == UInt64(p.users))
        #expect(rows["profiles"] == UInt64(p.users))
        let set = try TableSetLoader.load(root: root, shard: 0, of: 2)
        #expect(set.embedding("items")?.dim == p.dim)
    }

    static let badParameters: [(String, @Sendable (inout SynthParameters) -> Void)] = [
        ("users 0", { $0.users = 0 }), ("items 1", { $0.items = 1 }), ("dim 1", { $0.dim = 1 }),
        ("genres 0", { $0.genres = 0 }), ("genres 65", { $0.genres = 65 }), ("countries 0", { $0.countries = 0 }),
        ("heldout -1", { $0.heldout = -1 }), ("heldout ≥ K", { $0.heldout = 20; $0.interactionsPerUser = 20 }),
        ("K 0", { $0.interactionsPerUser = 0 }), ("K > items", { $0.items = 10; $0.interactionsPerUser = 11 }),
    ]

    @Test(arguments: 0..<SynthTests.badParameters.count)
    func badArgumentsAreRejectedBeforeWriting(_ index: Int) throws {
        var p = smallParameters()
        SynthTests.badParameters[index].1(&p)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("synth-bad-\(UUID().uuidString)").path
        let error = #expect(throws: SynthError.self, "\(SynthTests.badParameters[index].0)") {
            try Synth.generate(p, outputDirectory: dir)
        }
        #expect(error?.code == .invalidArgument)
        #expect(!FileManager.default.fileExists(atPath: dir), "nothing is created for bad arguments")
    }

    @Test func unwritableDirectoryIsAnIOError() throws {
        let dir = try tempDir("file")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/plain-file"
        #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        for out in [file, file + "/sub"] {
            let error = #expect(throws: SynthError.self) { try Synth.generate(smallParameters(), outputDirectory: out) }
            #expect(error?.code == .io)
            #expect(error?.description.contains(file) == true)
        }
    }

    @Test func npyHeaderIsAlignedVersion1() {
        for shape in [[0], [1], [7, 3], [123_456_789, 4096]] {
            let h = SynthFileWriter.npyHeader(descr: "<f4", shape: shape)
            #expect(h.count % 64 == 0 && h[6] == 1 && h.last == 0x0A)
            #expect(Int(h[8]) | Int(h[9]) << 8 == h.count - 10)
        }
    }

    @Test func randomStreamsAreReproducibleAndUniform() {
        var a = SynthRandom(seed: 1, stream: .items), b = SynthRandom(seed: 1, stream: .items)
        var c = SynthRandom(seed: 1, stream: .users)
        let xs = (0..<1000).map { _ in a.next() }
        #expect(xs == (0..<1000).map { _ in b.next() })
        #expect(xs != (0..<1000).map { _ in c.next() })
        var hist = [Int](repeating: 0, count: 10)
        var mean = 0.0, sq = 0.0
        for _ in 0..<100_000 {
            hist[a.below(10)] += 1
            let g = a.gaussian()
            mean += g; sq += g * g
        }
        #expect(hist.allSatisfy { abs($0 - 10_000) < 500 })
        #expect(abs(mean / 100_000) < 0.02 && abs(sq / 100_000 - 1) < 0.03)
        let alias = AliasTable(weights: [1, 0, 3])
        var counts = [0, 0, 0]
        for _ in 0..<40_000 { counts[alias.draw(&a)] += 1 }
        #expect(counts[1] == 0 && abs(counts[2] - 30_000) < 600)
    }
}

/// The synthesizer keeps its own SplitMix64 (ShardRankSynth depends on nothing), which must stay
/// the kernels' generator bit for bit: worlds are reproducible from their seed.
@Test func synthSplitMix64IsTheKernelsGenerator() {
    for seed: UInt64 in [0, 1, 42, .max] {
        var a = ShardRankSynth.SplitMix64(state: seed)
        var b = ShardRankKernels.SplitMix64(seed: seed)
        for _ in 0 ..< 1000 { #expect(a.next() == b.next()) }
    }
}
