import Foundation
import Testing
import ShardRankEval

/// The evaluation's one CSV reader: time order, the latest timestamp, and errors naming the line.
@Suite struct InteractionsTests {
    func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "interactions-\(UInt64.random(in: 0 ... .max)).csv"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func timeOrderStableForTiesAndTheLatestTimestamp() throws {
        let p = try write("user_id,item_id,timestamp,rating\n1,10,300,4\n1,11,100,3\n2,20,5,1\n1,12,100,5\n")
        defer { try? FileManager.default.removeItem(atPath: p) }
        let f = try Interactions.read(path: p, requireTimestamp: true)
        #expect(f.byUser[1]!.map(\.item) == [11, 12, 10], "by time; equal times keep file order")
        #expect(f.byUser[2]!.map(\.item) == [20] && f.latest == 300)
        #expect(f.itemSets[1] == [10, 11, 12])
        #expect(try HeldOut.read(path: p).relevant == [1: [10, 11, 12], 2: [20]])
    }

    @Test func withoutTimestampsFileOrderAndNoLatest() throws {
        let p = try write("item_id,user_id\n7,1\n5,1\n")
        defer { try? FileManager.default.removeItem(atPath: p) }
        let f = try Interactions.read(path: p)
        #expect(f.byUser[1]!.map(\.item) == [7, 5] && f.latest == nil)
        #expect(throws: HeldOut.ParseError.self) { try Interactions.read(path: p, requireTimestamp: true) }
    }

    @Test(arguments: [
        ("user,item\n1,2\n", ":1: header must name user_id and item_id"),
        ("user_id,item_id,timestamp\n1,2,3\n1,2\n", ":3: expected 3 fields, got 2"),
        ("user_id,item_id,timestamp\n1,x,3\n", ":2: user_id and item_id must be unsigned integers"),
        ("user_id,item_id,timestamp\n1,2,soon\n", ":2: timestamp must be an integer"),
        ("", ":1: empty file"),
    ])
    func errorsNameTheLine(text: String, message: String) throws {
        let p = try write(text)
        defer { try? FileManager.default.removeItem(atPath: p) }
        do {
            _ = try Interactions.read(path: p)
            Issue.record("accepted \(text)")
        } catch {
            #expect("\(error)".contains(p + message), "\(error)")
        }
    }
}
