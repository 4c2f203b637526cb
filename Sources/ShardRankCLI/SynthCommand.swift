internal import ArgumentParser
internal import ShardRankSynth
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// `shardrank synth --out DIR [--users N] [--items M] [--dim D] [--genres G] [--countries C] [--seed S]
/// [--heldout-per-user H] [--interactions-per-user K] [--quiet]`: writes a deterministic synthetic world as
/// an input directory (docs/data.md, with the model). Progress on stderr; bad
/// arguments exit 64 (usage), an unwritable DIR "error: …" and exit 1. Prints DIR on stdout.
struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a deterministic synthetic world (latent factors, genres, countries, interactions) as build input.",
        discussion: """
        Writes items.npy + item_ids.npy, users.npy + user_ids.npy, items.csv, users.csv, \
        interactions.csv, heldout.csv (each user's last H interactions) and world.json into DIR, \
        ready for 'shardrank build --input DIR'. The same arguments give the same bytes. \
        See docs/data.md for the model.
        """)

    @Option(name: .long, help: "Output directory (created if missing; files of the same names are overwritten).")
    var out: String

    @Option(name: .long, help: "Number of users N.")
    var users: Int = SynthParameters().users

    @Option(name: .long, help: "Number of items M.")
    var items: Int = SynthParameters().items

    @Option(name: .long, help: "Embedding dimension D (D − 1 latent dimensions + 1 popularity coordinate).")
    var dim: Int = SynthParameters().dim

    @Option(name: .long, help: "Number of genres G (1...64).")
    var genres: Int = SynthParameters().genres

    @Option(name: .long, help: "Number of countries C.")
    var countries: Int = SynthParameters().countries

    @Option(name: .long, help: "Random seed (unsigned 64-bit).")
    var seed: UInt64 = SynthParameters().seed

    @Option(name: .customLong("heldout-per-user"), help: "Interactions per user held out (the last H by time) into heldout.csv.")
    var heldout: Int = SynthParameters().heldout

    @Option(name: .customLong("interactions-per-user"), help: "Mean interactions per user K (training + held out).")
    var interactionsPerUser: Int = SynthParameters().interactionsPerUser

    @Flag(name: .long, help: "No progress output on stderr.")
    var quiet = false

    var parameters: SynthParameters {
        var p = SynthParameters()
        p.users = users
        p.items = items
        p.dim = dim
        p.genres = genres
        p.countries = countries
        p.seed = seed
        p.heldout = heldout
        p.interactionsPerUser = interactionsPerUser
        return p
    }

    func validate() throws {
        do { try parameters.validate() } catch let e as SynthError { throw ValidationError(e.message) }
    }

    func run() throws {
        let bar = SynthProgressBar(enabled: !quiet)
        do {
            try Synth.generate(parameters, outputDirectory: out) { bar.update($0) }
        } catch let error as SynthError {
            bar.finish()
            writeToStderr("error: \(error)\n")
            throw ExitCode(1)
        }
        bar.finish()
        print(out)
    }
}

private func writeToStderr(_ s: String) {
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

/// A one-line progress bar on stderr, redrawn at most ~10 times a second, one line per stage.
/// Used from the generating thread only.
private final class SynthProgressBar {
    private let enabled: Bool
    private var lastStage = ""
    private var lastDraw: UInt64 = 0
    private var drawn = false

    init(enabled: Bool) { self.enabled = enabled }

    func update(_ p: SynthProgress) {
        guard enabled else { return }
        let now = Self.nowMillis()
        let complete = p.done >= p.total
        if p.stage == lastStage && !complete && now &- lastDraw < 100 { return }
        if p.stage != lastStage && drawn { writeToStderr("\n") }
        lastStage = p.stage
        lastDraw = now
        let frac = p.total > 0 ? min(1, Double(p.done) / Double(p.total)) : 1
        let width = 30
        let filled = Int(frac * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        writeToStderr("\rsynth: \(p.stage) [\(bar)] \(Int(frac * 100))% (\(p.done)/\(p.total))")
        drawn = true
    }

    func finish() {
        guard enabled, drawn else { return }
        writeToStderr("\n")
        drawn = false
    }

    private static func nowMillis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}
