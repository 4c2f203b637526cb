import Foundation
import Testing
@testable import LoadTest
import ShardRankWire

@Suite struct ZipfSamplerTests {
    /// Every rank's empirical frequency is within 5 standard errors of the exact probability.
    @Test(arguments: [(10, 1.2), (50, 0.99), (7, 0.5), (5, 2.5), (20, 0.0), (1, 1.0), (3, 1.0)])
    func frequenciesMatchTheExactDistribution(count: Int, exponent: Double) {
        let z = ZipfSampler(count: count, exponent: exponent)
        var rng = Xoshiro256(seed: 42)
        let n = 200_000
        var hist = [Int](repeating: 0, count: count + 1)
        for _ in 0 ..< n {
            let k = z.sample(using: &rng)
            #expect(k >= 1 && k <= count)
            if k >= 1 && k <= count { hist[k] += 1 }
        }
        let p = ZipfSampler.probabilities(count: count, exponent: exponent)
        for k in 1 ... count {
            let f = Double(hist[k]) / Double(n)
            let se = (p[k - 1] * (1 - p[k - 1]) / Double(n)).squareRoot()
            #expect(abs(f - p[k - 1]) <= 5 * se + 1e-9, "rank \(k): frequency \(f), expected \(p[k - 1])")
        }
    }

    /// Over a million ranks the head is as heavy as theory says (1/H(N, s) for rank 1) and the
    /// draws span the whole range.
    @Test func largeSpaceHeadAndTail() {
        let count = 1_000_000
        let s = 1.0
        let z = ZipfSampler(count: count, exponent: s)
        var rng = Xoshiro256(seed: 7)
        let n = 300_000
        var first = 0, top10 = 0, maxSeen = 0
        for _ in 0 ..< n {
            let k = z.sample(using: &rng)
            if k == 1 { first += 1 }
            if k <= 10 { top10 += 1 }
            maxSeen = max(maxSeen, k)
        }
        var h = 0.0
        for k in 1 ... count { h += 1 / pow(Double(k), s) }
        var h10 = 0.0
        for k in 1 ... 10 { h10 += 1 / pow(Double(k), s) }
        #expect(abs(Double(first) / Double(n) - 1 / h) < 0.005)
        #expect(abs(Double(top10) / Double(n) - h10 / h) < 0.01)
        #expect(maxSeen > count / 2)
    }

    @Test func sameSeedSameStream() {
        let z = ZipfSampler(count: 1000, exponent: 0.99)
        var a = Xoshiro256(seed: 3), b = Xoshiro256(seed: 3), c = Xoshiro256(seed: 4)
        let xa = (0 ..< 100).map { _ in z.sample(using: &a) }
        let xb = (0 ..< 100).map { _ in z.sample(using: &b) }
        let xc = (0 ..< 100).map { _ in z.sample(using: &c) }
        #expect(xa == xb)
        #expect(xa != xc)
    }
}

@Suite struct ArrivalScheduleTests {
    @Test(arguments: [1.0, 250.0, 10_000.0])
    func constantScheduleIsEvenlySpacedFromThePhase(rate: Double) {
        var s = ArrivalSchedule(rate: rate, arrivals: .constant, seed: 1, phase: 0.25)
        for i in 0 ..< 10_000 {
            let t = s.next()
            #expect(abs(t - (0.25 + Double(i) / rate)) < 1e-9)
        }
    }

    /// Poisson gaps: mean 1/rate, coefficient of variation 1 (a constant schedule has 0), and the
    /// number of arrivals in a window is rate × window.
    @Test(arguments: [100.0, 5_000.0])
    func poissonScheduleHasExponentialGaps(rate: Double) {
        var s = ArrivalSchedule(rate: rate, arrivals: .poisson, seed: 9)
        let n = 100_000
        var prev = 0.0
        var gaps: [Double] = []
        gaps.reserveCapacity(n)
        for _ in 0 ..< n {
            let t = s.next()
            #expect(t >= prev)
            gaps.append(t - prev)
            prev = t
        }
        let mean = gaps.reduce(0, +) / Double(n)
        let variance = gaps.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
        #expect(abs(mean * rate - 1) < 0.02, "mean gap \(mean)")
        #expect(abs(variance.squareRoot() / mean - 1) < 0.03, "cv \(variance.squareRoot() / mean)")
        // Arrivals within the first 10/rate·1000 s.
        var s2 = ArrivalSchedule(rate: rate, arrivals: .poisson, seed: 10)
        let window = 2000 / rate
        var count = 0
        while s2.next() < window { count += 1 }
        #expect(abs(count - 2000) < 5 * Int(2000.0.squareRoot()))
    }
}

@Suite struct HistogramAndMergeTests {
    @Test func percentilesOfAKnownSequence() {
        var h = LatencyHistogram()
        for v in 1 ... 10_000 { h.record(nanoseconds: UInt64(v) * 1000) }   // 1 µs … 10 ms
        let s = h.summary
        #expect(s.count == 10_000)
        func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= b * 0.001 + 1e-9 }
        #expect(close(s.p50Ms, 5.0), "p50 \(s.p50Ms)")
        #expect(close(s.p90Ms, 9.0), "p90 \(s.p90Ms)")
        #expect(close(s.p99Ms, 9.9), "p99 \(s.p99Ms)")
        #expect(close(s.p999Ms, 9.99), "p99.9 \(s.p999Ms)")
        #expect(close(s.maxMs, 10.0), "max \(s.maxMs)")
        #expect(close(s.meanMs, 5.0005))
    }

    @Test func emptyHistogramSummarisesToZero() {
        #expect(LatencyHistogram().summary == LatencySummary())
    }

    @Test func mergingWorkersEqualsRecordingEverythingInOne() {
        var all = LatencyHistogram(), a = LatencyHistogram(), b = LatencyHistogram()
        var rng = Xoshiro256(seed: 5)
        for i in 0 ..< 50_000 {
            // A long-tailed mix: mostly ~100 µs, 2 % ~50 ms.
            let v = i % 50 == 0 ? 50_000_000 + rng.next() % 10_000_000 : 100_000 + rng.next() % 50_000
            all.record(nanoseconds: v)
            if i % 3 == 0 { a.record(nanoseconds: v) } else { b.record(nanoseconds: v) }
        }
        var merged = a
        merged.merge(b)
        #expect(merged.summary == all.summary)
        #expect(merged.summary.p99Ms > 1 && merged.summary.p50Ms < 1)
        #expect(a.summary != all.summary)
    }

    @Test func phaseStatsMergeAddsCountsAndErrors() {
        var x = PhaseStats(), y = PhaseStats()
        x.noteSent(.lookup, lagNanos: 5)
        x.record(.lookup, latencyNanos: 1000, outcome: .ok(vectors: 8, degraded: false, timings: nil))
        x.noteSent(.lookup, lagNanos: 0)
        x.record(.lookup, latencyNanos: 2000, outcome: .failed(.unavailable))
        y.noteSent(.recommend, lagNanos: 70)
        y.record(.recommend, latencyNanos: 3000, outcome: .ok(vectors: 0, degraded: true, timings: [1, 2, 3, 4, 5, 15]))
        y.noteSent(.lookup, lagNanos: 0)
        y.record(.lookup, latencyNanos: 4000, outcome: .failed(.unavailable))
        var m = x
        m.merge(y)
        #expect(m.sent == 4 && m.ok == 2 && m.completed == 4 && m.errorCount == 2)
        #expect(m.errors == [.unavailable: 2])
        #expect(m.degraded == 1 && m.vectors == 8)
        #expect(m.maxSendLagNanos == 70)
        #expect(m.latency.count == 4)
        #expect(m.byOperation[.lookup]?.count == 3 && m.byOperation[.recommend]?.count == 1)
        #expect(m.sentByOperation == [.lookup: 3, .recommend: 1])
        #expect(abs((m.stages["total"]?.summary.maxMs ?? 0) - 0.015) <= 0.015 * 0.001)   // 15 µs, HDR precision
        #expect(m.stages["retrieve"]?.count == 1)
    }
}

@Suite struct RequestMixTests {
    @Test func parsesAndNormalises() throws {
        let m = try RequestMix.parse("lookup:0.9,search:0.1")
        #expect(m.entries.map(\.operation) == [.lookup, .search])
        #expect(abs(m.entries[0].weight - 0.9) < 1e-12)
        #expect(m.targetsShard)
        let r = try RequestMix.parse(" recommend:8 , rank:1,similar:1")
        #expect(r.entries.map(\.operation) == [.recommend, .rank, .similar])
        #expect(abs(r.entries[0].weight - 0.8) < 1e-12)
        #expect(!r.targetsShard)
        let single = try RequestMix.parse("search")
        #expect(single.entries.count == 1 && single.entries[0].weight == 1)
        #expect(try RequestMix.parse("LOOKUP").entries[0].operation == .lookup)
    }

    @Test func pickFollowsTheWeights() throws {
        let m = try RequestMix.parse("recommend:0.8,rank:0.1,similar:0.1")
        var rng = Xoshiro256(seed: 11)
        var counts: [LoadOperation: Int] = [:]
        let n = 100_000
        for _ in 0 ..< n { counts[m.pick(rng.nextUnit()), default: 0] += 1 }
        let share: (LoadOperation) -> Double = { Double(counts[$0] ?? 0) / Double(n) }
        #expect(abs(share(.recommend) - 0.8) < 0.01)
        #expect(abs(share(.rank) - 0.1) < 0.01)
        #expect(abs(share(.similar) - 0.1) < 0.01)
        #expect(m.pick(0) == .recommend && m.pick(0.9999999) == .similar)
    }

    @Test(arguments: [
        ("", "empty"),
        ("lookup,", "empty entry"),
        ("lookups", "unknown operation 'lookups'"),
        ("lookup:0", "must be a positive number"),
        ("lookup:-1", "must be a positive number"),
        ("lookup:abc", "weight 'abc'"),
        ("lookup:inf", "must be a positive number"),
        ("lookup:1:2", "is not op or op:weight"),
        ("lookup,lookup:2", "listed twice"),
        ("lookup:0.5,recommend:0.5", "cannot be mixed"),
    ])
    func rejectsBadMixes(text: String, message: String) {
        do {
            _ = try RequestMix.parse(text)
            Issue.record("'\(text)' parsed")
        } catch {
            #expect(error.message.contains(message), "'\(text)': \(error.message)")
        }
    }
}

@Suite struct ConfigurationTests {
    func errorOf(_ edit: (inout LoadTestConfiguration) -> Void) -> String? {
        var c = LoadTestConfiguration(target: "127.0.0.1:1")
        edit(&c)
        do { try c.validate(); return nil } catch { return error.message }
    }

    @Test func defaultsAreValid() { #expect(errorOf { _ in } == nil) }

    @Test func flagsAreChecked() {
        #expect(errorOf { $0.mode = .open(rate: 0, arrivals: .constant) }?.contains("--rate") == true)
        #expect(errorOf { $0.mode = .open(rate: .nan, arrivals: .poisson) }?.contains("--rate") == true)
        #expect(errorOf { $0.mode = .closed(concurrency: 0) }?.contains("--concurrency") == true)
        #expect(errorOf { $0.threads = 4; $0.connections = 4; $0.mode = .closed(concurrency: 2) }?.contains("--threads") == true)
        #expect(errorOf { $0.threads = 3; $0.connections = 2 }?.contains("--connections") == true)
        #expect(errorOf { $0.zipf = -0.5 }?.contains("--zipf") == true)
        #expect(errorOf { $0.batch = 0 }?.contains("--batch") == true)
        #expect(errorOf { $0.k = 0 }?.contains("--k") == true)
        #expect(errorOf { $0.duration = .zero }?.contains("--duration") == true)
        #expect(errorOf { $0.target = "localhost" }?.contains("--target") == true)
        #expect(errorOf { $0.idSpace = 10; $0.ids = [1] }?.contains("exclusive") == true)
        #expect(errorOf { $0.mix = try! RequestMix.parse("rank"); $0.candidates = 0 }?.contains("--candidates") == true)
        #expect(errorOf { $0.mix = try! RequestMix.parse("search"); $0.queries = 0 }?.contains("--queries") == true)
    }

    @Test func idsFileParsing() throws {
        #expect(try LoadTestConfiguration.parseIDs("# hot first\n5\n7, 9\n\n11 # tail\n", file: "f") == [5, 7, 9, 11])
        do {
            _ = try LoadTestConfiguration.parseIDs("1\n2\nx3\n", file: "ids.txt")
            Issue.record("parsed")
        } catch {
            #expect(error.message == "ids.txt:3: 'x3' is not an unsigned integer id")
        }
        #expect(throws: LoadTestError.self) { try LoadTestConfiguration.parseIDs("# nothing\n", file: "e") }
    }

    @Test func generatorDrawsFromTheIDsList() throws {
        var c = LoadTestConfiguration(target: "h:1")
        c.ids = [100, 200, 300]
        c.batch = 1000
        c.zipf = 1.0
        var g = RequestGenerator(shape: RequestShape(configuration: c, dim: 4, idSpace: 999), seed: 1)
        guard case .lookup(let r) = g.next() else { Issue.record("not a lookup"); return }
        #expect(r.ids.count == 1000)
        #expect(Set(r.ids).isSubset(of: [100, 200, 300]))
        let first = r.ids.filter { $0 == 100 }.count, last = r.ids.filter { $0 == 300 }.count
        #expect(first > last)   // the first id is the hottest
    }

    /// `record`: one view per RecordEvents call, never user 0 or item 0 (both refused by the
    /// coordinator), over the configured user and item spaces.
    @Test func recordEventsCallsAreValid() throws {
        var c = LoadTestConfiguration(target: "h:1")
        c.mix = try RequestMix.parse("record")
        c.users = 5
        var g = RequestGenerator(shape: RequestShape(configuration: c, dim: 0, idSpace: 3), seed: 2)
        var users = Set<UInt64>(), items = Set<UInt64>()
        for _ in 0 ..< 500 {
            guard case .record(let r) = g.next() else { Issue.record("not a record"); return }
            #expect(r.events.count == 1 && r.events[0].kind == .view && r.events[0].timestampUnixSeconds == 0)
            users.insert(r.userID)
            items.insert(r.events[0].itemID)
        }
        #expect(users == [1, 2, 3, 4, 5] && items == [1, 2, 3])
        #expect(throws: LoadTestError.self) { try RequestMix.parse("record,lookup") }
        // --record-batch N: one RecordEventsBatch of N such users per call, to one target.
        c.recordBatch = 40
        var b = RequestGenerator(shape: RequestShape(configuration: c, dim: 0, idSpace: 3), seed: 2)
        guard case .recordBatch(let batch) = b.next() else { Issue.record("not a batch"); return }
        #expect(batch.users.count == 40 && batch.users.allSatisfy { (1 ... 5).contains($0.userID) && $0.events.count == 1 && (1 ... 3).contains($0.events[0].itemID) })
        #expect(b.next().operation == .record)
        #expect(errorOf { $0.mix = try! RequestMix.parse("record"); $0.recordBatch = 0 }?.contains("--record-batch") == true)
        #expect(errorOf { $0.mix = try! RequestMix.parse("record"); $0.recordBatch = 1001 }?.contains("--record-batch") == true)
        #expect(errorOf { $0.mix = try! RequestMix.parse("record"); $0.recordBatch = 2; $0.target = "h:1,h:2" }?.contains("one --target") == true)
        #expect(errorOf { $0.mix = try! RequestMix.parse("record"); $0.recordBatch = 1; $0.target = "h:1,h:2" } == nil)
    }

    /// `--user-vector`: every Recommend asks for the configured vector.
    @Test func recommendAsksForTheUserVector() {
        for mode in UserVectorMode.allCases {
            var c = LoadTestConfiguration(target: "h:1")
            c.mix = try! RequestMix.parse("recommend")
            c.userVector = mode
            var g = RequestGenerator(shape: RequestShape(configuration: c, dim: 0, idSpace: 3), seed: 2)
            guard case .recommend(let r) = g.next() else { Issue.record("not a recommend"); return }
            #expect(r.userVector == mode)
        }
    }
}
