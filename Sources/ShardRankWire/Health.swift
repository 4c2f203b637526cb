public import RPCCore
import Synchronization

// HealthCheckRequest, HealthCheckResponse and ServingStatus are generated from proto/
// (Generated/GrpcHealthV1Health.swift).

/// `grpc.health.v1.Health`: `Check` and `Watch` for the whole server ("") and each named service.
/// Thread-safe; `set` notifies every watcher of a changed status.
public final class HealthService: RPCService {
    public let serviceName = HealthMethods.serviceName
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
            .unary(HealthMethods.check, placement: .inline) { [self] req, _ throws(RPCError) in
                guard let st = status(of: req.service) else {
                    throw RPCError(.notFound, "unknown service '\(req.service)'")
                }
                return HealthCheckResponse(status: st)
            },
            .serverStreaming(HealthMethods.watch, placement: .inline) { [self] req, ctx, writer throws(RPCError) in
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
            },
        ]
    }
}
