import Testing
@testable import RPCCore

@Suite struct GRPCTimeoutTests {
    @Test(arguments: [
        ("1n", Int64(1)), ("10m", 10_000_000), ("1S", 1_000_000_000), ("2M", 120_000_000_000),
        ("1H", 3_600_000_000_000), ("250u", 250_000), ("99999999n", 99_999_999), ("0m", 0),
        ("00000001S", 1_000_000_000),
    ])
    func parsesValid(value: String, nanos: Int64) throws {
        #expect(try GRPCTimeout(parsing: value).nanoseconds == nanos)
    }

    @Test func hugeValueSaturates() throws {
        // 99999999 hours overflows Int64 nanoseconds: it saturates instead of wrapping.
        #expect(try GRPCTimeout(parsing: "99999999H").nanoseconds == Int64.max)
    }

    @Test(arguments: ["", "S", "1", "123456789S", "-1S", "+1S", "abc", "1s", "1.5S", " 1S", "1S ", "10x", "１S"])
    func rejectsMalformed(value: String) {
        #expect(throws: RPCError.self) { try GRPCTimeout(parsing: value) }
        do { _ = try GRPCTimeout(parsing: value) } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("grpc-timeout"))
        }
    }

    @Test(arguments: [Int64(0), 1, 999, 1_000, 123_456_789, 99_999_999, 100_000_000, 5_000_000_000, 86_400_000_000_000, Int64.max / 2])
    func encodeRoundTripsWithoutShortening(nanos: Int64) throws {
        let t = GRPCTimeout(nanoseconds: nanos)
        let v = t.headerValue
        #expect(v.utf8.count <= 9)
        let back = try GRPCTimeout(parsing: v).nanoseconds
        #expect(back >= nanos)
    }

    @Test func encodingPicksFinestUnit() {
        #expect(GRPCTimeout(nanoseconds: 500).headerValue == "500n")
        // 150000000n has 9 digits, one too many: the next unit up.
        #expect(GRPCTimeout(nanoseconds: 150_000_000).headerValue == "150000u")
        #expect(GRPCTimeout(nanoseconds: 99_999_999).headerValue == "99999999n")
        #expect(GRPCTimeout(nanoseconds: 2_000_000_000_000).headerValue == "2000000m")
    }
}
