#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif
internal import Synchronization
internal import CShardRankKernels

/// A fixed set of per-core threads, created once, that run the chunks of `parallelFor`.
///
/// - `threadCount` participants run each call: the calling thread plus `threadCount - 1`
///   pool threads, created in `init` and joined in `deinit`.
/// - Several threads may call `parallelFor` at the same time (for example several event
///   loops); calls share the pool threads and each caller always works on its own call, so
///   a call never waits for a busy pool and nested calls cannot deadlock.
/// - Per call: one small job object is allocated and the pool lock is taken a few times;
///   chunks are handed out with one compare-and-swap each (guided: large chunks first,
///   `minChunk` at the end). Nothing is allocated or locked inside a chunk.
/// - Hand-off latency: waking a thread blocked on a condition variable costs tens of
///   microseconds on a VM (measured ≈ 40 µs each way here, docs/kernels.md), so both waits
///   spin first, for at most `spinMicroseconds`: a pool thread that finishes its chunks polls
///   for the next call before it blocks, and a caller that finishes its chunks polls for the
///   other participants' last chunks before it blocks. The spins use the CPU `pause` hint and
///   are bounded, so an idle pool costs nothing once that time has passed.
public final class WorkerPool: Sendable {
    /// Number of participants of a call: the caller plus the pool threads.
    public let threadCount: Int
    /// The bound of each spin-wait (see the type's documentation); 0 blocks at once.
    public let spinMicroseconds: Int
    private let state: PoolState
    private let threads: [PThreadHandle]

    /// The number of online processors (at least 1).
    public static var defaultThreadCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// The default spin bound: about one MLP chunk of 100 candidates, several times the
    /// measured wake-up latency of a blocked thread on this VM.
    public static let defaultSpinMicroseconds = 200

    /// Creates `threadCount - 1` threads (`threadCount` is clamped to 1...256).
    /// `spinMicroseconds` (clamped to 0...100_000) bounds each spin-wait before blocking.
    public init(threadCount: Int = WorkerPool.defaultThreadCount,
                spinMicroseconds: Int = WorkerPool.defaultSpinMicroseconds) {
        let n = min(max(threadCount, 1), 256)
        self.threadCount = n
        let spin = min(max(spinMicroseconds, 0), 100_000)
        self.spinMicroseconds = spin
        let state = PoolState(spinNanoseconds: spin * 1000)
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
    /// Chunks are handed out in order, each `remaining / (2 · threadCount)` elements but at
    /// least `minChunk` (guided self-scheduling): a quarter of the work first with 2 threads,
    /// then smaller and smaller chunks, so that a participant that started late or runs on a
    /// busy core is balanced out by the small last chunks. Pass the smallest chunk that is
    /// still efficient as `minChunk`.
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
        withoutActuallyEscaping(body) { escapable in
            let job = PoolJob(count: count, minChunk: minChunk, divisor: 2 * threadCount, body: escapable)
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
    let minChunk: Int
    /// A chunk is `remaining / divisor` elements (at least `minChunk`).
    let divisor: Int
    /// Set at creation, read by participants, cleared by the caller once `attached == 0`.
    var body: ((Range<Int>, Int) -> Void)?
    /// Pool threads currently working on this job: changed only under the pool mutex, read
    /// without it by the caller's spin.
    let attached = Atomic<Int>(0)
    /// Elements handed out / finished so far.
    let next = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
    let nextParticipant = Atomic<Int>(1)

    init(count: Int, minChunk: Int, divisor: Int, body: @escaping (Range<Int>, Int) -> Void) {
        self.count = count
        self.minChunk = minChunk
        self.divisor = divisor
        self.body = body
    }

    var exhausted: Bool { next.load(ordering: .relaxed) >= count }

    /// Every chunk has run and no pool thread is still inside `runChunks`.
    var done: Bool {
        finished.load(ordering: .acquiring) >= count && attached.load(ordering: .acquiring) == 0
    }

    /// Guided self-scheduling: each grab takes `remaining / divisor` elements (at least
    /// `minChunk`; the rest whole when less than `minChunk` would be left). Early chunks are
    /// big, the last ones small, so participants finish close together even when one of them
    /// started late or runs on a busier core, with few chunks per call.
    @inline(__always)
    func grab() -> Range<Int>? {
        var cur = next.load(ordering: .relaxed)
        while cur < count {
            let remaining = count - cur
            var size = max(minChunk, remaining / divisor)
            if remaining - size < minChunk { size = remaining }
            let (exchanged, original) = next.compareExchange(expected: cur, desired: cur + size, ordering: .relaxed)
            if exchanged { return cur..<(cur + size) }
            cur = original
        }
        return nil
    }

    /// Runs chunks until none is left.
    @inline(never)
    func runChunks(participant: Int) {
        guard let body else { return }
        while let chunk = grab() {
            body(chunk, participant)
            finished.wrappingAdd(chunk.count, ordering: .acquiringAndReleasing)
        }
    }
}

/// Monotonic clock in nanoseconds (vDSO, no system call).
@inline(__always) private func monotonicNanoseconds() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int(ts.tv_sec) &* 1_000_000_000 &+ Int(ts.tv_nsec)
}

/// Polls `condition` with the CPU's spin-wait hint for at most `nanoseconds`; true once it
/// holds, false on timeout.
@inline(__always) private func spin(nanoseconds: Int, until condition: () -> Bool) -> Bool {
    if condition() { return true }
    if nanoseconds <= 0 { return false }
    let deadline = monotonicNanoseconds() &+ nanoseconds
    while true {
        for _ in 0..<16 {
            srk_cpu_relax()
            if condition() { return true }
        }
        if monotonicNanoseconds() >= deadline { return condition() }
    }
}

/// Shared by the pool threads: a job queue under one pthread mutex with two conditions,
/// plus a submission counter that idle threads poll before they block.
final class PoolState: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let workCond: UnsafeMutablePointer<pthread_cond_t>
    private let doneCond: UnsafeMutablePointer<pthread_cond_t>
    private var queue: [PoolJob] = []   // guarded by mutex
    private var stopping = false        // guarded by mutex
    /// Incremented (under the mutex) by every submit and by stop.
    private let submissions = Atomic<Int>(0)
    private let spinNanoseconds: Int

    init(spinNanoseconds: Int) {
        self.spinNanoseconds = spinNanoseconds
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
        submissions.wrappingAdd(1, ordering: .releasing)
        pthread_cond_broadcast(workCond)
        pthread_mutex_unlock(mutex)
    }

    /// Called by the submitter after running its own chunks: unlists the job, waits until
    /// all chunks are done and no pool thread is attached, then drops the body.
    func finish(_ job: PoolJob) {
        // The other participants are usually finishing their last chunk: poll before blocking
        // (a blocked caller takes a wake-up, tens of µs on a VM, to notice they are done).
        _ = spin(nanoseconds: spinNanoseconds) { job.done }
        pthread_mutex_lock(mutex)
        if let i = queue.firstIndex(where: { $0 === job }) { queue.remove(at: i) }
        while !job.done {
            pthread_cond_wait(doneCond, mutex)
        }
        pthread_mutex_unlock(mutex)
        job.body = nil
    }

    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        submissions.wrappingAdd(1, ordering: .releasing)
        pthread_cond_broadcast(workCond)
        pthread_mutex_unlock(mutex)
    }

    func workerLoop() {
        pthread_mutex_lock(mutex)
        while true {
            if stopping { break }
            if queue.isEmpty {
                // Poll for the next call before blocking (calls often come back to back).
                let seen = submissions.load(ordering: .relaxed)
                pthread_mutex_unlock(mutex)
                let submitted = spin(nanoseconds: spinNanoseconds) {
                    submissions.load(ordering: .acquiring) != seen
                }
                pthread_mutex_lock(mutex)
                if !submitted {
                    while !stopping && queue.isEmpty { pthread_cond_wait(workCond, mutex) }
                }
                continue
            }
            let job = queue[0]
            if job.exhausted {
                queue.removeFirst()
                continue
            }
            job.attached.wrappingAdd(1, ordering: .relaxed)
            pthread_mutex_unlock(mutex)
            job.runChunks(participant: job.nextParticipant.wrappingAdd(1, ordering: .relaxed).oldValue)
            pthread_mutex_lock(mutex)
            job.attached.wrappingAdd(-1, ordering: .releasing)
            if let i = queue.firstIndex(where: { $0 === job }) { queue.remove(at: i) }
            pthread_cond_broadcast(doneCond)
        }
        pthread_mutex_unlock(mutex)
    }
}
