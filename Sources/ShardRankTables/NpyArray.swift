/// A NumPy `.npy` file, memory-mapped: format versions 1.0 and 2.0, little-endian `<f4` or `<i8`,
/// C order, 1-D or 2-D. Anything else is a `TableError(.invalidInput)` naming the file.
/// The data is not copied; views are valid while this object is alive.
final class NpyArray {
    enum DType: String {
        case f4 = "<f4"
        case i8 = "<i8"
        var size: Int { self == .f4 ? 4 : 8 }
    }

    let path: String
    let dtype: DType
    let shape: [Int]
    private let mapping: MappedFile
    private let data: UnsafeRawBufferPointer
    /// A copy of the data when the file's data offset is not aligned for the element type.
    private var realigned: UnsafeMutableRawBufferPointer?

    var rows: Int { shape.first ?? 1 }
    var columns: Int { shape.count == 2 ? shape[1] : 1 }

    init(path: String, displayName: String) throws {
        self.path = displayName
        let mapping = try MappedFile(path: path)
        self.mapping = mapping
        let b = mapping.bytes
        func fail(_ m: String) -> TableError { TableError.input(displayName, m) }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
        guard b.count >= 10, Array(b[0..<6]) == magic else { throw fail("not a .npy file (bad magic)") }
        let major = b[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(UInt16(b[8]) | UInt16(b[9]) << 8)
            headerStart = 10
        case 2:
            guard b.count >= 12 else { throw fail("truncated header") }
            headerLength = Int(UInt32(b[8]) | UInt32(b[9]) << 8 | UInt32(b[10]) << 16 | UInt32(b[11]) << 24)
            headerStart = 12
        default:
            throw fail("unsupported .npy format version \(major).\(b[7]) (1.0 and 2.0 are supported)")
        }
        guard headerLength <= b.count - headerStart else { throw fail("truncated header") }
        let header = String(decoding: UnsafeRawBufferPointer(rebasing: b[headerStart..<(headerStart + headerLength)]), as: UTF8.self)
        let fields = try Self.parseHeader(header, fail: fail)
        guard let dt = DType(rawValue: fields.descr) else {
            throw fail("dtype '\(fields.descr)' is not supported (expected '<f4' for vectors or '<i8' for ids)")
        }
        guard !fields.fortranOrder else { throw fail("Fortran-order arrays are not supported; save with C order (np.ascontiguousarray)") }
        guard fields.shape.count == 1 || fields.shape.count == 2 else {
            throw fail("shape \(fields.shape) is not 1-D or 2-D")
        }
        self.dtype = dt
        self.shape = fields.shape
        var elements = 1
        for d in fields.shape {
            let (p, o) = elements.multipliedReportingOverflow(by: d)
            guard !o else { throw fail("shape \(fields.shape) is too large") }
            elements = p
        }
        let (bytes, o) = elements.multipliedReportingOverflow(by: dt.size)
        let dataStart = headerStart + headerLength
        guard !o, b.count - dataStart == bytes else {
            throw fail("data is \(b.count - dataStart) bytes but shape \(fields.shape) of \(dt.rawValue) needs \(bytes) (truncated?)")
        }
        let data = UnsafeRawBufferPointer(rebasing: b[dataStart..<b.count])
        self.data = data
        if let base = data.baseAddress, Int(bitPattern: base) % dt.size != 0 {
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
            copy.copyMemory(from: data)
            realigned = copy
        }
    }

    deinit { realigned?.deallocate() }

    private var alignedData: UnsafeRawBufferPointer { realigned.map(UnsafeRawBufferPointer.init) ?? data }

    /// The elements of a `<f4` array (row-major).
    func floats() -> UnsafeBufferPointer<Float> {
        precondition(dtype == .f4)
        let d = alignedData
        guard let base = d.baseAddress else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self), count: d.count / 4)
    }

    /// The elements of a `<i8` array.
    func int64s() -> UnsafeBufferPointer<Int64> {
        precondition(dtype == .i8)
        let d = alignedData
        guard let base = d.baseAddress else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: base.assumingMemoryBound(to: Int64.self), count: d.count / 8)
    }

    struct Header {
        var descr: String
        var fortranOrder: Bool
        var shape: [Int]
    }

    /// Parses the Python dict literal of a `.npy` header, e.g.
    /// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
    static func parseHeader(_ text: String, fail: (String) -> TableError) throws -> Header {
        var s = Substring(text)
        func skipSpace() { while let c = s.first, c == " " || c == "\n" || c == "\t" || c == "\r" { s.removeFirst() } }
        func expect(_ c: Character) throws {
            skipSpace()
            guard s.first == c else { throw fail("malformed header (expected '\(c)'): \(text)") }
            s.removeFirst()
        }
        func quoted() throws -> String {
            skipSpace()
            guard let q = s.first, q == "'" || q == "\"" else { throw fail("malformed header (expected a string): \(text)") }
            s.removeFirst()
            guard let end = s.firstIndex(of: q) else { throw fail("malformed header: \(text)") }
            let v = String(s[..<end])
            s = s[s.index(after: end)...]
            return v
        }
        var descr: String?, fortran: Bool?, shape: [Int]?
        try expect("{")
        while true {
            skipSpace()
            if s.first == "}" { break }
            let key = try quoted()
            try expect(":")
            skipSpace()
            switch key {
            case "descr":
                descr = try quoted()
            case "fortran_order":
                if s.hasPrefix("True") { fortran = true; s.removeFirst(4) } else if s.hasPrefix("False") { fortran = false; s.removeFirst(5) } else {
                    throw fail("malformed fortran_order: \(text)")
                }
            case "shape":
                try expect("(")
                var dims: [Int] = []
                while true {
                    skipSpace()
                    if s.first == ")" { s.removeFirst(); break }
                    var digits = ""
                    while let c = s.first, c.isASCII, c.isNumber { digits.append(c); s.removeFirst() }
                    if s.first == "L" { s.removeFirst() }
                    guard let d = Int(digits) else { throw fail("malformed shape: \(text)") }
                    dims.append(d)
                    skipSpace()
                    if s.first == "," { s.removeFirst() }
                }
                shape = dims
            default:
                throw fail("unexpected header key '\(key)'")
            }
            skipSpace()
            if s.first == "," { s.removeFirst() }
        }
        guard let descr, let fortran, let shape else { throw fail("header lacks descr, fortran_order or shape: \(text)") }
        return Header(descr: descr, fortranOrder: fortran, shape: shape)
    }
}
