import Foundation
import Testing
@testable import ShardRankTables

/// A small, hand-checkable input directory (docs/data.md) written into a temp dir.
struct SmallWorld {
    var itemIDs: [Int64] = [10, 20, 30, 40]
    var items: [[Float]] = [[1, 0], [0.9, 0.1], [0, 1], [-1, 0]]
    var userIDs: [Int64] = [1, 2, 3]
    var users: [[Float]] = [[1, 1], [0, 1], [1, 0]]
    var itemsCSV = """
        item_id,genres,timestamp,title
        10,Action|Comedy,100,"Heat, the ""film\"""
        20,Action,200,Two
        30,Drama,300,Three
        40,Comedy,400,Four

        """
    var usersCSV = "user_id,country\n1,FR\n2,DE\n3,FR\n"
    var interactionsCSV = "user_id,item_id,timestamp,rating\r\n1,10,5,4.5\r\n1,20,6,3\r\n1,30,7,\r\n1,10,8,5\r\n2,20,1,1\r\n2,40,2,2\r\n3,20,3,3\r\n"
    var extra: [(String, String)] = [("lists/editorial.csv", "key,item_id,score\nstaff,30,0.5\nstaff,10,0.9\nfresh,40,1\n")]
    var itemsNpy: [UInt8]?

    func write(to dir: TempDir) throws {
        try dir.write("items.npy", bytes: itemsNpy ?? npyFloats(items))
        try dir.write("item_ids.npy", bytes: npyIDs(itemIDs))
        try dir.write("users.npy", bytes: npyFloats(users))
        try dir.write("user_ids.npy", bytes: npyIDs(userIDs))
        try dir.write("items.csv", itemsCSV)
        try dir.write("users.csv", usersCSV)
        try dir.write("interactions.csv", interactionsCSV)
        for (name, text) in extra { try dir.write(name, text) }
    }
}

@Suite struct InputDirectoryBuildTests {
    func build(_ world: SmallWorld, shards: Int = 2, dtype: TableDType = .f32, similar: Int? = 2,
               recent: Int = 2) throws -> (input: TempDir, out: TempDir, version: UInt64) {
        let input = try TempDir(), out = try TempDir()
        try world.write(to: input)
        let v = try TableSetBuilder.build(inputDirectory: input.path, root: out.path,
                                          options: BuildOptions(shardCount: shards, dtype: dtype, similarK: similar, recentN: recent))
        return (input, out, v)
    }

    /// All shards of the newest version.
    func loadAll(_ root: String, shards: Int) throws -> [LoadedTableSet] {
        try (0..<shards).map { try TableSetLoader.load(root: root, shard: $0, of: shards) }
    }

    func list(_ sets: [LoadedTableSet], _ table: String, _ key: String) -> ([UInt64], [Float])? {
        let s = sets[sets[0].router.shard(ofKey: key)]
        guard let v = s.list(table)?.list(forKey: key) else { return nil }
        return (Array(v.ids), Array(v.scores))
    }

    @Test(arguments: [1, 3])
    func buildsEveryTableFromASmallWorld(shards: Int) throws {
        let (input, out, version) = try build(SmallWorld(), shards: shards)
        defer { input.cleanup(); out.cleanup() }
        #expect(version == 1)
        let sets = try loadAll(out.path, shards: shards)
        let m = sets[0].manifest
        #expect(m.genres == ["Action", "Comedy", "Drama"])
        #expect(m.countries == ["DE", "FR"])
        #expect(Set(m.tables.map(\.name)) == ["items", "users", "attributes", "profiles", "popular", "genre_top",
                                                "country_top", "similar", "editorial"])
        #expect(m.table(named: "items")?.rows == 4 && m.table(named: "users")?.dim == 2)

        #expect(list(sets, "popular", "all")! == ([20, 10, 30, 40], [3, 2, 1, 1]))
        #expect(list(sets, "genre_top", "Action")! == ([20, 10], [3, 2]))
        #expect(list(sets, "genre_top", "Comedy")! == ([10, 40], [2, 1]))
        #expect(list(sets, "genre_top", "Drama")! == ([30], [1]))
        #expect(list(sets, "country_top", "FR")! == ([10, 20, 30], [2, 2, 1]))
        #expect(list(sets, "country_top", "DE")! == ([20, 40], [1, 1]))
        #expect(list(sets, "similar", "10")!.0 == [20, 30])
        #expect(list(sets, "similar", "20")!.0 == [10, 30])
        #expect(list(sets, "similar", "30")!.0 == [20, 10])
        #expect(list(sets, "similar", "40")!.0 == [30, 20])
        #expect(list(sets, "similar", "10")!.1 == [0.9, 0])
        #expect(list(sets, "editorial", "staff")! == ([10, 30], [0.9, 0.5]))
        #expect(list(sets, "editorial", "fresh")! == ([40], [1]))

        func profile(_ u: UInt64) -> (recent: [UInt64], genres: [String], country: String?) {
            let t = sets[sets[0].router.shard(ofID: u)].profile("profiles")!
            let p = t.profile(forUser: u)!
            return (Array(p.recentItems), t.topGenreNames(p), t.countryName(p))
        }
        #expect(profile(1) == ([10, 30], ["Action", "Comedy", "Drama"], "FR"))
        #expect(profile(2) == ([40, 20], ["Action", "Comedy"], "DE"))
        #expect(profile(3) == ([20], ["Action"], "FR"))

        func attrs(_ i: UInt64) -> ItemAttributes? { sets[sets[0].router.shard(ofID: i)].attribute("attributes")!.attributes(forItem: i) }
        #expect(attrs(10) == ItemAttributes(genresMask: 0b011, timestamp: 100, popularity: 2))
        #expect(attrs(40) == ItemAttributes(genresMask: 0b010, timestamp: 400, popularity: 1))

        let items = sets[sets[0].router.shard(ofID: 20)].embedding("items")!
        let row = items.rowIndex(of: 20)!
        #expect(items.withRowBytes(at: row) { Array($0.bindMemory(to: Float.self)) } == [0.9, 0.1])
    }

    @Test func eachRunPublishesTheNextVersion() throws {
        let input = try TempDir(), out = try TempDir()
        defer { input.cleanup(); out.cleanup() }
        try SmallWorld().write(to: input)
        for expected in 1...3 as ClosedRange<UInt64> {
            let v = try TableSetBuilder.build(inputDirectory: input.path, root: out.path,
                                              options: BuildOptions(shardCount: 2, dtype: expected == 2 ? .int8 : .f16))
            #expect(v == expected)
        }
        #expect(try TableSetCatalog(root: out.path).completeVersions() == [1, 2, 3])
        #expect(try TableSetLoader.load(root: out.path, shard: 0, of: 2).embedding("items")?.dtype == .f16)
    }

    @Test func similarMatchesBruteForce() throws {
        var world = SmallWorld()
        let n = 37, d = 5
        let v = testVectors(rows: n, dim: d, seed: 9)
        world.itemIDs = (0..<n).map { Int64($0 * 3 + 1) }
        world.items = (0..<n).map { Array(v[($0 * d)..<(($0 + 1) * d)]) }
        world.itemsCSV = "item_id,genres,timestamp\n" + world.itemIDs.map { "\($0),Action,0\n" }.joined()
        world.interactionsCSV = "user_id,item_id,timestamp\n1,1,1\n"
        world.extra = []
        let (input, out, _) = try build(world, shards: 3, similar: 5)
        defer { input.cleanup(); out.cleanup() }
        let sets = try loadAll(out.path, shards: 3)
        for i in 0..<n {
            var cands: [(UInt64, Float)] = []
            for j in 0..<n where j != i {
                var s: Float = 0
                for k in 0..<d { s += v[i * d + k] * v[j * d + k] }
                cands.append((UInt64(world.itemIDs[j]), s))
            }
            cands.sort { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
            let got = try #require(list(sets, "similar", String(world.itemIDs[i])))
            #expect(got.0 == cands.prefix(5).map(\.0))
            for (a, b) in zip(got.1, cands.prefix(5).map(\.1)) { #expect(abs(a - b) <= 1e-5) }
        }
    }

    struct BadInput: CustomStringConvertible, Sendable {
        var name: String
        var file: String
        var line: Int?
        var fragment: String
        var mutate: @Sendable (inout SmallWorld) -> Void
        var description: String { name }
    }

    static let badInputs: [BadInput] = [
        BadInput(name: "id count ≠ rows", file: "item_ids.npy", line: nil, fragment: "3 ids for 4 rows") { $0.itemIDs = [10, 20, 30] },
        BadInput(name: "duplicate id", file: "item_ids.npy", line: 3, fragment: "duplicate id 10") { $0.itemIDs = [10, 20, 10, 40] },
        BadInput(name: "negative id", file: "user_ids.npy", line: 2, fragment: "negative id") { $0.userIDs = [1, -2, 3] },
        BadInput(name: "NaN row", file: "items.npy", line: 2, fragment: "non-finite") { $0.items[1][1] = .nan },
        BadInput(name: "Inf row", file: "users.npy", line: 3, fragment: "non-finite") { $0.users[2][0] = .infinity },
        BadInput(name: "fewer user vectors than ids", file: "user_ids.npy", line: nil, fragment: "3 ids for 2 rows") { $0.users = [[1, 1], [0, 1]] },
        BadInput(name: "float64", file: "items.npy", line: nil, fragment: "'<f8' is not supported") {
            $0.itemsNpy = npyBytes(descr: "<f8", shape: [4, 1], data: [UInt8](repeating: 0, count: 32))
        },
        BadInput(name: "Fortran order", file: "items.npy", line: nil, fragment: "Fortran") {
            $0.itemsNpy = npyBytes(descr: "<f4", shape: [4, 2], data: [UInt8](repeating: 0, count: 32), fortran: true)
        },
        BadInput(name: "truncated npy", file: "items.npy", line: nil, fragment: "truncated") {
            $0.itemsNpy = Array(npyFloats($0.items).dropLast(3))
        },
        BadInput(name: "1-D vectors", file: "items.npy", line: nil, fragment: "matrix") {
            $0.itemsNpy = npyBytes(descr: "<f4", shape: [4], data: [UInt8](repeating: 0, count: 16))
        },
        BadInput(name: "not npy", file: "items.npy", line: nil, fragment: "magic") { $0.itemsNpy = Array("hello, world".utf8) },
        BadInput(name: "unknown column", file: "items.csv", line: 1, fragment: "unknown column 'year'") {
            $0.itemsCSV = "item_id,genres,timestamp,year\n10,Action,1,1999\n"
        },
        BadInput(name: "missing column", file: "users.csv", line: 1, fragment: "missing column 'country'") { $0.usersCSV = "user_id\n1\n" },
        BadInput(name: "unknown item in interactions", file: "interactions.csv", line: 4, fragment: "item_id 99") {
            $0.interactionsCSV = "user_id,item_id,timestamp\n1,10,1\n2,20,2\n3,99,3\n"
        },
        BadInput(name: "unknown user in interactions", file: "interactions.csv", line: 3, fragment: "user_id 7") {
            $0.interactionsCSV = "user_id,item_id,timestamp\n1,10,1\n7,20,2\n"
        },
        BadInput(name: "short row", file: "interactions.csv", line: 3, fragment: "expected 3 fields") {
            $0.interactionsCSV = "user_id,item_id,timestamp\n1,10,1\n2,20\n"
        },
        BadInput(name: "bad timestamp", file: "items.csv", line: 3, fragment: "'yesterday' is not an integer") {
            $0.itemsCSV = "item_id,genres,timestamp\n10,Action,1\n20,Action,yesterday\n30,,3\n40,,4\n"
        },
        BadInput(name: "bad rating", file: "interactions.csv", line: 2, fragment: "rating") {
            $0.interactionsCSV = "user_id,item_id,timestamp,rating\n1,10,1,five\n"
        },
        BadInput(name: "duplicate item row", file: "items.csv", line: 4, fragment: "duplicate item_id 20") {
            $0.itemsCSV = "item_id,genres,timestamp\n10,Action,1\n20,Action,2\n20,Drama,3\n30,,3\n40,,4\n"
        },
        BadInput(name: "embedding without attributes", file: "item_ids.npy", line: 4, fragment: "no row in items.csv") {
            $0.itemsCSV = "item_id,genres,timestamp\n10,Action,1\n20,Action,2\n30,,3\n"
        },
        BadInput(name: "unterminated quote", file: "items.csv", line: 3, fragment: "unterminated") {
            $0.itemsCSV = "item_id,genres,timestamp,title\n10,Action,1,ok\n20,Action,2,\"oops\n"
        },
        BadInput(name: "list with unknown item", file: "lists/editorial.csv", line: 3, fragment: "item_id 5") {
            $0.extra = [("lists/editorial.csv", "key,item_id,score\nstaff,10,1\nstaff,5,1\n")]
        },
        BadInput(name: "list with a NaN score", file: "lists/editorial.csv", line: 2, fragment: "finite") {
            $0.extra = [("lists/editorial.csv", "key,item_id,score\nstaff,10,nan\n")]
        },
        BadInput(name: "malformed jsonl", file: "lists/x.jsonl", line: 2, fragment: "not a list object") {
            $0.extra = [("lists/x.jsonl", "{\"key\": \"a\", \"ids\": [10, 20]}\n{\"key\": \"b\", \"ids\": 3}\n")]
        },
        BadInput(name: "list named like a core table", file: "lists/items.csv", line: nil, fragment: "clashes") {
            $0.extra = [("lists/items.csv", "key,item_id,score\na,10,1\n")]
        },
    ]

    @Test(arguments: badInputs)
    func badInputNamesFileAndRowAndPublishesNothing(_ bad: BadInput) throws {
        var world = SmallWorld()
        bad.mutate(&world)
        let input = try TempDir(), out = try TempDir()
        defer { input.cleanup(); out.cleanup() }
        try world.write(to: input)
        let e = expectTableError {
            try TableSetBuilder.build(inputDirectory: input.path, root: out.path,
                                      options: BuildOptions(shardCount: 2, similarK: 2))
        }
        #expect(e?.code == .invalidInput, "\(bad.name): \(e?.description ?? "-")")
        #expect(e?.path?.hasSuffix("/" + bad.file) == true, "\(bad.name): \(e?.description ?? "-")")
        #expect(e?.line == bad.line, "\(bad.name): \(e?.description ?? "-")")
        #expect(e?.description.contains(bad.fragment) == true, "\(bad.name): \(e?.description ?? "-")")
        if let line = bad.line {
            #expect(e?.description.contains("\(bad.file):\(line): ") == true, "\(e?.description ?? "-")")
        }
        #expect(try TableSetCatalog(root: out.path).versionDirectories().isEmpty)
    }

    @Test func jsonlListsAreRead() throws {
        var world = SmallWorld()
        world.extra = [("lists/fans.jsonl", """
            {"key": "a", "ids": [10, 20], "scores": [1, 2]}
            {"key": "b", "item_id": 30, "score": 0.5}

            {"key": "b", "item_id": 40, "score": 0.75}
            """)]
        let (input, out, _) = try build(world, shards: 2)
        defer { input.cleanup(); out.cleanup() }
        let sets = try loadAll(out.path, shards: 2)
        #expect(list(sets, "fans", "a")! == ([20, 10], [2, 1]))
        #expect(list(sets, "fans", "b")! == ([40, 30], [0.75, 0.5]))
    }

    @Test func minimalInputOnlyEmbeddings() throws {
        let input = try TempDir(), out = try TempDir()
        defer { input.cleanup(); out.cleanup() }
        try input.write("items.npy", bytes: npyBytes(descr: "<f4", shape: [2, 3], data: [Float](repeating: 0.5, count: 6).withUnsafeBytes { Array($0) }, major: 2))
        try input.write("item_ids.npy", bytes: npyIDs([5, 6]))
        let v = try TableSetBuilder.build(inputDirectory: input.path, root: out.path, options: BuildOptions(shardCount: 1))
        let set = try TableSetLoader.load(root: out.path, version: v, shard: 0, of: 1)
        #expect(set.tables.keys.sorted() == ["items"])
        #expect(set.embedding("items")?.rowCount == 2)
        let missing = expectTableError {
            try FileManager.default.removeItem(atPath: input.file("item_ids.npy"))
            try TableSetBuilder.build(inputDirectory: input.path, root: out.path, options: BuildOptions(shardCount: 1))
        }
        #expect(missing?.path?.hasSuffix("item_ids.npy") == true)
    }

    @Test func npyHeaderParser() throws {
        let fail = { (m: String) in TableError(.invalidInput, m) }
        let h = try NpyArray.parseHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }   \n", fail: fail)
        #expect(h.descr == "<f4" && !h.fortranOrder && h.shape == [3, 4])
        let h1 = try NpyArray.parseHeader("{\"shape\": (7,), \"descr\": \"<i8\", \"fortran_order\": False}", fail: fail)
        #expect(h1.shape == [7] && h1.descr == "<i8")
        #expect(throws: TableError.self) { try NpyArray.parseHeader("{'descr': '<f4', 'shape': (3, 4)}", fail: fail) }
        #expect(throws: TableError.self) { try NpyArray.parseHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (3, x)}", fail: fail) }
    }
}
