import Testing
@testable import RPCCore

@Suite struct StatusTests {
    @Test func codesMatchTheGRPCTable() {
        #expect(RPCStatusCode.allCases.count == 17)
        for c in RPCStatusCode.allCases { #expect(RPCStatusCode(grpcStatusHeader: String(c.rawValue)) == c) }
        #expect(RPCStatusCode.deadlineExceeded.rawValue == 4)
        #expect(RPCStatusCode.resourceExhausted.rawValue == 8)
        #expect(RPCStatusCode.unimplemented.rawValue == 12)
        #expect(RPCStatusCode.unavailable.rawValue == 14)
        #expect(RPCStatusCode.unauthenticated.rawValue == 16)
        #expect(RPCStatusCode.deadlineExceeded.description == "DEADLINE_EXCEEDED")
    }

    @Test(arguments: ["17", "-1", "x", "", "99999999999999999999"])
    func unknownStatusValuesMapToUnknown(v: String) {
        #expect(RPCStatusCode(grpcStatusHeader: v) == .unknown)
    }

    @Test(arguments: [(400, RPCStatusCode.internal), (401, .unauthenticated), (403, .permissionDenied), (404, .unimplemented),
                      (429, .unavailable), (502, .unavailable), (503, .unavailable), (504, .unavailable), (415, .unknown), (500, .unknown)])
    func httpStatusMapping(http: Int, code: RPCStatusCode) {
        #expect(RPCStatusCode(httpStatus: http) == code)
    }
}

@Suite struct PercentEncodingTests {
    @Test(arguments: [
        ("plain text", "plain text"), ("100%", "100%25"), ("é", "%C3%A9"), ("a\nb", "a%0Ab"), ("~", "~"), ("\u{7F}", "%7F"),
    ])
    func encodes(raw: String, wire: String) {
        #expect(PercentEncoding.encode(raw) == wire)
        #expect(PercentEncoding.decode(wire) == raw)
    }

    @Test func decodeIsLenient() {
        #expect(PercentEncoding.decode("50%") == "50%")
        #expect(PercentEncoding.decode("%zz%4") == "%zz%4")
        #expect(PercentEncoding.decode("%41%42") == "AB")
    }
}

@Suite struct MetadataTests {
    @Test func binaryHeadersRoundTripThroughBase64() throws {
        var md = Metadata()
        md.add("x-trace-bin", binary: [0, 1, 2, 0xFE, 0xFF])
        md.add("X-User", "alice")
        let wire = md.wireHeaders
        #expect(wire.map(\.0) == ["x-trace-bin", "x-user"])
        #expect(wire[0].1 == "AAEC/v8")
        var back = Metadata()
        for (n, v) in wire { try back.addWireHeader(name: n, value: v) }
        #expect(back.binary("x-trace-bin") == [0, 1, 2, 0xFE, 0xFF])
        #expect(back.string("x-user") == "alice")
    }

    @Test(arguments: [[UInt8](), [1], [1, 2], [1, 2, 3], Array(0 ... 255)])
    func base64RoundTrip(bytes: [UInt8]) {
        #expect(Base64.decode(Base64.encode(bytes)) == bytes)
        #expect(Base64.decode(Base64.encode(bytes) + String(repeating: "=", count: (4 - Base64.encode(bytes).count % 4) % 4)) == bytes)
    }

    @Test func badBase64IsAnError() {
        var md = Metadata()
        #expect(throws: RPCError.self) { try md.addWireHeader(name: "x-bin", value: "!!!") }
        #expect(Base64.decode("A") == nil)
    }

    @Test func commaSeparatedBinaryValues() throws {
        var md = Metadata()
        try md.addWireHeader(name: "x-bin", value: "AQ, Ag")
        #expect(md.count == 2)
        #expect(md.entries.map(\.value) == [.binary([1]), .binary([2])])
    }

    @Test func reservedHeaders() {
        for n in [":path", "grpc-timeout", "content-type", "te", "user-agent"] { #expect(Metadata.isReserved(n)) }
        #expect(!Metadata.isReserved("x-user"))
    }
}

@Suite struct ServerContextRequestIDTests {
    @Test func generatedIDIsBuiltFromItsParts() {
        let ctx = ServerContext(path: "/a.B/C", metadata: Metadata(), deadline: nil, peer: "p",
                                generatedIDPrefix: "k3x", generatedIDNumber: 17)
        #expect(ctx.requestID == "k3x-17")
    }

    @Test func callersRequestIDWins() {
        var md = Metadata()
        md.add("x-request-id", "from-caller")
        let ctx = ServerContext(path: "/a.B/C", metadata: md, deadline: nil, peer: "p",
                                generatedIDPrefix: "k3x", generatedIDNumber: 17)
        #expect(ctx.requestID == "from-caller")
        #expect(ServerContext(path: "/a.B/C", metadata: md).requestID == "from-caller")
        #expect(ServerContext(path: "/a.B/C", requestID: "given").requestID == "given")
        #expect(ServerContext(path: "/a.B/C").requestID == "")
    }
}
