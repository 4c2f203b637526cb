/// Maps request paths to methods. Built once, then read from every event loop.
public struct Router: Sendable {
    private var methods: [String: RPCMethod] = [:]
    private var services: Set<String> = []
    /// Every registered method path; `paths[m.index] == m.path` for the methods this router returns.
    public private(set) var paths: [String] = []

    public init(services: [any RPCService] = []) {
        for s in services { register(s) }
    }

    public mutating func register(_ service: any RPCService) {
        services.insert(service.serviceName)
        for m in service.methods {
            precondition(m.path.hasPrefix("/\(service.serviceName)/"), "method \(m.path) is not in \(service.serviceName)")
            var registered = m
            if let existing = methods[m.path] {
                registered.index = existing.index  // re-registered: replaces the handler, keeps the slot
            } else {
                registered.index = paths.count
                paths.append(m.path)
            }
            methods[m.path] = registered
        }
    }

    /// The method for `path`.
    /// - Throws: `RPCError(.unimplemented)` naming the unknown service or method.
    public func method(for path: String) throws(RPCError) -> RPCMethod {
        if let m = methods[path] { return m }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 3, parts[0].isEmpty, services.contains(String(parts[1])) {
            throw RPCError(.unimplemented, "unknown method '\(parts[2])' for service '\(parts[1])'")
        }
        if parts.count == 3, parts[0].isEmpty {
            throw RPCError(.unimplemented, "unknown service '\(parts[1])'")
        }
        throw RPCError(.unimplemented, "malformed method path '\(path)'")
    }
}
