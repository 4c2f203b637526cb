internal import Dispatch

/// A value the caller promises is safe to share across the threads of one `Parallel.forEach`.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
}

/// Data parallelism for the builder and the loader's verification: `body(i)` for `i` in `0..<n`
/// on Dispatch's per-core pool, returning when all are done. `body` must only write disjoint
/// memory per `i`.
enum Parallel {
    static func forEach(_ n: Int, _ body: (Int) -> Void) {
        guard n > 1 else {
            if n == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { b in
            let box = UnsafeSendable(value: b)
            DispatchQueue.concurrentPerform(iterations: n) { box.value($0) }
        }
    }
}
