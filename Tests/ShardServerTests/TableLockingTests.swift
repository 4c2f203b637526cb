import Foundation
import Testing
import ShardRankWire
@testable import ShardServer

/// `--lock-tables`: the served version's files are mlocked (VmLck grows by about their size)
/// and unlocked with the mapping.
@Suite(.serialized) struct TableLockingTests {
    /// This process's locked memory in KiB (VmLck in /proc/self/status).
    static func lockedKiB() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmLck:") }),
              let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else {
            throw CocoaError(.fileReadCorruptFile)
        }
        return kib
    }

    @Test func servedTablesAreLockedAndReleased() throws {
        // Without CAP_IPC_LOCK a 2 MB lock may exceed RLIMIT_MEMLOCK: the shard then serves
        // unlocked (with a warning), which is what the second half checks.
        let privileged = geteuid() == 0
        let before = try Self.lockedKiB()
        var (backend, root): (TableSetBackend?, String) = try SearchBatcherTests.backend(n: 100_000, lockTables: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let locked = try Self.lockedKiB()
        let mapped = backend!.info().mappedBytes
        #expect(mapped > 1_500_000)
        if privileged {
            #expect(locked - before >= Int(mapped) / 1024 - 8, "VmLck \(before) -> \(locked) KiB for \(mapped) mapped bytes")
        }
        // It serves either way.
        let r = try backend!.search(SearchRequest(table: "items", queries: SearchBatcherTests.query(1), dim: UInt32(SearchBatcherTests.dim), k: 3),
                                    context: SearchBatcherTests.context())
        #expect(r.results[0].ids.count == 3)
        backend = nil
        #expect(try Self.lockedKiB() <= before + 4, "unlocked with the mapping")
        // And without the flag nothing is locked.
        let (plain, root2) = try SearchBatcherTests.backend(n: 100_000, lockTables: false)
        defer { try? FileManager.default.removeItem(atPath: root2) }
        #expect(try Self.lockedKiB() <= before + 4)
        _ = plain
    }
}
