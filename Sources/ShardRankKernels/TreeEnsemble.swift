#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif

/// A problem with a LightGBM text model: the file (or the name given to `init(text:name:)`),
/// the 1-based line (0 when no line applies, e.g. an unreadable file), and what is wrong.
public struct TreeModelError: Error, CustomStringConvertible, Sendable, Equatable {
    public let file: String
    public let line: Int
    public let message: String

    public init(file: String, line: Int, _ message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)" }
}

/// A gradient-boosted tree ensemble trained by LightGBM and saved in its text format
/// (`booster.save_model(path)`, format v3/v4): one output per row, the **raw score** — the sum
/// of the trees' leaf values (divided by the number of trees when the model has
/// `average_output`, as random forests do); no sigmoid or other output transform.
///
/// Evaluation follows LightGBM's `Tree::GetLeaf` (include/LightGBM/tree.h) on a dense float32
/// row (`predict(X, raw_score=True)` with a float32 `X`): each float is widened to double, values
/// with |x| ≤ 1e-35 become 0 (LightGBM's dense-row reader drops them), then at a numerical split
/// - NaN with missing type NaN, or 0 (after the rule above; NaN counts as 0 here) with missing
///   type Zero, goes to the split's default side (`decision_type` bit 1: left);
/// - any other NaN is 0;
/// - otherwise the row goes left iff `x <= threshold` (compared in double).
/// At a categorical split, NaN, negative values (after truncation toward zero: −0.5 is
/// category 0) and values outside Int32 go right; category c goes left iff bit c of the
/// split's bitset is set.
///
/// Rejected at load, with a `TreeModelError`: multiclass models (`num_class` or
/// `num_tree_per_iteration` ≠ 1), linear trees (`is_linear=1`), and any inconsistency
/// (a missing key, an array whose length does not match `num_leaves`, a child index out of
/// range or a node reached twice, a split feature above `max_feature_idx`, a non-finite
/// threshold or leaf value, an unknown `decision_type` bit, a bad category bitset, a
/// truncated file).
///
/// The trees are flattened into one contiguous node array (32 bytes a node) and one leaf
/// array; `score` walks them with no allocation and no locks, 64 rows at a time tree by tree.
public final class TreeEnsemble: Sendable {
    /// `feature_names` of the model, in input order; `featureCount` of them.
    public let featureNames: [String]
    /// Features a row must have: `max_feature_idx + 1`.
    public var featureCount: Int { featureNames.count }
    /// Number of trees.
    public let treeCount: Int
    /// The model's `objective` line (e.g. `lambdarank`, `binary sigmoid:1`), if any.
    public let objective: String?
    /// The model has `average_output` (the raw score is the mean, not the sum, of the trees).
    public let averageOutput: Bool

    /// Flattened trees. A child or root reference `c ≥ 0` is an index into `nodes`; `c < 0` is
    /// the leaf `~c` of `leafValues`.
    let nodes: [TreeNode]
    let leafValues: [Double]
    let roots: [Int32]
    /// The category bitsets of all categorical splits (LightGBM's `cat_threshold` words).
    let bitsets: [UInt32]

    /// Rows scored together, tree by tree (so a tree's nodes stay in cache across the rows).
    static let blockRows = 64
    /// LightGBM's `kZeroThreshold` (`1e-35f`, widened to double).
    static let zeroThreshold = Double(Float(1e-35))

    /// Loads a model saved by LightGBM (`booster.save_model(path)`).
    public convenience init(path: String) throws {
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw TreeModelError(file: path, line: 0, "cannot read the model file: \(error)")
        }
        try self.init(bytes: bytes, name: path)
    }

    /// Parses the text of a LightGBM model (`booster.model_to_string()`); errors name `name`.
    public convenience init(text: String, name: String = "<model text>") throws {
        try self.init(bytes: Array(text.utf8), name: name)
    }

    init(bytes: [UInt8], name: String) throws {
        let parsed = try TreeModelParser(bytes: bytes, file: name).parse()
        featureNames = parsed.featureNames
        treeCount = parsed.roots.count
        objective = parsed.objective
        averageOutput = parsed.averageOutput
        nodes = parsed.nodes
        leafValues = parsed.leafValues
        roots = parsed.roots
        bitsets = parsed.bitsets
    }

    /// Scores `rows` rows on the calling thread.
    /// - Parameters:
    ///   - features: row-major, `rows * stride` floats; row r's feature j is `features[r * stride + j]`
    ///     (columns `featureCount..<stride` are ignored).
    ///   - stride: floats per row, at least `featureCount`.
    ///   - out: `rows` raw scores (computed in double, rounded to float once).
    public func score(features: UnsafePointer<Float>, rows: Int, stride: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(rows >= 0 && stride >= featureCount, "TreeEnsemble.score: stride \(stride) < featureCount \(featureCount)")
        scoreRange(features: features, rows: 0..<rows, stride: stride, into: out)
    }

    /// Scores `rows` rows, split over `pool` in chunks of at least `minRowsPerTask` rows; fewer
    /// than `2 · minRowsPerTask` rows (or no pool) are scored on the calling thread. Results are
    /// bit-identical to the single-threaded `score` (each row is summed in the same order).
    public func score(features: UnsafePointer<Float>, rows: Int, stride: Int, into out: UnsafeMutablePointer<Float>,
                      pool: WorkerPool?, minRowsPerTask: Int = 128) {
        precondition(rows >= 0 && stride >= featureCount, "TreeEnsemble.score: stride \(stride) < featureCount \(featureCount)")
        guard let pool, pool.participants(count: rows, minChunk: minRowsPerTask) > 1 else {
            scoreRange(features: features, rows: 0..<rows, stride: stride, into: out)
            return
        }
        pool.parallelFor(count: rows, minChunk: minRowsPerTask) { range, _ in
            self.scoreRange(features: features, rows: range, stride: stride, into: out)
        }
    }

    private func scoreRange(features: UnsafePointer<Float>, rows: Range<Int>, stride: Int, into out: UnsafeMutablePointer<Float>) {
        guard !rows.isEmpty else { return }
        let divisor = averageOutput ? Double(treeCount) : 1
        nodes.withUnsafeBufferPointer { nodes in
        leafValues.withUnsafeBufferPointer { leaves in
        roots.withUnsafeBufferPointer { roots in
        bitsets.withUnsafeBufferPointer { bitsets in
        withUnsafeTemporaryAllocation(of: Double.self, capacity: Self.blockRows) { acc in
            var r0 = rows.lowerBound
            while r0 < rows.upperBound {
                let nb = min(Self.blockRows, rows.upperBound - r0)
                for i in 0..<nb { acc[i] = 0 }
                for root in roots {
                    if root < 0 {
                        let v = leaves[Int(~root)]
                        for i in 0..<nb { acc[i] += v }
                        continue
                    }
                    var row = features + r0 * stride
                    for i in 0..<nb {
                        var n = root
                        repeat {
                            n = Self.child(of: nodes[Int(n)], row: row, bitsets: bitsets)
                        } while n >= 0
                        acc[i] += leaves[Int(~n)]
                        row += stride
                    }
                }
                for i in 0..<nb { out[r0 + i] = Float(acc[i] / divisor) }
                r0 += nb
            }
        }
        }
        }
        }
        }
    }

    /// The child a row goes to at `node` (tree.h `NumericalDecision` / `CategoricalDecision`
    /// on the row as LightGBM's dense predictor sees it).
    @inline(__always)
    static func child(of node: TreeNode, row: UnsafePointer<Float>, bitsets: UnsafeBufferPointer<UInt32>) -> Int32 {
        var x = Double(row[Int(node.feature)])
        if node.kind == TreeNode.categorical {
            // NaN and anything whose C++ int conversion is negative or undefined go right.
            guard x > -2147483649.0 && x < 2147483648.0 else { return node.right }
            let c = Int(x)  // truncation toward zero, as static_cast<int>
            guard c >= 0 else { return node.right }
            let word = c >> 5
            guard word < Int(node.words) else { return node.right }
            return (bitsets[Int(node.aux) + word] >> UInt32(c & 31)) & 1 != 0 ? node.left : node.right
        }
        if x.isNaN {
            if node.kind == TreeNode.missingNaN { return node.aux }
            x = 0
        } else if x.magnitude <= zeroThreshold {
            x = 0
        }
        if node.kind == TreeNode.missingZero && x == 0 { return node.aux }
        return x <= node.threshold ? node.left : node.right
    }
}

/// One split node of a flattened tree (32 bytes).
struct TreeNode: Sendable {
    /// Numerical splits: go left iff x <= threshold.
    var threshold: Double
    var feature: Int32
    var left: Int32
    var right: Int32
    /// Numerical: the default child (missing values); categorical: the first word of the
    /// split's bitset in `TreeEnsemble.bitsets`.
    var aux: Int32
    /// Categorical: the bitset's length in 32-bit words.
    var words: Int32
    /// `missingNone`, `missingZero`, `missingNaN` or `categorical`.
    var kind: UInt8

    static let missingNone: UInt8 = 0
    static let missingZero: UInt8 = 1
    static let missingNaN: UInt8 = 2
    static let categorical: UInt8 = 3
}

/// The LightGBM text format: a header of `key=value` lines (a line without `=` is a key with an
/// empty value, e.g. `tree`, `average_output`), then `Tree=0`, `Tree=1`, … blocks of
/// `key=value` lines, then `end of trees` (what follows — feature importances, parameters — is
/// not read).
struct TreeModelParser {
    struct Result {
        var featureNames: [String]
        var objective: String?
        var averageOutput: Bool
        var nodes: [TreeNode] = []
        var leafValues: [Double] = []
        var roots: [Int32] = []
        var bitsets: [UInt32] = []
    }

    struct Entry {
        var value: Substring
        var line: Int
    }

    let lines: [Substring]
    let file: String

    init(bytes: [UInt8], file: String) {
        self.file = file
        var lines: [Substring] = []
        var start = 0
        func add(_ end: Int) {
            var e = end
            if e > start && bytes[e - 1] == 0x0D { e -= 1 }
            lines.append(Substring(String(decoding: bytes[start..<e], as: UTF8.self)))
        }
        for (i, b) in bytes.enumerated() where b == 0x0A {
            add(i)
            start = i + 1
        }
        if start < bytes.count { add(bytes.count) }
        self.lines = lines
    }

    func error(_ line: Int, _ message: String) -> TreeModelError { TreeModelError(file: file, line: line, message) }

    /// Splits `key=value` (first `=`); a line without `=` is a key with an empty value.
    func keyValue(_ s: Substring) -> (Substring, Substring) {
        guard let eq = s.firstIndex(of: "=") else { return (s, "") }
        return (s[..<eq], s[s.index(after: eq)...])
    }

    func parse() throws -> Result {
        var i = 0
        // ---- Header -------------------------------------------------------------------------
        var header: [Substring: Entry] = [:]
        while i < lines.count {
            let s = lines[i]
            if s.hasPrefix("Tree=") || s == "end of trees" { break }
            if !s.allSatisfy({ $0 == " " || $0 == "\t" }) {
                let (k, v) = keyValue(s)
                if let first = header[k] { throw error(i + 1, "duplicate header key '\(k)' (first on line \(first.line))") }
                header[k] = Entry(value: v, line: i + 1)
            }
            i += 1
        }
        let headerEnd = i
        func required(_ key: Substring) throws -> Entry {
            guard let e = header[key] else {
                throw error(headerEnd < lines.count ? headerEnd + 1 : 0, "missing header key '\(key)'")
            }
            return e
        }
        func int(_ e: Entry, _ key: String) throws -> Int {
            guard let v = Int(e.value.trimmingSpaces) else { throw error(e.line, "\(key) '\(e.value)' is not an integer") }
            return v
        }
        if header.isEmpty {
            throw error(lines.isEmpty ? 0 : 1, "not a LightGBM text model (no header before the first tree)")
        }
        if let v = header["version"], !["v3", "v4"].contains(v.value.trimmingSpaces) {
            throw error(v.line, "unsupported model format version '\(v.value)' (this reader knows v3 and v4)")
        }
        let numClass = try required("num_class")
        guard try int(numClass, "num_class") == 1 else {
            throw error(numClass.line, "num_class is \(numClass.value): multiclass models are not supported (one output per row)")
        }
        if let e = header["num_tree_per_iteration"], try int(e, "num_tree_per_iteration") != 1 {
            throw error(e.line, "num_tree_per_iteration is \(e.value): only one tree per iteration is supported")
        }
        let maxFeatureEntry = try required("max_feature_idx")
        let maxFeature = try int(maxFeatureEntry, "max_feature_idx")
        guard maxFeature >= 0 && maxFeature < (1 << 24) else {
            throw error(maxFeatureEntry.line, "max_feature_idx \(maxFeature) is out of range (0 ..< 2^24)")
        }
        let namesEntry = try required("feature_names")
        let names = namesEntry.value.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard names.count == maxFeature + 1 else {
            throw error(namesEntry.line, "\(names.count) feature_names for max_feature_idx \(maxFeature) (expected \(maxFeature + 1))")
        }
        if let infos = header["feature_infos"] {
            let n = infos.value.split(separator: " ", omittingEmptySubsequences: true).count
            guard n == maxFeature + 1 else {
                throw error(infos.line, "\(n) feature_infos for max_feature_idx \(maxFeature) (expected \(maxFeature + 1))")
            }
        }
        var treeSizes: Entry? = nil
        if let e = header["tree_sizes"] { treeSizes = e }
        let objective = header["objective"].map { String($0.value.trimmingSpaces) }
        var result = Result(featureNames: names, objective: objective, averageOutput: header["average_output"] != nil)

        // ---- Trees ----------------------------------------------------------------------------
        var sawEnd = false
        while i < lines.count {
            let s = lines[i]
            if s.allSatisfy({ $0 == " " || $0 == "\t" }) { i += 1; continue }
            if s == "end of trees" { sawEnd = true; break }
            guard s.hasPrefix("Tree=") else {
                throw error(i + 1, "expected 'Tree=\(result.roots.count)' or 'end of trees', got '\(s.prefix(60))'")
            }
            let index = result.roots.count
            guard Int(s.dropFirst(5)) == index else {
                throw error(i + 1, "expected 'Tree=\(index)' (trees are numbered in order), got '\(s.prefix(60))'")
            }
            let treeLine = i + 1
            var keys: [Substring: Entry] = [:]
            i += 1
            while i < lines.count {
                let t = lines[i]
                if t.allSatisfy({ $0 == " " || $0 == "\t" }) || t.hasPrefix("Tree=") || t == "end of trees" { break }
                let (k, v) = keyValue(t)
                if let first = keys[k] { throw error(i + 1, "tree \(index): duplicate key '\(k)' (first on line \(first.line))") }
                keys[k] = Entry(value: v, line: i + 1)
                i += 1
            }
            try addTree(index: index, line: treeLine, keys: keys, maxFeature: maxFeature, into: &result)
        }
        guard sawEnd else {
            throw error(lines.count, "the file ends before 'end of trees' (truncated?) after \(result.roots.count) trees")
        }
        guard !result.roots.isEmpty else { throw error(i + 1, "the model has no trees") }
        if let e = treeSizes {
            let n = e.value.split(separator: " ", omittingEmptySubsequences: true).count
            guard n == result.roots.count else {
                throw error(e.line, "tree_sizes lists \(n) trees but the file has \(result.roots.count)")
            }
        }
        return result
    }

    func addTree(index: Int, line: Int, keys: [Substring: Entry], maxFeature: Int, into r: inout Result) throws {
        let t = "tree \(index)"
        func required(_ key: Substring) throws -> Entry {
            guard let e = keys[key] else { throw error(line, "\(t): missing key '\(key)'") }
            return e
        }
        func scalar(_ key: Substring) throws -> (Int, Int) {
            let e = try required(key)
            guard let v = Int(e.value.trimmingSpaces) else { throw error(e.line, "\(t): \(key) '\(e.value)' is not an integer") }
            return (v, e.line)
        }
        /// Exactly `count` space-separated values of `key`, each converted by `convert`.
        func array<T>(_ key: Substring, _ count: Int, _ what: String, _ expectation: String,
                      _ convert: (Substring) -> T?) throws -> ([T], Int) {
            let e = try required(key)
            let parts = e.value.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count == count else {
                throw error(e.line, "\(t): \(key) has \(parts.count) values, expected \(count) (\(expectation))")
            }
            var out: [T] = []
            out.reserveCapacity(count)
            for (j, p) in parts.enumerated() {
                guard let v = convert(p) else { throw error(e.line, "\(t): \(key)[\(j)] '\(p.prefix(40))' is not \(what)") }
                out.append(v)
            }
            return (out, e.line)
        }

        let (numLeaves, leavesLine) = try scalar("num_leaves")
        guard numLeaves >= 1 && numLeaves <= (1 << 24) else { throw error(leavesLine, "\(t): num_leaves \(numLeaves) is out of range (1 ... 2^24)") }
        let (numCat, catLine) = try scalar("num_cat")
        guard numCat >= 0 && numCat < numLeaves else { throw error(catLine, "\(t): num_cat \(numCat) is out of range (0 ..< num_leaves)") }
        if let e = keys["is_linear"], e.value.trimmingSpaces != "0" {
            throw error(e.line, "\(t): linear trees (is_linear=\(e.value)) are not supported")
        }
        let perLeaf = "num_leaves = \(numLeaves)", perNode = "num_leaves − 1 = \(numLeaves - 1)"
        let (leafValues, leafLine) = try array("leaf_value", numLeaves, "a number", perLeaf) { Double($0) }
        if let j = leafValues.firstIndex(where: { !$0.isFinite }) {
            throw error(leafLine, "\(t): leaf_value[\(j)] is \(leafValues[j]), not finite")
        }
        let leafBase = r.leafValues.count
        let nodeBase = r.nodes.count
        guard leafBase + numLeaves < Int(Int32.max), nodeBase + numLeaves < Int(Int32.max) else {
            throw error(line, "\(t): the model has more than 2^31 nodes")
        }
        if numLeaves == 1 {
            r.leafValues.append(leafValues[0])
            r.roots.append(~Int32(leafBase))
            return
        }
        let n = numLeaves - 1
        let (features, featureLine) = try array("split_feature", n, "a feature index", perNode) { Int($0) }
        let (thresholds, thresholdLine) = try array("threshold", n, "a number", perNode) { Double($0) }
        let (lefts, leftLine) = try array("left_child", n, "a child index", perNode) { Int($0) }
        let (rights, rightLine) = try array("right_child", n, "a child index", perNode) { Int($0) }
        var decisions = [Int](repeating: 0, count: n), decisionLine = line
        if keys["decision_type"] != nil {
            (decisions, decisionLine) = try array("decision_type", n, "a decision type", perNode) { Int($0) }
        }
        var boundaries: [Int] = [], words: [UInt32] = []
        if numCat > 0 {
            let bLine: Int
            (boundaries, bLine) = try array("cat_boundaries", numCat + 1, "a bitset offset", "num_cat + 1") { Int($0) }
            guard boundaries[0] == 0, zip(boundaries, boundaries.dropFirst()).allSatisfy({ $0 <= $1 }) else {
                throw error(bLine, "\(t): cat_boundaries must start at 0 and never decrease")
            }
            guard boundaries[numCat] <= (1 << 26) else { throw error(bLine, "\(t): cat_boundaries end at \(boundaries[numCat]), too large") }
            (words, _) = try array("cat_threshold", boundaries[numCat], "a 32-bit bitset word", "the last cat_boundaries value") { UInt32($0) }
        }

        // Structure: from node 0, every node and every leaf is reached exactly once.
        var nodeSeen = [Bool](repeating: false, count: n), leafSeen = [Bool](repeating: false, count: numLeaves)
        nodeSeen[0] = true
        var stack = [0]
        while let k = stack.popLast() {
            for (c, side, cLine) in [(lefts[k], "left_child", leftLine), (rights[k], "right_child", rightLine)] {
                if c >= 0 {
                    guard c < n else { throw error(cLine, "\(t): \(side)[\(k)] = \(c) is not a node (num_leaves \(numLeaves): nodes 0...\(n - 1))") }
                    guard !nodeSeen[c] else { throw error(cLine, "\(t): \(side)[\(k)] = \(c): node \(c) is reached twice (not a tree)") }
                    nodeSeen[c] = true
                    stack.append(c)
                } else {
                    let leaf = ~c
                    guard leaf < numLeaves else {
                        throw error(cLine, "\(t): \(side)[\(k)] = \(c) is leaf \(leaf), but there are \(numLeaves) leaves")
                    }
                    guard !leafSeen[leaf] else { throw error(cLine, "\(t): \(side)[\(k)] = \(c): leaf \(leaf) is reached twice (not a tree)") }
                    leafSeen[leaf] = true
                }
            }
        }
        if let k = nodeSeen.firstIndex(of: false) { throw error(leftLine, "\(t): node \(k) is not reachable from node 0") }
        if let k = leafSeen.firstIndex(of: false) { throw error(leftLine, "\(t): leaf \(k) is not reachable from node 0") }

        func ref(_ c: Int) -> Int32 { c >= 0 ? Int32(nodeBase + c) : ~Int32(leafBase + ~c) }
        var catUsedWords: [Int] = []  // offset in `r.bitsets` of each of this tree's bitsets
        for c in 0..<numCat {
            catUsedWords.append(r.bitsets.count)
            r.bitsets.append(contentsOf: words[boundaries[c]..<boundaries[c + 1]])
        }
        for k in 0..<n {
            let f = features[k]
            guard f >= 0 && f <= maxFeature else {
                throw error(featureLine, "\(t): split_feature[\(k)] = \(f) is outside 0...max_feature_idx (\(maxFeature))")
            }
            let d = decisions[k]
            guard d >= 0 && d < 16 else { throw error(decisionLine, "\(t): decision_type[\(k)] = \(d) has unknown bits (known: 0–3)") }
            let missing = (d >> 2) & 3
            guard missing != 3 else { throw error(decisionLine, "\(t): decision_type[\(k)] = \(d) has missing type 3 (known: 0 None, 1 Zero, 2 NaN)") }
            let th = thresholds[k]
            var node = TreeNode(threshold: th, feature: Int32(f), left: ref(lefts[k]), right: ref(rights[k]),
                                aux: 0, words: 0, kind: UInt8(missing))
            if d & 1 != 0 {
                guard numCat > 0 else {
                    throw error(decisionLine, "\(t): decision_type[\(k)] = \(d) is categorical but the tree has num_cat=0")
                }
                guard th >= 0, th < Double(numCat), th == th.rounded(.towardZero) else {
                    throw error(thresholdLine, "\(t): threshold[\(k)] = \(th) of a categorical split is not a bitset index in 0..<\(numCat)")
                }
                let c = Int(th)
                node.kind = TreeNode.categorical
                node.aux = Int32(catUsedWords[c])
                node.words = Int32(boundaries[c + 1] - boundaries[c])
            } else {
                guard th.isFinite else { throw error(thresholdLine, "\(t): threshold[\(k)] is \(th), not finite") }
                node.aux = d & 2 != 0 ? node.left : node.right
            }
            r.nodes.append(node)
        }
        r.leafValues.append(contentsOf: leafValues)
        r.roots.append(Int32(nodeBase))
    }
}

private extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
