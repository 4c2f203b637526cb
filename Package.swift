// swift-tools-version: 6.1
// ShardRank: a gRPC-wire-compatible recommendation serving system.
// Layers (dependencies point down only):
//   ShardRankCLI -> ShardServer / Coordinator -> ShardRankClient / ShardRankWire / ShardRankKernels /
//   ShardRankTables -> RPCTransport -> RPCHTTP2 / RPCCore -> C system libraries; ShardRankIDs (the
//   delta-varint id-set codec) sits below both ShardRankWire and ShardRankTables.
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// The request path (RPC stack, wire codecs, kernels, tables, shard service, coordinator):
// release builds drop the *dynamic* exclusivity checks (swift_beginAccess/endAccess on every
// class-property access: ~5 % of a small call's server CPU and ~8 % of the coordinator's
// instructions per Recommend in the profiles, BENCHMARKS.md). Static checks stay, and debug builds
// (the test suite) keep the dynamic ones too.
let hotPathSettings: [SwiftSetting] = swiftSettings + [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "ShardRank",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "shardrank", targets: ["ShardRankCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.0"),
    ],
    targets: [
        // ---- C: system libraries and generated code --------------------------------------
        .systemLibrary(name: "CNGHTTP2", pkgConfig: "libnghttp2",
                       providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c",
                       providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CShardRankSystem"),
        .target(name: "CShardRankProto", dependencies: ["CProtobufC"],
                cSettings: [.unsafeFlags(["-Wno-everything"])]),
        .target(name: "CShardRankKernels",
                cSettings: [.unsafeFlags(["-O3"])]),
        // The OpenBLAS GEMM wrapper: benchmarks and tests only. The serving binary must not link
        // libopenblas (the release artifact, scripts/release, carries no OpenBLAS).
        .target(name: "CShardRankBLAS",
                cSettings: [.unsafeFlags(["-O3"])],
                linkerSettings: [.linkedLibrary("openblas")]),

        // ---- RPC stack -------------------------------------------------------------------
        // RPCCore uses NIOCore for one data type only (ByteBuffer, the storage of FramedMessage,
        // so responses reach the socket without a copy); it does no I/O.
        .target(name: "RPCCore", dependencies: [.product(name: "NIOCore", package: "swift-nio")],
                swiftSettings: hotPathSettings),
        .target(name: "RPCHTTP2", dependencies: ["CNGHTTP2", "RPCCore"], swiftSettings: hotPathSettings),
        .target(name: "RPCTransport", dependencies: [
            "RPCCore", "RPCHTTP2",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: hotPathSettings),
        // Development certificates (`shardrank certs`): a CA and role-tagged leaf certificates.
        .target(name: "ShardRankCerts", dependencies: [
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ], swiftSettings: swiftSettings),

        // ---- ShardRank libraries ---------------------------------------------------------
        // The delta-varint id-set codec shared by the table files and the wire (no dependencies).
        .target(name: "ShardRankIDs", swiftSettings: hotPathSettings),
        .target(name: "ShardRankWire", dependencies: ["CShardRankProto", "CProtobufC", "RPCCore", "ShardRankIDs"],
                swiftSettings: hotPathSettings),
        .target(name: "ShardRankKernels", dependencies: ["CShardRankKernels"], swiftSettings: hotPathSettings),
        // `GEMMBackend.openBLAS` (benchmarks and tests only, see CShardRankBLAS).
        .target(name: "ShardRankBLAS", dependencies: ["ShardRankKernels", "CShardRankBLAS"], swiftSettings: swiftSettings),
        // The sharding hash and router: what the builder, the shards and the coordinator share.
        .target(name: "ShardRankRouting", swiftSettings: hotPathSettings),
        .target(name: "ShardRankTables", dependencies: ["ShardRankKernels", "ShardRankIDs", "ShardRankRouting"], swiftSettings: hotPathSettings),
        .target(name: "ShardRankClient", dependencies: ["RPCCore", "RPCTransport", "ShardRankWire"],
                swiftSettings: hotPathSettings),
        .target(name: "ShardServer", dependencies: ["ShardRankRouting", 
            "RPCCore", "ShardRankWire", "ShardRankTables", "ShardRankKernels", "ShardRankIDs",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: hotPathSettings),
        .target(name: "Coordinator", dependencies: ["ShardRankRouting", 
            "RPCCore", "RPCTransport", "ShardRankWire", "ShardRankClient", "ShardRankKernels", "ShardRankIDs",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], swiftSettings: hotPathSettings),
        .target(name: "ShardRankAdmin", dependencies: [
            "RPCCore", "RPCTransport", "ShardRankWire",
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ], swiftSettings: swiftSettings),
        .target(name: "ShardRankEval", dependencies: ["RPCCore", "RPCTransport", "ShardRankWire", "ShardRankClient"],
                swiftSettings: swiftSettings),
        .target(name: "ShardRankSynth", swiftSettings: swiftSettings),
        .target(name: "LoadTest", dependencies: [
            "RPCCore", "RPCTransport", "ShardRankWire", "ShardRankClient",
            .product(name: "Histogram", package: "hdrhistogram-swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "ShardRankCLI", dependencies: ["ShardRankRouting", 
            "RPCCore", "RPCTransport", "ShardRankWire", "ShardRankClient", "ShardServer", "ShardRankTables",
            "Coordinator", "ShardRankSynth", "LoadTest", "ShardRankKernels", "ShardRankAdmin", "ShardRankEval", "CShardRankSystem", "ShardRankCerts",
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),

        // ---- Benchmarks (executables, never tests) ---------------------------------------
        .executableTarget(name: "BenchKernels", dependencies: ["ShardRankKernels", "ShardRankBLAS"],
                          path: "Benchmarks/BenchKernels", swiftSettings: swiftSettings),
        .executableTarget(name: "BenchANN", dependencies: ["ShardRankKernels"],
                          path: "Benchmarks/BenchANN", swiftSettings: swiftSettings),
        .executableTarget(name: "BenchRPC", dependencies: [
            "RPCCore", "RPCHTTP2", "RPCTransport", "ShardRankWire", "ShardServer", "ShardRankAdmin", "CShardRankSystem",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ], path: "Benchmarks/BenchRPC", swiftSettings: swiftSettings),

        // ---- Tests -----------------------------------------------------------------------
        // Helpers the test targets share (no product depends on it).
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: swiftSettings),
        .testTarget(name: "RPCCoreTests", dependencies: ["RPCCore"]),
        .testTarget(name: "ShardRankAdminTests", dependencies: ["ShardRankAdmin", "RPCCore", "ShardRankWire"]),
        .testTarget(name: "RPCHTTP2Tests", dependencies: ["RPCHTTP2", "RPCCore"]),
        .testTarget(name: "ShardRankIDsTests", dependencies: ["ShardRankIDs"]),
        .testTarget(name: "ShardRankWireTests", dependencies: ["ShardRankWire", "RPCCore", "ShardRankIDs"]),
        .testTarget(name: "ShardRankKernelsTests", dependencies: ["ShardRankKernels", "ShardRankBLAS"], exclude: ["Fixtures"]),
        .testTarget(name: "ShardRankTablesTests", dependencies: ["ShardRankRouting", "ShardRankTables", "ShardRankKernels", "ShardRankIDs"]),
        .testTarget(name: "CoordinatorTests", dependencies: ["ShardRankRouting", 
            "Coordinator", "ShardRankWire", "ShardRankClient", "RPCCore", "RPCTransport", "ShardRankKernels", "ShardRankTables", "ShardServer", "ShardRankIDs",
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "ShardServerTests", dependencies: ["ShardRankRouting", "ShardServer", "ShardRankTables", "ShardRankKernels", "RPCCore", "ShardRankWire", "ShardRankIDs", "TestSupport"]),
        .testTarget(name: "ShardRankEvalTests", dependencies: ["ShardRankEval"]),
        .testTarget(name: "ShardRankSynthTests", dependencies: ["ShardRankSynth", "ShardRankTables", "ShardRankKernels"]),
        .testTarget(name: "LoadTestTests", dependencies: ["ShardRankRouting", 
            "LoadTest", "RPCCore", "RPCTransport", "ShardRankWire", "ShardServer", "ShardRankTables", "ShardRankClient", "ShardRankKernels",
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // The transport and the client stubs end to end on loopback: deadlines, cancellation,
        // reconnect, in-flight limits, graceful shutdown, keepalive, TLS and tokens.
        .testTarget(name: "RPCTransportTests", dependencies: [
            "RPCCore", "RPCTransport", "ShardRankWire", "ShardRankClient", "ShardServer", "TestSupport", "ShardRankCerts",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
    ]
)

// ---- Fuzzing (issue 17): libFuzzer harnesses, only when SHARDRANK_FUZZ=1 ------------------
// `scripts/fuzz` builds the one harness binary, ShardRankFuzz, with `-sanitize=fuzzer,address`
// into its own build path (.build-fuzz; docs/fuzzing.md). Only it and the libraries it uses are
// built with the sanitizers, never the CLI. The harnesses use `@testable import` (the fuzz build
// passes `-enable-testing`) to reach the internal parsers.
if Context.environment["SHARDRANK_FUZZ"] == "1" {
    package.targets += [
        .target(name: "CFuzzSupport", path: "fuzz/CFuzzSupport"),
        .executableTarget(name: "ShardRankFuzz", dependencies: [
            "CFuzzSupport", "RPCCore", "RPCHTTP2", "ShardRankWire", "ShardRankIDs", "ShardRankTables", "ShardRankRouting",
        ], path: "fuzz/ShardRankFuzz", swiftSettings: swiftSettings),
    ]
}
