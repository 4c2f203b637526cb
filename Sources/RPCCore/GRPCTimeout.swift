/// The `grpc-timeout` header: `TimeoutValue TimeoutUnit`, at most 8 ASCII digits followed by one of
/// `H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds
/// (PROTOCOL-HTTP2).
public struct GRPCTimeout: Sendable, Hashable, CustomStringConvertible {
    /// The timeout in nanoseconds (saturating: 99999999H does not overflow).
    public let nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = max(0, nanoseconds) }

    /// Parses a header value.
    /// - Throws: `RPCError(.invalidArgument)` naming the value when it is malformed (empty, more
    ///   than 8 digits, a sign, a bad unit).
    public init(parsing value: String) throws(RPCError) {
        let bytes = Array(value.utf8)
        guard bytes.count >= 2, bytes.count <= 9 else {
            throw RPCError(.invalidArgument, "malformed grpc-timeout '\(value)': expected 1-8 digits and a unit")
        }
        var n: Int64 = 0
        for d in bytes.dropLast() {
            guard d >= UInt8(ascii: "0") && d <= UInt8(ascii: "9") else {
                throw RPCError(.invalidArgument, "malformed grpc-timeout '\(value)': non-digit in value")
            }
            n = n * 10 + Int64(d - UInt8(ascii: "0"))
        }
        let perUnit: Int64
        switch bytes.last! {
        case UInt8(ascii: "H"): perUnit = 3_600_000_000_000
        case UInt8(ascii: "M"): perUnit = 60_000_000_000
        case UInt8(ascii: "S"): perUnit = 1_000_000_000
        case UInt8(ascii: "m"): perUnit = 1_000_000
        case UInt8(ascii: "u"): perUnit = 1_000
        case UInt8(ascii: "n"): perUnit = 1
        default:
            throw RPCError(.invalidArgument, "malformed grpc-timeout '\(value)': unknown unit")
        }
        let (product, overflow) = n.multipliedReportingOverflow(by: perUnit)
        nanoseconds = overflow ? Int64.max : product
    }

    /// The shortest header value (at most 8 digits) that does not shorten the timeout by more than
    /// the unit's rounding: the finest unit whose value fits in 8 digits, rounded up.
    public var headerValue: String {
        let units: [(Int64, Character)] = [(1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"),
                                           (60_000_000_000, "M"), (3_600_000_000_000, "H")]
        for (per, unit) in units {
            let v = (nanoseconds + per - 1) / per
            if v <= 99_999_999 { return "\(v)\(unit)" }
        }
        return "99999999H"
    }

    public var description: String { headerValue }
}
