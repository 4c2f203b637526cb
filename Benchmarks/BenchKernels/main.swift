// BenchKernels: throughput of the ShardRank kernels. Build in release:
//   swift build -c release --product BenchKernels
// Usage: BenchKernels [--json] [--quick] [--only SUBSTRING] [--cputime] [--paired R]
//                     [--trees MODEL.txt ROWS.f32 FEATURES]   (LightGBM ranker; scripts/bench-ranker)
// With --json: one object per case per line:
//   {"kernel","dtype","dim","n","batch","threads","per_second","unit"}
// Each figure is the median of several timed repetitions (see `measure`).
import Foundation
import ShardRankKernels
import ShardRankBLAS

let args = CommandLine.arguments
let json = args.contains("--json")
let quick = args.contains("--quick")
let only: String? = args.firstIndex(of: "--only").map { args[$0 + 1] }
let reps = quick ? 3 : 7
/// `--paired R`: for the MLP, R rounds of 1-thread, 2-thread, 1-thread samples of 0.1 s each,
/// reported as the median of the per-round ratios 2-thread / mean(1-thread) (kernel
/// "<name>_scaling", unit "x"). Both sides of each ratio run within 0.3 s of each other, so a
/// burst of load from another process on this shared machine hits one round, not the figure.
let paired: Int? = args.firstIndex(of: "--paired").map { Int(args[$0 + 1])! }
let minTime = quick ? 0.1 : 0.3

func log(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }
func out(_ s: String) { FileHandle.standardOutput.write((s + "\n").data(using: .utf8)!) }

/// `--cputime`: time with the process CPU clock instead of the wall clock (a development aid
/// on a shared machine: per CPU-second, so only meaningful for 1-thread cases).
let cpuTime = args.contains("--cputime")
func seconds() -> Double {
    var ts = timespec()
    clock_gettime(cpuTime ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Median over `reps` repetitions of (units done / seconds); each repetition calls `body`
/// (which returns the units it did) until `minTime` seconds have passed.
func measure(_ body: () -> Int) -> Double {
    _ = body() // warm-up
    var rates: [Double] = []
    for _ in 0..<reps {
        var units = 0
        let start = seconds()
        var elapsed = 0.0
        repeat {
            units += body()
            elapsed = seconds() - start
        } while elapsed < minTime
        rates.append(Double(units) / elapsed)
    }
    rates.sort()
    return rates[rates.count / 2]
}

var checksum: Double = 0

func report(_ kernel: String, _ dtype: String, dim: Int, n: Int, batch: Int, threads: Int,
            _ perSecond: Double, _ unit: String) {
    if json {
        out("{\"kernel\":\"\(kernel)\",\"dtype\":\"\(dtype)\",\"dim\":\(dim),\"n\":\(n),\"batch\":\(batch),"
              + "\"threads\":\(threads),\"per_second\":\(String(format: unit == "x" ? "%.3f" : "%.1f", perSecond)),\"unit\":\"\(unit)\"}")
    } else {
        out(String(format: "%-16@ %-5@ dim=%-4d n=%-8d batch=%-3d threads=%d  %12.4g %@",
                     kernel as NSString, dtype as NSString, dim, n, batch, threads, perSecond, unit as NSString))
    }
}

func enabled(_ name: String) -> Bool { only.map { name.contains($0) } ?? true }

/// splitmix64, seeded from the system once: the data only needs to look random, and
/// SystemRandomNumberGenerator costs a system call per value (minutes of setup for the
/// 1M-row tables).
struct FastRandom: RandomNumberGenerator {
    var inner: SplitMix64
    init() { var s = SystemRandomNumberGenerator(); inner = SplitMix64(seed: s.next()) }
    mutating func next() -> UInt64 { inner.next() }
}
var rng = FastRandom()
func randomFloats(_ n: Int) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 64).bindMemory(to: Float.self, capacity: n)
    var g = FastRandom()
    for i in 0..<n { p[i] = Float.random(in: -1..<1, using: &g) }
    return p
}

let pools = [1: WorkerPool(threadCount: 1), 2: WorkerPool(threadCount: 2)]
log("BenchKernels: isa=\(KernelISA.best) supported=\(KernelISA.supported) reps=\(reps)")

// ---- dot 1×N: contiguous and gathered from a 1M-row table -------------------------------
let tableRows = quick ? 1 << 18 : 1 << 20
for d in [64, 128] where enabled("dot") {
    let table = randomFloats(tableRows * d)
    let query = randomFloats(d)
    let indexPool = 1 << 22
    let indices = UnsafeMutablePointer<Int64>.allocate(capacity: indexPool)
    for i in 0..<indexPool { indices[i] = Int64.random(in: 0..<Int64(tableRows), using: &rng) }
    let out = UnsafeMutablePointer<Float>.allocate(capacity: 10_000)
    for n in [1_000, 10_000] {
        for threads in [1, 2] {
            let pool = pools[threads]!
            // contiguous: the first n rows of the table (cache-resident after warm-up, like numpy's M @ u)
            let rows = RowMatrix(f32: table, count: n, dimension: d)
            let r1 = measure {
                pool.parallelFor(count: n, minChunk: 512) { range, _ in
                    InnerProducts.dot(query: query, rows: rows.slice(range), scores: out + range.lowerBound)
                }
                return n
            }
            checksum += Double(out[n - 1])
            report("dot", "f32", dim: d, n: n, batch: 1, threads: threads, r1, "candidates/s")
            // gathered: n random rows of the 1M-row table, a fresh window of indices each call
            let full = RowMatrix(f32: table, count: tableRows, dimension: d)
            var cursor = 0
            let r2 = measure {
                if cursor + n > indexPool { cursor = 0 }
                let idx = indices + cursor
                cursor += n
                pool.parallelFor(count: n, minChunk: 512) { range, _ in
                    InnerProducts.dot(query: query, rows: full,
                                      rowIndices: UnsafeBufferPointer(start: idx + range.lowerBound, count: range.count),
                                      scores: out + range.lowerBound)
                }
                return n
            }
            checksum += Double(out[n - 1])
            report("dot_gathered", "f32", dim: d, n: n, batch: 1, threads: threads, r2, "candidates/s")
        }
    }
    table.deallocate(); query.deallocate(); indices.deallocate(); out.deallocate()
}

// ---- Search: B queries × 1M rows of dim 64 → top-100 --------------------------------------
if enabled("search") {
    let n = quick ? 1 << 18 : 1_000_000, d = 64, k = 100
    let f32 = randomFloats(n * d)
    let f16 = UnsafeMutablePointer<UInt16>.allocate(capacity: n * d)
    for i in 0..<(n * d) { f16[i] = Float16(f32[i]).bitPattern }
    let i8 = UnsafeMutablePointer<Int8>.allocate(capacity: n * d)
    let scales = UnsafeMutablePointer<Float>.allocate(capacity: n)
    for r in 0..<n {
        var m: Float = 0
        for j in 0..<d { m = max(m, abs(f32[r * d + j])) }
        let s = m > 0 ? m / 127 : 1
        scales[r] = s
        for j in 0..<d { i8[r * d + j] = Int8((f32[r * d + j] / s).rounded()) }
    }
    let ids = UnsafeMutablePointer<UInt64>.allocate(capacity: n)
    for i in 0..<n { ids[i] = UInt64(i) }
    let matrices: [(String, RowMatrix)] = [
        ("f32", RowMatrix(f32: f32, count: n, dimension: d)),
        ("f16", RowMatrix(f16: f16, count: n, dimension: d)),
        ("int8", RowMatrix(int8: i8, scales: scales, count: n, dimension: d)),
    ]
    for batch in [1, 16] {
        let queries = randomFloats(batch * d)
        for (name, rows) in matrices {
            for threads in [1, 2] {
                let pool = pools[threads]!
                let r = measure {
                    let res = Search.topK(queries: queries, queryCount: batch, rows: rows, ids: ids, k: k, pool: pool)
                    checksum += Double(res[0].first?.score ?? 0)
                    return batch
                }
                report("search", name, dim: d, n: n, batch: batch, threads: threads, r, "queries/s")
            }
        }
        queries.deallocate()
    }
    f32.deallocate(); f16.deallocate(); i8.deallocate(); scales.deallocate(); ids.deallocate()
}

// ---- MLP 256 → 512 → 256 → 1 ---------------------------------------------------------------
if enabled("mlp") {
    let dims = [256, 512, 256, 1]
    var tensors: [(name: String, shape: [Int], values: [Float])] = []
    var layers: [MLPConfig.Layer] = []
    for l in 0..<3 {
        let (i, o) = (dims[l], dims[l + 1])
        let scale = Float(1 / Double(i).squareRoot())
        tensors.append(("l\(l).w", [o, i], (0..<(o * i)).map { _ in Float.random(in: -scale..<scale, using: &rng) }))
        tensors.append(("l\(l).b", [o], (0..<o).map { _ in Float.random(in: -0.1..<0.1, using: &rng) }))
        layers.append(.init(weight: "l\(l).w", bias: "l\(l).b", activation: l == 2 ? "sigmoid" : "relu"))
    }
    let config = MLPConfig(features: [.init(kind: "user", dim: 64), .init(kind: "item", dim: 64),
                                      .init(kind: "user_item_product", dim: 64), .init(kind: "dense", dim: 64)],
                           layers: layers)
    let model = try! MLPModel(weights: SafeTensors.serialize(tensors), config: Array(JSONEncoder().encode(config)))
    let maxN = 10_000
    let user = randomFloats(64), items = randomFloats(maxN * 64), dense = randomFloats(maxN * 64)
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: maxN)
    let backends: [(String, GEMMBackend)] = [("mlp_openblas", .openBLAS), ("mlp_native", .native(KernelISA.best))]
    for n in [1_000, 10_000] {
        for (name, backend) in backends {
            for threads in [1, 2] {
                let r = measure {
                    model.score(user: user, items: RowMatrix(f32: items, count: n, dimension: 64), count: n,
                                dense: dense, scores: scores, pool: pools[threads]!, gemm: backend)
                    return n
                }
                checksum += Double(scores[0])
                report(name, "f32", dim: 256, n: n, batch: 1, threads: threads, r, "candidates/s")
            }
            if let rounds = paired {
                func sample(_ threads: Int) -> Double {
                    let start = seconds()
                    var units = 0, elapsed = 0.0
                    repeat {
                        model.score(user: user, items: RowMatrix(f32: items, count: n, dimension: 64), count: n,
                                    dense: dense, scores: scores, pool: pools[threads]!, gemm: backend)
                        units += n
                        elapsed = seconds() - start
                    } while elapsed < 0.1
                    return Double(units) / elapsed
                }
                _ = sample(2)
                var ratios: [Double] = []
                for _ in 0..<rounds {
                    let a = sample(1), b = sample(2), c = sample(1)
                    ratios.append(b / ((a + c) / 2))
                }
                ratios.sort()
                report(name + "_scaling", "f32", dim: 256, n: n, batch: 1, threads: 2, ratios[ratios.count / 2], "x")
            }
        }
    }
}

// A LightGBM ranker over rows written by scripts/bench-ranker (the same model and rows its
// LightGBM anchor scores): a Recommend's candidates (batch of 131, one request) and a large
// batch (offline scoring), on 1 and 2 threads.
if let at = args.firstIndex(of: "--trees") {
    let model = try! TreeEnsemble(path: args[at + 1])
    let data = try! Data(contentsOf: URL(fileURLWithPath: args[at + 2]))
    let features = Int(args[at + 3])!
    let rows = data.count / 4 / features
    let x = UnsafeMutablePointer<Float>.allocate(capacity: rows * features)
    _ = data.withUnsafeBytes { memcpy(x, $0.baseAddress!, rows * features * 4) }
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: rows)
    for batch in [131, rows] {
        for threads in [1, 2] {
            var offset = 0
            let r = measure {
                if offset + batch > rows { offset = 0 }
                model.score(features: x + offset * features, rows: batch, stride: features, into: scores, pool: pools[threads]!)
                offset += batch
                return batch
            }
            checksum += Double(scores[0])
            report("trees", "f32", dim: features, n: model.treeCount, batch: batch, threads: threads, r, "rows/s")
        }
    }
}

// ---- Query tower: one user vector, d = 64, hidden 128, R = 20 recent items -------------------
// The coordinator's forward pass per request (QueryTower.userVector: two means over the recent
// rows, the genre and country embeddings, 64+64+16+8 → 128 → 64 with the dot kernel).
if enabled("query_tower") {
    let d = 64, hidden = 128, recent = 20, gd = 16, cd = 8
    let genres = (0..<20).map { "g\($0)" }, countries = (0..<50).map { "c\($0)" }
    let config = QueryTowerConfig(dim: d, recent: recent, recencyDecay: 0.8, residual: true, genreDim: gd, countryDim: cd, hidden: hidden,
                                  genres: genres, countries: countries)
    func random(_ shape: [Int]) -> [Float] { (0..<shape.reduce(1, *)).map { _ in Float.random(in: -0.1..<0.1, using: &rng) } }
    let shapes: [(String, [Int])] = [("genre_embedding", [genres.count + 1, gd]), ("country_embedding", [countries.count + 1, cd]),
                                     ("layer0.weight", [hidden, config.inputDimension]), ("layer0.bias", [hidden]),
                                     ("layer1.weight", [d, hidden]), ("layer1.bias", [d])]
    let tower = try! QueryTower(weights: SafeTensors.serialize(shapes.map { ($0.0, $0.1, random($0.1)) }),
                                config: Array(JSONEncoder().encode(config)))
    let rows = randomFloats(recent * d), out = randomFloats(d)
    let userGenres = ["g3", "g11", "g7"]
    let r = measure {
        for _ in 0..<100 {
            tower.userVector(recentRows: rows, count: recent, genres: userGenres, country: "c12", into: out)
        }
        return 100
    }
    checksum += Double(out[0])
    report("query_tower", "f32", dim: d, n: recent, batch: 1, threads: 1, r, "vectors/s")
    log(String(format: "query_tower: %.2f µs per user vector (d=%d, hidden=%d, R=%d)", 1e6 / r, d, hidden, recent))
    rows.deallocate(); out.deallocate()
}

log("checksum \(checksum)")
