#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif

/// A parsed safetensors file: 8-byte little-endian header length, a JSON header mapping
/// tensor names to `{dtype, shape, data_offsets}` (plus an optional `__metadata__`), then
/// the raw little-endian tensor bytes. Only F32 and F16 tensors are read (as Float).
public struct SafeTensors: Sendable {
    public struct Tensor: Sendable {
        public let shape: [Int]
        public let values: [Float]
    }

    /// The tensors by name.
    public let tensors: [String: Tensor]

    /// Largest header accepted (bytes): a header is names and shapes, never data.
    public static let maxHeaderBytes = 16 << 20

    /// Parses `bytes` (a whole file); throws `ModelError` naming the problem.
    public init(bytes: [UInt8]) throws {
        guard bytes.count >= 8 else { throw ModelError(.malformedWeights, "file is \(bytes.count) bytes, shorter than the 8-byte header length") }
        var headerLength: UInt64 = 0
        for i in 0..<8 { headerLength |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard headerLength <= UInt64(Self.maxHeaderBytes), headerLength <= UInt64(bytes.count - 8) else {
            throw ModelError(.malformedWeights, "header length \(headerLength) exceeds the file (\(bytes.count) bytes) or the \(Self.maxHeaderBytes)-byte limit")
        }
        let headerEnd = 8 + Int(headerLength)
        struct Entry: Decodable {
            var dtype: String?
            var shape: [Int]?
            var data_offsets: [Int]?
        }
        let header: [String: Entry]
        do {
            header = try JSONDecoder().decode([String: Entry].self, from: Data(bytes[8..<headerEnd]))
        } catch {
            throw ModelError(.malformedWeights, "header is not a JSON object of tensor entries: \(error)")
        }
        let dataCount = bytes.count - headerEnd
        var tensors: [String: Tensor] = [:]
        for (name, e) in header where name != "__metadata__" {
            guard let dtype = e.dtype, let shape = e.shape, let off = e.data_offsets else {
                throw ModelError(.malformedWeights, "tensor '\(name)' lacks dtype, shape or data_offsets")
            }
            let width: Int
            switch dtype {
            case "F32": width = 4
            case "F16": width = 2
            default: throw ModelError(.unsupportedDType, "tensor '\(name)' has dtype \(dtype); only F32 and F16 are supported")
            }
            guard shape.allSatisfy({ $0 >= 0 }), off.count == 2, off[0] >= 0, off[0] <= off[1], off[1] <= dataCount else {
                throw ModelError(.malformedWeights, "tensor '\(name)': bad shape \(shape) or data_offsets \(off) (data section is \(dataCount) bytes)")
            }
            let (elements, overflow) = shape.reduce((1, false)) { acc, x in
                let r = acc.0.multipliedReportingOverflow(by: x)
                return (r.partialValue, acc.1 || r.overflow)
            }
            guard !overflow, elements * width == off[1] - off[0] else {
                throw ModelError(.malformedWeights, "tensor '\(name)': shape \(shape) of \(dtype) needs \(elements * width) bytes but data_offsets span \(off[1] - off[0])")
            }
            var values = [Float](repeating: 0, count: elements)
            let start = headerEnd + off[0]
            for i in 0..<elements {
                let p = start + i * width
                if width == 4 {
                    let bits = UInt32(bytes[p]) | UInt32(bytes[p + 1]) << 8 | UInt32(bytes[p + 2]) << 16 | UInt32(bytes[p + 3]) << 24
                    values[i] = Float(bitPattern: bits)
                } else {
                    values[i] = Float(Float16(bitPattern: UInt16(bytes[p]) | UInt16(bytes[p + 1]) << 8))
                }
            }
            tensors[name] = Tensor(shape: shape, values: values)
        }
        self.tensors = tensors
    }

    /// Serialises F32 tensors (in the given order) to safetensors bytes; the inverse of
    /// `init(bytes:)`. Used by tests and benchmarks to write models.
    public static func serialize(_ tensors: [(name: String, shape: [Int], values: [Float])]) -> [UInt8] {
        var json = "{"
        var offset = 0
        for (i, t) in tensors.enumerated() {
            precondition(t.shape.reduce(1, *) == t.values.count, "serialize: shape/values mismatch for \(t.name)")
            let end = offset + 4 * t.values.count
            json += (i == 0 ? "" : ",")
            json += "\"\(t.name)\":{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        json += "}"
        var header = Array(json.utf8)
        while header.count % 8 != 0 { header.append(0x20) } // spec: pad with spaces
        var out: [UInt8] = []
        out.reserveCapacity(8 + header.count + offset)
        let n = UInt64(header.count)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(i)))) }
        out += header
        for t in tensors {
            for v in t.values {
                let b = v.bitPattern
                out += [UInt8(truncatingIfNeeded: b), UInt8(truncatingIfNeeded: b >> 8),
                        UInt8(truncatingIfNeeded: b >> 16), UInt8(truncatingIfNeeded: b >> 24)]
            }
        }
        return out
    }
}

/// Why a model could not be loaded.
public struct ModelError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case unreadable
        case malformedWeights
        case unsupportedDType
        case malformedConfig
        case missingTensor
        case shapeMismatch
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "model error (\(kind)): \(message)" }
}
