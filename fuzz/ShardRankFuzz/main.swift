// ShardRankFuzz: the libFuzzer harnesses of issue 17, one binary (one build, one link).
// Usage: ShardRankFuzz HARNESS [libFuzzer flags and corpus directories]
//        ShardRankFuzz HARNESS --write-seeds DIR
// Built with `-sanitize=fuzzer,address` by scripts/fuzz (docs/fuzzing.md). SwiftPM gives an
// executable target its own `main`, so libFuzzer's is not linked: this one hands the selected
// harness to libFuzzer's `LLVMFuzzerRunDriver`, which parses the remaining flags as usual.
import CFuzzSupport
#if canImport(Glibc)
import Glibc
#endif

typealias FuzzEntry = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32

let harnesses: [(name: String, fuzz: FuzzEntry, seeds: (String) throws -> Void)] = [
    ("deframer", { DeframerHarness.fuzzOne($0, $1) }, DeframerHarness.writeSeeds),
    ("wire", { WireHarness.fuzzOne($0, $1) }, WireHarness.writeSeeds),
    ("http2", { HTTP2Harness.fuzzOne($0, $1) }, HTTP2Harness.writeSeeds),
    ("table-file", { TableFileHarness.fuzzOne($0, $1) }, TableFileHarness.writeSeeds),
    ("manifest", { ManifestHarness.fuzzOne($0, $1) }, ManifestHarness.writeSeeds),
    ("csv", { CSVHarness.fuzzOne($0, $1) }, CSVHarness.writeSeeds),
    ("npy", { NpyHarness.fuzzOne($0, $1) }, NpyHarness.writeSeeds),
]

let args = CommandLine.arguments
guard args.count >= 2, let harness = harnesses.first(where: { $0.name == args[1] }) else {
    print("usage: ShardRankFuzz HARNESS [libFuzzer flags] [corpus dirs] | HARNESS --write-seeds DIR\n"
          + "harnesses: \(harnesses.map(\.name).joined(separator: " "))")
    exit(2)
}
if args.count == 4 && args[2] == "--write-seeds" {
    try harness.seeds(args[3])
    exit(0)
}
atexit { removeScratchFiles() }
// libFuzzer sees the program name followed by its own arguments (the harness name removed).
let argvBase = CommandLine.unsafeArgv
argvBase[1] = argvBase[0]
var argc = CommandLine.argc - 1
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argvBase + 1
exit(LLVMFuzzerRunDriver(&argc, &argv, harness.fuzz))
