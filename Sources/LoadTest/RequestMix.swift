/// The RPCs the driver can send.
public enum LoadOperation: String, Sendable, CaseIterable, Codable, Comparable {
    /// `record`: a RecordEvents call of one view of a random item for a random user (or, with
    /// `recordBatch` > 1, a RecordEventsBatch call of that many such users).
    case lookup, search, recommend, rank, similar, record

    /// Shard (`shardrank.v1.Shard`) or coordinator (`shardrank.v1.Recommender`) method.
    public var targetsShard: Bool { self == .lookup || self == .search }

    public static func < (a: LoadOperation, b: LoadOperation) -> Bool { a.rawValue < b.rawValue }
}

/// An error in the driver's configuration or a failure to start (not a failed request: those are
/// counted by status). The message is meant for the user as is.
public struct LoadTestError: Error, Sendable, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A weighted mix of operations, e.g. `lookup:0.9,search:0.1` or `recommend`.
/// Weights are normalised; all operations go to the same kind of target (shard or coordinator).
public struct RequestMix: Sendable, Equatable, CustomStringConvertible {
    /// Operations with their normalised weights (sum 1), in the order given.
    public let entries: [(operation: LoadOperation, weight: Double)]
    private let cumulative: [Double]

    public static func == (a: RequestMix, b: RequestMix) -> Bool {
        a.entries.map(\.operation) == b.entries.map(\.operation) && a.entries.map(\.weight) == b.entries.map(\.weight)
    }

    /// Parses `op[:weight][,op[:weight]...]`; a missing weight is 1.
    /// - Throws: `LoadTestError` naming the bad part: unknown operation, weight not a positive
    ///   finite number, an operation listed twice, an empty mix, shard and coordinator operations mixed.
    public static func parse(_ text: String) throws(LoadTestError) -> RequestMix {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingSpaces() }
        guard !text.trimmingSpaces().isEmpty else { throw LoadTestError("--mix is empty (expected e.g. 'lookup' or 'lookup:0.9,search:0.1')") }
        var out: [(LoadOperation, Double)] = []
        for part in parts {
            guard !part.isEmpty else { throw LoadTestError("--mix '\(text)': empty entry") }
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count <= 2 else { throw LoadTestError("--mix '\(text)': '\(part)' is not op or op:weight") }
            let name = fields[0].lowercased()
            guard let op = LoadOperation(rawValue: name) else {
                throw LoadTestError("--mix '\(text)': unknown operation '\(fields[0])' (one of \(LoadOperation.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            var w = 1.0
            if fields.count == 2 {
                guard let v = Double(fields[1]), v.isFinite, v > 0 else {
                    throw LoadTestError("--mix '\(text)': weight '\(fields[1])' of \(name) must be a positive number")
                }
                w = v
            }
            guard !out.contains(where: { $0.0 == op }) else { throw LoadTestError("--mix '\(text)': \(name) listed twice") }
            out.append((op, w))
        }
        let shard = out.filter { $0.0.targetsShard }.count
        guard shard == 0 || shard == out.count else {
            throw LoadTestError("--mix '\(text)': shard operations (lookup, search) and coordinator operations (recommend, rank, similar, record) cannot be mixed: a run has one target")
        }
        return RequestMix(out)
    }

    init(_ weighted: [(LoadOperation, Double)]) {
        let total = weighted.reduce(0) { $0 + $1.1 }
        entries = weighted.map { (operation: $0.0, weight: $0.1 / total) }
        var acc = 0.0
        var c: [Double] = []
        for e in entries { acc += e.weight; c.append(acc) }
        c[c.count - 1] = 1
        cumulative = c
    }

    /// True when every operation is a shard method.
    public var targetsShard: Bool { entries.first?.operation.targetsShard ?? true }

    public func contains(_ op: LoadOperation) -> Bool { entries.contains { $0.operation == op } }

    /// The operation for a uniform draw `u` in [0, 1).
    public func pick(_ u: Double) -> LoadOperation {
        for (i, c) in cumulative.enumerated() where u < c { return entries[i].operation }
        return entries[entries.count - 1].operation
    }

    public var description: String {
        entries.map { "\($0.operation.rawValue):\(formatWeight($0.weight))" }.joined(separator: ",")
    }
}

func formatWeight(_ w: Double) -> String {
    let r = (w * 10000).rounded() / 10000
    return r == r.rounded() ? String(Int(r)) : String(r)
}

extension Substring {
    func trimmingSpaces() -> String { String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed()) }
}

extension String {
    func trimmingSpaces() -> String { Substring(self).trimmingSpaces() }
}
