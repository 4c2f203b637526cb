// BenchANN: ShardRank's IVF-PQ4 index on a benchmark dataset written by scripts/bench-ann-data.py
// (base.npy, queries.npy, gt.npy, exclude_<pct>.npy, gt_exclude_<pct>.npy). Build in release:
//   swift build -c release --product BenchANN
// Usage: BenchANN --data DIR [--k 10,100] [--dtype f32|int8] [--lists N] [--threads T] [--no-spill] [--dsub D]
//                 [--sweep NPROBE:RERANK,...] [--excluded 1,10,50] [--seed S] [--name NAME]
//                 [--probe-bonus W | --tune-knob P:R --tune-queries N]
// Prints one JSON object per line (the schema of scripts/bench-ann-report.py):
//   {"system","dataset","build_s","build_threads","bytes_per_vector","bytes_note"}       (the build)
//   {"system","dataset","k","knob","recall","qps_cpu","excluded","excluded_returned"}  (sweep points)
// Searches run one query per call on one thread; queries per CPU-second use the thread's CPU
// clock over all queries of a sweep point (median of 3 passes).
import Foundation
import ShardRankKernels

func log(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }
func out(_ s: String) { FileHandle.standardOutput.write((s + "\n").data(using: .utf8)!) }
func fail(_ s: String) -> Never { log("BenchANN: \(s)"); exit(2) }

let args = Array(CommandLine.arguments.dropFirst())
func opt(_ name: String) -> String? { args.firstIndex(of: name).flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil } }
guard let dir = opt("--data") else { fail("usage: BenchANN --data DIR [--k 10,100] [--dtype f32|int8] [--lists N] [--sweep P:R,...]") }
let ks = (opt("--k") ?? "10").split(separator: ",").map { Int($0)! }
let dtype = opt("--dtype") ?? "f32"
let threads = Int(opt("--threads") ?? "2")!
let seed = UInt64(opt("--seed") ?? "1")!
let excludedPcts = (opt("--excluded") ?? "1,10,50").split(separator: ",").map { Int($0)! }

/// A little-endian `<f4`/`<i8` C-order .npy (format 1.0/2.0), read whole.
struct Npy {
    var shape: [Int]
    var bytes: [UInt8]
    init(_ path: String) {
        guard let d = FileManager.default.contents(atPath: path) else { fail("cannot read \(path)") }
        let b = [UInt8](d)
        guard b.count > 10, b[0] == 0x93 else { fail("\(path): not a .npy file") }
        let hl = b[6] == 1 ? Int(b[8]) | Int(b[9]) << 8 : Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24
        let hs = b[6] == 1 ? 10 : 12
        let header = String(decoding: b[hs..<(hs + hl)], as: UTF8.self)
        guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
            fail("\(path): no shape in header")
        }
        shape = header[open.upperBound..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        bytes = Array(b[(hs + hl)...])
    }
    var floats: [Float] { bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } }
    var int64s: [Int64] { bytes.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) } }
}

let meta = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/meta.json")))) as? [String: Any]
let dataset = opt("--name") ?? (meta?["kind"] as? String) ?? URL(fileURLWithPath: dir).lastPathComponent
let baseNpy = Npy(dir + "/base.npy"), queriesNpy = Npy(dir + "/queries.npy"), gtNpy = Npy(dir + "/gt.npy")
let n = baseNpy.shape[0], d = baseNpy.shape[1], nq = queriesNpy.shape[0], gtk = gtNpy.shape[1]
let base = baseNpy.floats, queries = queriesNpy.floats, gt = gtNpy.int64s
log("BenchANN: \(dataset): \(n) x \(d) base, \(nq) queries, dtype \(dtype)")

// The rows as a shard stores them: f32, or int8 with a per-row scale max|x|/127.
let (i8, i8scales): ([Int8], [Float]) = {
    guard dtype == "int8" else { return ([], []) }
    var q = [Int8](repeating: 0, count: n * d), scales = [Float](repeating: 1, count: n)
    for r in 0..<n {
        var mx: Float = 0
        for j in 0..<d { mx = max(mx, abs(base[r * d + j])) }
        let s: Float = mx > 0 ? mx / 127 : 1
        scales[r] = s
        for j in 0..<d { q[r * d + j] = Int8(max(-127, min(127, (base[r * d + j] / s).rounded()))) }
    }
    return (q, scales)
}()
let ids = (0..<n).map { UInt64($0) }

func cpuSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
func wallSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func withRows<R>(_ body: (RowMatrix) throws -> R) rethrows -> R {
    if dtype == "int8" {
        return try i8.withUnsafeBufferPointer { p in try i8scales.withUnsafeBufferPointer { s in
            try body(RowMatrix(int8: p.baseAddress!, scales: s.baseAddress!, count: n, dimension: d)) } }
    }
    return try base.withUnsafeBufferPointer { try body(RowMatrix(f32: $0.baseAddress!, count: n, dimension: d)) }
}

let pool = WorkerPool(threadCount: threads)
var options = IVFPQBuildOptions(seed: seed)
options.lists = opt("--lists").map { Int($0)! }
if let v = opt("--dsub") { options.subspaceDimension = Int(v)! }
if args.contains("--no-spill") { options.spill = false }
if let v = opt("--spill-weight") { options.spillWeight = Float(v)! }
let t0 = wallSeconds()
let data: IVFPQIndexData
do {
    data = try withRows { rows in try IVFPQBuilder.build(rows: rows, options: options, pool: pool) }
} catch { fail("build: \(error)") }
// The probe-bonus weight: chosen as `shardrank build` does (recall@10 against the exact scan at
// `--tune-knob`, default 4:80) on the first `--tune-queries` (200) queries, or set by `--probe-bonus W`.
if let w = opt("--probe-bonus") {
    data.setProbeBonusWeight(Float(w)!)
} else {
    let tk = (opt("--tune-knob") ?? "4:80").split(separator: ":").map { Int($0)! }
    let tq = min(nq, Int(opt("--tune-queries") ?? "200")!)
    let chosen = withRows { rows in ids.withUnsafeBufferPointer { idp in queries.withUnsafeBufferPointer { qp in
        IVFPQBuilder.chooseProbeBonusWeight(data, rows: rows, ids: idp.baseAddress!, queries: qp.baseAddress!, count: tq,
                                            parameters: ANNSearchParameters(nprobe: tk[0], rerank: tk[1]))
    } } }
    log("BenchANN: probe bonus weight \(chosen.weight) (recall@10 \(Double(chosen.hits) / Double(max(1, chosen.asked))) at \(tk[0]):\(tk[1]) on \(tq) queries)")
}
let buildS = wallSeconds() - t0
let index = data.index
let indexBytes = data.centroids.count * 4 + data.codebooks.count * 4 + data.listOffsets.count * 8 + data.codes.count + data.rows.count * 4
let rowBytes = dtype == "int8" ? d + 4 : 4 * d
log(String(format: "BenchANN: built %d lists, %d subspaces in %.1f s (%d threads)", index.listCount, index.subspaces, buildS, threads))
func jsonLine(_ o: [String: Any]) -> String {
    String(decoding: try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self)
}
out(jsonLine(["system": "shardrank", "dataset": dataset, "build_s": buildS, "build_threads": threads,
              "bytes_per_vector": Double(indexBytes + n * rowBytes) / Double(n), "index_bytes_per_vector": Double(indexBytes) / Double(n),
              "bytes_note": "index (codes \(index.subspaces / 2) B + row number 4 B per entry, two entries per spilled row, + centroids) plus the \(dtype) rows it re-ranks from",
              "lists": index.listCount, "subspaces": index.subspaces, "dtype": dtype, "probe_bonus_weight": data.probeBonusWeight]))

func sweep(for k: Int) -> [ANNSearchParameters] {
    if let s = opt("--sweep") {
        return s.split(separator: ",").map { p in let v = p.split(separator: ":"); return ANNSearchParameters(nprobe: Int(v[0])!, rerank: Int(v[1])!) }
    }
    let probes = [2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
    let reranks = k <= 10 ? [40, 80, 160, 320, 640] : [200, 400, 800, 1600]
    return probes.flatMap { p in reranks.map { ANNSearchParameters(nprobe: p, rerank: $0) } }
}

/// One pass over every query; returns (recall@k, CPU seconds, excluded ids returned).
func run(k: Int, parameters: ANNSearchParameters, truth: [Int64], excluded: [UInt32]) -> (Double, Double, Int) {
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: index.scratchBytes(parameters, k: k), alignment: 64)
    defer { scratch.deallocate() }
    let exSet = Set(excluded)
    return withRows { rows in
        ids.withUnsafeBufferPointer { idp in
            queries.withUnsafeBufferPointer { qp in
                excluded.withUnsafeBufferPointer { ex in
                    var results = [[ScoredID]]()
                    results.reserveCapacity(nq)
                    let c0 = cpuSeconds()
                    for q in 0..<nq {
                        results.append(index.search(query: qp.baseAddress! + q * d, k: k, parameters: parameters, rows: rows,
                                                    ids: idp.baseAddress!, excludedRows: ex, scratch: scratch).items)
                    }
                    let cpu = cpuSeconds() - c0
                    var hits = 0, bad = 0
                    for q in 0..<nq {
                        let want = Set(truth[(q * gtk)..<(q * gtk + k)])
                        for it in results[q] {
                            if want.contains(Int64(it.id)) { hits += 1 }
                            if exSet.contains(UInt32(it.id)) { bad += 1 }
                        }
                    }
                    return (Double(hits) / Double(nq * k), cpu, bad)
                }
            }
        }
    }
}

for k in ks {
    guard k <= gtk else { fail("k \(k) > ground truth depth \(gtk)") }
    let cases: [(Int, [Int64], [UInt32])] = [(0, gt, [])] + excludedPcts.compactMap { pct in
        let pp = pct < 10 ? "0\(pct)" : "\(pct)"  // bench-ann-data.py names them exclude_01, exclude_10, exclude_50
        let p = "\(dir)/exclude_\(pp).npy", g = "\(dir)/gt_exclude_\(pp).npy"
        guard FileManager.default.fileExists(atPath: p), FileManager.default.fileExists(atPath: g) else { return nil }
        return (pct, Npy(g).int64s, Npy(p).int64s.map { UInt32($0) }.sorted())
    }
    for (pct, truth, excluded) in cases {
        var reachedTop = false
        for params in sweep(for: k) where !reachedTop {
            var cpus = [Double](); var recall = 0.0; var bad = 0
            for _ in 0..<3 { let (r, c, b) = run(k: k, parameters: params, truth: truth, excluded: excluded); cpus.append(c); recall = r; bad = b }
            let cpu = cpus.sorted()[1]
            out(jsonLine(["system": "shardrank", "dataset": dataset, "k": k, "knob": params.description, "recall": recall,
                          "qps_cpu": Double(nq) / cpu, "excluded": Double(pct) / 100, "excluded_returned": bad]))
            if recall >= 0.999 { reachedTop = true }
        }
    }
}
