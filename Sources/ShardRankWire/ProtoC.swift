internal import CProtobufC
internal import CShardRankProto
import RPCCore
import ShardRankIDs
#if canImport(Glibc)
import Glibc
#endif

/// The adapter between Swift values and protobuf-c: packs C message structs straight into a
/// gRPC-framed buffer, and unpacks with a budgeted allocator. Only this module sees C types.
enum ProtoC {
    /// protobuf-c allocates per field while parsing and has no limit of its own: every unpack
    /// runs with a budget of `budgetFactor` × the message size (+ 64 KiB), so a hostile message
    /// (e.g. millions of tiny repeated elements) cannot make it allocate without bound.
    static let budgetFactor = 16

    struct Budget {
        var remaining: Int
        var exhausted = false
    }

    /// Packs a C message (whose first member is its `ProtobufCMessage base`) into a framed buffer.
    static func pack<C>(_ message: inout C) -> FramedMessage {
        withUnsafeMutablePointer(to: &message) { p in
            p.withMemoryRebound(to: ProtobufCMessage.self, capacity: 1) { m in
                let size = protobuf_c_message_get_packed_size(m)
                return FramedMessage(payloadLength: size) { dst in
                    if size > 0 { _ = protobuf_c_message_pack(m, dst.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
                }
            }
        }
    }

    /// Packs a C message and appends one extra length-delimited field written in place by `fill`
    /// (protobuf allows fields in any order): the large `bytes` payload goes straight into the
    /// framed buffer without an intermediate copy.
    static func pack<C>(_ message: inout C, appendingBytesField field: UInt32, length: Int,
                        fill: (UnsafeMutableRawBufferPointer) -> Void) -> FramedMessage {
        var tagBuf = [UInt8]()
        appendVarint(UInt64(field << 3 | 2), to: &tagBuf)
        appendVarint(UInt64(length), to: &tagBuf)
        let extra = length > 0 ? tagBuf.count + length : 0
        return withUnsafeMutablePointer(to: &message) { p in
            p.withMemoryRebound(to: ProtobufCMessage.self, capacity: 1) { m in
                let size = protobuf_c_message_get_packed_size(m)
                return FramedMessage(payloadLength: size + extra) { dst in
                    if size > 0 { _ = protobuf_c_message_pack(m, dst.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
                    if length > 0 {
                        let rest = UnsafeMutableRawBufferPointer(rebasing: dst[size...])
                        tagBuf.withUnsafeBytes { rest.copyMemory(from: $0) }
                        fill(UnsafeMutableRawBufferPointer(rebasing: rest[tagBuf.count...]))
                    }
                }
            }
        }
    }

    static func appendVarint(_ v: UInt64, to out: inout [UInt8]) {
        var v = v
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }

    /// Unpacks `bytes` with a generated `*__unpack` function and lets `read` copy what it needs
    /// out of the message before the matching `*__free_unpacked` releases it.
    /// - Throws: `RPCError(.invalidArgument)` naming the message type when the bytes are not a
    ///   valid encoding or need more memory than the budget.
    static func unpack<C, R>(_ bytes: [UInt8], _ name: String,
                             unpack: (UnsafeMutablePointer<ProtobufCAllocator>, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<C>?,
                             free freeUnpacked: (UnsafeMutablePointer<C>, UnsafeMutablePointer<ProtobufCAllocator>) -> Void,
                             _ read: (UnsafePointer<C>) throws(RPCError) -> R) throws(RPCError) -> R {
        var budget = Budget(remaining: bytes.count * budgetFactor + (64 << 10))
        let result: Result<R, RPCError> = withUnsafeMutablePointer(to: &budget) { budgetPtr in
            var allocator = ProtobufCAllocator(
                alloc: { data, size in
                    let b = data!.assumingMemoryBound(to: Budget.self)
                    if size > b.pointee.remaining { b.pointee.exhausted = true; return nil }
                    b.pointee.remaining -= size
                    return malloc(max(size, 1))
                },
                free: { _, p in free(p) },
                allocator_data: UnsafeMutableRawPointer(budgetPtr))
            let msg = bytes.withUnsafeBufferPointer { b in unpack(&allocator, b.count, b.baseAddress) }
            guard let msg else {
                if budgetPtr.pointee.exhausted {
                    return .failure(RPCError(.invalidArgument, "\(name) needs more memory to decode than its size allows"))
                }
                return .failure(RPCError(.invalidArgument, "cannot parse \(name): malformed protobuf (\(bytes.count) bytes)"))
            }
            defer { freeUnpacked(msg, &allocator) }
            do throws(RPCError) {
                return .success(try read(UnsafePointer(msg)))
            } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Runs `body` with a NUL-terminated, C-owned copy of `s` (freed after the call).
    static func withCString<R>(_ s: String, _ body: (UnsafeMutablePointer<CChar>) -> R) -> R {
        let p = strdup(s)!
        defer { free(p) }
        return body(p)
    }

    static func string(_ p: UnsafeMutablePointer<CChar>?) -> String {
        guard let p else { return "" }
        return String(cString: p)
    }

    static func array<T>(_ p: UnsafeMutablePointer<T>?, _ n: Int) -> [T] {
        guard let p, n > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: p, count: n))
    }

    static func bytes(_ b: ProtobufCBinaryData) -> [UInt8] {
        guard let d = b.data, b.len > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: d, count: b.len))
    }

    /// A `bytes` field holding little-endian f32s. `field` names it in the error when its length
    /// is not a multiple of 4; nil: a partial trailing float is ignored.
    static func floats(_ b: ProtobufCBinaryData, field: String?) throws(RPCError) -> [Float] {
        if let field, b.len % 4 != 0 {
            throw RPCError(.invalidArgument, "\(field) has \(b.len) bytes, not a multiple of 4 (little-endian f32s)")
        }
        let count = b.len / 4
        guard count > 0, let d = b.data else { return [] }
        return [Float](unsafeUninitializedCapacity: count) { dst, initialized in
            UnsafeMutableRawBufferPointer(dst).copyMemory(from: UnsafeRawBufferPointer(start: d, count: count * 4))
            initialized = count
        }
    }

    /// A `bytes` field holding a delta-varint id set.
    static func packedIDs(_ b: ProtobufCBinaryData, field: String) throws(RPCError) -> PackedIDs {
        do throws(DeltaVarint.DecodeError) {
            return try PackedIDs(validating: bytes(b))
        } catch {
            throw RPCError(.invalidArgument, "\(field) is not a delta-varint id set: \(error)")
        }
    }

    /// An enum field whose unknown values are refused.
    static func enumValue<E: RawRepresentable>(_ raw: UInt32, _ field: String, as: E.Type) throws(RPCError) -> E where E.RawValue == UInt32 {
        guard let e = E(rawValue: raw) else { throw RPCError(.invalidArgument, "\(field): unknown \(E.self) \(raw)") }
        return e
    }
}
