public import NIOCore

/// A serialized gRPC message with its 5-byte Length-Prefixed-Message header already in place:
/// byte 0 is the compressed flag (always 0 here), bytes 1...4 the big-endian payload length.
/// Encoders write the payload directly after the prefix, so framing never copies the payload.
///
/// The bytes live in a NIO `ByteBuffer` (the readable bytes are prefix + payload) so that the
/// transport can hand slices of it to the socket as they are: a response is written from the
/// buffer its encoder filled, without another copy. Only the buffer type comes from NIOCore;
/// nothing here does I/O.
public struct FramedMessage: Sendable {
    public static let prefixLength = 5
    private static let allocator = ByteBufferAllocator()

    /// Prefix + payload (the readable bytes).
    public let buffer: ByteBuffer

    /// Allocates `payloadLength + 5` bytes, writes the prefix, and lets `fill` write exactly the
    /// payload into the buffer it is given (`payloadLength` bytes).
    public init(payloadLength: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) {
        precondition(payloadLength >= 0 && payloadLength <= Int(UInt32.max))
        let total = payloadLength + 5
        var b = FramedMessage.allocator.buffer(capacity: total)
        b.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { raw in
            let buf = UnsafeMutableRawBufferPointer(rebasing: raw[0 ..< total])
            buf[0] = 0
            buf[1] = UInt8(truncatingIfNeeded: payloadLength >> 24)
            buf[2] = UInt8(truncatingIfNeeded: payloadLength >> 16)
            buf[3] = UInt8(truncatingIfNeeded: payloadLength >> 8)
            buf[4] = UInt8(truncatingIfNeeded: payloadLength)
            fill(UnsafeMutableRawBufferPointer(rebasing: buf[5...]))
            return total
        }
        buffer = b
    }

    /// Frames a payload by copying it.
    public init(payload: some Collection<UInt8>) {
        let p = Array(payload)
        self.init(payloadLength: p.count) { dst in
            p.withUnsafeBytes { src in if src.count > 0 { dst.copyMemory(from: src) } }
        }
    }

    /// `bytes` as they are, without a gRPC prefix: the body of a plain HTTP answer (a rejection
    /// with 405 or 415) sent through the same queue as messages. `payloadLength` means nothing for it.
    public init(unframed bytes: some Collection<UInt8>) {
        var b = FramedMessage.allocator.buffer(capacity: bytes.count)
        b.writeBytes(bytes)
        buffer = b
    }

    /// Prefix + payload length in bytes.
    public var count: Int { buffer.readableBytes }
    public var payloadLength: Int { buffer.readableBytes - 5 }

    /// Calls `body` with prefix + payload, in place.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes(body)
    }

    /// Prefix + payload, copied into an array (tests, diagnostics; the transport never copies).
    public var bytes: [UInt8] { Array(buffer.readableBytesView) }
    /// The payload, copied (tests, diagnostics).
    public var payload: ArraySlice<UInt8> { bytes[5...] }
}

/// Reassembles Length-Prefixed-Messages from DATA bytes that may be split anywhere.
///
/// The length prefix is checked against `maxMessageLength` before anything is allocated for the
/// message; a set compressed flag is rejected because this server negotiates no encoding.
/// A value type: feed it bytes, take messages out.
public struct GRPCMessageDeframer: Sendable {
    public let maxMessageLength: Int
    private var header: [UInt8] = []
    private var current: [UInt8] = []
    private var expected: Int = -1  // -1: reading the prefix

    public init(maxMessageLength: Int) {
        self.maxMessageLength = maxMessageLength
        header.reserveCapacity(5)
    }

    /// True when no partial message is buffered (a stream may end here cleanly).
    public var isIdle: Bool { expected < 0 && header.isEmpty }

    /// Bytes reserved for the partial message: grows with the bytes received, not with the
    /// length its prefix claims.
    public var bufferedCapacity: Int { current.capacity }

    /// What a message's buffer starts with when its first chunk carries less of it.
    static let initialReserve = 64 << 10

    /// Consumes `bytes`, calling `onMessage` for every complete message in order.
    /// - Throws: `RPCError(.resourceExhausted)` for a prefix longer than the limit,
    ///   `RPCError(.internal)` for a message with the compressed flag set. After a throw the deframer must not
    ///   be fed again.
    public mutating func consume(_ bytes: UnsafeRawBufferPointer, onMessage: ([UInt8]) throws(RPCError) -> Void) throws(RPCError) {
        var i = 0
        let n = bytes.count
        while i < n {
            if expected < 0 {
                let take = min(5 - header.count, n - i)
                header.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i ..< i + take]))
                i += take
                if header.count == 5 {
                    let flag = header[0]
                    let length = Int(header[1]) << 24 | Int(header[2]) << 16 | Int(header[3]) << 8 | Int(header[4])
                    header.removeAll(keepingCapacity: true)
                    if flag != 0 {
                        // gRPC: a set Compressed-Flag on a call whose grpc-encoding is identity (the
                        // only one negotiated here; others are refused UNIMPLEMENTED from the
                        // headers) is a protocol violation: INTERNAL, as grpc-go and grpc-core do.
                        throw RPCError(.internal, flag == 1
                                       ? "compressed flag set on a message, but the call's grpc-encoding is identity"
                                       : "invalid compressed-flag byte \(flag) in message prefix")
                    }
                    if length > maxMessageLength {
                        throw RPCError(.resourceExhausted, "message of \(length) bytes exceeds the limit of \(maxMessageLength) bytes")
                    }
                    if length == 0 {
                        try onMessage([])
                    } else {
                        expected = length
                        current = []
                        // Not the claimed length up front (a 5-byte prefix would pin 4 MiB per
                        // stream): what this chunk carries, at least 64 KiB; grown as bytes arrive.
                        current.reserveCapacity(min(length, max(n - i, Self.initialReserve)))
                    }
                }
            } else {
                let take = min(expected - current.count, n - i)
                if current.count + take > current.capacity {
                    // Doubling (amortised copies), never past the message's length.
                    current.reserveCapacity(min(expected, max(current.capacity * 2, current.count + take)))
                }
                current.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i ..< i + take]))
                i += take
                if current.count == expected {
                    expected = -1
                    let m = current
                    current = []
                    try onMessage(m)
                }
            }
        }
    }

    public mutating func consume(_ bytes: [UInt8], onMessage: ([UInt8]) throws(RPCError) -> Void) throws(RPCError) {
        let result: Result<Void, RPCError> = bytes.withUnsafeBytes { p in
            do throws(RPCError) { try consume(p, onMessage: onMessage); return .success(()) } catch { return .failure(error) }
        }
        try result.get()
    }
}
