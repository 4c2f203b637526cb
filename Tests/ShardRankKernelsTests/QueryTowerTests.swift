import Testing
import Foundation
import ShardRankKernels

/// The query tower's forward pass against values worked out by hand and against an independent
/// double-precision reference, and its loader's errors (each naming the tensor or the key).
@Suite struct QueryTowerTests {
    typealias Tensors = [(name: String, shape: [Int], values: [Float])]

    /// A tower small enough to compute by hand: dim 1, genre_dim 1, country_dim 1, hidden 2
    /// (input 4), decay 1/2. Genre "A" embeds to 1, an unknown genre to 4; country "DE" to 4,
    /// an unknown one to −8. h = relu([Σx, −x0 + 1/2]); out = h0 + 2·h1 + 1/4.
    static func handTower(residual: Bool, recent: Int = 3) -> (QueryTowerConfig, Tensors) {
        let config = QueryTowerConfig(dim: 1, recent: recent, recencyDecay: 0.5, residual: residual, genreDim: 1, countryDim: 1, hidden: 2,
                                      genres: ["A"], countries: ["DE"])
        let tensors: Tensors = [
            ("genre_embedding", [2, 1], [1, 4]),
            ("country_embedding", [2, 1], [4, -8]),
            ("layer0.weight", [2, 4], [1, 1, 1, 1, -1, 0, 0, 0]),
            ("layer0.bias", [2], [0, 0.5]),
            ("layer1.weight", [1, 2], [1, 2]),
            ("layer1.bias", [1], [0.25]),
        ]
        return (config, tensors)
    }

    static let handItems: [UInt64: [Float]] = [7: [3], 8: [6], 9: [100]]

    static func tower(_ c: QueryTowerConfig, _ t: Tensors) throws -> QueryTower {
        try QueryTower(weights: SafeTensors.serialize(t), config: Array(JSONEncoder().encode(c)))
    }

    @Test func theForwardPassIsTheOneWorkedOutByHand() throws {
        for residual in [true, false] {
            let (config, tensors) = Self.handTower(residual: residual)
            let t = try Self.tower(config, tensors)
            func vu(_ recent: [UInt64], _ genres: [String], _ country: String) -> Float {
                t.userVector(recent: recent, itemVector: { Self.handItems[$0] }, genres: genres, country: country)[0]
            }
            // Items 7, 8 (99 unknown: skipped): mean 4.5, recency (3 + 6/2) / 1.5 = 4. Genres
            // Z (unknown), A, A: (3·4 + 2·1 + 1·1) / 6 = 2.5. Country FR unknown: −8.
            // x = [4.5, 4, 2.5, −8]: h = [3, 0]; out = 3.25 (+ 4 with the residual).
            #expect(vu([7, 99, 8], ["Z", "A", "A"], "FR") == (residual ? 7.25 : 3.25))
            // No history, no genres (the unknown row alone), no country: x = [0, 0, 4, −8]:
            // h = [0, 0.5]; out = 1.25 either way (the recency mean is 0).
            #expect(vu([], [], "") == 1.25)
            #expect(vu([99, 98], [], "") == 1.25, "only unknown items: the same as none")
            // A known genre and country: x = [0, 0, 1, 4]: h = [5, 0.5]; out = 6.25.
            #expect(vu([], ["A"], "DE") == 6.25)
            // Only the first 3 genres count: a fourth changes nothing.
            #expect(vu([7, 99, 8], ["Z", "A", "A", "Z"], "FR") == vu([7, 99, 8], ["Z", "A", "A"], "FR"))
        }
        // Unknown ids are skipped first, then R taken (the trainer's rule): with R = 2,
        // [99, 7, 8, 9] reads 7 and 8 — mean 4.5, recency (3 + 6/2) / 1.5 = 4: x = [4.5, 4, 1, 4],
        // h = [13.5, 0], out = 13.75 + 4.
        let (config, tensors) = Self.handTower(residual: true, recent: 2)
        let t = try Self.tower(config, tensors)
        #expect(t.userVector(recent: [99, 7, 8, 9], itemVector: { Self.handItems[$0] }, genres: ["A"], country: "DE") == [17.75])
        // The standalone function (config, tensors, lookup, inputs) is the same pass.
        let st = try SafeTensors(bytes: SafeTensors.serialize(tensors))
        #expect(try QueryTower.userVector(config: config, tensors: st, itemVector: { Self.handItems[$0] }, recent: [99, 7, 8, 9],
                                          genres: ["A"], country: "DE") == [17.75])
    }

    /// A random tower of awkward widths (not multiples of the SIMD width) against a double-precision
    /// reference written from the documented formula.
    @Test func aLargerTowerMatchesAnIndependentReference() throws {
        var rng = SplitMix64(seed: 11)
        let d = 9, gd = 3, cd = 2, hidden = 13, recent = 5
        let genres = ["Action", "Comedy", "Drama", "Horror"], countries = ["DE", "FR", "US"]
        let config = QueryTowerConfig(dim: d, recent: recent, recencyDecay: 0.7, residual: true, genreDim: gd, countryDim: cd, hidden: hidden,
                                      genres: genres, countries: countries)
        func random(_ shape: [Int]) -> [Float] { (0 ..< shape.reduce(1, *)).map { _ in rng.uniform() } }
        let input = 2 * d + gd + cd
        let shapes: [(String, [Int])] = [("genre_embedding", [5, gd]), ("country_embedding", [4, cd]), ("layer0.weight", [hidden, input]),
                                         ("layer0.bias", [hidden]), ("layer1.weight", [d, hidden]), ("layer1.bias", [d])]
        let tensors: Tensors = shapes.map { ($0.0, $0.1, random($0.1)) }
        let w = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.values.map(Double.init)) })
        var items: [UInt64: [Float]] = [:]
        for id in UInt64(1) ... 30 { items[id] = random([d]) }
        let t = try Self.tower(config, tensors)

        func reference(_ recent: [UInt64], _ gs: [String], _ country: String) -> [Double] {
            let vs = Array(recent.compactMap { items[$0]?.map(Double.init) }.prefix(config.recent))
            var mean = [Double](repeating: 0, count: d), rec = mean, total = 0.0
            for (i, v) in vs.enumerated() {
                let weight = pow(0.7, Double(i))
                total += weight
                for j in 0 ..< d { mean[j] += v[j] / Double(vs.count); rec[j] += weight * v[j] }
            }
            if total > 0 { rec = rec.map { $0 / total } }
            var g = [Double](repeating: 0, count: gd), gt = 0.0
            let rows = gs.isEmpty ? [(genres.count, 1.0)] : gs.prefix(3).enumerated().map { (genres.firstIndex(of: $1) ?? genres.count, Double(3 - $0)) }
            for (row, weight) in rows {
                gt += weight
                for k in 0 ..< gd { g[k] += weight * w["genre_embedding"]![row * gd + k] }
            }
            g = g.map { $0 / gt }
            let crow = countries.firstIndex(of: country) ?? countries.count
            let c = (0 ..< cd).map { w["country_embedding"]![crow * cd + $0] }
            let x: [Double] = mean + rec + g + c
            let w0 = w["layer0.weight"]!, b0 = w["layer0.bias"]!, w1 = w["layer1.weight"]!, b1 = w["layer1.bias"]!
            var h = [Double](repeating: 0, count: hidden)
            for r in 0 ..< hidden {
                var sum = b0[r]
                for k in 0 ..< input { sum += w0[r * input + k] * x[k] }
                h[r] = max(0, sum)
            }
            var out = [Double](repeating: 0, count: d)
            for r in 0 ..< d {
                var sum = b1[r]
                for k in 0 ..< hidden { sum += w1[r * hidden + k] * h[k] }
                out[r] = sum + rec[r]
            }
            return out
        }
        let cases: [([UInt64], [String], String)] = [
            ([3, 1, 4, 1, 5, 9, 2, 6], ["Drama", "Action", "Comedy"], "FR"),   // more than R
            ([30, 77, 12], ["Horror"], "US"),                                    // an unknown item
            ([], ["Sci-Fi", "Drama"], "XX"),                                     // unknown genre and country
            ([8], [], ""),
        ]
        for (recent, gs, country) in cases {
            let got = t.userVector(recent: recent, itemVector: { items[$0] }, genres: gs, country: country)
            let want = reference(recent, gs, country)
            for j in 0 ..< d {
                #expect(abs(Double(got[j]) - want[j]) <= 1e-5 * max(1, abs(want[j])), "\(recent) \(gs) \(country) [\(j)]: \(got[j]) vs \(want[j])")
            }
        }
    }

    @Test func filesLoadAndTheConfigNamesTheRows() throws {
        let dir = NSTemporaryDirectory() + "shardrank-tower-\(UInt64.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (config, tensors) = Self.handTower(residual: true)
        // What the trainer writes: its own keys too ("trained"), residual as 0|1.
        let json = #"{"kind": "shardrank-query-tower", "version": 1, "dim": 1, "recent": 3, "recency_decay": 0.5, "residual": 1,"#
            + #" "genre_dim": 1, "country_dim": 1, "hidden": 2, "genres": ["A"], "countries": ["DE"], "items_table": "items","#
            + #" "trained": {"epochs": 3, "recall@10": 0.31}}"#
        try Data(json.utf8).write(to: URL(fileURLWithPath: dir + "/T.json"))
        try Data(SafeTensors.serialize(tensors)).write(to: URL(fileURLWithPath: dir + "/T.safetensors"))
        let t = try QueryTower(weightsPath: dir + "/T.safetensors", configPath: dir + "/T.json")
        #expect(t.config == config && t.dimension == 1 && t.recentItems == 3)
        #expect(t.userVector(recent: [], itemVector: { _ in nil }, genres: ["A"], country: "DE") == [6.25])
        #expect(throws: ModelError.self) { try QueryTower(weightsPath: dir + "/none.safetensors", configPath: dir + "/T.json") }
    }

    @Test func shapeErrorsNameTheTensor() throws {
        let (config, tensors) = Self.handTower(residual: true)
        for (i, t) in tensors.enumerated() {
            var wrong = tensors
            wrong[i] = (t.name, t.shape.map { $0 + 1 }, [Float](repeating: 0, count: t.shape.map { $0 + 1 }.reduce(1, *)))
            do {
                _ = try Self.tower(config, wrong)
                Issue.record("accepted \(t.name) of shape \(wrong[i].shape)")
            } catch let e as ModelError {
                #expect(e.kind == .shapeMismatch && e.message.contains("'\(t.name)'"), "\(e)")
            }
            var missing = tensors
            missing.remove(at: i)
            do {
                _ = try Self.tower(config, missing)
                Issue.record("accepted weights without \(t.name)")
            } catch let e as ModelError {
                #expect(e.kind == .missingTensor && e.message.contains("'\(t.name)'"), "\(e)")
            }
        }
        // A genre more in the config than rows in the embedding.
        var more = config
        more.genres.append("B")
        do {
            _ = try Self.tower(more, tensors)
            Issue.record("accepted 2 genres over 2 embedding rows")
        } catch let e as ModelError {
            #expect(e.kind == .shapeMismatch && e.message.contains("genre_embedding") && e.message.contains("n_genres + 1 = 3"), "\(e)")
        }
        var nan = tensors
        nan[2].values[0] = .nan
        #expect(throws: ModelError.self) { try Self.tower(config, nan) }
    }

    @Test func badConfigsAreRefusedNamingTheKey() throws {
        let (config, tensors) = Self.handTower(residual: true)
        let cases: [(String, (inout QueryTowerConfig) -> Void)] = [
            ("kind", { $0.kind = "shardrank-mlp" }), ("version", { $0.version = 2 }), ("residual", { $0.residual = 2 }),
            ("recent", { $0.recent = 0 }), ("recency_decay", { $0.recencyDecay = -1 }), ("listed twice", { $0.countries = ["DE", "DE"] }),
        ]
        for (word, change) in cases {
            var c = config
            change(&c)
            do {
                _ = try Self.tower(c, tensors)
                Issue.record("accepted a config with a bad \(word)")
            } catch let e as ModelError {
                #expect(e.kind == .malformedConfig && e.message.contains(word), "\(e)")
            }
        }
        #expect(throws: ModelError.self) { try QueryTower.config(Array(#"{"kind": "shardrank-query-tower"}"#.utf8)) }
    }
}

/// The trainer's own fixture (scripts/train-query-tower on a small `shardrank synth` world:
/// `--recent 6 --hidden 12 --genre-dim 4 --country-dim 3 --epochs 2 --holdout-users 0`): its
/// float64 numpy forward pass on 20 inputs — unknown items first and among more than R, unknown
/// genres and country, a repeated item, real users — against this float32 one.
@Suite struct QueryTowerTrainerFixtureTests {
    struct Fixture: Decodable {
        struct Item: Decodable { let id: UInt64; let vector: [Float] }
        struct Case: Decodable { let note: String; let recent: [UInt64]; let genres: [String]; let country: String; let user_vector: [Double] }
        let item_vectors: [Item]
        let cases: [Case]
    }

    @Test func theNativeForwardPassMatchesTheTrainers() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        let tower = try QueryTower(weightsPath: dir.appendingPathComponent("query-tower.safetensors").path,
                                   configPath: dir.appendingPathComponent("query-tower.json").path)
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: dir.appendingPathComponent("query-tower.fixture.json")))
        let items = Dictionary(uniqueKeysWithValues: fixture.item_vectors.map { ($0.id, $0.vector) })
        #expect(fixture.cases.count == 20)
        for c in fixture.cases {
            let got = tower.userVector(recent: c.recent, itemVector: { items[$0] }, genres: c.genres, country: c.country)
            #expect(got.count == c.user_vector.count, "\(c.note)")
            for (g, w) in zip(got, c.user_vector) {
                #expect(abs(Double(g) - w) <= 1e-4 + 1e-4 * abs(w), "\(c.note): \(g) vs \(w)")
            }
        }
    }
}
