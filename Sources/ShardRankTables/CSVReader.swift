/// One record of a CSV file: byte ranges into the mapped file, valid during the callback only.
struct CSVRecord {
    /// 1-based line number where the record starts.
    let line: Int
    let file: String
    let header: [String]
    fileprivate let bytes: UnsafeRawBufferPointer
    fileprivate let fields: UnsafeBufferPointer<(start: Int, end: Int, quoted: Bool)>

    var count: Int { fields.count }

    func error(_ message: String) -> TableError { TableError.input(file, line: line, message) }

    private func raw(_ i: Int) -> UnsafeRawBufferPointer {
        let f = fields[i]
        return UnsafeRawBufferPointer(rebasing: bytes[f.start..<f.end])
    }

    /// The text of field `i` (quotes removed, `""` unescaped).
    func string(_ i: Int) -> String {
        let f = fields[i]
        let s = String(decoding: raw(i), as: UTF8.self)
        return f.quoted ? s.replacingOccurrences(of: "\"\"", with: "\"") : s
    }

    func isEmpty(_ i: Int) -> Bool { fields[i].start == fields[i].end }

    /// Field `i` as a non-negative decimal integer id.
    func id(_ i: Int) throws -> UInt64 {
        let r = raw(i)
        guard !r.isEmpty, r.count <= 20 else { throw error("\(header[i]): '\(string(i))' is not an id (a non-negative integer)") }
        var v: UInt64 = 0
        for b in r {
            guard b >= 0x30 && b <= 0x39 else { throw error("\(header[i]): '\(string(i))' is not an id (a non-negative integer)") }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(b - 0x30))
            guard !o1 && !o2 else { throw error("\(header[i]): '\(string(i))' is out of range") }
            v = a
        }
        return v
    }

    /// Field `i` as a signed 64-bit integer (timestamps).
    func int64(_ i: Int) throws -> Int64 {
        let r = raw(i)
        var neg = false
        var digits = r[...]
        if let f = digits.first, f == 0x2D { neg = true; digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.count <= 19 else { throw error("\(header[i]): '\(string(i))' is not an integer") }
        var v: Int64 = 0
        for b in digits {
            guard b >= 0x30 && b <= 0x39 else { throw error("\(header[i]): '\(string(i))' is not an integer") }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int64(b - 0x30))
            guard !o1 && !o2 else { throw error("\(header[i]): '\(string(i))' is out of range") }
            v = a
        }
        return neg ? -v : v
    }

    /// Field `i` as a finite float.
    func float(_ i: Int) throws -> Float {
        let s = string(i).trimmingSpaces
        guard let v = Float(s), v.isFinite else { throw error("\(header[i]): '\(s)' is not a finite number") }
        return v
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let c = s.first, c == " " { s.removeFirst() }
        while let c = s.last, c == " " { s.removeLast() }
        return String(s)
    }

    func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty, contains(target) else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        out += rest
        return out
    }
}

/// A CSV file (RFC 4180: comma-separated, `"`-quoted fields with `""` escapes, quoted fields may
/// span lines; LF or CRLF line ends; an optional UTF-8 BOM), memory-mapped and parsed in one pass.
/// The first record is the header; its column names are checked against `required` and
/// `optional` (an unknown or missing column is an error naming the file and line 1).
final class CSVReader {
    let path: String
    let displayName: String
    let header: [String]
    private let mapping: MappedFile
    private var bodyStart = 0
    private var bodyLine = 2

    init(path: String, displayName: String, required: [String], optional: [String] = []) throws {
        self.path = path
        self.displayName = displayName
        let mapping = try MappedFile(path: path)
        self.mapping = mapping
        var header: [String] = []
        var next = 0, nextLine = 1
        let b = mapping.bytes
        var start = 0
        if b.count >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF { start = 3 }
        try Self.parse(b, from: start, line: 1, file: displayName, header: [], limit: 1) { rec in
            header = (0..<rec.count).map { rec.string($0).trimmingSpaces }
        } resume: { pos, line in
            next = pos
            nextLine = line
        }
        guard !header.isEmpty else { throw TableError.input(displayName, line: 1, "empty file: expected a header line \(required.joined(separator: ","))") }
        for (i, h) in header.enumerated() {
            guard required.contains(h) || optional.contains(h) else {
                throw TableError.input(displayName, line: 1, "unknown column '\(h)' (expected \((required + optional.map { "[\($0)]" }).joined(separator: ",")))")
            }
            guard !header[..<i].contains(h) else { throw TableError.input(displayName, line: 1, "column '\(h)' appears twice") }
        }
        for r in required where !header.contains(r) {
            throw TableError.input(displayName, line: 1, "missing column '\(r)' (header is \(header.joined(separator: ",")))")
        }
        self.header = header
        self.bodyStart = next
        self.bodyLine = nextLine
    }

    /// Column index of `name` (nil for an absent optional column).
    func column(_ name: String) -> Int? { header.firstIndex(of: name) }

    /// Total bytes of the file (for progress).
    var byteCount: Int { mapping.bytes.count }

    /// Calls `body` for every data record (blank lines skipped), in order. A record whose field
    /// count differs from the header's is an error naming its line. `progress(bytesDone)` is
    /// called every few MB.
    func forEachRecord(progress: ((Int) -> Void)? = nil, _ body: (CSVRecord) throws -> Void) throws {
        try Self.parse(mapping.bytes, from: bodyStart, line: bodyLine, file: displayName, header: header, limit: nil,
                       progress: progress, body, resume: { _, _ in })
    }

    private static func parse(_ b: UnsafeRawBufferPointer, from start: Int, line firstLine: Int, file: String, header: [String],
                              limit: Int?, progress: ((Int) -> Void)? = nil,
                              _ body: (CSVRecord) throws -> Void, resume: (Int, Int) -> Void) throws {
        var fields: [(start: Int, end: Int, quoted: Bool)] = []
        fields.reserveCapacity(max(header.count, 8))
        var pos = start
        var line = firstLine
        var records = 0
        let n = b.count
        var nextProgress = pos + (8 << 20)
        while pos < n {
            if let limit, records >= limit { break }
            let recordLine = line
            fields.removeAll(keepingCapacity: true)
            // Parse one record.
            var atEnd = false
            while !atEnd {
                if pos < n && b[pos] == 0x22 {  // quoted field
                    pos += 1
                    let fs = pos
                    var fe = -1
                    while pos < n {
                        let c = b[pos]
                        if c == 0x22 {
                            if pos + 1 < n && b[pos + 1] == 0x22 { pos += 2; continue }
                            fe = pos
                            pos += 1
                            break
                        }
                        if c == 0x0A { line += 1 }
                        pos += 1
                    }
                    guard fe >= 0 else { throw TableError.input(file, line: recordLine, "unterminated quoted field") }
                    fields.append((fs, fe, true))
                    if pos < n && b[pos] == 0x0D { pos += 1 }
                    if pos >= n { atEnd = true } else if b[pos] == 0x2C { pos += 1 } else if b[pos] == 0x0A {
                        pos += 1; line += 1; atEnd = true
                    } else {
                        throw TableError.input(file, line: line, "unexpected character after a closing quote")
                    }
                } else {
                    let fs = pos
                    while pos < n && b[pos] != 0x2C && b[pos] != 0x0A { pos += 1 }
                    var fe = pos
                    if fe > fs && b[fe - 1] == 0x0D { fe -= 1 }
                    fields.append((fs, fe, false))
                    if pos >= n { atEnd = true } else if b[pos] == 0x2C { pos += 1 } else {
                        pos += 1; line += 1; atEnd = true
                    }
                }
            }
            if fields.count == 1 && fields[0].start == fields[0].end && !fields[0].quoted { continue }  // blank line
            if !header.isEmpty && fields.count != header.count {
                throw TableError.input(file, line: recordLine, "expected \(header.count) fields (\(header.joined(separator: ","))), got \(fields.count)")
            }
            try fields.withUnsafeBufferPointer { f in
                try body(CSVRecord(line: recordLine, file: file, header: header, bytes: b, fields: f))
            }
            records += 1
            if let progress, pos >= nextProgress {
                progress(pos)
                nextProgress = pos + (8 << 20)
            }
        }
        progress?(pos)
        resume(pos, line)
    }
}
