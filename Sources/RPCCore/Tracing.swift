import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Distributed tracing across the fan-out (docs/operations.md, "Tracing"): W3C trace context
// (`traceparent`, `tracestate`) in gRPC metadata, and finished spans written as one JSON line
// each. Everything here is reached only when a process was started with tracing on
// (`--trace-sample-rate` > 0): with it off, a server holds no `Tracer` and pays one nil check
// per request.

/// A 128-bit W3C trace id.
public struct TraceID: Sendable, Hashable {
    public var high: UInt64, low: UInt64
    public init(high: UInt64, low: UInt64) { self.high = high; self.low = low }
    /// 32 lower-case hex digits.
    public var hex: String { Hex.encode(high) + Hex.encode(low) }
}

/// A 64-bit W3C span id (`parent-id` in a `traceparent`).
public struct SpanID: Sendable, Hashable {
    public var raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    /// 16 lower-case hex digits.
    public var hex: String { Hex.encode(raw) }
}

/// A parsed W3C `traceparent` header: `00-<trace-id>-<parent-id>-<flags>`.
public struct TraceParent: Sendable, Hashable {
    public var traceID: TraceID
    /// The caller's span (the parent of the span the receiver makes).
    public var parentID: SpanID
    /// The caller recorded this request (flags bit 0): the receiver should record it too.
    public var sampled: Bool

    public init(traceID: TraceID, parentID: SpanID, sampled: Bool) {
        self.traceID = traceID
        self.parentID = parentID
        self.sampled = sampled
    }

    /// Parses a header value as the W3C Trace Context spec says: version `00` is exactly 55
    /// characters; a higher version (not `ff`) may carry more after a `-`, and its first four
    /// fields are read as version 00's. Lower-case hex only; all-zero ids are invalid.
    /// Nil when the value is not a valid `traceparent` (the receiver then starts a new trace).
    public init?(parsing value: String) {
        let utf8 = value.utf8
        guard utf8.count >= 55 else { return nil }
        let bytes = Array(utf8.prefix(56))
        guard bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"), bytes[52] == UInt8(ascii: "-"),
              let version = Hex.decode(bytes[0 ..< 2]), version != 0xFF,
              let hi = Hex.decode(bytes[3 ..< 19]), let lo = Hex.decode(bytes[19 ..< 35]),
              let parent = Hex.decode(bytes[36 ..< 52]), let flags = Hex.decode(bytes[53 ..< 55]) else { return nil }
        if bytes.count > 55 && (version == 0 || bytes[55] != UInt8(ascii: "-")) { return nil }
        guard hi != 0 || lo != 0, parent != 0 else { return nil }
        self.init(traceID: TraceID(high: hi, low: lo), parentID: SpanID(parent), sampled: flags & 1 == 1)
    }

    /// The header value (version 00).
    public var header: String { "00-\(traceID.hex)-\(parentID.hex)-\(sampled ? "01" : "00")" }
}

/// The value of a span attribute.
public enum SpanAttribute: Sendable, Hashable {
    case string(String)
    case int(Int64)
}

/// A finished span: what one JSON line says.
public struct FinishedSpan: Sendable {
    public var traceID: TraceID
    public var spanID: SpanID
    /// Nil for a trace's root.
    public var parentID: SpanID?
    /// `Recommend`, `stage.retrieve`, `call.shardrank.v1.Shard/Search`, ...
    public var name: String
    /// `server` (a handler), `client` (a call to another process) or `internal` (a stage).
    public var kind: String
    public var startUnixNanos: Int64
    public var durationNanos: Int64
    /// The gRPC status the call or handler ended with (`internal` spans: OK).
    public var status: RPCStatusCode
    public var attributes: [(String, SpanAttribute)]
    /// The caller's `tracestate`, when it sent one (kept on the server span only).
    public var traceState: String?

    public init(traceID: TraceID, spanID: SpanID, parentID: SpanID?, name: String, kind: String, startUnixNanos: Int64,
                durationNanos: Int64, status: RPCStatusCode = .ok, attributes: [(String, SpanAttribute)] = [], traceState: String? = nil) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentID = parentID
        self.name = name
        self.kind = kind
        self.startUnixNanos = startUnixNanos
        self.durationNanos = durationNanos
        self.status = status
        self.attributes = attributes
        self.traceState = traceState
    }

    /// One JSON object on one line (no newline), keys in a fixed order:
    /// `{"span":{"trace_id":…,"span_id":…,"parent_span_id":…,"name":…,"kind":…,"service":…,
    /// "start_unix_nano":…,"duration_us":…,"status":…,"attributes":{…},"tracestate":…}}`.
    public func jsonLine(service: String) -> String {
        var s = "{\"span\":{\"trace_id\":\"\(traceID.hex)\",\"span_id\":\"\(spanID.hex)\""
        if let parentID { s += ",\"parent_span_id\":\"\(parentID.hex)\"" }
        s += ",\"name\":\(JSONText.quote(name)),\"kind\":\"\(kind)\",\"service\":\(JSONText.quote(service))"
        s += ",\"start_unix_nano\":\(startUnixNanos),\"duration_us\":\(Double(durationNanos) / 1000),\"status\":\"\(status)\""
        s += ",\"attributes\":{"
        for (i, (k, v)) in attributes.enumerated() {
            if i > 0 { s += "," }
            s += JSONText.quote(k) + ":"
            switch v {
            case .string(let t): s += JSONText.quote(t)
            case .int(let n): s += String(n)
            }
        }
        s += "}"
        if let traceState { s += ",\"tracestate\":\(JSONText.quote(traceState))" }
        return s + "}}"
    }
}

/// Makes the sampling decision for incoming calls, new ids, and writes finished spans. One per
/// process (built in `main` when tracing is on), shared by every event loop; lock-free.
public final class Tracer: Sendable {
    /// Fraction of calls *without* a `traceparent` that start a new trace (0 < rate <= 1).
    /// A call whose `traceparent` is sampled is always traced; one whose `traceparent` is not
    /// sampled is not traced (its context is still forwarded).
    public let sampleRate: Double
    /// `service` of every span line (`coordinator`, `shard-3`).
    public let service: String
    private let emitLine: @Sendable (String) -> Void
    /// splitmix64 state: ids and sampling draws without a lock or a system call.
    private let state: Atomic<UInt64>

    /// - Parameter emit: receives each finished span's JSON line (no newline); called from any
    ///   thread. `Tracer.stderr` writes it to standard error.
    public init(sampleRate: Double, service: String, emit: @escaping @Sendable (String) -> Void = Tracer.stderr) {
        self.sampleRate = min(max(sampleRate, 0), 1)
        self.service = service
        self.emitLine = emit
        var g = SystemRandomNumberGenerator()
        state = Atomic(g.next())
    }

    /// Writes `line` and a newline to standard error in one `write` (lines from several threads
    /// never interleave).
    public static let stderr: @Sendable (String) -> Void = { line in
        var l = line
        l.append("\n")
        l.withUTF8 { b in
            var off = 0
            while off < b.count {
                let n = write(2, b.baseAddress! + off, b.count - off)
                if n <= 0 { break }
                off += n
            }
        }
    }

    /// A fresh 64-bit random value (never 0).
    public func nextRandom() -> UInt64 {
        var z = state.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return z == 0 ? 1 : z
    }

    public func newSpanID() -> SpanID { SpanID(nextRandom()) }
    public func newTraceID() -> TraceID { TraceID(high: nextRandom(), low: nextRandom()) }

    /// What an incoming call carries and what this process does with it.
    public enum Decision: Sendable {
        /// Record a server span: its ids (parent nil for a new trace) and the caller's `tracestate`.
        case record(traceID: TraceID, spanID: SpanID, parentID: SpanID?, traceState: String?)
        /// Not recorded, but the caller's context travels on (an unsampled `traceparent`).
        case forward(TraceParent, traceState: String?)
        /// Neither.
        case none
    }

    /// The decision for a call with these metadata: a sampled `traceparent` is followed, an
    /// unsampled one forwarded unrecorded; without a valid one, a new trace with probability
    /// `sampleRate`.
    public func decide(_ metadata: Metadata) -> Decision {
        let traceState = metadata.string("tracestate")
        if let value = metadata.string("traceparent"), let parent = TraceParent(parsing: value) {
            if parent.sampled {
                return .record(traceID: parent.traceID, spanID: newSpanID(), parentID: parent.parentID, traceState: traceState)
            }
            return .forward(parent, traceState: traceState)
        }
        // The top 53 bits as a uniform double in [0, 1).
        if Double(nextRandom() >> 11) * 0x1p-53 < sampleRate {
            return .record(traceID: newTraceID(), spanID: newSpanID(), parentID: nil, traceState: nil)
        }
        return .none
    }

    public func emit(_ span: FinishedSpan) { emitLine(span.jsonLine(service: service)) }

    /// Wall-clock time in nanoseconds since the Unix epoch (span start times).
    public static func unixNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// Wraps every method of `service` so its handler makes a server span when `decide` says so
    /// (request-streaming and server-streaming methods are left as they are). Only for a process
    /// with tracing on: the wrapper reads the metadata of every call.
    public func traced(_ service: any RPCService, attributes: [(String, SpanAttribute)] = []) -> any RPCService {
        TracedService(inner: service, tracer: self, attributes: attributes)
    }
}

/// A service whose unary handlers record server spans (see `Tracer.traced`).
struct TracedService: RPCService {
    let inner: any RPCService
    let tracer: Tracer
    let attributes: [(String, SpanAttribute)]
    var serviceName: String { inner.serviceName }

    var methods: [RPCMethod] {
        inner.methods.map { m in
            let tracer = self.tracer, path = m.path, attributes = self.attributes
            @Sendable func start(_ ctx: ServerContext) -> (@Sendable (RPCStatusCode) -> Void)? {
                guard case .record(let traceID, let spanID, let parentID, let traceState) = tracer.decide(ctx.metadata) else { return nil }
                let wall = Tracer.unixNanos(), t0 = ContinuousClock.now
                return { status in
                    tracer.emit(FinishedSpan(traceID: traceID, spanID: spanID, parentID: parentID, name: String(path.dropFirst()), kind: "server",
                                             startUnixNanos: wall, durationNanos: (ContinuousClock.now - t0).nanosecondsValue, status: status,
                                             attributes: attributes, traceState: traceState))
                }
            }
            let handler: RPCMethod.Handler
            switch m.handler {
            case .unary(let h):
                handler = .unary { req, ctx throws(RPCError) in
                    guard let end = start(ctx) else { return try h(req, ctx) }
                    do throws(RPCError) {
                        let r = try h(req, ctx)
                        end(.ok)
                        return r
                    } catch {
                        end(error.code)
                        throw error
                    }
                }
            case .asyncUnary(let h):
                handler = .asyncUnary { req, ctx throws(RPCError) in
                    guard let end = start(ctx) else { return try await h(req, ctx) }
                    do throws(RPCError) {
                        let r = try await h(req, ctx)
                        end(.ok)
                        return r
                    } catch {
                        end(error.code)
                        throw error
                    }
                }
            case .deferredUnary(let h):
                handler = .deferredUnary { req, ctx, respond in
                    guard let end = start(ctx) else { return h(req, ctx, respond) }
                    h(req, ctx) { result in
                        switch result {
                        case .success: end(.ok)
                        case .failure(let e): end(e.code)
                        }
                        respond(result)
                    }
                }
            case .serverStreaming, .streamMessages:
                return m
            }
            return RPCMethod(service: inner.serviceName, method: String(path.split(separator: "/").last!), placement: m.placement,
                             handler: handler)
        }
    }
}

extension Duration {
    /// Whole nanoseconds (saturating).
    public var nanosecondsValue: Int64 {
        let (s, a) = components
        let (ns, o) = s.multipliedReportingOverflow(by: 1_000_000_000)
        return o ? (s < 0 ? .min : .max) : ns &+ a / 1_000_000_000
    }
}

enum Hex {
    static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    static func encode(_ v: UInt64) -> String {
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0 ..< 16 { out[i] = digits[Int(v >> (60 - 4 * UInt64(i)) & 0xF)] }
        return String(decoding: out, as: UTF8.self)
    }

    /// Lower-case hex digits (at most 16) to a number; nil for anything else.
    static func decode(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        var v: UInt64 = 0
        for c in bytes {
            let d: UInt8
            switch c {
            case UInt8(ascii: "0") ... UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a") ... UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            default: return nil
            }
            v = v << 4 | UInt64(d)
        }
        return v
    }
}

/// JSON text helpers shared by the span writer and the JSON front door (ProtoJSON).
public enum JSONText {
    /// `s` as a JSON string literal (quotes, backslashes and control characters escaped).
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    out += "\\u00" + String(decoding: [Hex.digits[Int(u.value >> 4)], Hex.digits[Int(u.value & 0xF)]], as: UTF8.self)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
