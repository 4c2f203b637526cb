import NIOCore
import Synchronization
import RPCCore

/// Process-wide counters and the registry of open connections, shared by every event loop.
final class ServerState: Sendable {
    let inFlightHandlers = Atomic<Int>(0)
    let openStreams = Atomic<Int>(0)
    let acceptedCalls = Atomic<Int>(0)
    let rejectedOverload = Atomic<Int>(0)
    let shuttingDown = Atomic<Bool>(false)
    let connections = Mutex<[ObjectIdentifier: ConnectionRef]>([:])
    /// Accepted connections not yet closed (counted before the connection's handler exists).
    let liveConnections = Atomic<Int>(0)
    /// Connections closed at once because `maxConnections` were open.
    let refusedConnections = Atomic<Int>(0)
    /// Bytes of unsent answers held by all connections (each publishes its own after it changes).
    let queuedBytes = Atomic<Int>(0)
    /// Bytes of requests not yet complete buffered by all connections (each adds its changes).
    let requestBytes = Atomic<Int>(0)

    struct ConnectionRef: Sendable {
        let eventLoop: any EventLoop
        let shutdown: @Sendable () -> Void
        let close: @Sendable () -> Void
    }

    /// Takes a handler slot; false when the process is at its limit.
    func tryAcquireHandler(limit: Int) -> Bool {
        let n = inFlightHandlers.wrappingAdd(1, ordering: .relaxed).newValue
        if n > limit {
            inFlightHandlers.wrappingSubtract(1, ordering: .relaxed)
            rejectedOverload.wrappingAdd(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func releaseHandler() { inFlightHandlers.wrappingSubtract(1, ordering: .relaxed) }
}
