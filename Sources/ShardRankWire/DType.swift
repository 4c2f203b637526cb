public import RPCCore

// DType and TableKind are generated from proto/shardrank/v1/common.proto (Generated/ShardrankV1Common.swift).

extension DType {
    /// Bytes per element (0 for `.unspecified`).
    public var elementSize: Int {
        switch self {
        case .unspecified: 0
        case .f32: 4
        case .f16: 2
        case .int8: 1
        }
    }
}
