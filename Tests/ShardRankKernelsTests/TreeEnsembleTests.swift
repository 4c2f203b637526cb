import Testing
import Foundation
import ShardRankKernels

/// `TreeEnsemble` against LightGBM's own predictions (fixtures written by scripts/tree-fixture.py),
/// hand-built models checking each branch rule, and malformed models.
@Suite struct TreeEnsembleTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    struct Rows {
        var features: [Float]
        var expected: [Double]
        var columns: Int
        var count: Int { expected.count }
    }

    /// `lgbm-NAME.csv`: feature columns, then `raw` (LightGBM's `predict(raw_score=True)`).
    static func loadRows(_ name: String) throws -> Rows {
        let text = try String(contentsOf: fixtures.appendingPathComponent("lgbm-\(name).csv"), encoding: .utf8)
        var lines = text.split(separator: "\n")
        let header = lines.removeFirst().split(separator: ",")
        #expect(header.last == "raw")
        let columns = header.count - 1
        var rows = Rows(features: [], expected: [], columns: columns)
        for (n, line) in lines.enumerated() {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            try #require(fields.count == columns + 1, "line \(n + 2)")
            for f in fields.dropLast() { rows.features.append(try #require(Float(f), "line \(n + 2): '\(f)'")) }
            rows.expected.append(try #require(Double(fields.last!)))
        }
        return rows
    }

    static func model(_ name: String) throws -> TreeEnsemble {
        try TreeEnsemble(path: fixtures.appendingPathComponent("lgbm-\(name).txt").path)
    }

    static func close(_ got: Float, _ want: Double) -> Bool {
        abs(Double(got) - want) <= 1e-5 * abs(want) + 1e-6
    }

    /// Scores with a stride wider than the model (extra columns hold junk) to check the stride.
    static func score(_ m: TreeEnsemble, _ rows: Rows, pool: WorkerPool? = nil, minRowsPerTask: Int = 128, pad: Int = 0) -> [Float] {
        let stride = rows.columns + pad
        var x = [Float](repeating: .nan, count: rows.count * stride)
        for r in 0..<rows.count {
            for j in 0..<rows.columns { x[r * stride + j] = rows.features[r * rows.columns + j] }
            for j in rows.columns..<stride { x[r * stride + j] = j % 2 == 0 ? .nan : 1e30 }
        }
        var out = [Float](repeating: -7, count: rows.count)
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                if let pool {
                    m.score(features: xp.baseAddress!, rows: rows.count, stride: stride, into: op.baseAddress!,
                            pool: pool, minRowsPerTask: minRowsPerTask)
                } else {
                    m.score(features: xp.baseAddress!, rows: rows.count, stride: stride, into: op.baseAddress!)
                }
            }
        }
        return out
    }

    // MARK: - LightGBM fixtures

    @Test(arguments: ["rank", "bincat", "rf", "edge"])
    func agreesWithLightGBM(name: String) throws {
        let m = try Self.model(name)
        let rows = try Self.loadRows(name)
        #expect(m.featureCount == rows.columns)
        #expect(rows.count >= 150)
        let single = Self.score(m, rows)
        var bad = 0
        for r in 0..<rows.count where !Self.close(single[r], rows.expected[r]) {
            bad += 1
            if bad <= 5 { Issue.record("\(name) row \(r): got \(single[r]), LightGBM \(rows.expected[r])") }
        }
        #expect(bad == 0, "\(bad) of \(rows.count) rows disagree")
        // Padded rows (stride > featureCount), and the pool split into small chunks: bit-identical.
        #expect(Self.score(m, rows, pad: 3) == single)
        for threads in [2, 3] {
            let pool = WorkerPool(threadCount: threads)
            #expect(Self.score(m, rows, pool: pool, minRowsPerTask: 16) == single)
            #expect(Self.score(m, rows, pool: pool, minRowsPerTask: 16, pad: 5) == single)
        }
    }

    @Test func fixtureModelsHaveWhatTheyShouldExercise() throws {
        let rank = try Self.model("rank")
        #expect(rank.treeCount == 50)
        #expect(rank.featureCount == 8)
        #expect(rank.objective == "lambdarank")
        #expect(!rank.averageOutput)
        let text = try String(contentsOf: Self.fixtures.appendingPathComponent("lgbm-rank.txt"), encoding: .utf8)
        let decisions = Set(text.split(separator: "\n").filter { $0.hasPrefix("decision_type=") }
            .flatMap { $0.dropFirst(14).split(separator: " ") })
        #expect(decisions.isSuperset(of: ["2", "8", "10"]))  // None, NaN default right, NaN default left
        let bincat = try String(contentsOf: Self.fixtures.appendingPathComponent("lgbm-bincat.txt"), encoding: .utf8)
        let catDecisions = Set(bincat.split(separator: "\n").filter { $0.hasPrefix("decision_type=") }
            .flatMap { $0.dropFirst(14).split(separator: " ") })
        #expect(catDecisions.isSuperset(of: ["1", "4", "6"]))  // categorical, Zero default right/left
        #expect(bincat.contains("cat_boundaries="))
        let rf = try Self.model("rf")
        #expect(rf.averageOutput)
        #expect(rf.treeCount == 20)
        let edge = try Self.model("edge")
        #expect(edge.featureNames == ["a", "b", "c", "d"])
    }

    /// 1,000 rows through the default pool threshold (256 rows) and the default chunk size.
    @Test func largeBatchesUseThePoolWithTheSameResult() throws {
        let m = try Self.model("rank")
        var rows = try Self.loadRows("rank")
        let base = rows
        while rows.count < 1000 {
            rows.features += base.features
            rows.expected += base.expected
        }
        let pool = WorkerPool(threadCount: 2)
        let pooled = Self.score(m, rows, pool: pool)
        #expect(pooled == Self.score(m, rows))
        #expect((0..<rows.count).allSatisfy { Self.close(pooled[$0], rows.expected[$0]) })
    }

    // MARK: - Hand-built models, branch by branch

    /// A model of `features` features whose trees are given as (key=value lines).
    static func modelText(features: Int = 1, trees: [String], extraHeader: String = "") -> String {
        let names = (0..<features).map { "f\($0)" }.joined(separator: " ")
        let infos = (0..<features).map { _ in "none" }.joined(separator: " ")
        var s = """
        tree
        version=v4
        num_class=1
        num_tree_per_iteration=1
        label_index=0
        max_feature_idx=\(features - 1)
        objective=regression
        feature_names=\(names)
        feature_infos=\(infos)
        \(extraHeader)

        """
        for (i, t) in trees.enumerated() { s += "Tree=\(i)\n\(t)\nshrinkage=1\n\n\n" }
        return s + "end of trees\n\nfeature_importances:\n"
    }

    /// One split on feature 0: left leaf 1, right leaf 2.
    static func oneSplit(decision: Int, threshold: String) -> String {
        """
        num_leaves=2
        num_cat=0
        split_feature=0
        threshold=\(threshold)
        decision_type=\(decision)
        left_child=-1
        right_child=-2
        leaf_value=1 2
        """
    }

    static func scoreOne(_ m: TreeEnsemble, _ row: [Float]) -> Float {
        var out: Float = .nan
        row.withUnsafeBufferPointer { m.score(features: $0.baseAddress!, rows: 1, stride: row.count, into: &out) }
        return out
    }

    struct SplitCase: CustomStringConvertible, Sendable {
        var decision: Int
        var threshold: String
        var x: Float
        var left: Bool
        var description: String { "decision_type=\(decision) threshold=\(threshold) x=\(x) → \(left ? "left" : "right")" }
    }

    static let splitCases: [SplitCase] = [
        // Missing type None (0; bit 1 = default left changes nothing): NaN is 0.
        .init(decision: 0, threshold: "0.5", x: 0.5, left: true),
        .init(decision: 0, threshold: "0.5", x: Float(0.5).nextUp, left: false),
        .init(decision: 0, threshold: "0.5", x: .nan, left: true),
        .init(decision: 0, threshold: "-1", x: .nan, left: false),
        .init(decision: 2, threshold: "-1", x: .nan, left: false),
        .init(decision: 0, threshold: "-1", x: -.infinity, left: true),
        .init(decision: 0, threshold: "1e300", x: .infinity, left: false),
        // The comparison is in double: Float(0.1) = 0.100000001490116… > 0.1.
        .init(decision: 0, threshold: "0.10000000000000001", x: 0.1, left: false),
        .init(decision: 0, threshold: "0.10000000000000001", x: Float(0.1).nextDown, left: true),
        .init(decision: 0, threshold: "0.10000000149011612", x: 0.1, left: true),
        // |x| <= 1e-35 reads as 0 (LightGBM's dense rows drop such values).
        .init(decision: 0, threshold: "1e-36", x: 5e-36, left: true),
        .init(decision: 0, threshold: "1e-36", x: 2e-35, left: false),
        .init(decision: 0, threshold: "-1e-36", x: -5e-36, left: false),
        // Missing type Zero (4 default right, 6 default left): 0, −0, the zero band and NaN take the default.
        .init(decision: 4, threshold: "0.25", x: 0, left: false),
        .init(decision: 4, threshold: "0.25", x: -0.0, left: false),
        .init(decision: 4, threshold: "0.25", x: 1e-36, left: false),
        .init(decision: 4, threshold: "0.25", x: .nan, left: false),
        .init(decision: 4, threshold: "0.25", x: 0.1, left: true),
        .init(decision: 4, threshold: "0.25", x: 2e-35, left: true),
        .init(decision: 4, threshold: "0.25", x: 0.3, left: false),
        .init(decision: 6, threshold: "-0.25", x: 0, left: true),
        .init(decision: 6, threshold: "-0.25", x: .nan, left: true),
        .init(decision: 6, threshold: "-0.25", x: -0.1, left: false),
        .init(decision: 6, threshold: "-0.25", x: -0.3, left: true),
        // Missing type NaN (8 default right, 10 default left): only NaN takes the default; 0 compares.
        .init(decision: 8, threshold: "0.5", x: .nan, left: false),
        .init(decision: 8, threshold: "0.5", x: 0, left: true),
        .init(decision: 8, threshold: "0.5", x: 0.6, left: false),
        .init(decision: 10, threshold: "-1", x: .nan, left: true),
        .init(decision: 10, threshold: "-1", x: 0, left: false),
        .init(decision: 10, threshold: "-1", x: -1, left: true),
        // LightGBM writes `inf` for a split of NaN (default right) from every number.
        .init(decision: 8, threshold: "inf", x: 1e30, left: true),
        .init(decision: 8, threshold: "inf", x: .infinity, left: true),
        .init(decision: 8, threshold: "inf", x: .nan, left: false),
    ]

    @Test(arguments: splitCases)
    func numericalSplit(_ c: SplitCase) throws {
        let m = try TreeEnsemble(text: Self.modelText(trees: [Self.oneSplit(decision: c.decision, threshold: c.threshold)]))
        #expect(Self.scoreOne(m, [c.x]) == (c.left ? 1 : 2))
    }

    /// Categories {0, 3, 33} (two bitset words: 0b1001, 0b10).
    @Test(arguments: [
        (Float(0), true), (3, true), (33, true), (1, false), (32, false), (34, false), (64, false), (1000, false),
        (-0.5, true), (0.9, true), (3.7, true), (-1, false), (-3, false), (.nan, false), (.infinity, false), (-.infinity, false),
        (1e10, false), (4_294_967_296, false), (5e-36, true),
    ] as [(Float, Bool)])
    func categoricalSplit(x: Float, left: Bool) throws {
        let tree = """
        num_leaves=2
        num_cat=1
        split_feature=0
        threshold=0
        decision_type=1
        left_child=-1
        right_child=-2
        leaf_value=1 2
        cat_boundaries=0 2
        cat_threshold=9 2
        """
        let m = try TreeEnsemble(text: Self.modelText(trees: [tree]))
        #expect(Self.scoreOne(m, [x]) == (left ? 1 : 2), "x = \(x)")
    }

    /// A 3-split tree (children pointing forwards and backwards in node order), two features, a
    /// categorical split with two bitsets in one tree, a single-leaf tree, and the sum over trees.
    @Test func deeperTreesAndSums() throws {
        // node 0: f0 <= 0 ? node 2 : node 1;  node 1: f1 <= 5 ? leaf 1 : leaf 3;  node 2: f1 cat {2} ? leaf 0 : leaf 2
        let deep = """
        num_leaves=4
        num_cat=2
        split_feature=0 1 1
        threshold=0 5 1
        decision_type=0 0 1
        left_child=2 -2 -1
        right_child=1 -4 -3
        leaf_value=10 20 30 40
        cat_boundaries=0 1 2
        cat_threshold=1 4
        """
        let single = """
        num_leaves=1
        num_cat=0
        split_feature=
        split_gain=
        threshold=
        decision_type=
        left_child=
        right_child=
        leaf_value=0.5
        """
        let m = try TreeEnsemble(text: Self.modelText(features: 2, trees: [deep, single]))
        #expect(m.treeCount == 2)
        #expect(Self.scoreOne(m, [-1, 2]) == 10.5)   // node 2, category 2 (bitset 1 = {2}) → leaf 0
        #expect(Self.scoreOne(m, [-1, 0]) == 30.5)   // node 2, category 0 not in {2} → leaf 2
        #expect(Self.scoreOne(m, [1, 5]) == 20.5)    // node 1, 5 <= 5 → leaf 1
        #expect(Self.scoreOne(m, [1, 6]) == 40.5)    // node 1 → leaf 3
        let onlyLeaf = try TreeEnsemble(text: Self.modelText(trees: [single]))
        #expect(Self.scoreOne(onlyLeaf, [.nan]) == 0.5)
    }

    @Test func averageOutputDividesByTheTreeCount() throws {
        let trees = [Self.oneSplit(decision: 0, threshold: "0"), Self.oneSplit(decision: 0, threshold: "1")]
        let summed = try TreeEnsemble(text: Self.modelText(trees: trees))
        let averaged = try TreeEnsemble(text: Self.modelText(trees: trees, extraHeader: "average_output"))
        #expect(averaged.averageOutput && !summed.averageOutput)
        #expect(Self.scoreOne(summed, [0.5]) == 3)
        #expect(Self.scoreOne(averaged, [0.5]) == 1.5)
    }

    @Test func windowsLineEndingsAndNoTrailingNewline() throws {
        let text = Self.modelText(trees: [Self.oneSplit(decision: 0, threshold: "0")])
        let crlf = text.replacingOccurrences(of: "\n", with: "\r\n")
        #expect(Self.scoreOne(try TreeEnsemble(text: crlf), [1]) == 2)
        let cut = String(text[..<text.range(of: "end of trees")!.upperBound])
        #expect(Self.scoreOne(try TreeEnsemble(text: cut), [-1]) == 1)
    }

    // MARK: - Malformed models

    /// `(mutation of a valid 2-tree model, expected line, words the message must contain)`.
    static func expectError(_ text: String, line: Int?, _ words: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let m = try TreeEnsemble(text: text, name: "bad.txt")
            Issue.record("loaded a bad model (\(m.treeCount) trees)", sourceLocation: sourceLocation)
        } catch let e as TreeModelError {
            #expect(e.file == "bad.txt", sourceLocation: sourceLocation)
            if let line { #expect(e.line == line, "\(e)", sourceLocation: sourceLocation) }
            for w in words { #expect(e.description.contains(w), "\(e)", sourceLocation: sourceLocation) }
            #expect(e.description.hasPrefix("bad.txt:"), sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    static let good = modelText(features: 2, trees: [
        oneSplit(decision: 0, threshold: "0"),
        """
        num_leaves=3
        num_cat=0
        split_feature=0 1
        threshold=0.5 -1
        decision_type=2 8
        left_child=1 -1
        right_child=-2 -3
        leaf_value=1 2 3
        is_linear=0
        """,
    ])

    /// Line number (1-based) of the first line of `good` starting with `prefix` after `after`.
    static func lineOf(_ prefix: String, after: String = "Tree=1") -> Int {
        let lines = good.components(separatedBy: "\n")
        let start = lines.firstIndex { $0.hasPrefix(after) }!
        return lines[start...].firstIndex { $0.hasPrefix(prefix) }! + 1
    }

    static func replacing(_ old: String, _ new: String) -> String {
        precondition(good.contains(old))
        return good.replacingOccurrences(of: old, with: new)
    }

    @Test func theGoodModelLoads() throws {
        let m = try TreeEnsemble(text: Self.good)
        #expect(m.treeCount == 2 && m.featureCount == 2)
        #expect(Self.scoreOne(m, [0.2, .nan]) == 2 + 3)  // 0.2 > 0; 0.2 <= 0.5, then NaN → default right
    }

    @Test func headerErrors() {
        Self.expectError(Self.good.replacingOccurrences(of: "num_class=1\n", with: ""), line: nil, ["num_class", "missing"])
        Self.expectError(Self.good.replacingOccurrences(of: "num_class=1", with: "num_class=3"), line: 3, ["multiclass"])
        Self.expectError(Self.good.replacingOccurrences(of: "num_tree_per_iteration=1", with: "num_tree_per_iteration=2"), line: 4, ["num_tree_per_iteration"])
        Self.expectError(Self.good.replacingOccurrences(of: "max_feature_idx=1", with: "max_feature_idx=x"), line: 6, ["max_feature_idx"])
        Self.expectError(Self.good.replacingOccurrences(of: "max_feature_idx=1", with: "max_feature_idx=2"), line: 8, ["feature_names", "expected 3"])
        Self.expectError(Self.good.replacingOccurrences(of: "feature_infos=none none", with: "feature_infos=none"), line: 9, ["feature_infos"])
        Self.expectError(Self.good.replacingOccurrences(of: "version=v4", with: "version=v9"), line: 2, ["version"])
        Self.expectError(Self.good.replacingOccurrences(of: "objective=regression", with: "objective=regression\nnum_class=1"), line: 8, ["duplicate"])
        Self.expectError("", line: 0, ["not a LightGBM"])
        Self.expectError("Tree=0\nnum_leaves=1\n", line: 1, ["not a LightGBM"])
    }

    @Test func treeErrorsNameTheTreeAndTheLine() {
        Self.expectError(Self.replacing("leaf_value=1 2 3", "leaf_value=1 2"), line: Self.lineOf("leaf_value"), ["tree 1", "leaf_value", "2 values", "expected 3"])
        Self.expectError(Self.replacing("leaf_value=1 2 3", "leaf_value=1 nan 3"), line: Self.lineOf("leaf_value"), ["tree 1", "not finite"])
        Self.expectError(Self.replacing("leaf_value=1 2 3", "leaf_value=1 x 3"), line: Self.lineOf("leaf_value"), ["tree 1", "leaf_value[1]"])
        Self.expectError(Self.replacing("split_feature=0 1", "split_feature=0 2"), line: Self.lineOf("split_feature"), ["tree 1", "split_feature[1] = 2", "max_feature_idx"])
        Self.expectError(Self.replacing("split_feature=0 1", "split_feature=0 -1"), line: Self.lineOf("split_feature"), ["tree 1", "split_feature[1]"])
        Self.expectError(Self.replacing("threshold=0.5 -1", "threshold=nan -1"), line: Self.lineOf("threshold"), ["tree 1", "threshold[0]", "NaN"])
        Self.expectError(Self.replacing("threshold=0.5 -1", "threshold=0.5"), line: Self.lineOf("threshold"), ["tree 1", "threshold", "expected 2"])
        Self.expectError(Self.replacing("left_child=1 -1", "left_child=2 -1"), line: Self.lineOf("left_child"), ["tree 1", "left_child[0] = 2", "not a node"])
        Self.expectError(Self.replacing("left_child=1 -1", "left_child=1 -4"), line: Self.lineOf("left_child"), ["tree 1", "leaf 3"])
        Self.expectError(Self.replacing("right_child=-2 -3", "right_child=-2 -2"), line: Self.lineOf("right_child"), ["tree 1", "reached twice"])
        Self.expectError(Self.replacing("left_child=1 -1", "left_child=1 0"), line: Self.lineOf("left_child"), ["tree 1", "node 0", "reached twice"])
        Self.expectError(Self.replacing("left_child=1 -1", "left_child=1 1"), line: Self.lineOf("left_child"), ["tree 1", "reached twice"])
        Self.expectError(Self.replacing("decision_type=2 8", "decision_type=2 12"), line: Self.lineOf("decision_type"), ["tree 1", "missing type 3"])
        Self.expectError(Self.replacing("decision_type=2 8", "decision_type=2 16"), line: Self.lineOf("decision_type"), ["tree 1", "unknown bits"])
        Self.expectError(Self.replacing("decision_type=2 8", "decision_type=3 8"), line: Self.lineOf("decision_type"), ["tree 1", "categorical", "num_cat=0"])
        Self.expectError(Self.replacing("is_linear=0", "is_linear=1"), line: Self.lineOf("is_linear"), ["tree 1", "linear trees"])
        Self.expectError(Self.replacing("num_leaves=3\n", ""), line: Self.lineOf("Tree=1"), ["tree 1", "missing key 'num_leaves'"])
        Self.expectError(Self.replacing("right_child=-2 -3\n", ""), line: Self.lineOf("Tree=1"), ["tree 1", "missing key 'right_child'"])
        Self.expectError(Self.replacing("num_leaves=3", "num_leaves=0"), line: Self.lineOf("num_leaves"), ["tree 1", "num_leaves"])
        Self.expectError(Self.replacing("Tree=1", "Tree=2"), line: Self.lineOf("Tree=1", after: "Tree=0"), ["Tree=1"])
        Self.expectError(Self.replacing("leaf_value=1 2 3", "leaf_value=1 2 3\nleaf_value=1 2 3"), line: Self.lineOf("leaf_value") + 1, ["duplicate"])
        Self.expectError(Self.replacing("end of trees", "end of forests"), line: nil, ["expected 'Tree=2' or 'end of trees'"])
    }

    @Test func categoricalErrors() throws {
        func cat(_ boundaries: String, _ words: String, threshold: String = "0", numCat: Int = 1) -> String {
            Self.modelText(trees: ["""
            num_leaves=2
            num_cat=\(numCat)
            split_feature=0
            threshold=\(threshold)
            decision_type=1
            left_child=-1
            right_child=-2
            leaf_value=1 2
            cat_boundaries=\(boundaries)
            cat_threshold=\(words)
            """])
        }
        #expect(Self.scoreOne(try TreeEnsemble(text: cat("0 2", "9 2")), [33]) == 1)
        Self.expectError(cat("0 2", "9"), line: 21, ["cat_threshold", "expected 2"])
        Self.expectError(cat("1 2", "9"), line: 20, ["cat_boundaries"])
        Self.expectError(cat("0 2 1", "9 2", numCat: 2), line: nil, ["num_cat"])  // num_cat must be < num_leaves
        Self.expectError(cat("0 2", "9 2", threshold: "1"), line: 15, ["bitset index"])
        Self.expectError(cat("0 2", "9 2", threshold: "0.5"), line: 15, ["bitset index"])
        Self.expectError(cat("0 2", "9 -2"), line: 21, ["cat_threshold[1]"])
    }

    @Test func truncatedModelsAreRejected() throws {
        let text = try String(contentsOf: Self.fixtures.appendingPathComponent("lgbm-rank.txt"), encoding: .utf8)
        let bytes = Array(text.utf8)
        let end = text.utf8.distance(from: text.startIndex, to: text.range(of: "end of trees")!.lowerBound)
        var rng = SplitMix64(seed: 16)
        var cuts = [0, 1, 10, 200, end - 1, end, end + 5]
        for _ in 0..<60 { cuts.append(Int(rng.next() % UInt64(end))) }
        for cut in cuts {
            do {
                _ = try TreeEnsemble(text: String(decoding: bytes[..<cut], as: UTF8.self), name: "cut.txt")
                Issue.record("a model cut at byte \(cut) of \(bytes.count) loaded")
            } catch let e as TreeModelError {
                #expect(e.file == "cut.txt")
            }
        }
        // Cut right after "end of trees": everything needed is there.
        #expect(try TreeEnsemble(text: String(decoding: bytes[..<(end + 12)], as: UTF8.self)).treeCount == 50)
    }

    /// Random byte changes: a model either loads (and then scores without trapping) or throws a
    /// TreeModelError; never anything else.
    @Test func garbledModelsNeverCrash() throws {
        let text = try String(contentsOf: Self.fixtures.appendingPathComponent("lgbm-bincat.txt"), encoding: .utf8)
        let rows = try Self.loadRows("bincat")
        var rng = SplitMix64(seed: 7)
        let alphabet = Array("0123456789-=. \nabcTnr~\u{0}".utf8)
        var loaded = 0, rejected = 0
        for _ in 0..<300 {
            var bytes = Array(text.utf8)
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let at = Int(rng.next() % UInt64(bytes.count))
                switch rng.next() % 3 {
                case 0: bytes[at] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                case 1: bytes.remove(at: at)
                default: bytes.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: at)
                }
            }
            do {
                let m = try TreeEnsemble(text: String(decoding: bytes, as: UTF8.self), name: "garbled.txt")
                if m.featureCount == rows.columns { _ = Self.score(m, rows) }
                loaded += 1
            } catch is TreeModelError {
                rejected += 1
            }
        }
        #expect(rejected > 50)
        #expect(loaded + rejected == 300)
    }

    @Test func unreadableFile() {
        do {
            _ = try TreeEnsemble(path: "/nonexistent/model.txt")
            Issue.record("loaded a model that does not exist")
        } catch let error as TreeModelError {
            #expect(error.file == "/nonexistent/model.txt" && error.line == 0)
            #expect(error.description.hasPrefix("/nonexistent/model.txt: cannot read"), "\(error)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func treeSizesMustMatchTheTrees() {
        let text = Self.good.replacingOccurrences(of: "feature_infos=none none", with: "feature_infos=none none\ntree_sizes=100 100 100")
        Self.expectError(text, line: 10, ["tree_sizes", "3 trees", "has 2"])
    }
}
