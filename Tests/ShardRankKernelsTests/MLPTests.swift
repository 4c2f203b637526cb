import Testing
import Foundation
import ShardRankKernels
import ShardRankBLAS

/// The MLP against the numpy reference (scripts/mlp-reference.py fixture), loaded from a
/// safetensors file this test writes, plus the loader's error paths.
@Suite struct MLPTests {
    /// The deterministic model + inputs of `mlp-reference.py fixture` (same generator, same order).
    struct FixtureModel {
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        var user: [Float] = []
        var items: [Float] = []
        var dense: [Float] = []
        var attributes: [Int32] = []
        let count = 37

        init() {
            var rng = SplitMix64(seed: 42)
            let shapes: [(String, [Int], Float)] = [
                ("layers.0.weight", [16, 31], 0.5), ("layers.0.bias", [16], 0.125),
                ("layers.1.weight", [8, 16], 0.5), ("layers.1.bias", [8], 0.125),
                ("layers.2.weight", [1, 8], 0.5), ("layers.2.bias", [1], 0.125),
                ("attr.genre", [5, 4], 1.0),
            ]
            for (name, shape, scale) in shapes {
                tensors.append((name, shape, (0..<shape.reduce(1, *)).map { _ in rng.uniform(scale) }))
            }
            user = (0..<8).map { _ in rng.uniform() }
            items = (0..<(count * 8)).map { _ in rng.uniform() }
            dense = (0..<(count * 3)).map { _ in rng.uniform() }
            attributes = (0..<count).map { _ in Int32(rng.next() % 7) - 1 }
        }
    }

    struct Fixture: Decodable {
        var config: MLPConfig
        var candidates: Int
        var checksum_user: Double
        var scores: [Double]
    }

    static let fixtureURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/mlp-reference.json")

    func loadFixture() throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: Self.fixtureURL))
    }

    func writeModel(_ m: FixtureModel, _ config: MLPConfig) throws -> (String, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("srk-mlp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let w = dir.appendingPathComponent("model.safetensors"), c = dir.appendingPathComponent("model.json")
        try Data(SafeTensors.serialize(m.tensors)).write(to: w)
        try JSONEncoder().encode(config).write(to: c)
        return (w.path, c.path)
    }

    static let backends: [GEMMBackend] = [.openBLAS] + KernelISA.supported.map { .native($0) }

    @Test(arguments: backends)
    func matchesNumpyReference(gemm: GEMMBackend) throws {
        let fixture = try loadFixture()
        let m = FixtureModel()
        #expect(abs(Double(m.user.reduce(0, +)) - fixture.checksum_user) < 1e-6, "generator drift")
        let (wp, cp) = try writeModel(m, fixture.config)
        let model = try MLPModel(weightsPath: wp, configPath: cp)
        #expect(model.layerWidths == [31, 16, 8, 1])
        let pool = WorkerPool(threadCount: 2)
        for usePool in [false, true] {
            for isa in KernelISA.supported {
                var scores = [Float](repeating: .nan, count: m.count)
                m.user.withUnsafeBufferPointer { u in
                    m.items.withUnsafeBufferPointer { it in
                        m.dense.withUnsafeBufferPointer { de in
                            m.attributes.withUnsafeBufferPointer { at in
                                scores.withUnsafeMutableBufferPointer { s in
                                    model.score(user: u.baseAddress!, items: RowMatrix(f32: it.baseAddress!, count: m.count, dimension: 8),
                                                count: m.count, dense: de.baseAddress!, attributes: at.baseAddress!,
                                                scores: s.baseAddress!, pool: usePool ? pool : nil, minRowsPerTask: 8,
                                                gemm: gemm, isa: isa)
                                }
                            }
                        }
                    }
                }
                for i in 0..<m.count {
                    let ref = fixture.scores[i]
                    #expect(abs(Double(scores[i]) - ref) <= 1e-5 * abs(ref), "\(gemm) \(isa) pool=\(usePool) i=\(i): \(scores[i]) vs \(ref)")
                }
            }
        }
    }

    /// Gathered item rows give the same scores as the rows copied out.
    @Test func gatheredItemRows() throws {
        let fixture = try loadFixture()
        let m = FixtureModel()
        let (wp, cp) = try writeModel(m, fixture.config)
        let model = try MLPModel(weightsPath: wp, configPath: cp)
        let order: [Int64] = (0..<Int64(m.count)).reversed()
        var a = [Float](repeating: 0, count: m.count), b = a
        // Candidate i uses item row order[i] but the dense/attribute rows of i: compare against
        // a copy with the item rows permuted.
        var permuted = [Float](); for r in order { permuted += m.items[Int(r) * 8..<Int(r) * 8 + 8] }
        m.items.withUnsafeBufferPointer { it in
            permuted.withUnsafeBufferPointer { pe in
                order.withUnsafeBufferPointer { o in
                    m.user.withUnsafeBufferPointer { u in
                        m.dense.withUnsafeBufferPointer { de in
                            m.attributes.withUnsafeBufferPointer { at in
                                model.score(user: u.baseAddress!, items: RowMatrix(f32: it.baseAddress!, count: m.count, dimension: 8),
                                            itemRows: o, count: m.count, dense: de.baseAddress!, attributes: at.baseAddress!, scores: &a)
                                model.score(user: u.baseAddress!, items: RowMatrix(f32: pe.baseAddress!, count: m.count, dimension: 8),
                                            count: m.count, dense: de.baseAddress!, attributes: at.baseAddress!, scores: &b)
                            }
                        }
                    }
                }
            }
        }
        #expect(a == b)
    }

    /// Layers wider than the GEMM's k-block (256) and row/column counts that are not multiples
    /// of its tiles, against a Double forward pass, for every backend, with and without a pool.
    @Test func wideLayersMatchDoubleReference() throws {
        var rng = SplitMix64(seed: 7)
        let dims = [600, 70, 33, 1], count = 50
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        var layers: [MLPConfig.Layer] = []
        for l in 0..<3 {
            tensors.append(("w\(l)", [dims[l + 1], dims[l]], (0..<(dims[l + 1] * dims[l])).map { _ in rng.uniform(0.125) }))
            tensors.append(("b\(l)", [dims[l + 1]], (0..<dims[l + 1]).map { _ in rng.uniform(0.25) }))
            layers.append(.init(weight: "w\(l)", bias: "b\(l)", activation: l == 2 ? "sigmoid" : "relu"))
        }
        let config = MLPConfig(features: [.init(kind: "item", dim: 8), .init(kind: "dense", dim: 592)], layers: layers)
        let model = try MLPModel(weights: SafeTensors.serialize(tensors), config: Array(JSONEncoder().encode(config)))
        let items = (0..<(count * 8)).map { _ in rng.uniform() }
        let dense = (0..<(count * 592)).map { _ in rng.uniform() }
        var expected = [Double]()
        for c in 0..<count {
            var x = (0..<8).map { Double(items[c * 8 + $0]) } + (0..<592).map { Double(dense[c * 592 + $0]) }
            for l in 0..<3 {
                let w = tensors[2 * l].values, b = tensors[2 * l + 1].values
                x = (0..<dims[l + 1]).map { o in
                    var s = Double(b[o])
                    for i in 0..<dims[l] { s += Double(w[o * dims[l] + i]) * x[i] }
                    return l == 2 ? 1 / (1 + exp(-s)) : max(s, 0)
                }
            }
            expected.append(x[0])
        }
        let pool = WorkerPool(threadCount: 2)
        for gemm in Self.backends {
            for usePool in [false, true] {
                var scores = [Float](repeating: .nan, count: count)
                items.withUnsafeBufferPointer { it in
                    dense.withUnsafeBufferPointer { de in
                        model.score(user: nil, items: RowMatrix(f32: it.baseAddress!, count: count, dimension: 8), count: count,
                                    dense: de.baseAddress!, scores: &scores, pool: usePool ? pool : nil, minRowsPerTask: 7, gemm: gemm)
                    }
                }
                let worst = (0..<count).map { abs(Double(scores[$0]) - expected[$0]) / expected[$0] }.max()!
                #expect(worst <= 1e-5, "\(gemm) pool=\(usePool): relative error \(worst)")
            }
        }
    }

    /// The pool splits candidates at multiples of 12 rows (whole micro-tiles); each row's score
    /// does not depend on which chunk or tile it lands in, so every split gives bit-identical
    /// scores to the single-thread call, for counts around the tile and block sizes.
    @Test func poolSplitIsBitIdentical() throws {
        var rng = SplitMix64(seed: 11)
        let dims = [40, 48, 24, 1]
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        var layers: [MLPConfig.Layer] = []
        for l in 0..<3 {
            tensors.append(("w\(l)", [dims[l + 1], dims[l]], (0..<(dims[l + 1] * dims[l])).map { _ in rng.uniform(0.25) }))
            tensors.append(("b\(l)", [dims[l + 1]], (0..<dims[l + 1]).map { _ in rng.uniform(0.25) }))
            layers.append(.init(weight: "w\(l)", bias: "b\(l)", activation: l == 2 ? "sigmoid" : "relu"))
        }
        let config = MLPConfig(features: [.init(kind: "user", dim: 8), .init(kind: "item", dim: 8),
                                          .init(kind: "user_item_product", dim: 8), .init(kind: "dense", dim: 16)],
                               layers: layers)
        let model = try MLPModel(weights: SafeTensors.serialize(tensors), config: Array(JSONEncoder().encode(config)))
        let maxCount = 1_000
        let user = (0..<8).map { _ in rng.uniform() }
        let items = UnsafeMutablePointer<Float>.allocate(capacity: maxCount * 8)
        defer { items.deallocate() }
        for i in 0..<(maxCount * 8) { items[i] = rng.uniform() }
        let dense = (0..<(maxCount * 16)).map { _ in rng.uniform() }
        let pools = [WorkerPool(threadCount: 2), WorkerPool(threadCount: 3, spinMicroseconds: 0)]
        for gemm in Self.backends {
            for count in [1, 11, 12, 13, 24, 25, 143, 144, 145, 300, 1_000] {
                var single = [Float](repeating: .nan, count: count)
                let rows = RowMatrix(f32: items, count: count, dimension: 8)
                model.score(user: user, items: rows, count: count, dense: dense, scores: &single, gemm: gemm)
                for pool in pools {
                    for minRows in [1, 7, 12, 64] {
                        var split = [Float](repeating: .nan, count: count)
                        model.score(user: user, items: rows, count: count, dense: dense, scores: &split,
                                    pool: pool, minRowsPerTask: minRows, gemm: gemm)
                        #expect(split == single, "\(gemm) count=\(count) threads=\(pool.threadCount) minRows=\(minRows)")
                    }
                }
            }
        }
    }

    // ---- malformed or mismatched models --------------------------------------------------
    func load(_ tensors: [(name: String, shape: [Int], values: [Float])], _ config: MLPConfig) -> ModelError? {
        load(SafeTensors.serialize(tensors), config)
    }

    func load(_ bytes: [UInt8], _ config: MLPConfig) -> ModelError? {
        do {
            _ = try MLPModel(weights: bytes, config: Array(try JSONEncoder().encode(config)))
            return nil
        } catch let e as ModelError {
            return e
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test func malformedFilesAreClearErrors() throws {
        let fixture = try loadFixture()
        let m = FixtureModel()
        let good = SafeTensors.serialize(m.tensors)
        #expect(load(good, fixture.config) == nil)
        #expect(load(Array(good.prefix(5)), fixture.config)?.kind == .malformedWeights)
        #expect(load(Array(good.dropLast(4)), fixture.config)?.kind == .malformedWeights, "truncated data")
        var hugeHeader = good; hugeHeader[7] = 0x7f
        #expect(load(hugeHeader, fixture.config)?.kind == .malformedWeights)
        var badJSON = good; badJSON[8] = UInt8(ascii: "[")
        #expect(load(badJSON, fixture.config)?.kind == .malformedWeights)
        let f16 = Array(String(decoding: good, as: UTF8.self).replacingOccurrences(of: "\"F32\"", with: "\"I64\"").utf8)
        #expect(load(f16, fixture.config)?.kind == .unsupportedDType)
        #expect(throws: ModelError.self) { try MLPModel(weights: good, config: Array("{\"features\": 3}".utf8)) }
        #expect(throws: ModelError.self) { try MLPModel(weightsPath: "/nonexistent/m.safetensors", configPath: "/nonexistent/m.json") }
    }

    @Test func mismatchedModelsNameTheProblem() throws {
        let fixture = try loadFixture()
        let m = FixtureModel()
        var missing = m.tensors; missing.removeLast()
        let e1 = load(missing, fixture.config)
        #expect(e1?.kind == .missingTensor && e1!.message.contains("attr.genre"))

        var wrongIn = fixture.config; wrongIn.features[3].dim = 4 // dense 3 -> 4: 32 inputs
        let e2 = load(m.tensors, wrongIn)
        #expect(e2?.kind == .shapeMismatch && e2!.message.contains("layers.0.weight"))

        var badBias = m.tensors; badBias[1] = ("layers.0.bias", [15], Array(m.tensors[1].values.prefix(15)))
        #expect(load(badBias, fixture.config)?.message.contains("layers.0.bias") == true)

        var badAct = fixture.config; badAct.layers[1].activation = "gelu"
        #expect(load(m.tensors, badAct)?.message.contains("gelu") == true)

        var twoOutputs = fixture.config; twoOutputs.layers.removeLast()
        #expect(load(m.tensors, twoOutputs)?.message.contains("8 outputs") == true)

        var badKind = fixture.config; badKind.features[0].kind = "usr"
        #expect(load(m.tensors, badKind)?.kind == .malformedConfig)

        var badProduct = fixture.config; badProduct.features[2].dim = 4
        #expect(load(m.tensors, badProduct)?.kind == .shapeMismatch)
    }
}
