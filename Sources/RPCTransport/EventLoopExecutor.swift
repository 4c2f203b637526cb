public import NIOCore
import NIOPosix

/// A Swift concurrency task executor that runs jobs on one NIO event loop.
///
/// ShardRank's servers run thread-per-core: a request that arrives on event loop L runs its
/// async handler on L (`Task(executorPreference: L.taskExecutor)`), its child tasks inherit L,
/// and the client connections it calls other servers through are L's own (see
/// `ClientConfiguration.loopAffinity`), so their answers resume the handler on L as well. No
/// request changes threads; CPU-heavy steps go to the kernels' `WorkerPool` explicitly.
public final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// One task executor per event loop of a group, made once (a handler's per-request `Task` and a
/// channel's per-call lookup must not allocate one each time).
public final class EventLoopExecutors: Sendable {
    private let executors: [EventLoopTaskExecutor]

    public init(group: any EventLoopGroup) {
        executors = group.makeIterator().map { EventLoopTaskExecutor($0) }
    }

    /// The executor of `loop`, or nil when `loop` is not in this group.
    public func executor(for loop: any EventLoop) -> EventLoopTaskExecutor? {
        executors.first { $0.eventLoop === loop }
    }

}

/// A task executor over a server's `NIOThreadPool`: where async handlers placed `.workerPool` run.
public final class ThreadPoolTaskExecutor: TaskExecutor, @unchecked Sendable {
    let pool: NIOThreadPool

    init(_ pool: NIOThreadPool) { self.pool = pool }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        pool.submit { _ in job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
