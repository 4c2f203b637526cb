/// The one error type of the tables layer: loading, verifying, building and reading inputs.
///
/// `description` is the message a user sees; it always names the file, and for input errors the
/// 1-based line (CSV) or row (`.npy`) where the problem is.
public struct TableError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// A system call failed (open, mmap, write, rename, ...).
        case io
        /// A table file or manifest is structurally invalid, truncated or fails a checksum.
        case corrupt
        /// A valid file that does not fit what was asked (shard count, dims, kinds, version).
        case mismatch
        /// Nothing to load (no complete version under the root, missing table).
        case notFound
        /// Bad builder input (shapes, duplicate ids, NaN/Inf, unknown columns, malformed rows).
        case invalidInput
    }

    public var code: Code
    /// The file concerned, if any.
    public var path: String?
    /// 1-based line (CSV/JSONL) or row (`.npy`) number, if any.
    public var line: Int?
    public var message: String

    public init(_ code: Code, _ message: String, path: String? = nil, line: Int? = nil) {
        self.code = code
        self.message = message
        self.path = path
        self.line = line
    }

    public var description: String {
        switch (path, line) {
        case let (p?, l?): return "\(p):\(l): \(message)"
        case let (p?, nil): return "\(p): \(message)"
        default: return message
        }
    }

    static func corrupt(_ path: String, _ message: String) -> TableError {
        TableError(.corrupt, message, path: path)
    }

    static func input(_ path: String, line: Int? = nil, _ message: String) -> TableError {
        TableError(.invalidInput, message, path: path, line: line)
    }
}
