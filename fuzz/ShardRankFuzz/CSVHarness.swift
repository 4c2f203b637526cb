// libFuzzer harness: the CSV reader (ShardRankTables.CSVReader: RFC 4180 quoting, quoted fields
// spanning lines, CRLF, BOM, the header check) and its field conversions (id, int64, float).
// Input: byte 0 picks the schema of one of the builder's input files (items, users,
// interactions, lists), the rest is the file. Every record handed out must have exactly the
// header's field count, and every field must convert without crashing.
// `ShardRankFuzz csv --write-seeds DIR` writes the seed corpus.
import Foundation
@testable import ShardRankTables

enum CSVHarness {
    static let scratch = scratchFile("csv")
    static let schemas: [(required: [String], optional: [String])] = [
        (["item_id", "genres", "timestamp"], ["title"]),
        (["user_id", "country"], []),
        (["user_id", "item_id", "timestamp"], ["rating"]),
        (["key", "item_id", "score"], []),
    ]

    static func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        guard let data, size >= 1 else { return 0 }
        let schema = schemas[Int(data[0]) % schemas.count]
        writeScratch(scratch, data + 1, size - 1)
        guard let csv = try? CSVReader(path: scratch, displayName: "fuzz.csv", required: schema.required, optional: schema.optional) else { return 0 }
        var records = 0
        try? csv.forEachRecord { r in
            require(r.count == csv.header.count, "record of \(r.count) fields under a header of \(csv.header.count)")
            records += 1
            for i in 0..<r.count {
                let s = r.string(i)
                _ = r.isEmpty(i)
                if let v = try? r.id(i) { require(String(v) == s.drop { $0 == "0" }.description || v == 0, "id \(v) from '\(s)'") }
                _ = try? r.int64(i)
                if let f = try? r.float(i) { require(f.isFinite) }
            }
        }
        withExtendedLifetime(records) {}
        return 0
    }

    static func writeSeeds(_ dir: String) throws {
        let files: [(String, UInt8, String)] = [
            ("items", 0, "item_id,genres,timestamp,title\n1,Action|Comedy,1700000000,\"Toy Story (1995)\"\n2,,-5,\"A \"\"quoted\"\"\nline\"\n"),
            ("items-bom-crlf", 0, "\u{FEFF}item_id,title,genres,timestamp\r\n3,x,Drama,0\r\n\r\n4,y,,12\r\n"),
            ("users", 1, "user_id,country\n42,DE\n43,\n"),
            ("interactions", 2, "user_id,item_id,timestamp,rating\n42,1,1700000000,4.5\n42,2,1700000001, 3 \n"),
            ("lists", 3, "key,item_id,score\nall,5,3.0\nall,4,2e0\n\"k,1\",3,-1\n"),
        ]
        for (name, schema, text) in files {
            try Data([schema] + Array(text.utf8)).write(to: URL(fileURLWithPath: dir + "/" + name))
        }
    }
}
