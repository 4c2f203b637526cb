/// Element type of a vector payload (proto `shardrank.v1.DType`).
public enum DType: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case unspecified = 0
    case f32 = 1
    case f16 = 2
    case int8 = 3

    /// Bytes per element (0 for `.unspecified`).
    public var elementSize: Int {
        switch self {
        case .unspecified: 0
        case .f32: 4
        case .f16: 2
        case .int8: 1
        }
    }

    public var description: String {
        switch self {
        case .unspecified: "unspecified"
        case .f32: "f32"
        case .f16: "f16"
        case .int8: "int8"
        }
    }

    init(wire raw: UInt32, field: String) throws(RPCError) {
        guard let d = DType(rawValue: raw) else { throw RPCError(.invalidArgument, "\(field): unknown dtype \(raw)") }
        self = d
    }
}

/// What a table holds (proto `shardrank.v1.TableKind`).
public enum TableKind: UInt32, Sendable, Hashable, CaseIterable {
    case unspecified = 0, embedding = 1, list = 2, profile = 3, attribute = 4
}

import RPCCore
