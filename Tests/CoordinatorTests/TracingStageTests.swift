import Foundation
import Logging
import Synchronization
import Testing
import RPCCore
import ShardRankKernels
import ShardRankWire
@testable import Coordinator

extension CoordinatorTests {
    /// The coordinator's spans without sockets (in-process shards): a traced Recommend writes its
    /// server span under the caller's, one span per stage under it, and one span per shard call
    /// under the stage it ran in; Rank gets no stage spans; a request that is not traced writes
    /// nothing.
    @Suite(.serialized) struct TracingStageTests {
        static let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
        static let clientSpan = "00f067aa0ba902b7"

        /// The span lines a tracer wrote, parsed.
        final class SpanLog: Sendable {
            let lines = Mutex<[String]>([])
            func withLock<R>(_ body: ([[String: Any]]) -> R) -> R {
                let spans = lines.withLock { $0 }.map { line in
                    (try! JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any])["span"] as! [String: Any]
                }
                return body(spans)
            }
        }

        static func traced(_ c: Cluster, rate: Double = 1e-9) -> (Recommender, SpanLog) {
            let log = SpanLog()
            let tracer = Tracer(sampleRate: rate, service: "coordinator", emit: { line in log.lines.withLock { $0.append(line) } })
            return (Recommender(fetcher: c.local!, settings: c.recommender.settings, pool: WorkerPool(threadCount: 1),
                                logger: Logger(label: "test"), tracer: tracer), log)
        }

        static func context(path: String = "/shardrank.v1.Recommender/Recommend", traceparent: String?) -> ServerContext {
            var md = Metadata()
            if let traceparent { md.add("traceparent", traceparent) }
            return ServerContext(path: path, metadata: md, deadline: ContinuousClock.now.advanced(by: .seconds(2)))
        }

        @Test func recommendWritesServerStageAndCallSpansWithConsistentParents() async throws {
            let c = try await Cluster()
            defer { Task { await c.stop() } }
            let (r, lines) = Self.traced(c)
            let a = try await r.recommend(RecommendRequest(userID: 3, k: 10),
                                          context: Self.context(traceparent: "00-\(Self.traceID)-\(Self.clientSpan)-01"))
            #expect(a.items.count == 10)
            let spans = lines.withLock { $0 }
            #expect(spans.allSatisfy { $0["trace_id"] as? String == Self.traceID })
            let roots = spans.filter { $0["kind"] as? String == "server" }
            try #require(roots.count == 1)
            let root = roots[0]
            #expect(root["parent_span_id"] as? String == Self.clientSpan && root["status"] as? String == "OK")
            let stages = spans.filter { $0["kind"] as? String == "internal" }
            #expect(stages.map { $0["name"] as! String } == RequestSpan.stageNames)
            #expect(stages.allSatisfy { $0["parent_span_id"] as? String == root["span_id"] as? String })
            // The stage spans are the answer's own timings.
            let micros = [a.timings!.retrieveMicros, a.timings!.filterMicros, a.timings!.gatherMicros, a.timings!.rankMicros, a.timings!.postRankMicros]
            for (s, us) in zip(stages, micros) { #expect(abs((s["duration_us"] as! Double) - Double(us)) <= 1.0) }
            let calls = spans.filter { $0["kind"] as? String == "client" }
            let stageIDs = Set(stages.map { $0["span_id"] as! String })
            #expect(!calls.isEmpty && calls.allSatisfy { stageIDs.contains($0["parent_span_id"] as! String) })
            let searches = calls.filter { ($0["attributes"] as! [String: Any])["rpc.method"] as? String == "Search" }
            #expect(Set(searches.map { ($0["attributes"] as! [String: Any])["shardrank.shard"] as! Int }) == [0, 1])
            #expect(searches.allSatisfy { $0["parent_span_id"] as? String == stages[0]["span_id"] as? String }, "Search runs in retrieve")
            #expect(Set(spans.map { $0["span_id"] as! String }).count == spans.count)
        }

        @Test func rankHasNoStageSpansAndUntracedRequestsWriteNothing() async throws {
            let c = try await Cluster()
            defer { Task { await c.stop() } }
            let (r, lines) = Self.traced(c)
            // Not sampled by the caller, and the rate samples nothing: no spans.
            _ = try await r.recommend(RecommendRequest(userID: 3, k: 5),
                                      context: Self.context(traceparent: "00-\(Self.traceID)-\(Self.clientSpan)-00"))
            _ = try await r.recommend(RecommendRequest(userID: 3, k: 5), context: Self.context(traceparent: nil))
            #expect(lines.withLock { $0.isEmpty })
            _ = try await r.rank(RankRequest(userID: 3, candidateIDs: Array(Cluster.itemIDs.prefix(5)), model: "dot", k: 3),
                                 context: Self.context(path: "/shardrank.v1.Recommender/Rank", traceparent: "00-\(Self.traceID)-\(Self.clientSpan)-01"))
            let spans = lines.withLock { $0 }
            #expect(spans.filter { $0["kind"] as? String == "server" }.map { $0["name"] as! String } == ["shardrank.v1.Recommender/Rank"])
            #expect(spans.allSatisfy { $0["kind"] as? String != "internal" })
            let root = spans.first { $0["kind"] as? String == "server" }!
            #expect(spans.filter { $0["kind"] as? String == "client" }.allSatisfy { $0["parent_span_id"] as? String == root["span_id"] as? String })
        }
    }
}
