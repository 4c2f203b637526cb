import Foundation
import Testing
import ShardRankKernels
import ShardRankTables
@testable import ShardServer

/// What a hot reload accepts: a new version must keep the dim and the dtype of every embedding
/// table both versions have (issue 17, row 11: only the dim was checked).
@Suite struct ReloadCompatibilityTests {
    static func publish(_ root: String, dim: Int, dtype: TableDType) throws {
        let b = try TableSetBuilder(root: root, shardCount: 1)
        let n = 64
        let vectors = (0 ..< n * dim).map { Float(($0 * 7) % 13) / 13 - 0.5 }
        try vectors.withUnsafeBufferPointer {
            try b.addEmbedding(name: "items", ids: (0 ..< n).map { UInt64($0) }, vectors: $0, dim: dim, dtype: dtype)
        }
        try b.publish()
    }

    static func root() -> String { NSTemporaryDirectory() + "shardrank-reload-\(UInt64.random(in: 0 ... .max))" }

    @Test func aChangedDtypeIsRejectedAndTheOldVersionKeepsServing() throws {
        let root = Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.publish(root, dim: 8, dtype: .f32)
        let backend = try TableSetBackend(root: root, shard: 0, of: 1, pool: WorkerPool(threadCount: 1))
        try Self.publish(root, dim: 8, dtype: .int8)
        guard case .rejected(version: 2, let reason) = backend.reloadNow() else {
            Issue.record("a version changing the table's dtype must be rejected")
            return
        }
        #expect(reason.contains("dtype") && reason.contains("items"), "\(reason)")
        // The same dtype and dim is accepted.
        try Self.publish(root, dim: 8, dtype: .f32)
        #expect(backend.reloadNow() == .switched(from: 1, to: 3))
    }

    @Test func aChangedDimIsRejected() throws {
        let root = Self.root()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.publish(root, dim: 8, dtype: .f32)
        let backend = try TableSetBackend(root: root, shard: 0, of: 1, pool: WorkerPool(threadCount: 1))
        try Self.publish(root, dim: 4, dtype: .f32)
        guard case .rejected(version: 2, let reason) = backend.reloadNow() else {
            Issue.record("a version changing the table's dim must be rejected")
            return
        }
        #expect(reason.contains("dim"), "\(reason)")
    }
}
