#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif
internal import Synchronization

/// A fixed set of per-core threads, created once, that run the chunks of `parallelFor`.
///
/// - `threadCount` participants run each call: the calling thread plus `threadCount - 1`
///   pool threads, created in `init` and joined in `deinit`.
/// - Several threads may call `parallelFor` at the same time (for example several event
///   loops); calls share the pool threads and each caller always works on its own call, so
///   a call never waits for a busy pool and nested calls cannot deadlock.
/// - Per call: one small job object is allocated and the pool lock is taken a few times;
///   chunks are handed out with one atomic increment each. Nothing is allocated or locked
///   inside a chunk.
public final class WorkerPool: Sendable {
    /// Number of participants of a call: the caller plus the pool threads.
    public let threadCount: Int
    private let state: PoolState
    private let threads: [PThreadHandle]

    /// The number of online processors (at least 1).
    public static var defaultThreadCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Creates `threadCount - 1` threads (`threadCount` is clamped to 1...256).
    public init(threadCount: Int = WorkerPool.defaultThreadCount) {
        let n = min(max(threadCount, 1), 256)
        self.threadCount = n
        let state = PoolState()
        self.state = state
        var handles: [PThreadHandle] = []
        for _ in 1..<n {
            let context = Unmanaged.passRetained(state).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { raw in
                let state = Unmanaged<PoolState>.fromOpaque(raw!).takeRetainedValue()
                state.workerLoop()
                return nil
            }, context)
            precondition(rc == 0, "WorkerPool: pthread_create failed (\(rc))")
            handles.append(PThreadHandle(tid))
        }
        self.threads = handles
    }

    deinit {
        state.stop()
        for t in threads { pthread_join(t.id, nil) }
    }

    /// Splits `0..<count` into contiguous chunks of at least `minChunk` elements and runs
    /// `body(chunk, participant)` for each, on the caller and the pool threads; returns when
    /// every chunk has finished.
    ///
    /// Runs `body(0..<count, 0)` inline, without touching the pool, when `count < 2 * minChunk`
    /// or `threadCount == 1`. `participant` is in `0..<threadCount` and distinct among the
    /// participants of this call, so it can index per-participant scratch (one participant
    /// runs its chunks one after another). `body` runs concurrently on several threads: it
    /// must only write memory no other chunk writes.
    public func parallelFor(count: Int, minChunk: Int = 1, _ body: (Range<Int>, Int) -> Void) {
        guard count > 0 else { return }
        let minChunk = max(minChunk, 1)
        if threadCount == 1 || count < 2 * minChunk {
            body(0..<count, 0)
            return
        }
        // Up to 4 chunks per participant so that a busy core does not hold up the call.
        let chunks = min(count / minChunk, threadCount * 4)
        withoutActuallyEscaping(body) { escapable in
            let job = PoolJob(count: count, chunks: chunks, body: escapable)
            state.submit(job)
            job.runChunks(participant: 0)
            state.finish(job)
        }
    }

    /// Number of participants `parallelFor(count:minChunk:)` may use for these arguments.
    public func participants(count: Int, minChunk: Int = 1) -> Int {
        (threadCount == 1 || count < 2 * max(minChunk, 1)) ? 1 : threadCount
    }
}

struct PThreadHandle: @unchecked Sendable {
    let id: pthread_t
    init(_ id: pthread_t) { self.id = id }
}

/// One `parallelFor` call. Its body is only invoked while the caller is inside
/// `parallelFor`: the caller waits until every chunk has finished and every pool thread
/// has detached from the job, then drops the body (so the non-escaping closure really
/// does not escape).
final class PoolJob: @unchecked Sendable {
    let count: Int
    let chunks: Int
    /// Set at creation, read by participants, cleared by the caller once `attached == 0`.
    var body: ((Range<Int>, Int) -> Void)?
    /// Pool threads currently working on this job (guarded by the pool mutex).
    var attached = 0
    let nextChunk = Atomic<Int>(0)
    let nextParticipant = Atomic<Int>(1)
    let finished = Atomic<Int>(0)

    init(count: Int, chunks: Int, body: @escaping (Range<Int>, Int) -> Void) {
        self.count = count
        self.chunks = chunks
        self.body = body
    }

    var exhausted: Bool { nextChunk.load(ordering: .relaxed) >= chunks }

    /// Runs chunks until none is left.
    @inline(never)
    func runChunks(participant: Int) {
        guard let body else { return }
        while true {
            let c = nextChunk.wrappingAdd(1, ordering: .relaxed).oldValue
            if c >= chunks { break }
            let lo = c * count / chunks, hi = (c + 1) * count / chunks
            body(lo..<hi, participant)
            finished.wrappingAdd(1, ordering: .acquiringAndReleasing)
        }
    }
}

/// Shared by the pool threads: a job queue under one pthread mutex with two conditions.
final class PoolState: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let workCond: UnsafeMutablePointer<pthread_cond_t>
    private let doneCond: UnsafeMutablePointer<pthread_cond_t>
    private var queue: [PoolJob] = []   // guarded by mutex
    private var stopping = false        // guarded by mutex

    init() {
        mutex = .allocate(capacity: 1); pthread_mutex_init(mutex, nil)
        workCond = .allocate(capacity: 1); pthread_cond_init(workCond, nil)
        doneCond = .allocate(capacity: 1); pthread_cond_init(doneCond, nil)
        queue.reserveCapacity(64)
    }

    deinit {
        pthread_mutex_destroy(mutex); mutex.deallocate()
        pthread_cond_destroy(workCond); workCond.deallocate()
        pthread_cond_destroy(doneCond); doneCond.deallocate()
    }

    func submit(_ job: PoolJob) {
        pthread_mutex_lock(mutex)
        queue.append(job)
        pthread_cond_broadcast(workCond)
        pthread_mutex_unlock(mutex)
    }

    /// Called by the submitter after running its own chunks: unlists the job, waits until
    /// all chunks are done and no pool thread is attached, then drops the body.
    func finish(_ job: PoolJob) {
        // Short spin: the other participants are usually finishing their last chunk.
        var spins = 0
        while job.finished.load(ordering: .acquiring) < job.chunks && spins < 2000 { spins += 1 }
        pthread_mutex_lock(mutex)
        if let i = queue.firstIndex(where: { $0 === job }) { queue.remove(at: i) }
        while job.finished.load(ordering: .acquiring) < job.chunks || job.attached > 0 {
            pthread_cond_wait(doneCond, mutex)
        }
        pthread_mutex_unlock(mutex)
        job.body = nil
    }

    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(workCond)
        pthread_mutex_unlock(mutex)
    }

    func workerLoop() {
        pthread_mutex_lock(mutex)
        while true {
            while !stopping && queue.isEmpty { pthread_cond_wait(workCond, mutex) }
            if stopping { break }
            let job = queue[0]
            if job.exhausted {
                queue.removeFirst()
                continue
            }
            job.attached += 1
            pthread_mutex_unlock(mutex)
            job.runChunks(participant: job.nextParticipant.wrappingAdd(1, ordering: .relaxed).oldValue)
            pthread_mutex_lock(mutex)
            job.attached -= 1
            if let i = queue.firstIndex(where: { $0 === job }) { queue.remove(at: i) }
            pthread_cond_broadcast(doneCond)
        }
        pthread_mutex_unlock(mutex)
    }
}
