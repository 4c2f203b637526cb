public import RPCCore
import Synchronization

/// The trace context shard calls carry: set (a task-local) around each shard call of a traced
/// request by `Recommender.counted`, read by `ShardCluster.call` only when the cluster was made
/// with `propagatesTrace` (tracing on), so the untraced path never touches it.
enum OutgoingTraceContext {
    @TaskLocal static var current: (traceParent: String, traceState: String?)?
}

/// The tracing state of one Recommend, Rank or Similar that is traced (recorded) or carries a
/// caller's unsampled context to forward. Exists only for such requests: with tracing off, or
/// for a request not sampled and without a `traceparent`, `Trace.span` is nil.
///
/// Spans of a recorded request: the server span (the RPC), one `stage.*` span per pipeline stage
/// (Recommend only; from the stage boundaries the pipeline already timestamps), one `call.*`
/// span per shard call (parented to the stage it started in), and — written by the shards — a
/// server span per shard handler, parented to the call span whose id the call's `traceparent`
/// carried.
final class RequestSpan: Sendable {
    let tracer: Tracer
    /// Recorded (false: only forwarded).
    let records: Bool
    let traceID: TraceID
    /// This request's server span (recorded), or the caller's span (forwarded).
    let spanID: SpanID
    let parentID: SpanID?
    let traceState: String?
    /// The caller's header, forwarded unchanged when not recorded.
    let forwardedHeader: String?
    let name: String
    let startUnixNanos: Int64
    let start: ContinuousClock.Instant
    private struct State {
        var calls: [(span: FinishedSpan, started: ContinuousClock.Instant)] = []
        var stages: [ContinuousClock.Instant] = []
    }
    private let state = Mutex(State())

    /// The names of Recommend's stages, between consecutive instants of `setStages`.
    static let stageNames = ["stage.retrieve", "stage.filter", "stage.gather", "stage.rank", "stage.post_rank"]

    /// The span for a call with `metadata`, or nil when it is neither traced nor carries a context.
    static func begin(_ tracer: Tracer, metadata: Metadata, name: String, start: ContinuousClock.Instant) -> RequestSpan? {
        switch tracer.decide(metadata) {
        case .none:
            return nil
        case .record(let traceID, let spanID, let parentID, let traceState):
            return RequestSpan(tracer: tracer, records: true, traceID: traceID, spanID: spanID, parentID: parentID,
                               traceState: traceState, forwardedHeader: nil, name: name, start: start)
        case .forward(let parent, let traceState):
            return RequestSpan(tracer: tracer, records: false, traceID: parent.traceID, spanID: parent.parentID, parentID: nil,
                               traceState: traceState, forwardedHeader: parent.header, name: name, start: start)
        }
    }

    private init(tracer: Tracer, records: Bool, traceID: TraceID, spanID: SpanID, parentID: SpanID?, traceState: String?,
                 forwardedHeader: String?, name: String, start: ContinuousClock.Instant) {
        self.tracer = tracer
        self.records = records
        self.traceID = traceID
        self.spanID = spanID
        self.parentID = parentID
        self.traceState = traceState
        self.forwardedHeader = forwardedHeader
        self.name = name
        self.start = start
        self.startUnixNanos = Tracer.unixNanos() - (ContinuousClock.now - start).nanosecondsValue
    }

    /// Runs one shard call (`op`) with its trace context set for `ShardCluster.call`, and
    /// records its `call.*` span.
    func call<T: Sendable>(shard: Int, method: String, _ op: () async throws(RPCError) -> T) async throws(RPCError) -> T {
        guard records else {
            let header = forwardedHeader!
            let r: Result<T, RPCError> = await OutgoingTraceContext.$current.withValue((header, traceState)) {
                do throws(RPCError) { return .success(try await op()) } catch { return .failure(error) }
            }
            return try r.get()
        }
        let id = tracer.newSpanID()
        let header = TraceParent(traceID: traceID, parentID: id, sampled: true).header
        let t0 = ContinuousClock.now
        let r: Result<T, RPCError> = await OutgoingTraceContext.$current.withValue((header, traceState)) {
            do throws(RPCError) { return .success(try await op()) } catch { return .failure(error) }
        }
        let status: RPCStatusCode
        switch r {
        case .success: status = .ok
        case .failure(let e): status = e.code
        }
        let span = FinishedSpan(traceID: traceID, spanID: id, parentID: spanID, name: "call.shardrank.v1.Shard/" + method, kind: "client",
                                startUnixNanos: startUnixNanos + (t0 - start).nanosecondsValue,
                                durationNanos: (ContinuousClock.now - t0).nanosecondsValue, status: status,
                                attributes: [("shardrank.shard", .int(Int64(shard))), ("rpc.method", .string(method))])
        state.withLock { $0.calls.append((span, t0)) }
        return try r.get()
    }

    /// Recommend's stage boundaries: `instants[i] ..< instants[i + 1]` is `stageNames[i]`.
    func setStages(_ instants: [ContinuousClock.Instant]) {
        state.withLock { $0.stages = instants }
    }

    /// Writes every span of the request: the server span, the stage spans, the call spans
    /// (each parented to the stage it started in, else to the server span).
    func finish(status: RPCStatusCode, attributes: [(String, SpanAttribute)]) {
        guard records else { return }
        let end = ContinuousClock.now
        let (calls, stages) = state.withLock { ($0.calls, $0.stages) }
        func wall(_ t: ContinuousClock.Instant) -> Int64 { startUnixNanos + (t - start).nanosecondsValue }
        tracer.emit(FinishedSpan(traceID: traceID, spanID: spanID, parentID: parentID, name: name, kind: "server",
                                 startUnixNanos: startUnixNanos, durationNanos: (end - start).nanosecondsValue, status: status,
                                 attributes: attributes, traceState: traceState))
        var stageIDs: [SpanID] = []
        if stages.count == Self.stageNames.count + 1 {
            for (i, name) in Self.stageNames.enumerated() {
                let id = tracer.newSpanID()
                stageIDs.append(id)
                tracer.emit(FinishedSpan(traceID: traceID, spanID: id, parentID: spanID, name: name, kind: "internal",
                                         startUnixNanos: wall(stages[i]), durationNanos: (stages[i + 1] - stages[i]).nanosecondsValue))
            }
        }
        for (var span, started) in calls {
            if !stageIDs.isEmpty, let i = stages.lastIndex(where: { $0 <= started }), i < stageIDs.count {
                span.parentID = stageIDs[i]
            }
            tracer.emit(span)
        }
    }
}
