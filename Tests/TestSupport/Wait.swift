/// Shared by the test targets: waiting on a condition instead of sleeping for a guessed time.

/// Thrown by `waitUntil` when the condition did not hold in time (the test fails with it).
public struct WaitTimedOut: Error, CustomStringConvertible {
    public let description: String
}

/// Polls `cond` every 5 ms until it holds; throws `WaitTimedOut` naming `what` when `timeout`
/// passes first.
public func waitUntil(_ what: String = "condition", timeout: Duration = .seconds(5),
                      _ cond: () async throws -> Bool) async throws {
    let end = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < end {
        if try await cond() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    if try await cond() { return }
    throw WaitTimedOut(description: "\(what) not met within \(timeout)")
}
