internal import CProtobufC
internal import CShardRankProto
public import RPCCore
import Synchronization

public struct HealthCheckRequest: Sendable, Hashable {
    public var service: String
    public init(service: String = "") { self.service = service }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> HealthCheckRequest {
        try ProtoC.unpack(bytes, "grpc.health.v1.HealthCheckRequest", unpack: grpc__health__v1__health_check_request__unpack, free: grpc__health__v1__health_check_request__free_unpacked) { m in
            HealthCheckRequest(service: ProtoC.string(m.pointee.service))
        }
    }

    public func encoded() -> FramedMessage {
        var m = Grpc__Health__V1__HealthCheckRequest()
        grpc__health__v1__health_check_request__init(&m)
        return ProtoC.withCString(service) { s in
            m.service = s
            return ProtoC.pack(&m)
        }
    }
}

public enum ServingStatus: UInt32, Sendable, Hashable {
    case unknown = 0, serving = 1, notServing = 2, serviceUnknown = 3
}

public struct HealthCheckResponse: Sendable, Hashable {
    public var status: ServingStatus
    public init(status: ServingStatus) { self.status = status }

    public static func decode(_ bytes: [UInt8]) throws(RPCError) -> HealthCheckResponse {
        try ProtoC.unpack(bytes, "grpc.health.v1.HealthCheckResponse", unpack: grpc__health__v1__health_check_response__unpack, free: grpc__health__v1__health_check_response__free_unpacked) { m in
            HealthCheckResponse(status: ServingStatus(rawValue: m.pointee.status.rawValue) ?? .unknown)
        }
    }

    public func encoded() -> FramedMessage {
        var m = Grpc__Health__V1__HealthCheckResponse()
        grpc__health__v1__health_check_response__init(&m)
        m.status = Grpc__Health__V1__HealthCheckResponse__ServingStatus(rawValue: status.rawValue)
        return ProtoC.pack(&m)
    }
}

/// `grpc.health.v1.Health`: `Check` and `Watch` for the whole server ("") and each named service.
/// Thread-safe; `set` notifies every watcher of a changed status.
public final class HealthService: RPCService {
    public let serviceName = "grpc.health.v1.Health"
    private struct State {
        var statuses: [String: ServingStatus] = [:]
        var watchers: [Int: (service: String, writer: any ResponseStreamWriter, last: ServingStatus)] = [:]
        var nextWatcher = 0
    }
    private let state = Mutex(State())

    /// - Parameter services: the services this process serves; all start SERVING.
    public init(services: [String]) {
        state.withLock { s in
            s.statuses[""] = .serving
            for name in services { s.statuses[name] = .serving }
        }
    }

    public func status(of service: String = "") -> ServingStatus? { state.withLock { $0.statuses[service] } }

    /// Sets the status of `service` ("" = the server) and tells its watchers.
    public func set(_ status: ServingStatus, for service: String = "") {
        let notify = state.withLock { s -> [(any ResponseStreamWriter, ServingStatus)] in
            s.statuses[service] = status
            var out: [(any ResponseStreamWriter, ServingStatus)] = []
            for (id, w) in s.watchers where w.service == service && w.last != status {
                s.watchers[id]!.last = status
                out.append((w.writer, status))
            }
            return out
        }
        for (w, st) in notify { w.send(HealthCheckResponse(status: st).encoded()) }
    }

    /// Marks the server and every service NOT_SERVING (graceful shutdown, step 1).
    public func setAllNotServing() {
        let names = state.withLock { Array($0.statuses.keys) }
        for n in names { set(.notServing, for: n) }
    }

    /// Ends every Watch stream with OK (before a graceful shutdown, after NOT_SERVING was sent).
    public func finishWatchers() {
        let writers = state.withLock { s -> [any ResponseStreamWriter] in
            let w = s.watchers.values.map(\.writer)
            s.watchers.removeAll()
            return w
        }
        for w in writers { w.finish(nil) }
    }

    public var methods: [RPCMethod] {
        [
            RPCMethod(service: serviceName, method: "Check", placement: .inline, handler: .unary { [self] bytes, _ throws(RPCError) in
                let req = try HealthCheckRequest.decode(bytes)
                guard let st = status(of: req.service) else {
                    throw RPCError(.notFound, "unknown service '\(req.service)'")
                }
                return HealthCheckResponse(status: st).encoded()
            }),
            RPCMethod(service: serviceName, method: "Watch", placement: .inline, handler: .serverStreaming { [self] bytes, ctx, writer throws(RPCError) in
                let req = try HealthCheckRequest.decode(bytes)
                let (id, current) = state.withLock { s -> (Int, ServingStatus) in
                    let st = s.statuses[req.service] ?? .serviceUnknown
                    let id = s.nextWatcher
                    s.nextWatcher += 1
                    s.watchers[id] = (req.service, writer, st)
                    return (id, st)
                }
                writer.send(HealthCheckResponse(status: current).encoded())
                ctx.whenCancelled { [weak self] in
                    _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
                }
            }),
        ]
    }
}
