internal import CProtobufC
#if canImport(Glibc)
import Glibc
#endif

/// Owns the C memory behind a C message being built for packing: every string and array handed
/// to protobuf-c structs is copied here and freed together when the arena is released. Lifetime:
/// create, fill the C struct, pack, let the arena go. Not thread-safe; never escapes an encode.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    init() { blocks.reserveCapacity(8) }  // one allocation for a typical message's strings and arrays

    deinit { for b in blocks { free(b) } }

    /// A NUL-terminated copy of `s`.
    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    /// A copy of `values`, or nil when empty.
    func array<T>(_ values: [T]) -> UnsafeMutablePointer<T>? {
        guard !values.isEmpty else { return nil }
        let p = malloc(MemoryLayout<T>.stride * values.count)!
        blocks.append(p)
        let t = p.bindMemory(to: T.self, capacity: values.count)
        values.withUnsafeBufferPointer { _ = UnsafeMutableBufferPointer(start: t, count: values.count).initialize(fromContentsOf: $0) }
        return t
    }

    /// A `bytes` field: a copy of the raw bytes of `values` (empty: no data).
    func binary<T: BitwiseCopyable>(_ values: [T]) -> ProtobufCBinaryData {
        guard !values.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        return values.withUnsafeBytes { src in
            let p = malloc(src.count)!
            blocks.append(p)
            p.copyMemory(from: src.baseAddress!, byteCount: src.count)
            return ProtobufCBinaryData(len: src.count, data: p.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// One zeroed `T` (a C struct to fill).
    func object<T>(_ value: T) -> UnsafeMutablePointer<T> {
        let p = malloc(MemoryLayout<T>.stride)!
        blocks.append(p)
        let t = p.bindMemory(to: T.self, capacity: 1)
        t.initialize(to: value)
        return t
    }

    /// An array of pointers to copies of `values`.
    func pointerArray<T>(_ values: [T]) -> UnsafeMutablePointer<UnsafeMutablePointer<T>?>? {
        array(values.map { Optional(object($0)) })
    }
}
