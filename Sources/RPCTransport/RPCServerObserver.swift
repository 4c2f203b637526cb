public import RPCCore

/// Sees every call: for metrics. Asked once per method, when the server is made, for the object
/// that observes that method's calls, so that nothing is looked up by path on a call.
public protocol RPCServerObserver: Sendable {
    /// The observer of the calls of `path` (a registered method), or of the calls rejected before
    /// they resolved to a method (`path` "unknown").
    func methodObserver(path: String) -> any RPCMethodObserver
}

/// Sees the calls of one method. Called on event loops: must be cheap and thread-safe.
public protocol RPCMethodObserver: Sendable {
    /// A call's headers were accepted (never called for "unknown").
    func callStarted()
    /// A call ended with `status` after `duration` since its headers arrived; also for calls
    /// rejected before a handler ran.
    func callFinished(status: RPCStatusCode, duration: Duration)
}

/// The observers of a router's methods, made once per server (immutable, shared by its
/// connections): `byIndex[m.index]` for method `m`, `unknown` for calls that resolved to none.
struct MethodObservers: Sendable {
    let byIndex: [any RPCMethodObserver]
    let unknown: any RPCMethodObserver

    init(_ observer: any RPCServerObserver, router: Router) {
        byIndex = router.paths.map { observer.methodObserver(path: $0) }
        unknown = observer.methodObserver(path: "unknown")
    }
}
