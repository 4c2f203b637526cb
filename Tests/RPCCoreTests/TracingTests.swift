import Synchronization
import Testing
@testable import RPCCore

/// W3C trace context parsing, the sampling decision, span lines, and the server-span wrapper,
/// without sockets.
@Suite struct TracingTests {
    static let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    @Test func parsesAValidTraceparent() throws {
        let p = try #require(TraceParent(parsing: Self.valid))
        #expect(p.traceID == TraceID(high: 0x4bf9_2f35_77b3_4da6, low: 0xa3ce_929d_0e0e_4736))
        #expect(p.parentID == SpanID(0x00f0_67aa_0ba9_02b7))
        #expect(p.sampled)
        #expect(p.header == Self.valid)
        #expect(TraceParent(parsing: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")?.sampled == false)
        // A future version may append fields after a dash; its first four are read as 00's.
        #expect(TraceParent(parsing: "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever")?.sampled == true)
    }

    @Test(arguments: [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",        // no flags
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",   // version 00 has nothing after the flags
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",     // upper-case hex
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",     // all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",     // all-zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",     // forbidden version
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    ])
    func rejectsInvalidTraceparents(value: String) {
        #expect(TraceParent(parsing: value) == nil)
    }

    func metadata(_ pairs: [(String, String)]) -> Metadata {
        var m = Metadata()
        for (k, v) in pairs { m.add(k, v) }
        return m
    }

    @Test func decisionFollowsTheCaller() throws {
        let tracer = Tracer(sampleRate: 0.000_000_001, service: "t", emit: { _ in })
        let parent = try #require(TraceParent(parsing: Self.valid))
        guard case .record(let traceID, let spanID, let parentID, let state) = tracer.decide(metadata([("traceparent", Self.valid), ("tracestate", "a=1")])) else {
            Issue.record("a sampled traceparent is recorded"); return
        }
        #expect(traceID == parent.traceID && parentID == parent.parentID && state == "a=1")
        #expect(spanID != parent.parentID && spanID.raw != 0)
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        guard case .forward(let p, nil) = tracer.decide(metadata([("traceparent", unsampled)])) else {
            Issue.record("an unsampled traceparent is forwarded, not recorded"); return
        }
        #expect(p.header == unsampled)
        // No (valid) traceparent: a new trace only as often as the rate says.
        for md in [Metadata(), metadata([("traceparent", "garbage")])] {
            guard case .none = tracer.decide(md) else { Issue.record("sampled at rate 1e-9"); return }
        }
        let always = Tracer(sampleRate: 1, service: "t", emit: { _ in })
        guard case .record(_, _, nil, nil) = always.decide(Metadata()) else { Issue.record("rate 1 records a new root"); return }
    }

    @Test func sampleRateIsHonouredRoughly() {
        let tracer = Tracer(sampleRate: 0.25, service: "t", emit: { _ in })
        var recorded = 0
        for _ in 0 ..< 20_000 { if case .record = tracer.decide(Metadata()) { recorded += 1 } }
        #expect((4_000 ... 6_000).contains(recorded), "recorded \(recorded) of 20000 at rate 0.25")
    }

    @Test func spanLineIsOneJSONObject() {
        let span = FinishedSpan(traceID: TraceID(high: 1, low: 2), spanID: SpanID(3), parentID: SpanID(4), name: "a\"b", kind: "client",
                                startUnixNanos: 1_700_000_000_000_000_000, durationNanos: 1500, status: .deadlineExceeded,
                                attributes: [("shard", .int(2)), ("m", .string("x\ny"))], traceState: "v=1")
        #expect(span.jsonLine(service: "coordinator") == """
            {"span":{"trace_id":"00000000000000010000000000000002","span_id":"0000000000000003","parent_span_id":"0000000000000004",\
            "name":"a\\"b","kind":"client","service":"coordinator","start_unix_nano":1700000000000000000,"duration_us":1.5,\
            "status":"DEADLINE_EXCEEDED","attributes":{"shard":2,"m":"x\\ny"},"tracestate":"v=1"}}
            """)
    }

    struct Echo: RPCService {
        let serviceName = "test.Echo"
        var methods: [RPCMethod] {
            [RPCMethod(service: serviceName, method: "Say", placement: .inline, handler: .unary { b, _ throws(RPCError) in
                 if b == [0] { throw RPCError(.invalidArgument, "zero") }
                 return FramedMessage(payload: b)
             }),
             RPCMethod(service: serviceName, method: "Later", placement: .inline, handler: .deferredUnary { b, _, respond in
                 respond(.success(FramedMessage(payload: b)))
             })]
        }
    }

    @Test func tracedServiceWritesAServerSpanPerCallUnderTheCallersSpan() throws {
        let lines = Mutex<[String]>([])
        let tracer = Tracer(sampleRate: 0.000_000_001, service: "shard-1", emit: { l in lines.withLock { $0.append(l) } })
        let service = tracer.traced(Echo(), attributes: [("shardrank.shard", .int(1))])
        let methods = Dictionary(uniqueKeysWithValues: service.methods.map { ($0.path, $0) })
        let ctx = ServerContext(path: "/test.Echo/Say", metadata: metadata([("traceparent", Self.valid)]))
        guard case .unary(let say) = methods["/test.Echo/Say"]!.handler,
              case .deferredUnary(let later) = methods["/test.Echo/Later"]!.handler else { Issue.record("kinds kept"); return }
        #expect(try Array(say([7], ctx).payload) == [7])
        #expect(throws: RPCError.self) { try say([0], ctx) }
        later([1], ctx) { _ in }
        _ = try say([7], ServerContext(path: "/test.Echo/Say"))  // no traceparent, rate 1e-9: no span
        let got = lines.withLock { $0 }
        #expect(got.count == 3)
        #expect(got.allSatisfy { $0.contains("\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"") && $0.contains("\"parent_span_id\":\"00f067aa0ba902b7\"") })
        #expect(got[0].contains("\"name\":\"test.Echo/Say\"") && got[0].contains("\"status\":\"OK\"") && got[0].contains("\"shardrank.shard\":1"))
        #expect(got[1].contains("\"status\":\"INVALID_ARGUMENT\""))
        #expect(got[2].contains("\"name\":\"test.Echo/Later\""))
    }
}
