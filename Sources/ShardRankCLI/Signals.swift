import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Waits for SIGTERM or SIGINT (the default actions are disabled while waiting).
/// - Returns: the signal's name.
func waitForTerminationSignal() async -> String {
    await withCheckedContinuation { (cont: CheckedContinuation<String, Never>) in
        let queue = DispatchQueue(label: "shardrank.signals")
        let box = SignalSources()
        for (sig, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            src.setEventHandler {
                if box.fire() { cont.resume(returning: name) }
            }
            src.resume()
            box.sources.append(src)
        }
    }
}

/// Keeps the signal sources alive and makes sure the continuation resumes once.
private final class SignalSources: @unchecked Sendable {
    var sources: [any DispatchSourceSignal] = []
    private var fired = false
    private let lock = NSLockish()
    func fire() -> Bool { lock.withLock { if fired { return false }; fired = true; return true } }
}

private final class NSLockish: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    func withLock<R>(_ body: () -> R) -> R { pthread_mutex_lock(&m); defer { pthread_mutex_unlock(&m) }; return body() }
}

/// Runs `body` on every SIGHUP while the returned source is alive (cancel it to stop).
func onSIGHUP(_ body: @escaping @Sendable () -> Void) -> any DispatchSourceSignal {
    signal(SIGHUP, SIG_IGN)
    let src = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "shardrank.sighup"))
    src.setEventHandler(handler: body)
    src.resume()
    return src
}
