import Testing
@testable import RPCCore

/// The router's method slots: the transport keeps per-method state (metrics observers) in an
/// array indexed by `RPCMethod.index`, so `paths[m.index]` must name the method the router returns.
@Suite struct RouterTests {
    struct Service: RPCService {
        let serviceName: String
        let names: [String]
        var methods: [RPCMethod] {
            names.map { RPCMethod(service: serviceName, method: $0, placement: .inline, handler: .unary { b, _ in FramedMessage(payload: b) }) }
        }
    }

    @Test func everyMethodHasTheSlotOfItsPath() throws {
        let router = Router(services: [Service(serviceName: "a.A", names: ["X", "Y"]), Service(serviceName: "b.B", names: ["Z"])])
        #expect(router.paths == ["/a.A/X", "/a.A/Y", "/b.B/Z"])
        for (i, path) in router.paths.enumerated() {
            #expect(try router.method(for: path).index == i)
        }
    }

    @Test func reRegisteringKeepsTheSlotAndReplacesTheMethod() throws {
        var router = Router(services: [Service(serviceName: "a.A", names: ["X", "Y"])])
        router.register(Service(serviceName: "a.A", names: ["Y", "W"]))
        #expect(router.paths == ["/a.A/X", "/a.A/Y", "/a.A/W"])
        #expect(try router.method(for: "/a.A/Y").index == 1)
        #expect(try router.method(for: "/a.A/W").index == 2)
        #expect(RPCMethod(service: "a.A", method: "X", placement: .inline, handler: .unary { b, _ in FramedMessage(payload: b) }).index == -1)
    }
}
