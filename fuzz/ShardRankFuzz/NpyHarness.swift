// libFuzzer harness: the `.npy` reader (ShardRankTables.NpyArray: magic, format 1.0/2.0 header
// lengths, the Python-dict header, shape × dtype against the data length). Input: the file.
// A file that opens must describe exactly its data: rows × columns × element size = data bytes,
// and every element must be readable.
// `ShardRankFuzz npy --write-seeds DIR` writes the seed corpus.
import Foundation
@testable import ShardRankTables

enum NpyHarness {
    static let scratch = scratchFile("npy")

    static func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        guard let data else { return 0 }
        writeScratch(scratch, data, size)
        guard let a = try? NpyArray(path: scratch, displayName: "fuzz.npy") else { return 0 }
        require(a.shape.allSatisfy { $0 >= 0 } && (a.shape.count == 1 || a.shape.count == 2), "shape \(a.shape)")
        require(a.rows >= 0 && a.columns >= 0)
        switch a.dtype {
        case .f4:
            let f = a.floats()
            require(f.count == a.rows * a.columns, "\(f.count) floats for shape \(a.shape)")
            var s: Float = 0
            for x in f { s += x }
            withExtendedLifetime(s) {}
        case .i8:
            let v = a.int64s()
            require(v.count == a.rows * a.columns, "\(v.count) ints for shape \(a.shape)")
            var s: Int64 = 0
            for x in v { s &+= x }
            withExtendedLifetime(s) {}
        }
        return 0
    }

    static func writeSeeds(_ dir: String) throws {
        func npy(_ descr: String, _ shape: String, _ data: [UInt8], major: UInt8 = 1) -> [UInt8] {
            var dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
            let prefix = major == 1 ? 10 : 12
            while (prefix + dict.utf8.count + 1) % 64 != 0 { dict += " " }
            dict += "\n"
            let n = dict.utf8.count
            var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [major, 0]
            out += major == 1 ? [UInt8(n & 0xFF), UInt8(n >> 8)] : [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), 0, 0]
            return out + Array(dict.utf8) + data
        }
        let floats = [Float](arrayLiteral: 1, -2, 0.5, 3, 4, 5).withUnsafeBytes { Array($0) }
        let ints = [Int64](arrayLiteral: 7, 1_000_003, -1).withUnsafeBytes { Array($0) }
        try Data(npy("<f4", "(2, 3)", floats)).write(to: URL(fileURLWithPath: dir + "/vectors-2x3"))
        try Data(npy("<f4", "(6,)", floats, major: 2)).write(to: URL(fileURLWithPath: dir + "/vectors-v2"))
        try Data(npy("<i8", "(3,)", ints)).write(to: URL(fileURLWithPath: dir + "/ids"))
        try Data(npy("<i8", "(0,)", [])).write(to: URL(fileURLWithPath: dir + "/empty"))
    }
}
