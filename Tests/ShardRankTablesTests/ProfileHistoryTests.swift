import ShardRankRouting
import Foundation
import Testing
import ShardRankIDs
@testable import ShardRankTables

/// The profile table's history sections (34 historyOffsets, 35 historyBytes): every user's
/// whole history round-trips, a table without them still loads (its history is then the recent
/// items), and damaged history sections are refused naming the file — never a crash.
@Suite struct ProfileHistoryTests {
    static let file = "profiles.0-of-1.srt"

    /// User u's history: ids 1, 3, 5, … (u·7 % 50 + 3 of them), and user 7 has 3000.
    static func profiles() -> [UserProfileRecord] {
        (0..<30).map { u in
            let n = u == 7 ? 3000 : u * 7 % 50 + 3
            let history = (0..<n).map { UInt64($0 * 2 + 1) }
            return UserProfileRecord(userID: UInt64(u) * 11, recentItems: Array(history.suffix(4).reversed()), history: history.shuffled(),
                                     topGenres: [0], country: 0)
        }
    }

    func publish(_ dir: TempDir, withHistory: Bool = true, shards: Int = 1) throws -> [UserProfileRecord] {
        let profiles = Self.profiles()
        let b = try TableSetBuilder(root: dir.path, shardCount: shards, genres: ["Drama"], countries: ["DE"])
        b.writesProfileHistory = withHistory
        try b.addProfiles(profiles)
        try b.publish()
        return profiles
    }

    func table(_ dir: TempDir, shard: Int = 0, of shards: Int = 1) throws -> ProfileTable {
        try #require(try TableSetLoader.load(root: dir.path, shard: shard, of: shards).profile("profiles"))
    }

    @Test(arguments: [1, 3]) func everyHistoryRoundTrips(shards: Int) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let profiles = try publish(dir, shards: shards)
        let tables = try (0..<shards).map { try table(dir, shard: $0, of: shards) }
        let router = ShardRouter(shardCount: shards)
        for p in profiles {
            let t = tables[router.shard(ofID: p.userID)]
            #expect(t.hasStoredHistory)
            let v = try #require(t.profile(forUser: p.userID))
            #expect(v.history != nil)
            let h = t.history(of: v)
            #expect(h.decoded() == Array(Set(p.history)).sorted(), "user \(p.userID)")
            #expect(h.count == Set(p.history).count && Array(v.recentItems) == p.recentItems)
        }
        #expect(tables.contains { t in t.profile(forUser: 77).map { t.history(of: $0).count } == 3000 })
    }

    @Test func theRecentItemsAreAlwaysInTheStoredHistory() {
        let r = UserProfileRecord(userID: 1, recentItems: [9, 4], history: [4, 2, 2], topGenres: [], country: nil)
        #expect(r.storedHistory == [2, 4, 9])
        #expect(UserProfileRecord(userID: 1, recentItems: [3, 1], topGenres: [], country: nil).storedHistory == [1, 3])
    }

    @Test func aTableWithoutHistorySectionsStillLoads() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let profiles = try publish(dir, withHistory: false)
        let t = try table(dir)
        #expect(!t.hasStoredHistory)
        for p in profiles {
            let v = try #require(t.profile(forUser: p.userID))
            #expect(v.history == nil)
            #expect(t.history(of: v).decoded() == p.recentItems.sorted(), "the history is the recent items")
        }
        // The older layout has exactly the six original sections.
        let b = try readBytes(dir.file("v1/" + Self.file))
        #expect(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 48, as: UInt32.self) } == 6)
    }

    @Test func anInputDirectoryStoresEveryInteraction() throws {
        let input = try TempDir(), out = try TempDir()
        defer { input.cleanup(); out.cleanup() }
        try SmallWorld().write(to: input)
        // Two recent items per user, but user 1 interacted with three distinct items.
        try TableSetBuilder.build(inputDirectory: input.path, root: out.path, options: BuildOptions(shardCount: 2, recentN: 2))
        let sets = try (0..<2).map { try TableSetLoader.load(root: out.path, shard: $0, of: 2) }
        func history(_ u: UInt64) -> (recent: [UInt64], history: [UInt64]) {
            let t = sets[sets[0].router.shard(ofID: u)].profile("profiles")!
            let p = t.profile(forUser: u)!
            return (Array(p.recentItems), t.history(of: p).decoded())
        }
        #expect(history(1) == ([10, 30], [10, 20, 30]))
        #expect(history(2) == ([40, 20], [20, 40]))
        #expect(history(3) == ([20], [20]))
    }

    // MARK: - Damage

    /// (offset, length) of section `id` of a table file.
    func section(_ b: [UInt8], _ id: UInt32) throws -> (offset: Int, length: Int) {
        let count = b.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: 48, as: UInt32.self)) }
        for i in 0..<count {
            let e = 128 + 32 * i
            let (sid, off, len) = b.withUnsafeBytes {
                ($0.loadUnaligned(fromByteOffset: e, as: UInt32.self), $0.loadUnaligned(fromByteOffset: e + 8, as: UInt64.self),
                 $0.loadUnaligned(fromByteOffset: e + 16, as: UInt64.self))
            }
            if sid == id { return (Int(off), Int(len)) }
        }
        throw TableError(.notFound, "no section \(id)")
    }

    /// Edits the profile file, reseals its checksums and the manifest, and returns the load error.
    func damage(_ edit: (inout [UInt8], _ offsets: Int, _ bytes: Int) throws -> Void) throws -> TableError? {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try publish(dir)
        let path = dir.file("v1/" + Self.file)
        var b = try readBytes(path)
        try edit(&b, try section(b, 34).offset, try section(b, 35).offset)
        try writeBytes(path, b)
        try reseal(path)
        try refreshManifest(root: dir.path, version: 1, file: Self.file)
        return expectTableError { _ = try TableSetLoader.load(root: dir.path, shard: 0, of: 1) }
    }

    func u64(_ b: [UInt8], _ at: Int) -> Int { b.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) } }
    func put(_ b: inout [UInt8], _ at: Int, _ v: UInt64) { b.withUnsafeMutableBytes { $0.storeBytes(of: v, toByteOffset: at, as: UInt64.self) } }

    @Test func damagedHistoriesAreRefusedNamingTheFile() throws {
        // Row 0 (user 0) holds ids 1, 3, 5: bytes [1, 2, 2].
        let cases: [(String, (inout [UInt8], Int, Int) throws -> Void, String)] = [
            ("a gap of 0", { b, _, bytes in b[bytes + 1] = 0 }, "history of user 0"),
            ("a varint running past its row's end into the next row", { b, _, bytes in b[bytes + 2] |= 0x80 }, "history of user 0"),
            ("the last varint cut by the section's end", { b, offsets, bytes in
                let end = bytes + self.u64(b, offsets + 8 * 30)
                b[end - 1] |= 0x80
            }, "history of user"),
            ("bits beyond 64", { b, offsets, bytes in
                let lo = bytes + self.u64(b, offsets + 8 * 7), hi = bytes + self.u64(b, offsets + 8 * 8)
                for i in lo..<min(hi, lo + 9) { b[i] = 0xFF }
                b[lo + 9] = 0x7F
            }, "history of user 77"),
            ("decreasing offsets", { b, offsets, _ in
                self.put(&b, offsets + 8, UInt64(self.u64(b, offsets + 16) + 1))
            }, "historyOffsets"),
            ("offsets past the byte section", { b, offsets, _ in
                self.put(&b, offsets + 8 * 30, UInt64(self.u64(b, offsets + 8 * 30) + 1))
            }, "historyOffsets"),
            ("a first offset other than 0", { b, offsets, _ in self.put(&b, offsets, 1) }, "historyOffsets"),
        ]
        for (what, edit, words) in cases {
            let e = try damage(edit)
            #expect(e?.code == .corrupt, "\(what)")
            #expect(e?.path?.hasSuffix(Self.file) == true, "\(what): \(String(describing: e))")
            #expect(e?.message.contains(words) == true, "\(what): \(e?.message ?? "")")
        }
    }

    @Test func aProfileTableWithOnlyOneHistorySectionIsRefused() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        _ = try publish(dir)
        let path = dir.file("v1/" + Self.file)
        var b = try readBytes(path)
        // Section 35 renamed to 4 (keyBytes, also bytes): historyOffsets without historyBytes.
        let count = b.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: 48, as: UInt32.self)) }
        for i in 0..<count where b.withUnsafeBytes({ $0.loadUnaligned(fromByteOffset: 128 + 32 * i, as: UInt32.self) }) == 35 {
            b.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(4), toByteOffset: 128 + 32 * i, as: UInt32.self) }
        }
        try writeBytes(path, b)
        try reseal(path)
        try refreshManifest(root: dir.path, version: 1, file: Self.file)
        let e = expectTableError { _ = try TableSetLoader.load(root: dir.path, shard: 0, of: 1) }
        #expect(e?.code == .corrupt && e?.message.contains("do not match a profile table") == true, "\(String(describing: e))")
    }
}
