#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// The one error type of the synth layer.
public struct SynthError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable { case invalidArgument, io }
    public var code: Code
    public var message: String

    public var description: String { message }

    static func invalidArgument(_ m: String) -> SynthError { SynthError(code: .invalidArgument, message: m) }

    static func io(_ path: String, _ what: String, _ err: Int32) -> SynthError {
        SynthError(code: .io, message: "\(path): \(what): \(String(cString: strerror(err))) (errno \(err))")
    }
}
