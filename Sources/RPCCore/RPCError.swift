/// The one error type of the RPC layer: a status code, a human-readable message and optional
/// trailing metadata. Anything a peer can cause is thrown as an `RPCError`; it is mapped to the
/// wire in exactly one place (`ServerStreamStateMachine`).
public struct RPCError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: RPCStatusCode
    public var message: String
    public var metadata: Metadata

    public init(_ code: RPCStatusCode, _ message: String, metadata: Metadata = Metadata()) {
        self.code = code
        self.message = message
        self.metadata = metadata
    }

    public var description: String { message.isEmpty ? "\(code)" : "\(code): \(message)" }

    public static func invalidArgument(_ m: String) -> RPCError { RPCError(.invalidArgument, m) }
    public static func unavailable(_ m: String) -> RPCError { RPCError(.unavailable, m) }
    public static func deadlineExceeded(_ m: String = "deadline exceeded") -> RPCError { RPCError(.deadlineExceeded, m) }
    public static func cancelled(_ m: String = "cancelled") -> RPCError { RPCError(.cancelled, m) }
    public static func resourceExhausted(_ m: String) -> RPCError { RPCError(.resourceExhausted, m) }
    public static func unimplemented(_ m: String) -> RPCError { RPCError(.unimplemented, m) }
    public static func `internal`(_ m: String) -> RPCError { RPCError(.internal, m) }
    public static func notFound(_ m: String) -> RPCError { RPCError(.notFound, m) }
}
