/// Interprets a gRPC response on the client side, with no I/O: response headers, DATA and
/// trailers in, messages and a final status out (PROTOCOL-HTTP2, including Trailers-Only and the
/// HTTP-status mapping for non-gRPC answers).
public struct ClientResponseParser: Sendable {
    public private(set) var messages: [[UInt8]] = []
    public private(set) var headerMetadata = Metadata()
    public private(set) var trailerMetadata = Metadata()
    private var deframer: GRPCMessageDeframer
    private var sawHeaders = false
    private var httpStatus = 0
    private var isGRPC = false
    private var failure: RPCError?
    private var status: RPCError??  // .some(nil) = OK

    public init(maxMessageLength: Int = 4 << 20) {
        deframer = GRPCMessageDeframer(maxMessageLength: maxMessageLength)
    }

    /// A HEADERS block arrived (the first is the response headers; a later one the trailers; one
    /// with END_STREAM and a grpc-status but no earlier headers is Trailers-Only).
    public mutating func receivedHeaders(_ headers: [(name: String, value: String)], endStream: Bool) {
        if !sawHeaders {
            sawHeaders = true
            for (n, v) in headers {
                if n == ":status" { httpStatus = Int(v) ?? 0 }
                if n == "content-type" { isGRPC = v.hasPrefix("application/grpc") }
            }
            if endStream || headers.contains(where: { $0.name == "grpc-status" }) {
                var md = headerMetadata
                finishFromTrailers(headers, into: &md)
                headerMetadata = md
            } else {
                for (n, v) in headers where !Metadata.isReserved(n) { try? headerMetadata.addWireHeader(name: n, value: v) }
            }
        } else {
            var md = trailerMetadata
            finishFromTrailers(headers, into: &md)
            trailerMetadata = md
        }
    }

    private mutating func finishFromTrailers(_ headers: [(name: String, value: String)], into md: inout Metadata) {
        var code: String?
        var message = ""
        for (n, v) in headers {
            if n == "grpc-status" { code = v } else if n == "grpc-message" { message = PercentEncoding.decode(v) }
            else if !Metadata.isReserved(n) { try? md.addWireHeader(name: n, value: v) }
        }
        if let code {
            let c = RPCStatusCode(grpcStatusHeader: code)
            status = c == .ok ? .some(nil) : .some(RPCError(c, message, metadata: md))
        } else if httpStatus != 200 {
            status = .some(RPCError(RPCStatusCode(httpStatus: httpStatus), "HTTP status \(httpStatus) without grpc-status"))
        } else {
            status = .some(RPCError(.internal, "response ended without grpc-status"))
        }
    }

    /// DATA arrived.
    public mutating func receivedData(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil else { return }
        if !sawHeaders || httpStatus != 200 || !isGRPC {
            failure = RPCError(.internal, "DATA before valid gRPC response headers (HTTP \(httpStatus))")
            return
        }
        do throws(RPCError) {
            try deframer.consume(bytes) { (m: [UInt8]) throws(RPCError) in messages.append(m) }
        } catch {
            failure = error
        }
    }

    /// Takes the messages received so far.
    public mutating func takeMessages() -> [[UInt8]] {
        let m = messages
        messages.removeAll()
        return m
    }

    /// The final status once the stream closed: nil = OK. `resetCode` is the HTTP/2 error code
    /// when the stream was reset instead of ending with trailers.
    public func finalStatus(streamClosedWithError resetCode: UInt32?) -> RPCError? {
        if let failure { return failure }
        if let status { return status }
        if let resetCode {
            switch resetCode {
            case 0x8: return RPCError(.cancelled, "stream reset by the server (CANCEL)")
            case 0xB: return RPCError(.resourceExhausted, "stream reset by the server (ENHANCE_YOUR_CALM)")
            case 0xC: return RPCError(.permissionDenied, "stream reset by the server (INADEQUATE_SECURITY)")
            case 0x7: return RPCError(.unavailable, "stream refused by the server (REFUSED_STREAM)")
            default: return RPCError(.internal, "stream reset by the server (HTTP/2 error \(resetCode))")
            }
        }
        return RPCError(.internal, "stream closed without a status")
    }
}
