#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif
internal import CShardRankKernels

/// The JSON configuration that accompanies an MLP's safetensors weights.
///
/// ```json
/// {"format": "shardrank-mlp", "version": 1,
///  "features": [{"kind": "user", "dim": 64}, {"kind": "item", "dim": 64},
///               {"kind": "user_item_product", "dim": 64}, {"kind": "dense", "dim": 8},
///               {"kind": "attribute", "name": "genre", "tensor": "attr.genre", "dim": 16}],
///  "layers": [{"weight": "layers.0.weight", "bias": "layers.0.bias", "activation": "relu"},
///             {"weight": "layers.1.weight", "bias": "layers.1.bias", "activation": "sigmoid"}]}
/// ```
/// The input vector of a candidate is the concatenation of the features in order. Weights
/// are `[out, in]` (PyTorch `nn.Linear` layout), biases `[out]`; the last layer has one output.
public struct MLPConfig: Codable, Sendable, Equatable {
    public struct Feature: Codable, Sendable, Equatable {
        /// "user", "item", "user_item_product", "dense" or "attribute".
        public var kind: String
        public var dim: Int
        /// For "attribute": the `[values, dim]` embedding tensor.
        public var tensor: String?
        public var name: String?

        public init(kind: String, dim: Int, tensor: String? = nil, name: String? = nil) {
            self.kind = kind; self.dim = dim; self.tensor = tensor; self.name = name
        }
    }

    public struct Layer: Codable, Sendable, Equatable {
        public var weight: String
        public var bias: String
        /// "relu", "sigmoid" or "none".
        public var activation: String

        public init(weight: String, bias: String, activation: String) {
            self.weight = weight; self.bias = bias; self.activation = activation
        }
    }

    public var format: String?
    public var version: Int?
    public var features: [Feature]
    public var layers: [Layer]

    public init(features: [Feature], layers: [Layer]) {
        self.format = "shardrank-mlp"; self.version = 1
        self.features = features; self.layers = layers
    }
}

/// Which GEMM the MLP's hidden layers use.
public enum GEMMBackend: Sendable, Equatable {
    /// A GEMM from outside this module: `ShardRankBLAS`'s `.openBLAS` (benchmarks and tests only,
    /// so that the serving binary does not link libopenblas).
    case external(ExternalGEMM)
    /// This module's register-blocked micro-kernel for the given ISA.
    case native(KernelISA)
}

/// A GEMM supplied by another module: `C[m×n] = A[m×k] · B[n×k]ᵀ`, row-major with leading
/// dimensions, run on the calling thread. Equal when the names are equal.
public struct ExternalGEMM: Sendable, Equatable, CustomStringConvertible {
    public typealias Function = @Sendable (_ m: Int64, _ n: Int64, _ k: Int64, _ a: UnsafePointer<Float>, _ lda: Int64,
                                           _ b: UnsafePointer<Float>, _ ldb: Int64,
                                           _ c: UnsafeMutablePointer<Float>, _ ldc: Int64) -> Void
    public let name: String
    public let function: Function

    public init(name: String, _ function: @escaping Function) {
        self.name = name; self.function = function
    }

    public var description: String { name }

    public static func == (a: ExternalGEMM, b: ExternalGEMM) -> Bool { a.name == b.name }
}

/// A loaded MLP scorer. Immutable after loading and safe to use from many threads at once.
///
/// Weights live in 64-byte-aligned buffers owned by the model and freed in `deinit`.
public final class MLPModel: @unchecked Sendable {
    public enum Activation: Sendable { case relu, sigmoid, none }

    struct Layer {
        let inputs: Int
        let outputs: Int
        let weight: UnsafeMutablePointer<Float> // outputs * inputs
        let bias: UnsafeMutablePointer<Float>   // outputs
        let activation: Activation
        /// `weight` packed for the native GEMM, indexed by `KernelISA.rawValue` (nil where
        /// the CPU lacks the variant or `outputs == 1`).
        let packed: [UnsafeMutablePointer<Float>?]
    }

    enum FeatureSlot {
        case user, item, product
        case dense(offset: Int)              // column offset into the candidate's dense row
        case attribute(index: Int, table: UnsafeMutablePointer<Float>, values: Int)
    }

    public let config: MLPConfig
    /// Width of the concatenated input vector.
    public let inputDimension: Int
    public let userDimension: Int
    public let itemDimension: Int
    /// Dense features per candidate (sum of "dense" feature dims).
    public let denseDimension: Int
    /// Attribute ids per candidate (number of "attribute" features).
    public let attributeCount: Int
    let layers: [Layer]
    let slots: [(slot: FeatureSlot, dim: Int)]
    private var owned: [UnsafeMutablePointer<Float>] = []

    /// Loads `weightsPath` (safetensors) and `configPath` (JSON). Throws `ModelError`.
    public convenience init(weightsPath: String, configPath: String) throws {
        let weights: [UInt8], config: [UInt8]
        do {
            weights = [UInt8](try Data(contentsOf: URL(fileURLWithPath: weightsPath)))
            config = [UInt8](try Data(contentsOf: URL(fileURLWithPath: configPath)))
        } catch {
            throw ModelError(.unreadable, "cannot read model files: \(error)")
        }
        try self.init(weights: weights, config: config)
    }

    /// Builds a model from the bytes of a safetensors file and of its JSON config.
    public init(weights: [UInt8], config configBytes: [UInt8]) throws {
        let config: MLPConfig
        do {
            config = try JSONDecoder().decode(MLPConfig.self, from: Data(configBytes))
        } catch {
            throw ModelError(.malformedConfig, "config is not valid MLP JSON: \(error)")
        }
        if let f = config.format, f != "shardrank-mlp" {
            throw ModelError(.malformedConfig, "config format is '\(f)', expected 'shardrank-mlp'")
        }
        let st = try SafeTensors(bytes: weights)
        self.config = config
        func tensor(_ name: String) throws -> SafeTensors.Tensor {
            guard let t = st.tensors[name] else {
                throw ModelError(.missingTensor, "tensor '\(name)' named by the config is not in the weights file")
            }
            return t
        }
        var owned: [UnsafeMutablePointer<Float>] = []
        func copy(_ v: [Float]) -> UnsafeMutablePointer<Float> {
            let raw = UnsafeMutableRawPointer.allocate(byteCount: max(v.count, 1) * 4, alignment: 64)
            let p = raw.bindMemory(to: Float.self, capacity: max(v.count, 1))
            p.initialize(from: v, count: v.count)
            owned.append(p)
            return p
        }
        do {
            guard !config.features.isEmpty else { throw ModelError(.malformedConfig, "config has no features") }
            guard !config.layers.isEmpty else { throw ModelError(.malformedConfig, "config has no layers") }
            var user = 0, item = 0, dense = 0, attrs = 0, width = 0
            var slots: [(FeatureSlot, Int)] = []
            for f in config.features {
                guard f.dim > 0 else { throw ModelError(.malformedConfig, "feature '\(f.kind)' has dim \(f.dim)") }
                switch f.kind {
                case "user":
                    guard user == 0 else { throw ModelError(.malformedConfig, "more than one 'user' feature") }
                    user = f.dim; slots.append((.user, f.dim))
                case "item":
                    guard item == 0 else { throw ModelError(.malformedConfig, "more than one 'item' feature") }
                    item = f.dim; slots.append((.item, f.dim))
                case "user_item_product":
                    slots.append((.product, f.dim))
                case "dense":
                    slots.append((.dense(offset: dense), f.dim)); dense += f.dim
                case "attribute":
                    guard let tn = f.tensor else { throw ModelError(.malformedConfig, "attribute feature '\(f.name ?? "?")' names no tensor") }
                    let t = try tensor(tn)
                    guard t.shape.count == 2, t.shape[1] == f.dim, t.shape[0] > 0 else {
                        throw ModelError(.shapeMismatch, "attribute tensor '\(tn)' has shape \(t.shape), expected [values, \(f.dim)]")
                    }
                    slots.append((.attribute(index: attrs, table: copy(t.values), values: t.shape[0]), f.dim)); attrs += 1
                default:
                    throw ModelError(.malformedConfig, "unknown feature kind '\(f.kind)'")
                }
                width += f.dim
            }
            for f in config.features where f.kind == "user_item_product" {
                guard user == f.dim, item == f.dim else {
                    throw ModelError(.shapeMismatch, "user_item_product of dim \(f.dim) needs user and item features of the same dim (have \(user), \(item))")
                }
            }
            var layers: [Layer] = []
            var inputs = width
            for (i, l) in config.layers.enumerated() {
                let w = try tensor(l.weight), b = try tensor(l.bias)
                guard w.shape.count == 2 else { throw ModelError(.shapeMismatch, "layer \(i) weight '\(l.weight)' has shape \(w.shape), expected [out, in]") }
                guard w.shape[1] == inputs else {
                    throw ModelError(.shapeMismatch, "layer \(i) weight '\(l.weight)' takes \(w.shape[1]) inputs but \(i == 0 ? "the features give" : "the previous layer gives") \(inputs)")
                }
                guard b.shape == [w.shape[0]] else {
                    throw ModelError(.shapeMismatch, "layer \(i) bias '\(l.bias)' has shape \(b.shape), expected [\(w.shape[0])]")
                }
                let act: Activation
                switch l.activation {
                case "relu": act = .relu
                case "sigmoid": act = .sigmoid
                case "none", "linear": act = .none
                default: throw ModelError(.malformedConfig, "layer \(i) has unknown activation '\(l.activation)'")
                }
                let weight = copy(w.values)
                var packed: [UnsafeMutablePointer<Float>?] = Array(repeating: nil, count: KernelISA.allCases.count)
                if w.shape[0] > 1 {
                    for isa in KernelISA.supported {
                        let t = isa.table.pointee
                        let size = Int(t.gemm_packed_size(Int64(w.shape[0]), Int64(inputs)))
                        let p = copy([Float](repeating: 0, count: size))
                        t.gemm_pack_b(Int64(w.shape[0]), Int64(inputs), weight, Int64(inputs), p)
                        packed[Int(isa.rawValue)] = p
                    }
                }
                layers.append(Layer(inputs: inputs, outputs: w.shape[0], weight: weight, bias: copy(b.values),
                                    activation: act, packed: packed))
                inputs = w.shape[0]
            }
            guard inputs == 1 else { throw ModelError(.shapeMismatch, "the last layer has \(inputs) outputs, expected 1 (a score)") }
            self.layers = layers
            self.slots = slots
            self.inputDimension = width
            self.userDimension = user
            self.itemDimension = item
            self.denseDimension = dense
            self.attributeCount = attrs
            self.owned = owned
        } catch {
            for p in owned { p.deallocate() }
            throw error
        }
    }

    deinit { for p in owned { p.deallocate() } }

    /// Layer widths, input first (e.g. [256, 512, 256, 1]).
    public var layerWidths: [Int] { [inputDimension] + layers.map(\.outputs) }

    /// Rows of candidates scored per GEMM call.
    static let blockRows = 144 // a multiple of the GEMM micro-tiles (12 rows AVX-512, 6 AVX2)
    /// The pool splits candidates at multiples of this many rows (the AVX-512 micro-tile
    /// height, a multiple of the AVX2/baseline one), so that only the last chunk of a call
    /// ends in a partly filled micro-tile. Splitting 1,000 candidates into 8 chunks of 125
    /// rows instead left 8 partial 5-of-12-row tiles (measured 5 % slower per candidate).
    static let splitRows = 12

    /// Scores `count` candidates for one user: `scores[i] = mlp(features of candidate i)`.
    ///
    /// - Parameters:
    ///   - user: `userDimension` floats (ignored when the model has no user feature).
    ///   - items: the item vectors; candidate `i` uses row `itemRows?[i] ?? i`.
    ///   - itemRows: nil or `count` row numbers into `items`.
    ///   - count: number of candidates.
    ///   - dense: `count * denseDimension` floats, row-major (nil only if `denseDimension == 0`).
    ///   - attributes: `count * attributeCount` ids, row-major; an id outside its table
    ///     contributes a zero vector.
    ///   - scores: `count` floats.
    ///   - pool: splits candidates over threads in chunks of whole 12-row tiles (the GEMM
    ///     micro-tile height) of at least `minRowsPerTask` rows rounded up to whole tiles, when
    ///     there are at least two such chunks: large chunks first, down to that size at the end
    ///     (`WorkerPool.parallelFor`'s guided split), so the participants finish together.
    ///     Per-candidate cost does not depend on the chunk size once chunks are whole tiles
    ///     (measured within 1 % from 48 to 1,000 rows), hence the small default.
    ///   - gemm: the hidden layers' GEMM; the default, this module's AVX-512/AVX2 micro-kernel,
    ///     measured faster than Debian's OpenBLAS here (docs/kernels.md).
    /// Allocates per-participant scratch once per call (O(threads · 144 · widest layer)).
    public func score(user: UnsafePointer<Float>?, items: RowMatrix, itemRows: UnsafeBufferPointer<Int64>? = nil,
                      count: Int, dense: UnsafePointer<Float>? = nil, attributes: UnsafePointer<Int32>? = nil,
                      scores: UnsafeMutablePointer<Float>, pool: WorkerPool? = nil, minRowsPerTask: Int = 24,
                      gemm: GEMMBackend = .native(.best), isa: KernelISA = .best) {
        guard count > 0 else { return }
        precondition(itemDimension == 0 || items.dimension == itemDimension, "score: item dimension mismatch")
        precondition(userDimension == 0 || user != nil, "score: model needs a user vector")
        precondition(denseDimension == 0 || dense != nil, "score: model needs dense features")
        precondition(attributeCount == 0 || attributes != nil, "score: model needs attribute ids")
        precondition(itemRows == nil || itemRows!.count == count)
        // The pool splits tiles of `splitRows` candidates, not single candidates.
        let tiles = (count + Self.splitRows - 1) / Self.splitRows
        let minTiles = max(1, (minRowsPerTask + Self.splitRows - 1) / Self.splitRows)
        let participants = pool?.participants(count: tiles, minChunk: minTiles) ?? 1
        let widest = layers.map(\.outputs).max()!
        let perParticipant = Self.blockRows * (inputDimension + 2 * widest) + inputDimension
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: participants * perParticipant * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: participants * perParticipant)
        defer { scratch.deallocate() }
        let run = { (range: Range<Int>, p: Int) in
            let base = scratch + p * perParticipant
            var start = range.lowerBound
            while start < range.upperBound {
                let m = min(Self.blockRows, range.upperBound - start)
                self.forward(block: start..<(start + m), user: user, items: items, itemRows: itemRows,
                             dense: dense, attributes: attributes, scores: scores, scratch: base,
                             widest: widest, gemm: gemm, isa: isa)
                start += m
            }
        }
        if let pool, participants > 1 {
            pool.parallelFor(count: tiles, minChunk: minTiles) { t, p in
                run((t.lowerBound * Self.splitRows)..<min(t.upperBound * Self.splitRows, count), p)
            }
        } else {
            run(0..<count, 0)
        }
    }

    private func forward(block: Range<Int>, user: UnsafePointer<Float>?, items: RowMatrix,
                         itemRows: UnsafeBufferPointer<Int64>?, dense: UnsafePointer<Float>?,
                         attributes: UnsafePointer<Int32>?, scores: UnsafeMutablePointer<Float>,
                         scratch: UnsafeMutablePointer<Float>, widest: Int, gemm: GEMMBackend, isa: KernelISA) {
        let m = block.count
        let inW = inputDimension
        let x = scratch
        var bufA = scratch + Self.blockRows * inW
        var bufB = bufA + Self.blockRows * widest
        // 1. Assemble the input rows.
        let itemDim = items.dimension
        for r in 0..<m {
            let c = block.lowerBound + r
            let row = x + r * inW
            var col = 0
            let itemRow = itemRows.map { Int($0[c]) } ?? c
            for (slot, dim) in slots {
                switch slot {
                case .user:
                    row.advanced(by: col).update(from: user!, count: dim)
                case .item:
                    copyItem(items, itemRow, to: row + col, dim: itemDim)
                case .product:
                    copyItem(items, itemRow, to: row + col, dim: itemDim)
                    for j in 0..<dim { row[col + j] *= user![j] }
                case .dense(let offset):
                    row.advanced(by: col).update(from: dense! + c * denseDimension + offset, count: dim)
                case .attribute(let index, let table, let values):
                    let id = Int(attributes![c * attributeCount + index])
                    if id >= 0 && id < values {
                        row.advanced(by: col).update(from: table + id * dim, count: dim)
                    } else {
                        row.advanced(by: col).update(repeating: 0, count: dim)
                    }
                }
                col += dim
            }
        }
        // 2. Layers.
        var input = x
        for layer in layers {
            if layer.outputs == 1 {
                let rows = RowMatrix(f32: input, count: m, dimension: layer.inputs)
                let out = scores + block.lowerBound
                InnerProducts.dot(query: layer.weight, rows: rows, scores: out, isa: isa)
                Self.biasActivation(out, rows: m, cols: 1, bias: layer.bias, layer.activation)
                return
            }
            switch gemm {
            case .external(let external):
                external.function(Int64(m), Int64(layer.outputs), Int64(layer.inputs), input, Int64(layer.inputs),
                                  layer.weight, Int64(layer.inputs), bufA, Int64(layer.outputs))
            case .native(let nisa):
                nisa.table.pointee.gemm_nt_packed(Int64(m), Int64(layer.outputs), Int64(layer.inputs), input,
                                                 Int64(layer.inputs), layer.packed[Int(nisa.rawValue)]!, bufA,
                                                 Int64(layer.outputs))
            }
            Self.biasActivation(bufA, rows: m, cols: layer.outputs, bias: layer.bias, layer.activation)
            input = bufA
            swap(&bufA, &bufB)
        }
    }

    @inline(__always)
    private func copyItem(_ items: RowMatrix, _ row: Int, to dst: UnsafeMutablePointer<Float>, dim: Int) {
        switch items.elementType {
        case .f32:
            dst.update(from: items.base.assumingMemoryBound(to: Float.self) + row * dim, count: dim)
        case .f16, .int8:
            let s = items.scale(row: row)
            for j in 0..<dim { dst[j] = items.value(row: row, column: j) * s }
        }
    }

    static func biasActivation(_ c: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                               bias: UnsafePointer<Float>, _ act: Activation) {
        for r in 0..<rows {
            let row = c + r * cols
            switch act {
            case .relu:
                for j in 0..<cols { row[j] = max(row[j] + bias[j], 0) }
            case .sigmoid:
                for j in 0..<cols { row[j] = 1 / (1 + expf(-(row[j] + bias[j]))) }
            case .none:
                for j in 0..<cols { row[j] += bias[j] }
            }
        }
    }
}
