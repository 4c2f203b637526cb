internal import CShardRankProto

/// The `.proto` files of `proto/` as serialized `FileDescriptorProto`s (generated into
/// `CShardRankProto` by `scripts/gen-proto`), indexed by file name and by every fully qualified
/// symbol they declare: what server reflection answers with. Built once, immutable, thread-safe.
public struct ProtoDescriptorIndex: Sendable {
    /// One `.proto` file.
    public struct File: Sendable {
        public let name: String
        public let package: String
        /// The files it imports, by name.
        public let dependencies: [String]
        /// The serialized `google.protobuf.FileDescriptorProto`.
        public let bytes: [UInt8]
    }

    public private(set) var files: [String: File] = [:]
    /// Fully qualified symbol (messages, nested messages, fields, enums, enum values, services,
    /// methods; no leading dot) → the name of the file that declares it.
    public private(set) var symbols: [String: String] = [:]
    /// Fully qualified service names, in file order.
    public private(set) var services: [String] = []

    /// The descriptors compiled into this binary.
    public static let compiled: ProtoDescriptorIndex = {
        var length = 0
        let p = shardrank_proto_descriptor_set(&length)!
        do throws(DescriptorParseError) {
            return try ProtoDescriptorIndex(fileDescriptorSet: Array(UnsafeBufferPointer(start: p, count: length)))
        } catch {
            preconditionFailure("the generated descriptor set is malformed: \(error.message)")
        }
    }()

    /// Parses a serialized `google.protobuf.FileDescriptorSet`.
    /// - Throws: when the bytes are not a valid encoding.
    init(fileDescriptorSet bytes: [UInt8]) throws(DescriptorParseError) {
        var set = WireReader(bytes[...])
        while let (field, value) = try set.next() {
            guard field == 1, case .bytes(let fileBytes) = value else { continue }
            try addFile(Array(fileBytes))
        }
    }

    private mutating func addFile(_ bytes: [UInt8]) throws(DescriptorParseError) {
        var name = "", package = "", dependencies: [String] = []
        var messages: [ArraySlice<UInt8>] = [], enums: [ArraySlice<UInt8>] = [], services: [ArraySlice<UInt8>] = []
        var r = WireReader(bytes[...])
        while let (field, value) = try r.next() {
            guard case .bytes(let b) = value else { continue }
            switch field {
            case 1: name = String(decoding: b, as: UTF8.self)
            case 2: package = String(decoding: b, as: UTF8.self)
            case 3: dependencies.append(String(decoding: b, as: UTF8.self))
            case 4: messages.append(b)
            case 5: enums.append(b)
            case 6: services.append(b)
            default: break
            }
        }
        files[name] = File(name: name, package: package, dependencies: dependencies, bytes: bytes)
        let scope = package.isEmpty ? "" : package + "."
        for m in messages { try addMessage(m, scope: scope, file: name) }
        for e in enums { try addEnum(e, scope: scope, file: name) }
        for s in services {
            var r = WireReader(s)
            var serviceName = "", methods: [String] = []
            while let (field, value) = try r.next() {
                guard case .bytes(let b) = value else { continue }
                if field == 1 { serviceName = String(decoding: b, as: UTF8.self) }
                if field == 2 { methods.append(try Self.name(of: b)) }
            }
            let full = scope + serviceName
            symbols[full] = name
            self.services.append(full)
            for m in methods { symbols[full + "." + m] = name }
        }
    }

    /// A `DescriptorProto`: the message, its fields, nested messages and enums.
    private mutating func addMessage(_ bytes: ArraySlice<UInt8>, scope: String, file: String) throws(DescriptorParseError) {
        var r = WireReader(bytes)
        var messageName = "", fields: [String] = [], nested: [ArraySlice<UInt8>] = [], enums: [ArraySlice<UInt8>] = []
        while let (field, value) = try r.next() {
            guard case .bytes(let b) = value else { continue }
            switch field {
            case 1: messageName = String(decoding: b, as: UTF8.self)
            case 2: fields.append(try Self.name(of: b))
            case 3: nested.append(b)
            case 4: enums.append(b)
            default: break
            }
        }
        let full = scope + messageName
        symbols[full] = file
        for f in fields { symbols[full + "." + f] = file }
        for n in nested { try addMessage(n, scope: full + ".", file: file) }
        for e in enums { try addEnum(e, scope: full + ".", file: file) }
    }

    /// An `EnumDescriptorProto`: the enum and its values (which live in the enum's own scope).
    private mutating func addEnum(_ bytes: ArraySlice<UInt8>, scope: String, file: String) throws(DescriptorParseError) {
        var r = WireReader(bytes)
        while let (field, value) = try r.next() {
            guard case .bytes(let b) = value else { continue }
            if field == 1 { symbols[scope + String(decoding: b, as: UTF8.self)] = file }
            if field == 2 { symbols[scope + (try Self.name(of: b))] = file }
        }
    }

    /// Field 1 (`name`) of a descriptor message.
    private static func name(of bytes: ArraySlice<UInt8>) throws(DescriptorParseError) -> String {
        var r = WireReader(bytes)
        while let (field, value) = try r.next() {
            if field == 1, case .bytes(let b) = value { return String(decoding: b, as: UTF8.self) }
        }
        return ""
    }

    /// `name` and every file it imports, directly or not, each once, `name` first.
    /// Nil when no file has that name.
    public func fileWithDependencies(_ name: String) -> [File]? {
        guard files[name] != nil else { return nil }
        var out: [File] = [], seen: Set<String> = [], todo = [name]
        while let n = todo.popLast() {
            guard seen.insert(n).inserted, let f = files[n] else { continue }
            out.append(f)
            todo.append(contentsOf: f.dependencies.reversed())
        }
        return out
    }
}

/// A parse failure inside the descriptor index (never reaches a peer: the bytes are ours).
struct DescriptorParseError: Error {
    let message: String
}

/// Reads the fields of one protobuf message, in order (wire types 0, 1, 2 and 5).
struct WireReader {
    enum Value { case varint(UInt64), fixed, bytes(ArraySlice<UInt8>) }
    private var rest: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { rest = bytes }

    mutating func next() throws(DescriptorParseError) -> (field: UInt64, value: Value)? {
        guard !rest.isEmpty else { return nil }
        let tag = try varint()
        switch tag & 7 {
        case 0: return (tag >> 3, .varint(try varint()))
        case 1: try skip(8); return (tag >> 3, .fixed)
        case 5: try skip(4); return (tag >> 3, .fixed)
        case 2:
            let n = try varint()
            guard n <= UInt64(rest.count) else { throw DescriptorParseError(message: "length \(n) past the end") }
            let b = rest.prefix(Int(n))
            rest = rest.dropFirst(Int(n))
            return (tag >> 3, .bytes(b))
        default: throw DescriptorParseError(message: "unsupported wire type \(tag & 7)")
        }
    }

    private mutating func skip(_ n: Int) throws(DescriptorParseError) {
        guard rest.count >= n else { throw DescriptorParseError(message: "truncated field") }
        rest = rest.dropFirst(n)
    }

    private mutating func varint() throws(DescriptorParseError) -> UInt64 {
        var v: UInt64 = 0, shift: UInt64 = 0
        while let b = rest.first {
            rest = rest.dropFirst()
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return v }
            shift += 7
            if shift > 63 { break }
        }
        throw DescriptorParseError(message: "malformed varint")
    }
}
