public import RPCCore
import Synchronization

/// Pins methods to a peer role: a call of one of `paths` runs only when the peer's certificate
/// carries `spiffe://shardrank/<role>` (mutual TLS); other methods run for any peer the TLS
/// layer let in. A shard pins its data methods to the coordinator role.
public struct RoleAuthorizer: CallAuthorizer {
    public let role: String
    public let paths: Set<String>

    public init(role: String, paths: Set<String>) {
        self.role = role
        self.paths = paths
    }

    public func authorize(path: String, metadata: Metadata, peer: PeerIdentity) -> RPCError? {
        // The usual caller has the role: one comparison of a short string, no hashing.
        if peer.hasRole(role) || !paths.contains(path) { return nil }
        let who = peer.roles.isEmpty ? (peer.uris.isEmpty ? "a peer without a role certificate" : "a peer with SANs \(peer.uris)")
                                     : "a peer with role \(peer.roles.joined(separator: ","))"
        return RPCError(.permissionDenied, "\(path) is only served to the \(role) role (\(PeerRole.uriPrefix)\(role)); \(who) called")
    }
}

/// One token file's contents: each token and the scopes it grants.
public struct TokenTable: Sendable {
    public let scopes: [String: Set<String>]
    /// The same, as bytes for the per-call check: a scan comparing bytes, no String made per call
    /// (a token file holds a handful of tokens).
    let entries: [(token: [UInt8], scopes: Set<String>)]

    /// The scopes `token` grants, or nil for an unknown token.
    func scopes<C: Collection>(ofUTF8 token: C) -> Set<String>? where C.Element == UInt8 {
        for e in entries where e.token.count == token.count && e.token.elementsEqual(token) { return e.scopes }
        return nil
    }

    /// Parses `TOKEN SCOPE[,SCOPE...]` lines (blank lines and `#` comments skipped).
    /// - Parameter known: the scope names that exist (`*` grants every scope).
    /// - Throws: `TLSSetupError` naming the file and line of a malformed entry.
    public init(text: String, path: String, known: Set<String>) throws {
        var table: [String: Set<String>] = [:]
        var lineNumber = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            guard fields.count == 2 else {
                throw TLSSetupError("\(path):\(lineNumber): expected 'TOKEN SCOPE[,SCOPE]' (got \(fields.count) field\(fields.count == 1 ? "" : "s"))")
            }
            let token = String(fields[0])
            guard token.utf8.count >= 16 else {
                throw TLSSetupError("\(path):\(lineNumber): a token must be at least 16 characters")
            }
            var granted = Set<String>()
            for scope in fields[1].split(separator: ",") {
                let s = String(scope)
                guard s == "*" || known.contains(s) else {
                    throw TLSSetupError("\(path):\(lineNumber): unknown scope '\(s)' (scopes: \(known.sorted().joined(separator: ", ")), *)")
                }
                granted.insert(s)
            }
            guard !granted.isEmpty else { throw TLSSetupError("\(path):\(lineNumber): no scope given") }
            guard table[token] == nil else { throw TLSSetupError("\(path):\(lineNumber): the token is listed twice") }
            table[token] = granted
        }
        self.scopes = table
        self.entries = table.map { (Array($0.key.utf8), $0.value) }
    }
}

/// Bearer tokens (`authorization: Bearer TOKEN` metadata) checked against a token file, per
/// method scope: no or an unknown token → UNAUTHENTICATED; a known token without the method's
/// scope → PERMISSION_DENIED. Methods without a scope (health) need no token. `reload()` reads
/// the file again (SIGHUP); a bad file keeps the old tokens.
public final class TokenAuthorizer: CallAuthorizer {
    public let path: String
    /// Method path → the scope it needs.
    public let scopeOfPath: [String: String]
    private let table: Mutex<TokenTable>
    private let readFile: @Sendable (String) throws -> String

    /// - Parameters:
    ///   - scopeOfPath: the scope each protected method needs; paths not in it are open.
    ///   - readFile: reads the token file (the caller's file I/O).
    public init(path: String, scopeOfPath: [String: String], readFile: @escaping @Sendable (String) throws -> String) throws {
        self.path = path
        self.scopeOfPath = scopeOfPath
        self.readFile = readFile
        self.table = Mutex(try Self.load(path, known: Set(scopeOfPath.values), readFile: readFile))
    }

    /// The number of tokens now accepted.
    public var tokenCount: Int { table.withLock { $0.scopes.count } }

    public func reload() throws {
        let fresh = try Self.load(path, known: Set(scopeOfPath.values), readFile: readFile)
        table.withLock { $0 = fresh }
    }

    static func load(_ path: String, known: Set<String>, readFile: (String) throws -> String) throws -> TokenTable {
        let text: String
        do { text = try readFile(path) } catch { throw TLSSetupError("cannot read the token file \(path): \(error)") }
        return try TokenTable(text: text, path: path, known: known)
    }

    private static let bearer: [UInt8] = Array("bearer ".utf8)

    public func authorize(path: String, metadata: Metadata, peer: PeerIdentity) -> RPCError? {
        guard let scope = scopeOfPath[path] else { return nil }
        guard let header = metadata.string("authorization") else {
            return RPCError(.unauthenticated, "\(path) needs a bearer token: send 'authorization: Bearer TOKEN' metadata")
        }
        // "Bearer " in any case, then the token (surrounding spaces ignored); no allocation.
        var token = header.utf8[...]
        let prefix = Self.bearer
        guard token.count > prefix.count, zip(token.prefix(prefix.count), prefix).allSatisfy({ $0 | 0x20 == $1 }) else {
            return RPCError(.unauthenticated, "the authorization metadata must be 'Bearer TOKEN'")
        }
        token = token.dropFirst(prefix.count)
        while token.first == UInt8(ascii: " ") { token = token.dropFirst() }
        while token.last == UInt8(ascii: " ") { token = token.dropLast() }
        guard let granted = table.withLock({ $0.scopes(ofUTF8: token) }) else {
            return RPCError(.unauthenticated, "unknown bearer token")
        }
        if granted.contains("*") || granted.contains(scope) { return nil }
        return RPCError(.permissionDenied, "the token lacks scope '\(scope)' for \(path) (it has \(granted.sorted().joined(separator: ",")))")
    }
}
