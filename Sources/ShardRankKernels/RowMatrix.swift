internal import CShardRankKernels

/// Element type of a row matrix.
public enum RowElementType: Int32, Sendable, CaseIterable, CustomStringConvertible {
    /// 32-bit IEEE floats.
    case f32 = 0
    /// IEEE binary16 bit patterns stored as `UInt16`, little-endian.
    case f16 = 1
    /// `Int8` values with one `Float` scale per row: value = scale[row] * Float(int8).
    case int8 = 2

    public var byteWidth: Int {
        switch self {
        case .f32: 4
        case .f16: 2
        case .int8: 1
        }
    }

    public var description: String {
        switch self {
        case .f32: "f32"
        case .f16: "f16"
        case .int8: "int8"
        }
    }
}

/// A borrowed view of `count` rows of `dimension` elements, row-major, contiguous.
///
/// It does not own its memory: the pointers must stay valid (and unmodified while a kernel
/// reads them) for as long as the view is used. That is why it is `@unchecked Sendable`:
/// the owner of the memory guarantees the lifetime.
public struct RowMatrix: @unchecked Sendable {
    public let elementType: RowElementType
    /// `count * dimension` elements of `elementType`.
    public let base: UnsafeRawPointer
    /// For `.int8`: `count` floats, one scale per row; nil otherwise.
    public let scales: UnsafePointer<Float>?
    public let count: Int
    public let dimension: Int

    /// f32 rows: `rows` holds `count * dimension` floats.
    public init(f32 rows: UnsafePointer<Float>, count: Int, dimension: Int) {
        precondition(count >= 0 && dimension > 0)
        self.elementType = .f32; self.base = UnsafeRawPointer(rows); self.scales = nil
        self.count = count; self.dimension = dimension
    }

    /// f16 rows: `rows` holds `count * dimension` binary16 bit patterns.
    public init(f16 rows: UnsafePointer<UInt16>, count: Int, dimension: Int) {
        precondition(count >= 0 && dimension > 0)
        self.elementType = .f16; self.base = UnsafeRawPointer(rows); self.scales = nil
        self.count = count; self.dimension = dimension
    }

    /// int8 rows: `rows` holds `count * dimension` values, `scales` holds `count` floats.
    public init(int8 rows: UnsafePointer<Int8>, scales: UnsafePointer<Float>, count: Int, dimension: Int) {
        precondition(count >= 0 && dimension > 0)
        self.elementType = .int8; self.base = UnsafeRawPointer(rows); self.scales = scales
        self.count = count; self.dimension = dimension
    }

    /// Rows `range` of this matrix (same dimension).
    public func slice(_ range: Range<Int>) -> RowMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        return RowMatrix(elementType: elementType,
                         base: base + range.lowerBound * dimension * elementType.byteWidth,
                         scales: scales.map { $0 + range.lowerBound },
                         count: range.count, dimension: dimension)
    }

    init(elementType: RowElementType, base: UnsafeRawPointer, scales: UnsafePointer<Float>?,
         count: Int, dimension: Int) {
        self.elementType = elementType; self.base = base; self.scales = scales
        self.count = count; self.dimension = dimension
    }

    /// Element `j` of row `i` as a Float, without the int8 row scale. For references and tests.
    public func value(row i: Int, column j: Int) -> Float {
        let k = i * dimension + j
        switch elementType {
        case .f32: return base.assumingMemoryBound(to: Float.self)[k]
        case .f16: return Float(Float16(bitPattern: base.assumingMemoryBound(to: UInt16.self)[k]))
        case .int8: return Float(base.assumingMemoryBound(to: Int8.self)[k])
        }
    }

    /// The row scale (1 unless int8).
    public func scale(row i: Int) -> Float { scales?[i] ?? 1 }
}

extension RowElementType {
    /// Decodes `count` elements of this type at `source` (any alignment) into f32 at
    /// `destination`, int8 values times `scale` (ignored for f32 and f16), with the vector
    /// kernel of `isa` (default: the best this CPU runs).
    public func decode(_ source: UnsafeRawPointer, scale: Float, into destination: UnsafeMutablePointer<Float>, count: Int,
                       isa: KernelISA? = nil) {
        let table = isa.map(\.table) ?? RowDecode.best
        let fn: srk_decode_fn? = switch self {
        case .f32: table.pointee.decode.0
        case .f16: table.pointee.decode.1
        case .int8: table.pointee.decode.2
        }
        fn!(source, scale, destination, Int64(count))
    }
}

/// The kernel table `RowElementType.decode` uses by default, looked up once.
enum RowDecode {
    nonisolated(unsafe) static let best: UnsafePointer<srk_kernels> = KernelISA.best.table
}
