import ShardRankRouting
internal import ArgumentParser
internal import ShardRankTables
internal import ShardRankKernels
internal import Synchronization
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// `shardrank build --input DIR --out ROOT --shards S [--dtype f32|f16|int8] [--similar K]
/// [--similar-source vectors|interactions] [--covisit-window W] [--recent N]`:
/// turns an input directory (docs/data.md) into the next table-set version `ROOT/v<N+1>/`.
/// Progress goes to stderr; on bad input it prints `error: FILE:LINE: message` and exits 1 with
/// nothing published. On success it prints the published version directory on stdout.
struct BuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build the next version of a sharded table set from an input directory.",
        discussion: """
        Reads items.npy + item_ids.npy (required), users.npy + user_ids.npy, items.csv, users.csv, \
        interactions.csv and lists/*.csv|*.jsonl from --input, validates everything, and publishes \
        ROOT/v<N+1>/ (manifest.json last). Bad input: "error: FILE:LINE: message", exit 1, nothing \
        published. See docs/table-format.md.
        """)

    @Option(name: .long, help: "Input directory (items.npy, item_ids.npy, items.csv, users.csv, interactions.csv, ...).")
    var input: String

    @Option(name: .long, help: "Table-set root; the new version is written to ROOT/v<N+1>/.")
    var out: String

    @Option(name: .long, help: "Number of shards S (1...65536).")
    var shards: Int

    @Option(name: .long, help: "Element type of the embedding tables: f32, f16 or int8.")
    var dtype: String = "f32"

    @Option(name: .long, help: "Compute the 'similar' table: top K items per item by inner product (exact below --similar-exact-below items, else through an IVF-PQ4 index, with its recall@K reported).")
    var similar: Int?

    @Option(name: .customLong("similar-source"), help: "What --similar computes the lists from: vectors (inner product of the item embeddings) or interactions (co-visitation in users' time-ordered histories, cosine-normalised; needs interactions.csv). See docs/table-format.md.")
    var similarSource: String = "vectors"

    @Option(name: .customLong("covisit-window"), help: "With --similar-source interactions: items at most W positions apart in a user's history count as co-visited (0: the whole history).")
    var covisitWindow: Int = 20

    @Option(name: .customLong("similar-exact-below"), help: "Catalogs smaller than this get exact similar-item lists (O(M² · D)).")
    var similarExactBelow: Int = 50_000

    @Option(name: .long, help: "Recent items kept per user profile.")
    var recent: Int = 50

    @Option(name: .customLong("list-length"), help: "Length of the genre_top, country_top and popular lists.")
    var listLength: Int = 1000

    @Option(name: .long, help: "Build an ANN index over each shard's items: ivfpq4 (k-means lists + 4-bit product quantisation + exact re-rank), auto (= ivfpq4), or none. See docs/kernels.md.")
    var ann: String = "none"

    @Option(name: .customLong("ann-lists"), help: "ANN lists per shard (default: about 4·√(rows per shard), a power of two).")
    var annLists: Int?

    @Option(name: .customLong("ann-nprobe"), help: "Default lists probed per query (recorded in the manifest; requests may override).")
    var annNprobe: Int = 4

    @Option(name: .customLong("ann-rerank"), help: "Default candidates re-scored exactly per query (recorded in the manifest).")
    var annRerank: Int = 80

    @Flag(name: .customLong("ann-spill"), inversion: .prefixedNo, help: "File each item in a second list too (SOAR): twice the codes, much higher recall per list probed.")
    var annSpill = true

    @Option(name: .customLong("ann-default-mode"), help: "Search mode of a request that names none: ann or exact.")
    var annDefaultMode: String = "ann"

    @Option(name: .long, help: "Seed of the ANN index build (the same seed and input give the same index).")
    var seed: UInt64 = 1

    @Option(name: .customLong("hash-seed"), help: "Seed of the sharding hash (decimal or 0x-hex, non-zero), recorded in the manifest; shards report it in Info and the coordinator routes with it. Default 0x9e3779b97f4a7c15.")
    var hashSeed: String?

    @Flag(name: .long, help: "No progress output on stderr.")
    var quiet = false

    func validate() throws {
        guard TableDType(name: dtype) != nil else { throw ValidationError("--dtype must be f32, f16 or int8, got '\(dtype)'") }
        guard shards >= 1 && shards <= 65_536 else { throw ValidationError("--shards must be in 1...65536") }
        if let similar, similar < 1 { throw ValidationError("--similar must be ≥ 1") }
        guard BuildOptions.SimilarSource(rawValue: similarSource) != nil else {
            throw ValidationError("--similar-source must be vectors or interactions, got '\(similarSource)'")
        }
        if similarSource != "vectors" && similar == nil { throw ValidationError("--similar-source \(similarSource) needs --similar K") }
        guard covisitWindow >= 0 else { throw ValidationError("--covisit-window must be ≥ 0 (0: the whole history)") }
        guard similarExactBelow >= 0 else { throw ValidationError("--similar-exact-below must be ≥ 0") }
        guard recent >= 0 else { throw ValidationError("--recent must be ≥ 0") }
        guard listLength >= 1 else { throw ValidationError("--list-length must be ≥ 1") }
        guard ["none", "auto", "ivfpq4"].contains(ann) else { throw ValidationError("--ann must be ivfpq4, auto or none, got '\(ann)'") }
        if let annLists, annLists < 1 { throw ValidationError("--ann-lists must be ≥ 1") }
        guard annNprobe >= 1 else { throw ValidationError("--ann-nprobe must be ≥ 1") }
        guard annRerank >= 1 else { throw ValidationError("--ann-rerank must be ≥ 1") }
        guard annDefaultMode == "ann" || annDefaultMode == "exact" else { throw ValidationError("--ann-default-mode must be ann or exact") }
        if let hashSeed, Self.parseSeed(hashSeed) == nil {
            throw ValidationError("--hash-seed must be a non-zero 64-bit integer (decimal or 0x-hex), got '\(hashSeed)'")
        }
    }

    /// A non-zero seed in decimal or 0x-hex (0 is what a shard's Info reports when it predates
    /// the field, so it is not a seed one can choose).
    static func parseSeed(_ s: String) -> UInt64? {
        let v = s.lowercased().hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : UInt64(s)
        return v == 0 ? nil : v
    }

    func run() throws {
        var options = BuildOptions(shardCount: shards, dtype: TableDType(name: dtype)!, similarK: similar, recentN: recent,
                                   listLength: listLength)
        options.seed = hashSeed.flatMap(Self.parseSeed) ?? StableHash.defaultSeed
        options.similarExactBelow = similarExactBelow
        options.similarSource = BuildOptions.SimilarSource(rawValue: similarSource)!
        options.covisitWindow = covisitWindow
        if ann != "none" {
            options.ann = BuildOptions.ANNBuild(options: IVFPQBuildOptions(lists: annLists, seed: seed, spill: annSpill),
                                                defaults: ANNSearchParameters(nprobe: annNprobe, rerank: annRerank),
                                                defaultMode: annDefaultMode, pool: WorkerPool(spinMicroseconds: 0))
        }
        let bar = ProgressBar(enabled: !quiet)
        let version: UInt64
        let quiet = self.quiet
        do {
            version = try TableSetBuilder.build(inputDirectory: input, root: out, options: options, progress: { bar.update($0) },
                                                annReport: { r in
                bar.finish()
                if !quiet {
                    writeStderr("ann index: \(r.lists) lists × \(r.subspaces) subspaces per shard in \(Int(r.seconds.rounded())) s; "
                                + "probe bonus weight per shard " + r.probeBonusWeights.map { String(format: "%g", $0) }.joined(separator: "/")
                                + "; recall@10 of the defaults (nprobe \(annNprobe), rerank \(annRerank)) vs exact: "
                                + String(format: "%.4f", r.recallAt10)
                                + " over \(r.sampledQueries) sampled \(r.queriesGiven ? "user vectors" : "stored rows") as queries\n")
                }
            }, similarReport: { r in
                bar.finish()
                if !quiet {
                    let how = if let w = r.covisitWindow {
                        "by co-visitation in the interactions (window \(w == 0 ? "whole history" : String(w)))"
                    } else if r.approximate {
                        "through an IVF-PQ4 index, recall@\(r.k) vs exact \(String(format: "%.4f", r.recall)) on \(r.sampled) sampled items"
                    } else {
                        "exact"
                    }
                    writeStderr("similar items: top \(r.k) for \(r.items) items in \(Int(r.seconds.rounded())) s, \(how)\n")
                }
            })
        } catch let error as TableError {
            bar.finish()
            writeStderr("error: \(error)\n")
            throw ExitCode(1)
        }
        bar.finish()
        print(TableSetCatalog(root: out).directory(of: version))
    }
}

private func writeStderr(_ s: String) {
    var s = s
    s.withUTF8 { buf in
        var off = 0
        while off < buf.count {
            let n = write(2, buf.baseAddress! + off, buf.count - off)
            if n <= 0 { break }
            off += n
        }
    }
}

/// A one-line progress bar on stderr, redrawn at most ~10 times a second. Thread-safe.
private final class ProgressBar: Sendable {
    private struct State {
        var lastStage = ""
        var lastDraw: UInt64 = 0
        var drawn = false
    }

    private let enabled: Bool
    private let state = Mutex(State())

    init(enabled: Bool) { self.enabled = enabled }

    func update(_ p: BuildProgress) {
        guard enabled else { return }
        state.withLock { st in
            let now = Self.nowMillis()
            let complete = p.done >= p.total
            if p.stage == st.lastStage && !complete && now &- st.lastDraw < 100 { return }
            if p.stage != st.lastStage && st.drawn { writeStderr("\n") }
            st.lastStage = p.stage
            st.lastDraw = now
            let frac = p.total > 0 ? min(1, Double(p.done) / Double(p.total)) : 1
            let width = 30
            let filled = Int(frac * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            writeStderr("\r\(p.stage) [\(bar)] \(Int(frac * 100))% (\(p.done)/\(p.total))")
            st.drawn = true
        }
    }

    func finish() {
        guard enabled else { return }
        state.withLock { st in
            if st.drawn { writeStderr("\n") }
            st.drawn = false
        }
    }

    private static func nowMillis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}
