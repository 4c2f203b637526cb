internal import CProtobufC
internal import CShardRankProto
public import RPCCore
#if canImport(Glibc)
import Glibc
#endif

/// A parsed JSON value. Numbers keep their text, so a 64-bit id survives exactly (JSON numbers
/// above 2^53 would not as doubles).
public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order (a repeated name is an error of the mapping, not of JSON).
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case (.bool(let x), .bool(let y)): x == y
        case (.number(let x), .number(let y)): x == y
        case (.string(let x), .string(let y)): x == y
        case (.array(let x), .array(let y)): x == y
        case (.object(let x), .object(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    /// Parses one JSON text (RFC 8259; nesting at most 64 deep).
    /// - Throws: `RPCError(.invalidArgument)` naming the byte offset of the first error.
    public static func parse(_ bytes: [UInt8]) throws(RPCError) -> JSONValue {
        var p = JSONParser(bytes: bytes)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.at == bytes.count else { throw p.error("unexpected text after the JSON value") }
        return v
    }
}

private struct JSONParser {
    let bytes: [UInt8]
    var at = 0

    func error(_ m: String) -> RPCError { RPCError(.invalidArgument, "invalid JSON at byte \(at): \(m)") }

    mutating func skipSpace() {
        while at < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[at]) { at += 1 }
    }

    mutating func literal(_ word: String, _ v: JSONValue) throws(RPCError) -> JSONValue {
        let w = Array(word.utf8)
        guard at + w.count <= bytes.count, Array(bytes[at..<(at + w.count)]) == w else { throw error("expected \(word)") }
        at += w.count
        return v
    }

    mutating func value(depth: Int) throws(RPCError) -> JSONValue {
        guard depth < 64 else { throw error("nested deeper than 64") }
        guard at < bytes.count else { throw error("unexpected end") }
        switch bytes[at] {
        case UInt8(ascii: "{"):
            at += 1
            var members: [(String, JSONValue)] = []
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "}") { at += 1; return .object(members) }
            while true {
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") else { throw error("expected a member name") }
                let name = try string()
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: ":") else { throw error("expected ':'") }
                at += 1
                skipSpace()
                members.append((name, try value(depth: depth + 1)))
                skipSpace()
                guard at < bytes.count else { throw error("unexpected end in an object") }
                if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                guard bytes[at] == UInt8(ascii: "}") else { throw error("expected ',' or '}'") }
                at += 1
                return .object(members)
            }
        case UInt8(ascii: "["):
            at += 1
            var items: [JSONValue] = []
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard at < bytes.count else { throw error("unexpected end in an array") }
                if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                guard bytes[at] == UInt8(ascii: "]") else { throw error("expected ',' or ']'") }
                at += 1
                return .array(items)
            }
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        default: return .number(try number())
        }
    }

    mutating func number() throws(RPCError) -> String {
        let start = at
        func digits() -> Int { let s = at; while at < bytes.count, bytes[at] >= 0x30, bytes[at] <= 0x39 { at += 1 }; return at - s }
        if at < bytes.count, bytes[at] == UInt8(ascii: "-") { at += 1 }
        let intDigits = digits()
        guard intDigits > 0 else { throw error("expected a value") }
        guard intDigits == 1 || bytes[at - intDigits] != 0x30 else { throw error("a number has a leading zero") }
        if at < bytes.count, bytes[at] == UInt8(ascii: ".") { at += 1; guard digits() > 0 else { throw error("expected digits after '.'") } }
        if at < bytes.count, bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
            at += 1
            if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
            guard digits() > 0 else { throw error("expected exponent digits") }
        }
        return String(decoding: bytes[start..<at], as: UTF8.self)
    }

    mutating func hex4() throws(RPCError) -> UInt32 {
        guard at + 4 <= bytes.count else { throw error("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[at]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw error("bad \\u escape")
            }
            v = v << 4 | d
            at += 1
        }
        return v
    }

    mutating func string() throws(RPCError) -> String {
        at += 1  // the opening quote
        var out: [UInt8] = []
        while true {
            guard at < bytes.count else { throw error("unterminated string") }
            let c = bytes[at]
            at += 1
            switch c {
            case UInt8(ascii: "\""):
                guard let s = String(validating: out, as: UTF8.self) else { throw error("a string is not valid UTF-8") }
                return s
            case UInt8(ascii: "\\"):
                guard at < bytes.count else { throw error("unterminated escape") }
                let e = bytes[at]
                at += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var u = try hex4()
                    if u >= 0xD800 && u < 0xDC00 {
                        guard at + 2 <= bytes.count, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") else {
                            throw error("lone surrogate")
                        }
                        at += 2
                        let lo = try hex4()
                        guard lo >= 0xDC00 && lo < 0xE000 else { throw error("bad surrogate pair") }
                        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(u) else { throw error("bad \\u escape") }
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default: throw error("bad escape")
                }
            default:
                guard c >= 0x20 else { throw error("a control character in a string") }
                out.append(c)
            }
        }
    }
}

/// The proto3 JSON mapping (protobuf's canonical JSON) for the messages of `proto/`, driven by
/// protobuf-c's descriptors, so every message and field follows the `.proto` files without code
/// per message. JSON in → protobuf bytes; protobuf bytes → JSON out.
///
/// Mapping (as protobuf's JSON printer and parser do it): member names are the fields'
/// lowerCamelCase JSON names (the proto names are accepted too); 64-bit integers are written as
/// strings and read from strings or numbers; 32-bit integers and floats are numbers (floats also
/// `"NaN"`, `"Infinity"`, `"-Infinity"`); enums are their value names (numbers accepted); bytes
/// are base64; repeated fields are arrays; `null` means the default. Fields with default values
/// are omitted from output. An unknown member, or a value of the wrong type, is
/// INVALID_ARGUMENT naming the field's path.
public enum ProtoJSON {
    /// Whether `message` (a full name such as `shardrank.v1.RecommendRequest`) is known.
    public static func knows(_ message: String) -> Bool { descriptors[message] != nil }

    /// Protobuf bytes of `message` from a JSON value.
    public static func wire(from json: JSONValue, message: String) throws(RPCError) -> [UInt8] {
        guard let d = descriptors[message] else { throw RPCError(.internal, "no JSON mapping for \(message)") }
        var out: [UInt8] = []
        try encodeMessage(json, d, path: "", into: &out)
        return out
    }

    /// Protobuf bytes of `message` from JSON text.
    public static func wire(fromJSON text: [UInt8], message: String) throws(RPCError) -> [UInt8] {
        try wire(from: try JSONValue.parse(text), message: message)
    }

    /// JSON text of the protobuf bytes of `message`.
    public static func json(fromWire bytes: [UInt8], message: String) throws(RPCError) -> String {
        guard let d = descriptors[message] else { throw RPCError(.internal, "no JSON mapping for \(message)") }
        return try ProtoC.unpack(bytes, message, unpack: { alloc, n, p in
            protobuf_c_message_unpack(d, alloc, n, p)
        }, free: { m, alloc in protobuf_c_message_free_unpacked(m, alloc) }) { m in
            var out = ""
            writeMessage(UnsafeRawPointer(m), d, into: &out)
            return out
        }
    }

    /// Protobuf bytes of `message` from URL query parameters (`k=10&context.country=US&sources=SOURCE_POPULAR,SOURCE_SEARCH`):
    /// each name is a field path (proto or JSON names, `.` into nested messages); a repeated
    /// field takes comma-separated values and may be repeated; values are read as the JSON
    /// mapping reads strings (numbers, enum names, `true`/`false`). `fixed` members (e.g. the
    /// user id from the URL's path) come first; a query parameter may not set them again.
    public static func wire(fromQuery query: [(String, String)], fixed: [(String, JSONValue)] = [], message: String) throws(RPCError) -> [UInt8] {
        guard let d = descriptors[message] else { throw RPCError(.internal, "no JSON mapping for \(message)") }
        var json: [(String, JSONValue)] = fixed
        // Each field path with its values (a repeated field gathers every occurrence).
        var leaves: [(path: [String], field: ProtobufCFieldDescriptor, values: [String])] = []
        for (key, value) in query {
            let parts = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            var md = d
            var f: ProtobufCFieldDescriptor?
            var names: [String] = []
            for (i, part) in parts.enumerated() {
                guard let (x, xi) = field(part, of: md) else {
                    throw RPCError(.invalidArgument, "unknown query parameter '\(key)' for \(String(cString: d.pointee.name))")
                }
                names.append(xi.proto)
                if i < parts.count - 1 {
                    guard x.type == PROTOBUF_C_TYPE_MESSAGE, x.label != PROTOBUF_C_LABEL_REPEATED else {
                        throw RPCError(.invalidArgument, "query parameter '\(key)': '\(part)' is not a message field")
                    }
                    md = x.descriptor!.assumingMemoryBound(to: ProtobufCMessageDescriptor.self)
                } else {
                    guard x.type != PROTOBUF_C_TYPE_MESSAGE else {
                        throw RPCError(.invalidArgument, "query parameter '\(key)' names a message: set its fields ('\(key).FIELD=...')")
                    }
                    f = x
                }
            }
            guard !fixed.contains(where: { $0.0 == names[0] || $0.0 == jsonName(names[0]) }) else {
                throw RPCError(.invalidArgument, "query parameter '\(key)' repeats a value given by the URL path")
            }
            let values = f!.label == PROTOBUF_C_LABEL_REPEATED ? value.split(separator: ",").map(String.init) : [value]
            if let i = leaves.firstIndex(where: { $0.path == names }) {
                guard f!.label == PROTOBUF_C_LABEL_REPEATED else { throw RPCError(.invalidArgument, "query parameter '\(key)' is given twice") }
                leaves[i].values += values
            } else {
                leaves.append((names, f!, values))
            }
        }
        // Nest the leaves into JSON objects by path.
        func insert(_ path: ArraySlice<String>, _ v: JSONValue, into members: inout [(String, JSONValue)]) {
            let head = path.first!
            if path.count == 1 { members.append((head, v)); return }
            if let i = members.firstIndex(where: { $0.0 == head }), case .object(var inner) = members[i].1 {
                insert(path.dropFirst(), v, into: &inner)
                members[i].1 = .object(inner)
            } else {
                var inner: [(String, JSONValue)] = []
                insert(path.dropFirst(), v, into: &inner)
                members.append((head, .object(inner)))
            }
        }
        for leaf in leaves {
            let typed = leaf.values.map { text -> JSONValue in
                leaf.field.type == PROTOBUF_C_TYPE_BOOL ? (text == "true" ? .bool(true) : text == "false" ? .bool(false) : .string(text)) : .string(text)
            }
            insert(leaf.path[...], leaf.field.label == PROTOBUF_C_LABEL_REPEATED ? .array(typed) : typed[0], into: &json)
        }
        var out: [UInt8] = []
        try encodeMessage(.object(json), d, path: "", into: &out)
        return out
    }

    // MARK: - Descriptors

    typealias Descriptor = UnsafePointer<ProtobufCMessageDescriptor>

    /// The top-level messages of the Recommender service by full name; nested ones (Context,
    /// Budgets, ...) are reached through their fields' descriptors.
    nonisolated(unsafe) static let descriptors: [String: Descriptor] = {
        // A message's init stores the address of its generated descriptor in `base.descriptor`.
        func d<C>(_ message: C, _ initialise: (UnsafeMutablePointer<C>) -> Void) -> Descriptor {
            var m = message
            initialise(&m)
            return withUnsafeBytes(of: &m) { $0.load(as: ProtobufCMessage.self).descriptor }
        }
        let all = [
            d(Shardrank__V1__RecommendRequest(), shardrank__v1__recommend_request__init),
            d(Shardrank__V1__RecommendResponse(), shardrank__v1__recommend_response__init),
            d(Shardrank__V1__RankRequest(), shardrank__v1__rank_request__init),
            d(Shardrank__V1__RankResponse(), shardrank__v1__rank_response__init),
            d(Shardrank__V1__SimilarRequest(), shardrank__v1__similar_request__init),
            d(Shardrank__V1__SimilarResponse(), shardrank__v1__similar_response__init),
            d(Shardrank__V1__RecordEventsRequest(), shardrank__v1__record_events_request__init),
            d(Shardrank__V1__RecordEventsResponse(), shardrank__v1__record_events_response__init),
            d(Shardrank__V1__RecordEventsBatchRequest(), shardrank__v1__record_events_batch_request__init),
            d(Shardrank__V1__RecordEventsBatchResponse(), shardrank__v1__record_events_batch_response__init),
        ]
        var byName: [String: Descriptor] = [:]
        for x in all { byName[String(cString: x.pointee.name)] = x }
        return byName
    }()

    /// lowerCamelCase of a proto field name (`user_id` → `userId`), as protoc derives `json_name`.
    static func jsonName(_ proto: String) -> String {
        var out = "", upper = false
        for ch in proto {
            if ch == "_" { upper = true; continue }
            out.append(upper ? Character(ch.uppercased()) : ch)
            upper = false
        }
        return out
    }

    static func fields(_ d: Descriptor) -> UnsafeBufferPointer<ProtobufCFieldDescriptor> {
        UnsafeBufferPointer(start: d.pointee.fields, count: Int(d.pointee.n_fields))
    }

    /// Each message's fields with their names made once: the proto name, the JSON name and the
    /// JSON member prefix written on output (`"itemId":`). Every message reachable from
    /// `descriptors`, keyed by descriptor address; immutable after start-up.
    struct FieldInfo {
        let proto: String
        let json: String
        let prefix: String
        /// Enums: each value's name as a JSON string (with its quotes).
        let enumJSON: [Int32: String]
    }

    nonisolated(unsafe) static let fieldInfo: [UnsafeRawPointer: [FieldInfo]] = {
        var out: [UnsafeRawPointer: [FieldInfo]] = [:]
        var todo = Array(descriptors.values)
        while let d = todo.popLast() {
            guard out[UnsafeRawPointer(d)] == nil else { continue }
            out[UnsafeRawPointer(d)] = fields(d).map { f in
                let proto = String(cString: f.name), json = jsonName(proto)
                if f.type == PROTOBUF_C_TYPE_MESSAGE { todo.append(f.descriptor!.assumingMemoryBound(to: ProtobufCMessageDescriptor.self)) }
                var enums: [Int32: String] = [:]
                if f.type == PROTOBUF_C_TYPE_ENUM { for e in enumValues(f) where enums[e.value] == nil { enums[e.value] = "\"\(String(cString: e.name))\"" } }
                return FieldInfo(proto: proto, json: json, prefix: "\"\(json)\":", enumJSON: enums)
            }
        }
        return out
    }()

    static func info(_ d: Descriptor) -> [FieldInfo] { fieldInfo[UnsafeRawPointer(d)]! }

    /// The field of `d` named `name` (its proto or its JSON name), with its names.
    static func field(_ name: String, of d: Descriptor) -> (ProtobufCFieldDescriptor, FieldInfo)? {
        let names = info(d)
        guard let i = names.firstIndex(where: { $0.json == name || $0.proto == name }) else { return nil }
        return (fields(d)[i], names[i])
    }

    static func enumValues(_ f: ProtobufCFieldDescriptor) -> UnsafeBufferPointer<ProtobufCEnumValue> {
        let e = f.descriptor!.assumingMemoryBound(to: ProtobufCEnumDescriptor.self)
        return UnsafeBufferPointer(start: e.pointee.values, count: Int(e.pointee.n_values))
    }

    // MARK: - JSON → wire

    static func encodeMessage(_ json: JSONValue, _ d: Descriptor, path: String, into out: inout [UInt8]) throws(RPCError) {
        if case .null = json { return }
        guard case .object(let members) = json else {
            throw RPCError(.invalidArgument, "\(path.isEmpty ? "the request" : String(path.dropLast())) must be a JSON object")
        }
        var seen = Set<UInt32>()
        for (name, value) in members {
            guard let (f, fi) = field(name, of: d) else {
                let known = info(d).map(\.json).joined(separator: ", ")
                throw RPCError(.invalidArgument, "unknown field '\(path)\(name)' of \(String(cString: d.pointee.name)) (known: \(known))")
            }
            let fpath = path + fi.proto
            guard seen.insert(f.id).inserted else { throw RPCError(.invalidArgument, "field '\(fpath)' is given twice") }
            if case .null = value { continue }
            if f.label == PROTOBUF_C_LABEL_REPEATED {
                guard case .array(let items) = value else { throw RPCError(.invalidArgument, "field '\(fpath)' must be a JSON array") }
                if items.isEmpty { continue }
                if f.type == PROTOBUF_C_TYPE_MESSAGE || f.type == PROTOBUF_C_TYPE_STRING || f.type == PROTOBUF_C_TYPE_BYTES {
                    for (i, item) in items.enumerated() { try encodeField(item, f, path: "\(fpath)[\(i)]", into: &out) }
                } else {
                    // Packed (proto3's default for repeated scalars).
                    var packed: [UInt8] = []
                    for (i, item) in items.enumerated() { try encodeScalar(item, f, path: "\(fpath)[\(i)]", into: &packed) }
                    ProtoC.appendVarint(UInt64(f.id) << 3 | 2, to: &out)
                    ProtoC.appendVarint(UInt64(packed.count), to: &out)
                    out.append(contentsOf: packed)
                }
            } else {
                try encodeField(value, f, path: fpath, into: &out)
            }
        }
    }

    /// One (non-packed) field with its tag.
    static func encodeField(_ v: JSONValue, _ f: ProtobufCFieldDescriptor, path: String, into out: inout [UInt8]) throws(RPCError) {
        switch f.type {
        case PROTOBUF_C_TYPE_MESSAGE:
            var body: [UInt8] = []
            try encodeMessage(v, f.descriptor!.assumingMemoryBound(to: ProtobufCMessageDescriptor.self), path: path + ".", into: &body)
            ProtoC.appendVarint(UInt64(f.id) << 3 | 2, to: &out)
            ProtoC.appendVarint(UInt64(body.count), to: &out)
            out.append(contentsOf: body)
        case PROTOBUF_C_TYPE_STRING:
            guard case .string(let s) = v else { throw RPCError(.invalidArgument, "field '\(path)' must be a JSON string") }
            let b = Array(s.utf8)
            ProtoC.appendVarint(UInt64(f.id) << 3 | 2, to: &out)
            ProtoC.appendVarint(UInt64(b.count), to: &out)
            out.append(contentsOf: b)
        case PROTOBUF_C_TYPE_BYTES:
            guard case .string(let s) = v, let b = Base64.decode(s) else {
                throw RPCError(.invalidArgument, "field '\(path)' must be a base64 JSON string")
            }
            ProtoC.appendVarint(UInt64(f.id) << 3 | 2, to: &out)
            ProtoC.appendVarint(UInt64(b.count), to: &out)
            out.append(contentsOf: b)
        default:
            ProtoC.appendVarint(UInt64(f.id) << 3 | wireType(f.type), to: &out)
            try encodeScalar(v, f, path: path, into: &out)
        }
    }

    static func wireType(_ t: ProtobufCType) -> UInt64 {
        switch t {
        case PROTOBUF_C_TYPE_SFIXED32, PROTOBUF_C_TYPE_FIXED32, PROTOBUF_C_TYPE_FLOAT: 5
        case PROTOBUF_C_TYPE_SFIXED64, PROTOBUF_C_TYPE_FIXED64, PROTOBUF_C_TYPE_DOUBLE: 1
        default: 0
        }
    }

    /// A scalar's value without its tag (the element of a packed field).
    static func encodeScalar(_ v: JSONValue, _ f: ProtobufCFieldDescriptor, path: String, into out: inout [UInt8]) throws(RPCError) {
        func bad(_ what: String) -> RPCError { RPCError(.invalidArgument, "field '\(path)' must be \(what)") }
        /// The text of a number given as a JSON number or a JSON string.
        func numeric() throws(RPCError) -> String {
            switch v {
            case .number(let s): return s
            case .string(let s): return s
            default: throw bad("a number")
            }
        }
        func integer(_ lo: Int64, _ hi: UInt64) throws(RPCError) -> (UInt64, negative: Bool) {
            let s = try numeric()
            if let u = UInt64(s) {
                guard u <= hi else { throw bad("an integer in \(lo)...\(hi)") }
                return (u, false)
            }
            if let i = Int64(s) {
                guard i >= lo else { throw bad("an integer in \(lo)...\(hi)") }
                return (UInt64(bitPattern: i), true)
            }
            // 1e3 or 5.0: an integral JSON number written another way.
            if case .number = v, let d = Double(s), d == d.rounded(), abs(d) < 9.007e15 {
                guard d >= Double(lo), d <= Double(hi) else { throw bad("an integer in \(lo)...\(hi)") }
                return d < 0 ? (UInt64(bitPattern: Int64(d)), true) : (UInt64(d), false)
            }
            throw bad("an integer (got '\(s)')")
        }
        func float() throws(RPCError) -> Double {
            let s = try numeric()
            switch s {
            case "NaN": return .nan
            case "Infinity": return .infinity
            case "-Infinity": return -.infinity
            default:
                guard let d = Double(s), d.isFinite else { throw bad("a number (got '\(s)')") }
                return d
            }
        }
        switch f.type {
        case PROTOBUF_C_TYPE_INT32:
            let (u, _) = try integer(Int64(Int32.min), UInt64(Int32.max))
            ProtoC.appendVarint(u, to: &out)  // a negative int32 is sign-extended to 64 bits
        case PROTOBUF_C_TYPE_SINT32:
            let (u, _) = try integer(Int64(Int32.min), UInt64(Int32.max))
            let i = Int32(truncatingIfNeeded: Int64(bitPattern: u))
            ProtoC.appendVarint(UInt64(UInt32(bitPattern: (i << 1) ^ (i >> 31))), to: &out)
        case PROTOBUF_C_TYPE_UINT32:
            ProtoC.appendVarint(try integer(0, UInt64(UInt32.max)).0, to: &out)
        case PROTOBUF_C_TYPE_INT64:
            ProtoC.appendVarint(try integer(Int64.min, UInt64(Int64.max)).0, to: &out)
        case PROTOBUF_C_TYPE_SINT64:
            let i = Int64(bitPattern: try integer(Int64.min, UInt64(Int64.max)).0)
            ProtoC.appendVarint(UInt64(bitPattern: (i << 1) ^ (i >> 63)), to: &out)
        case PROTOBUF_C_TYPE_UINT64:
            ProtoC.appendVarint(try integer(0, UInt64.max).0, to: &out)
        case PROTOBUF_C_TYPE_FIXED32, PROTOBUF_C_TYPE_SFIXED32:
            let (u, _) = f.type == PROTOBUF_C_TYPE_FIXED32 ? try integer(0, UInt64(UInt32.max)) : try integer(Int64(Int32.min), UInt64(Int32.max))
            appendLE(UInt64(UInt32(truncatingIfNeeded: u)), 4, &out)
        case PROTOBUF_C_TYPE_FIXED64, PROTOBUF_C_TYPE_SFIXED64:
            let (u, _) = f.type == PROTOBUF_C_TYPE_FIXED64 ? try integer(0, UInt64.max) : try integer(Int64.min, UInt64(Int64.max))
            appendLE(u, 8, &out)
        case PROTOBUF_C_TYPE_FLOAT:
            appendLE(UInt64(Float(try float()).bitPattern), 4, &out)
        case PROTOBUF_C_TYPE_DOUBLE:
            appendLE(try float().bitPattern, 8, &out)
        case PROTOBUF_C_TYPE_BOOL:
            guard case .bool(let b) = v else { throw bad("true or false") }
            out.append(b ? 1 : 0)
        case PROTOBUF_C_TYPE_ENUM:
            let values = enumValues(f)
            let number: Int32
            switch v {
            case .string(let s) where Int32(s) != nil:
                number = Int32(s)!
            case .string(let s):
                guard let e = values.first(where: { String(cString: $0.name) == s }) else {
                    throw bad("one of \(values.map { String(cString: $0.name) }.joined(separator: ", ")) (got '\(s)')")
                }
                number = e.value
            case .number:
                let (u, _) = try integer(Int64(Int32.min), UInt64(Int32.max))
                number = Int32(truncatingIfNeeded: Int64(bitPattern: u))
            default: throw bad("an enum value name or number")
            }
            ProtoC.appendVarint(UInt64(bitPattern: Int64(number)), to: &out)
        default:
            throw RPCError(.internal, "field '\(path)': unsupported type \(f.type.rawValue)")
        }
    }

    static func appendLE(_ v: UInt64, _ n: Int, _ out: inout [UInt8]) {
        for i in 0..<n { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    // MARK: - unpacked message → JSON

    static func writeMessage(_ m: UnsafeRawPointer, _ d: Descriptor, into out: inout String) {
        out += "{"
        var first = true
        let names = info(d)
        for (i, f) in fields(d).enumerated() {
            let at = m + Int(f.offset)
            if f.label == PROTOBUF_C_LABEL_REPEATED {
                let n = m.load(fromByteOffset: Int(f.quantifier_offset), as: Int.self)
                guard n > 0, let base = at.load(as: UnsafeRawPointer?.self) else { continue }
                if !first { out += "," }
                first = false
                out += names[i].prefix
                out += "["
                let stride = elementSize(f.type)
                for e in 0..<n {
                    if e > 0 { out += "," }
                    writeValue(base + e * stride, f, names[i], into: &out)
                }
                out += "]"
            } else {
                guard !isDefault(at, f) else { continue }
                if !first { out += "," }
                first = false
                out += names[i].prefix
                writeValue(at, f, names[i], into: &out)
            }
        }
        out += "}"
    }

    static func elementSize(_ t: ProtobufCType) -> Int {
        switch t {
        case PROTOBUF_C_TYPE_INT32, PROTOBUF_C_TYPE_SINT32, PROTOBUF_C_TYPE_SFIXED32, PROTOBUF_C_TYPE_UINT32, PROTOBUF_C_TYPE_FIXED32,
             PROTOBUF_C_TYPE_FLOAT, PROTOBUF_C_TYPE_ENUM, PROTOBUF_C_TYPE_BOOL: 4  // protobuf_c_boolean is an int
        case PROTOBUF_C_TYPE_BYTES: MemoryLayout<ProtobufCBinaryData>.stride
        default: 8  // 64-bit scalars, double, and pointers (strings, messages)
        }
    }

    static func isDefault(_ at: UnsafeRawPointer, _ f: ProtobufCFieldDescriptor) -> Bool {
        switch f.type {
        case PROTOBUF_C_TYPE_MESSAGE, PROTOBUF_C_TYPE_STRING:
            guard let p = at.load(as: UnsafeRawPointer?.self) else { return true }
            return f.type == PROTOBUF_C_TYPE_STRING && p.load(as: UInt8.self) == 0
        case PROTOBUF_C_TYPE_BYTES: return at.load(as: ProtobufCBinaryData.self).len == 0
        case PROTOBUF_C_TYPE_FLOAT: return at.load(as: UInt32.self) == 0  // -0.0 is written
        default: return elementSize(f.type) == 4 ? at.load(as: UInt32.self) == 0 : at.load(as: UInt64.self) == 0
        }
    }

    static func writeValue(_ at: UnsafeRawPointer, _ f: ProtobufCFieldDescriptor, _ fi: FieldInfo, into out: inout String) {
        func float(_ x: Double, _ text: String) {
            if x.isNaN { out += "\"NaN\"" } else if x.isInfinite { out += x > 0 ? "\"Infinity\"" : "\"-Infinity\"" } else { out += text }
        }
        switch f.type {
        case PROTOBUF_C_TYPE_INT32, PROTOBUF_C_TYPE_SINT32, PROTOBUF_C_TYPE_SFIXED32: out += String(at.load(as: Int32.self))
        case PROTOBUF_C_TYPE_UINT32, PROTOBUF_C_TYPE_FIXED32: out += String(at.load(as: UInt32.self))
        case PROTOBUF_C_TYPE_INT64, PROTOBUF_C_TYPE_SINT64, PROTOBUF_C_TYPE_SFIXED64: out += "\"\(at.load(as: Int64.self))\""
        case PROTOBUF_C_TYPE_UINT64, PROTOBUF_C_TYPE_FIXED64: out += "\"\(at.load(as: UInt64.self))\""
        case PROTOBUF_C_TYPE_FLOAT:
            let x = at.load(as: Float.self)
            float(Double(x), "\(x)")
        case PROTOBUF_C_TYPE_DOUBLE:
            let x = at.load(as: Double.self)
            float(x, "\(x)")
        case PROTOBUF_C_TYPE_BOOL: out += at.load(as: Int32.self) != 0 ? "true" : "false"
        case PROTOBUF_C_TYPE_ENUM:
            let v = at.load(as: Int32.self)
            if let e = fi.enumJSON[v] { out += e } else { out += String(v) }
        case PROTOBUF_C_TYPE_STRING:
            let p = at.load(as: UnsafePointer<CChar>?.self)
            writeString(p.map { String(cString: $0) } ?? "", into: &out)
        case PROTOBUF_C_TYPE_BYTES:
            let b = at.load(as: ProtobufCBinaryData.self)
            out += "\"" + Base64.encode(b.len > 0 ? Array(UnsafeBufferPointer(start: b.data, count: b.len)) : []) + "\""
        case PROTOBUF_C_TYPE_MESSAGE:
            guard let p = at.load(as: UnsafeRawPointer?.self) else { out += "{}"; return }
            writeMessage(p, f.descriptor!.assumingMemoryBound(to: ProtobufCMessageDescriptor.self), into: &out)
        default: out += "null"
        }
    }

    /// A JSON string literal of `s` (quotes, backslashes and control characters escaped).
    public static func writeString(_ s: String, into out: inout String) {
        out += JSONText.quote(s)
    }
}

/// Standard base64 (RFC 4648 §4, with padding) for `bytes` fields; decoding also accepts the
/// URL-safe alphabet and missing padding, as protobuf's JSON parser does.
enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ b: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((b.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= b.count {
            let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
            for s in [18, 12, 6, 0] { out.append(alphabet[Int(v >> UInt32(s) & 63)]) }
            i += 3
        }
        let rest = b.count - i
        if rest > 0 {
            let v = UInt32(b[i]) << 16 | (rest == 2 ? UInt32(b[i + 1]) << 8 : 0)
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(rest == 2 ? alphabet[Int(v >> 6 & 63)] : UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ s: String) -> [UInt8]? {
        var acc: UInt32 = 0, bits = 0
        var out: [UInt8] = []
        for c in s.utf8 {
            let v: UInt32
            switch c {
            case 0x41...0x5A: v = UInt32(c - 0x41)
            case 0x61...0x7A: v = UInt32(c - 0x61 + 26)
            case 0x30...0x39: v = UInt32(c - 0x30 + 52)
            case UInt8(ascii: "+"), UInt8(ascii: "-"): v = 62
            case UInt8(ascii: "/"), UInt8(ascii: "_"): v = 63
            case UInt8(ascii: "="): continue
            default: return nil
            }
            acc = acc << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        return out
    }
}
