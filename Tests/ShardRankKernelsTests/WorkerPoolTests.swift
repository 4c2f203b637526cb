import Testing
import Synchronization
import Dispatch
import Foundation
import ShardRankKernels

@Suite struct WorkerPoolTests {
    @Test(arguments: [1, 2, 3, 8], [0, WorkerPool.defaultSpinMicroseconds])
    func everyIndexExactlyOnce(threads: Int, spin: Int) {
        let pool = WorkerPool(threadCount: threads, spinMicroseconds: spin)
        for (count, minChunk) in [(1, 1), (10, 1), (10_000, 7), (100_000, 1000), (5, 100)] {
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: count)
            hits.initialize(repeating: 0, count: count)
            defer { hits.deallocate() }
            let busy = Mutex<[Bool]>(Array(repeating: false, count: threads))
            let overlap = Atomic<Int>(0)
            let badParticipant = Atomic<Int>(0)
            pool.parallelFor(count: count, minChunk: minChunk) { range, p in
                if p < 0 || p >= threads { badParticipant.add(1, ordering: .relaxed); return }
                busy.withLock { if $0[p] { overlap.add(1, ordering: .relaxed) }; $0[p] = true }
                if range.count < minChunk && range.count != count { overlap.add(1000, ordering: .relaxed) }
                for i in range { hits[i] += 1 }
                busy.withLock { $0[p] = false }
            }
            #expect((0..<count).allSatisfy { hits[$0] == 1 }, "count=\(count)")
            #expect(overlap.load(ordering: .relaxed) == 0)
            #expect(badParticipant.load(ordering: .relaxed) == 0)
        }
    }

    @Test func smallWorkRunsInlineOnTheCaller() {
        let pool = WorkerPool(threadCount: 4)
        var calls: [Range<Int>] = []
        pool.parallelFor(count: 99, minChunk: 50) { r, p in calls.append(r); #expect(p == 0) }
        #expect(calls == [0..<99])
        #expect(pool.participants(count: 99, minChunk: 50) == 1)
        #expect(pool.participants(count: 100, minChunk: 50) == 4)
    }

    /// Several threads (like event loops) calling at once, including nested calls.
    @Test func concurrentCallersAndNesting() {
        let pool = WorkerPool(threadCount: 2)
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 6) { caller in
            for round in 0..<50 {
                let n = 1000 + caller * 37 + round
                let sum = Atomic<Int>(0)
                let nested = Atomic<Int>(0)
                var chunks = 0
                pool.parallelFor(count: n, minChunk: 16) { range, _ in
                    var local = 0
                    for i in range { local += i }
                    if round % 10 == 0 {
                        pool.parallelFor(count: 64, minChunk: 8) { r2, _ in nested.add(r2.count, ordering: .relaxed) }
                    }
                    sum.add(local, ordering: .relaxed)
                }
                chunks = nested.load(ordering: .relaxed)
                if sum.load(ordering: .relaxed) != n * (n - 1) / 2 { failures.add(1, ordering: .relaxed) }
                if round % 10 == 0 && (chunks == 0 || chunks % 64 != 0) { failures.add(1, ordering: .relaxed) }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
    }

    /// Guided split: contiguous chunks in order, the first `count / (2 · threads)`, sizes
    /// non-increasing down to `minChunk` (the last one takes a remainder below `minChunk`).
    @Test(arguments: [2, 3])
    func guidedChunkSizes(threads: Int) {
        let pool = WorkerPool(threadCount: threads)
        for (count, minChunk) in [(84, 2), (10_000, 512), (1_000_000, 32_768), (7, 3), (100, 1)] {
            let chunks = Mutex<[Range<Int>]>([])
            pool.parallelFor(count: count, minChunk: minChunk) { r, _ in chunks.withLock { $0.append(r) } }
            let sorted = chunks.withLock { $0 }.sorted { $0.lowerBound < $1.lowerBound }
            #expect(sorted.first?.lowerBound == 0 && sorted.last?.upperBound == count)
            #expect(zip(sorted, sorted.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }, "\(count)")
            #expect(sorted.allSatisfy { $0.count >= minChunk }, "\(count)/\(minChunk): \(sorted.map(\.count))")
            #expect(sorted.first?.count == max(minChunk, count / (2 * threads)), "\(sorted.map(\.count))")
            let sizes = sorted.dropLast().map(\.count)
            #expect(zip(sizes, sizes.dropFirst()).allSatisfy { $0 >= $1 }, "\(count): \(sorted.map(\.count))")
            #expect((sorted.last?.count ?? 0) < 2 * max(minChunk, count / (2 * threads)) || sorted.count == 1)
        }
    }

    /// Many back-to-back calls (the pool threads catch them while spinning) and calls spaced
    /// further apart than the spin bound (they block and are woken): every chunk runs once.
    @Test(arguments: [0, 50, WorkerPool.defaultSpinMicroseconds])
    func backToBackAndSpacedCalls(spin: Int) {
        let pool = WorkerPool(threadCount: 3, spinMicroseconds: spin)
        #expect(pool.spinMicroseconds == spin)
        var failures = 0
        for round in 0..<3000 {
            let n = 64 + round % 97
            let sum = Atomic<Int>(0)
            pool.parallelFor(count: n, minChunk: 4) { range, _ in
                var local = 0
                for i in range { local += i }
                sum.add(local, ordering: .relaxed)
            }
            if sum.load(ordering: .relaxed) != n * (n - 1) / 2 { failures += 1 }
            if round % 500 == 499 { usleep(UInt32(2 * spin + 500)) } // let the threads block
        }
        #expect(failures == 0)
    }

    @Test(arguments: [0, WorkerPool.defaultSpinMicroseconds])
    func poolsAreReleased(spin: Int) {
        for _ in 0..<20 {
            let pool = WorkerPool(threadCount: 3, spinMicroseconds: spin)
            let total = Atomic<Int>(0)
            pool.parallelFor(count: 100, minChunk: 1) { r, _ in total.add(r.count, ordering: .relaxed) }
            #expect(total.load(ordering: .relaxed) == 100)
        }
    }
}
