internal import CProtobufC
#if canImport(Glibc)
import Glibc
#endif
internal import CShardRankProto
public import RPCCore

/// One `grpc.reflection.v1.ServerReflectionRequest` (the v1alpha message is the same on the wire).
public struct ReflectionRequest: Sendable, Hashable {
    public enum Query: Sendable, Hashable {
        case fileByFilename(String)
        case fileContainingSymbol(String)
        case fileContainingExtension(type: String, number: Int32)
        case allExtensionNumbersOfType(String)
        case listServices
        /// No `message_request` field was set.
        case none
    }
    public var host: String
    public var query: Query

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> ReflectionRequest {
        try ProtoC.unpack(bytes, "grpc.reflection.v1.ServerReflectionRequest", unpack: grpc__reflection__v1__server_reflection_request__unpack,
                          free: grpc__reflection__v1__server_reflection_request__free_unpacked) { m in
            let r = m.pointee
            let query: Query
            switch r.message_request_case {
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
                query = .fileByFilename(ProtoC.string(r.file_by_filename))
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
                query = .fileContainingSymbol(ProtoC.string(r.file_containing_symbol))
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
                let e = r.file_containing_extension?.pointee
                query = .fileContainingExtension(type: ProtoC.string(e?.containing_type), number: e?.extension_number ?? 0)
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
                query = .allExtensionNumbersOfType(ProtoC.string(r.all_extension_numbers_of_type))
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
                query = .listServices
            default:
                query = .none
            }
            return ReflectionRequest(host: ProtoC.string(r.host), query: query)
        }
    }
}

/// One `grpc.reflection.v1.ServerReflectionResponse`, less `original_request` (appended as the
/// caller's own bytes when encoding).
public enum ReflectionAnswer: Sendable, Hashable {
    /// Serialized `FileDescriptorProto`s: the file asked for first, then what it imports.
    case files([[UInt8]])
    case extensionNumbers(type: String, numbers: [Int32])
    case services([String])
    case error(RPCStatusCode, String)

    /// Encodes the response; `originalRequest` (the request's serialized bytes) is echoed in
    /// field 2 as the protocol asks.
    public func encoded(originalRequest: [UInt8]) -> FramedMessage {
        var m = Grpc__Reflection__V1__ServerReflectionResponse()
        grpc__reflection__v1__server_reflection_response__init(&m)
        func pack(_ m: inout Grpc__Reflection__V1__ServerReflectionResponse) -> FramedMessage {
            ProtoC.pack(&m, appendingBytesField: 2, length: originalRequest.count) { dst in
                originalRequest.withUnsafeBytes { dst.copyMemory(from: $0) }
            }
        }
        switch self {
        case .files(let files):
            var fd = Grpc__Reflection__V1__FileDescriptorResponse()
            grpc__reflection__v1__file_descriptor_response__init(&fd)
            // Copies of the descriptors (a few KiB; reflection is not a hot path), freed after packing.
            do {
                var blobs: [ProtobufCBinaryData] = []
                var holders: [UnsafeMutableBufferPointer<UInt8>] = []
                defer { for h in holders { h.deallocate() } }
                for f in files {
                    let h = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(f.count, 1))
                    _ = h.initialize(from: f)
                    holders.append(h)
                    blobs.append(ProtobufCBinaryData(len: f.count, data: h.baseAddress))
                }
                return blobs.withUnsafeMutableBufferPointer { b in
                    fd.n_file_descriptor_proto = b.count
                    fd.file_descriptor_proto = b.baseAddress
                    return withUnsafeMutablePointer(to: &fd) { p in
                        m.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE
                        m.file_descriptor_response = p
                        return pack(&m)
                    }
                }
            }
        case .extensionNumbers(let type, let numbers):
            var e = Grpc__Reflection__V1__ExtensionNumberResponse()
            grpc__reflection__v1__extension_number_response__init(&e)
            var ns = numbers
            return ProtoC.withCString(type) { t in
                ns.withUnsafeMutableBufferPointer { b in
                    e.base_type_name = t
                    e.n_extension_number = b.count
                    e.extension_number = b.baseAddress
                    return withUnsafeMutablePointer(to: &e) { p in
                        m.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE
                        m.all_extension_numbers_response = p
                        return pack(&m)
                    }
                }
            }
        case .services(let names):
            var entries: [Grpc__Reflection__V1__ServiceResponse] = []
            let cNames: [UnsafeMutablePointer<CChar>] = names.map { strdup($0)! }
            defer { for c in cNames { free(c) } }
            for c in cNames {
                var s = Grpc__Reflection__V1__ServiceResponse()
                grpc__reflection__v1__service_response__init(&s)
                s.name = c
                entries.append(s)
            }
            return entries.withUnsafeMutableBufferPointer { eb in
                var pointers: [UnsafeMutablePointer<Grpc__Reflection__V1__ServiceResponse>?] = (0 ..< eb.count).map { eb.baseAddress! + $0 }
                return pointers.withUnsafeMutableBufferPointer { pb in
                    var list = Grpc__Reflection__V1__ListServiceResponse()
                    grpc__reflection__v1__list_service_response__init(&list)
                    list.n_service = pb.count
                    list.service = pb.baseAddress
                    return withUnsafeMutablePointer(to: &list) { p in
                        m.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE
                        m.list_services_response = p
                        return pack(&m)
                    }
                }
            }
        case .error(let code, let message):
            var e = Grpc__Reflection__V1__ErrorResponse()
            grpc__reflection__v1__error_response__init(&e)
            e.error_code = Int32(code.rawValue)
            return ProtoC.withCString(message) { msg in
                e.error_message = msg
                return withUnsafeMutablePointer(to: &e) { p in
                    m.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE
                    m.error_response = p
                    return pack(&m)
                }
            }
        }
    }
}

/// gRPC server reflection (`grpc.reflection.v1.ServerReflection/ServerReflectionInfo`, and the
/// same under `grpc.reflection.v1alpha`, the name grpcurl tries first): lists the services this
/// process serves and answers with the file descriptors of `proto/` compiled into the binary
/// (`ProtoDescriptorIndex.compiled`), so clients need no `.proto` files. Each request on the
/// stream gets one response, in order, on the connection's event loop; errors about what was
/// asked (an unknown file or symbol) travel as `error_response` and keep the stream open.
public struct ReflectionService: RPCService {
    public static let v1Name = "grpc.reflection.v1.ServerReflection"
    public static let v1alphaName = "grpc.reflection.v1alpha.ServerReflection"

    public let serviceName: String
    /// What `list_services` answers, sorted.
    public let listedServices: [String]
    private let index: ProtoDescriptorIndex

    /// Both reflection services (v1 and v1alpha) for a server that serves `services`.
    public static func both(serving services: [any RPCService], index: ProtoDescriptorIndex = .compiled) -> [ReflectionService] {
        let names = Array(Set(services.map(\.serviceName) + [v1Name, v1alphaName])).sorted()
        return [v1Name, v1alphaName].map { ReflectionService(serviceName: $0, listedServices: names, index: index) }
    }

    init(serviceName: String, listedServices: [String], index: ProtoDescriptorIndex) {
        self.serviceName = serviceName
        self.listedServices = listedServices
        self.index = index
    }

    public var methods: [RPCMethod] {
        [RPCMethod(service: serviceName, method: "ServerReflectionInfo", placement: .inline, handler: .streamMessages { [self] bytes, _ throws(RPCError) in
            [answer(try ReflectionRequest.decode(bytes)).encoded(originalRequest: bytes)]
        })]
    }

    /// The answer to one request (pure; no I/O).
    public func answer(_ request: ReflectionRequest) -> ReflectionAnswer {
        switch request.query {
        case .listServices:
            return .services(listedServices)
        case .fileByFilename(let name):
            guard let files = index.fileWithDependencies(name) else { return .error(.notFound, "file not found: '\(name)'") }
            return .files(files.map(\.bytes))
        case .fileContainingSymbol(let symbol):
            let s = symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol
            guard let file = index.symbols[s], let files = index.fileWithDependencies(file) else {
                return .error(.notFound, "symbol not found: '\(symbol)'")
            }
            return .files(files.map(\.bytes))
        case .fileContainingExtension(let type, let number):
            return .error(.notFound, "extension not found: '\(type)' has no extension \(number) (these protos declare no extensions)")
        case .allExtensionNumbersOfType(let type):
            guard index.symbols[type] != nil else { return .error(.notFound, "type not found: '\(type)'") }
            return .extensionNumbers(type: type, numbers: [])
        case .none:
            return .error(.invalidArgument, "the request sets none of file_by_filename, file_containing_symbol, file_containing_extension, all_extension_numbers_of_type, list_services")
        }
    }
}
