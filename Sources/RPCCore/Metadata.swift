/// gRPC custom metadata: an ordered multimap of lower-case ASCII keys to values. Keys ending in
/// `-bin` carry binary values, base64-encoded on the wire (PROTOCOL-HTTP2 "Binary-Header").
public struct Metadata: Sendable, Hashable, Sequence {
    public enum Value: Sendable, Hashable {
        case string(String)
        case binary([UInt8])
    }

    public private(set) var entries: [(key: String, value: Value)] = []

    public init() {}

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    /// Adds a value. `key` is lower-cased; a binary value under a key without `-bin` (or the
    /// reverse) is a programmer error.
    public mutating func add(_ key: String, _ value: Value) {
        let k = key.lowercased()
        switch value {
        case .binary: precondition(k.hasSuffix("-bin"), "binary metadata key must end in -bin: \(k)")
        case .string: precondition(!k.hasSuffix("-bin"), "text metadata key must not end in -bin: \(k)")
        }
        entries.append((k, value))
    }

    public mutating func add(_ key: String, _ value: String) { add(key, .string(value)) }
    public mutating func add(_ key: String, binary: [UInt8]) { add(key, .binary(binary)) }

    /// The first value for `key`, if any.
    public subscript(key: String) -> Value? {
        let k = key.lowercased()
        return entries.first(where: { $0.key == k })?.value
    }

    public func string(_ key: String) -> String? {
        if case .string(let s) = self[key] { return s }
        return nil
    }

    public func binary(_ key: String) -> [UInt8]? {
        if case .binary(let b) = self[key] { return b }
        return nil
    }

    public func makeIterator() -> IndexingIterator<[(key: String, value: Value)]> { entries.makeIterator() }

    public static func == (a: Metadata, b: Metadata) -> Bool {
        a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    public func hash(into hasher: inout Hasher) {
        for e in entries { hasher.combine(e.key); hasher.combine(e.value) }
    }

    /// Header names that belong to HTTP/2 or gRPC itself and are never exposed as metadata.
    public static func isReserved(_ name: String) -> Bool {
        if name.hasPrefix(":") || name.hasPrefix("grpc-") { return true }
        switch name {
        case "content-type", "te", "user-agent", "content-length", "accept-encoding", "host", "connection":
            return true
        default:
            return false
        }
    }

    /// Parses one received header into metadata (decoding `-bin` values).
    /// - Throws: `RPCError(.internal)` when a `-bin` value is not valid base64.
    public mutating func addWireHeader(name: String, value: String) throws(RPCError) {
        if name.hasSuffix("-bin") {
            // A comma-separated list of base64 values may be merged into one header.
            for part in value.split(separator: ",", omittingEmptySubsequences: false) {
                guard let bytes = Base64.decode(part.trimmingSpaces()) else {
                    throw RPCError(.internal, "metadata '\(name)' is not valid base64")
                }
                entries.append((name, .binary(bytes)))
            }
        } else {
            entries.append((name, .string(value)))
        }
    }

    /// The (name, value) header pairs for the wire.
    public var wireHeaders: [(String, String)] {
        entries.map { e in
            switch e.value {
            case .string(let s): (e.key, s)
            case .binary(let b): (e.key, Base64.encode(b))
            }
        }
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var s = self
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return s
    }
}

/// Base64 (RFC 4648) as gRPC uses it for `-bin` metadata: encoded without padding, decoded with or
/// without padding.
public enum Base64 {
    static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(alphabet[Int(n >> 18 & 63)]); out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)]); out.append(alphabet[Int(n & 63)])
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out.append(alphabet[Int(n >> 18 & 63)]); out.append(alphabet[Int(n >> 12 & 63)])
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out.append(alphabet[Int(n >> 18 & 63)]); out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        var vals = [UInt8]()
        vals.reserveCapacity(text.utf8.count)
        for c in text.utf8 {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): vals.append(c - 65)
            case UInt8(ascii: "a")...UInt8(ascii: "z"): vals.append(c - 97 + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): vals.append(c - 48 + 52)
            case UInt8(ascii: "+"), UInt8(ascii: "-"): vals.append(62)
            case UInt8(ascii: "/"), UInt8(ascii: "_"): vals.append(63)
            case UInt8(ascii: "="): continue
            default: return nil
            }
        }
        if vals.count % 4 == 1 { return nil }
        var out = [UInt8]()
        out.reserveCapacity(vals.count * 3 / 4)
        var i = 0
        while i + 4 <= vals.count {
            let n = UInt32(vals[i]) << 18 | UInt32(vals[i + 1]) << 12 | UInt32(vals[i + 2]) << 6 | UInt32(vals[i + 3])
            out.append(UInt8(n >> 16 & 0xFF)); out.append(UInt8(n >> 8 & 0xFF)); out.append(UInt8(n & 0xFF))
            i += 4
        }
        let rest = vals.count - i
        if rest == 2 {
            let n = UInt32(vals[i]) << 18 | UInt32(vals[i + 1]) << 12
            out.append(UInt8(n >> 16 & 0xFF))
        } else if rest == 3 {
            let n = UInt32(vals[i]) << 18 | UInt32(vals[i + 1]) << 12 | UInt32(vals[i + 2]) << 6
            out.append(UInt8(n >> 16 & 0xFF)); out.append(UInt8(n >> 8 & 0xFF))
        }
        return out
    }
}
