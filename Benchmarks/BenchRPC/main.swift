// BenchRPC: the server's own CPU cost per call, without sockets. Build in release:
//   swift build -c release --product BenchRPC
// Usage: BenchRPC [--ids N[,N...]] [--batch K] [--seconds S] [--reps R] [--rows N] [--fresh-ids]
//                 [--calls N] [--no-metrics] [--json]
//   --calls N: exactly N calls per rep (rounded up to whole batches) instead of --seconds, so that
//   an instruction count (scripts/profile-rpc: callgrind) covers a known number of calls.
//   --fresh-ids: new random ids for every call (cache-cold gathers, as real traffic on a large
//   table) instead of one id list repeated (as `scripts/bench-rpc`'s h2load body).
//
// A real `RPCServer` connection handler (router, synthetic shard service, metrics observer as
// `shardrank shard` installs it) sits on a NIO `EmbeddedChannel`; an in-memory nghttp2 client
// session sends batches of K gRPC `Lookup` calls (the same bytes a stock client sends), and the
// benchmark times only the server side: `writeInbound` of the batch's bytes until the last
// response frame is in the channel's outbound queue. That is the whole user-space path of a call
// (HTTP/2 parse, gRPC framing, state machines, request decode, the gather, response encode,
// DATA frames, metrics), without the kernel's TCP work and wake-ups that dominate the noise of
// `scripts/bench-rpc` on a shared machine. Every response is checked (status 0, size), and the
// first one byte for byte against the synthetic table's formula.
import Foundation
import NIOCore
import NIOEmbedded
import RPCCore
import RPCHTTP2
import RPCTransport
import ShardRankAdmin
import ShardRankWire
import ShardServer
import CShardRankSystem

let args = CommandLine.arguments
func option(_ name: String) -> String? { args.firstIndex(of: name).flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil } }
let idCounts = (option("--ids") ?? "256,1").split(separator: ",").map { Int($0)! }
let batch = Int(option("--batch") ?? "8")!
let seconds = Double(option("--seconds") ?? "0.5")!
let reps = Int(option("--reps") ?? "7")!
let metrics = !args.contains("--no-metrics")
let json = args.contains("--json")
let freshIDs = args.contains("--fresh-ids")
let rows = Int(option("--rows") ?? "100000")!, dim = 64
let fixedCalls = option("--calls").map { Int($0)! }

func log(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)  // this thread's CPU time: other tenants' load does not count
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
func fail(_ s: String) -> Never { log("BenchRPC: \(s)"); exit(1) }

CShardRankSystem_tune_malloc()  // as `shardrank shard` does at start
let table = SyntheticTable(rows: rows, dim: dim)
var config = ServerConfiguration()
config.eventLoopThreads = 1
config.workerThreads = 1
if metrics { config.observer = ServerMetrics() }
let server = RPCServer(configuration: config, router: Router(services: [ShardService(backend: SyntheticBackend(table: table))]))

let requestHeaders: [(String, String)] = [
    (":method", "POST"), (":scheme", "http"), (":path", "/shardrank.v1.Shard/Lookup"), (":authority", "127.0.0.1:50051"),
    ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "grpc-c++/1.51.1 BenchRPC"),
]

/// One connection: the server handler on an embedded channel and a client session.
final class Connection {
    let channel: EmbeddedChannel
    let client: HTTP2Session
    var toServer = ByteBuffer()
    var fromServer: [ByteBuffer] = []

    init() throws {
        channel = EmbeddedChannel(handler: try server.makeConnectionHandler())
        client = try HTTP2Session(role: .client)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 50051)).wait()
        _ = try roundTrip()  // preface and SETTINGS both ways
    }

    /// Feeds what the client has queued to the server; returns the server's seconds.
    func roundTrip() throws -> Double {
        toServer.clear()
        try client.flush { toServer.writeBytes($0) }
        let t0 = now()
        try channel.writeInbound(toServer)
        while let b = try channel.readOutbound(as: ByteBuffer.self) { fromServer.append(b) }
        let t1 = now()
        return t1 - t0
    }

    /// Hands the server's output to the client session; returns its events.
    func clientReceive() throws -> [HTTP2Event] {
        var events: [HTTP2Event] = []
        for b in fromServer { events += try b.withUnsafeReadableBytes { try client.receive($0) } }
        fromServer.removeAll(keepingCapacity: true)
        return events
    }
}

/// Checks a batch's responses: every call OK with a message of `expectedBytes` (prefix included).
func check(_ events: [HTTP2Event], calls: Int, expectedBytes: Int, firstIDs: [UInt64]?) {
    var data: [Int32: [UInt8]] = [:]
    var ok = 0
    for e in events {
        switch e {
        case .data(let id, let bytes): data[id, default: []] += bytes
        case .headers(_, let h, _, _):
            if let s = h.first(where: { $0.name == "grpc-status" }) {
                guard s.value == "0" else { fail("call failed: \(h)") }
                ok += 1
            }
        default: break
        }
    }
    guard ok == calls else { fail("\(ok) of \(calls) calls answered OK") }
    for (_, d) in data where d.count != expectedBytes { fail("response of \(d.count) bytes, expected \(expectedBytes)") }
    if let ids = firstIDs, let (_, d) = data.min(by: { $0.key < $1.key }) {
        let r: LookupResponse
        do { r = try LookupResponse.decode(Array(d[5...])) } catch { fail("undecodable response: \(error)") }
        guard r.dim == UInt32(dim), r.missingIDs.isEmpty else { fail("unexpected response shape") }
        r.vectors.withUnsafeBytes { v in
            for (i, id) in ids.enumerated() {
                for j in 0 ..< dim where v.loadUnaligned(fromByteOffset: (i * dim + j) * 4, as: Float.self) != SyntheticTable.value(row: id, column: j) {
                    fail("row \(i) (id \(id)) differs from the synthetic table at column \(j)")
                }
            }
        }
    }
}

/// Ids drawn from a fixed seed: every run sends the same requests (varint lengths, rows), so an
/// instruction count is the same from run to run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {  // SplitMix64
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
var rng = SeededGenerator(state: 42)
for ids in idCounts {
    let idList = (0 ..< ids).map { _ in UInt64.random(in: 0 ..< UInt64(rows), using: &rng) }
    let body = LookupRequest(table: "items", ids: idList, dtype: .f32, version: 0).encoded()
    // --fresh-ids: a pool of distinct requests, cycled (encoded before timing starts).
    let bodies: [FramedMessage] = freshIDs ? (0 ..< 512).map { _ in
        LookupRequest(table: "items", ids: (0 ..< ids).map { _ in UInt64.random(in: 0 ..< UInt64(rows), using: &rng) },
                      dtype: .f32, version: 0).encoded()
    } : [body]
    var next = 0
    let expectedBytes = LookupResponse.encode(dim: UInt32(dim), dtype: .f32, missingIDs: [], version: SyntheticBackend.version,
                                              scales: [], shard: 0, shardCount: 1, vectorBytes: ids * dim * 4) { _ in }.count
    let conn = try Connection()
    var perCall: [Double] = []
    var checked = false
    var warm = true
    var totalCalls = 0
    while perCall.count < reps {
        var serverSeconds = 0.0, calls = 0
        let wall0 = Date()
        repeat {
            for _ in 0 ..< batch {
                _ = try conn.client.submitRequest(headers: requestHeaders, body: bodies[next % bodies.count])
                next += 1
            }
            serverSeconds += try conn.roundTrip()
            calls += batch
            totalCalls += batch
            check(try conn.clientReceive(), calls: batch, expectedBytes: expectedBytes, firstIDs: checked || freshIDs ? nil : idList)
            checked = true
        } while fixedCalls.map { calls < $0 } ?? (Date().timeIntervalSince(wall0) < seconds)
        if warm { warm = false; continue }
        perCall.append(serverSeconds / Double(calls) * 1e6)
    }
    perCall.sort()
    let median = perCall[perCall.count / 2]
    if json {
        print("{\"case\":\"lookup\",\"ids\":\(ids),\"batch\":\(batch),\"rows\":\(rows),\"fresh_ids\":\(freshIDs),\"metrics\":\(metrics),\"server_cpu_us_per_call\":\(String(format: "%.3f", median)),\"min\":\(String(format: "%.3f", perCall.first!)),\"max\":\(String(format: "%.3f", perCall.last!)),\"reps\":\(reps),\"total_calls\":\(totalCalls)}")
    } else {
        print(String(format: "lookup %4d ids, batch %d, %d rows%@%@: server CPU %.2f us/call (median of %d; range %.2f-%.2f)",
                     ids, batch, rows, freshIDs ? ", fresh ids" : "", metrics ? "" : ", no metrics", median, reps, perCall.first!, perCall.last!))
    }
}
