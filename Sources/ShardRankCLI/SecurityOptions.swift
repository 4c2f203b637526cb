import ArgumentParser
import Logging
import RPCCore
import RPCTransport
import ShardRankCerts
#if canImport(Glibc)
import Glibc
#endif

/// TLS options of a server (`shard`, `coordinator`); docs/operations.md "Security".
struct ServerTLSOptions: ParsableArguments {
    @Option(name: .customLong("tls-cert"), help: "Serve TLS (ALPN h2) with this certificate chain (PEM); reloaded on SIGHUP.")
    var certificate: String?

    @Option(name: .customLong("tls-key"), help: "The private key of --tls-cert (PEM).")
    var key: String?

    @Option(name: .customLong("tls-ca"), help: "CA certificates (PEM) for the peers: a shard then requires client certificates (mutual TLS); a coordinator verifies its shards with them.")
    var ca: String?

    @Flag(name: .customLong("insecure-plaintext"), help: "Allow cleartext h2c on a non-loopback address (without TLS, only loopback addresses are allowed).")
    var insecurePlaintext = false

    var files: TLSFiles { TLSFiles(certificate: certificate, key: key, ca: ca) }
    var enabled: Bool { certificate != nil }

    func validate() throws {
        if certificate != nil && key == nil { throw ValidationError("--tls-cert needs --tls-key") }
        if key != nil && certificate == nil { throw ValidationError("--tls-key needs --tls-cert") }
        if ca != nil && certificate == nil { throw ValidationError("--tls-ca needs --tls-cert and --tls-key (a TLS server)") }
    }

    /// The server's TLS source, or nil for cleartext; exits 2 with a message naming the problem
    /// (an unreadable file; cleartext on a non-loopback address without --insecure-plaintext).
    func serverSource(host: String, requireClientCertificate: Bool, logger: Logger) throws -> TLSContextSource? {
        guard enabled else {
            if !isLoopbackListenAddress(host) && !insecurePlaintext {
                logger.error("refusing to serve cleartext on \(host), which is not a loopback address: give --tls-cert/--tls-key (docs/operations.md, Security), or --insecure-plaintext on a network you trust")
                throw ExitCode(2)
            }
            return nil
        }
        do { return try TLSContextSource(files: files, side: .server, requireClientCertificate: requireClientCertificate) } catch {
            logger.error("\(error)")
            throw ExitCode(2)
        }
    }
}

/// TLS and token options of a client command.
struct ClientSecurityOptions: ParsableArguments {
    @Flag(name: .customLong("tls"), help: "Connect with TLS, trusting the system's CA certificates (implied by --tls-ca/--tls-cert).")
    var tls = false

    @Option(name: .customLong("tls-ca"), help: "Connect with TLS and trust these CA certificates (PEM) for the server.")
    var ca: String?

    @Option(name: .customLong("tls-cert"), help: "Present this client certificate (PEM) for mutual TLS (a shard with --tls-ca requires one).")
    var certificate: String?

    @Option(name: .customLong("tls-key"), help: "The private key of --tls-cert (PEM).")
    var key: String?

    @Option(name: .customLong("tls-server-name"), help: "The name the server's certificate must carry (default: the target's host).")
    var serverName: String?

    @Option(name: .customLong("token"), help: "Send this bearer token as 'authorization: Bearer TOKEN' (visible in the process list: prefer --token-file or $SHARDRANK_TOKEN).")
    var tokenValue: String?

    @Option(name: .customLong("token-file"), help: "Send the bearer token in this file (its first line) as 'authorization: Bearer TOKEN' (default: $SHARDRANK_TOKEN when set).")
    var tokenFile: String?

    func validate() throws {
        if certificate != nil && key == nil { throw ValidationError("--tls-cert needs --tls-key") }
        if key != nil && certificate == nil { throw ValidationError("--tls-key needs --tls-cert") }
        if tokenValue != nil && tokenFile != nil { throw ValidationError("--token and --token-file are exclusive") }
    }

    var enabled: Bool { tls || ca != nil || certificate != nil }

    /// The client's TLS source, or nil for cleartext.
    func clientSource() throws -> TLSContextSource? {
        guard enabled else { return nil }
        do { return try TLSContextSource(files: TLSFiles(certificate: certificate, key: key, ca: ca), side: .client) } catch {
            throw ValidationError("\(error)")
        }
    }

    /// The token to send: --token, else the first line of --token-file, else $SHARDRANK_TOKEN, else nil.
    func token() throws -> String? {
        if let tokenValue {
            guard !tokenValue.isEmpty, !tokenValue.contains(" ") else { throw ValidationError("--token must be one word (got '\(tokenValue)')") }
            return tokenValue
        }
        if let tokenFile {
            let text: String
            do { text = try readTextFile(tokenFile) } catch { throw ValidationError("--token-file: cannot read \(tokenFile): \(error)") }
            let first = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).first.map { String($0) } ?? ""
            let token = first.split(separator: " ").first.map(String.init) ?? ""
            guard !token.isEmpty else { throw ValidationError("--token-file: \(tokenFile) is empty (expected the token on its first line)") }
            return token
        }
        if let env = getenv("SHARDRANK_TOKEN"), let s = String(validatingCString: env), !s.isEmpty { return s }
        return nil
    }

    /// Applies these options to a client configuration.
    func apply(to config: inout ClientConfiguration) throws {
        config.tls = try clientSource()
        config.tlsServerName = serverName
    }

    /// `metadata` with the bearer token added (when there is one).
    func metadata(_ base: Metadata = Metadata()) throws -> Metadata {
        var m = base
        if let t = try token() { m.add("authorization", "Bearer \(t)") }
        return m
    }
}

struct FileReadError: Error, CustomStringConvertible {
    let description: String
}

/// A whole (small) text file.
func readTextFile(_ path: String) throws -> String {
    guard let f = fopen(path, "r") else { throw FileReadError(description: String(cString: strerror(errno))) }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n > 0 { bytes.append(contentsOf: chunk[0 ..< n]) }
        if n < chunk.count { break }
        if bytes.count > 16 << 20 { throw FileReadError(description: "larger than 16 MiB") }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Writes `text` to `path` with `mode` (0600 for keys), replacing the file.
func writeTextFile(_ path: String, _ text: String, mode: mode_t) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
    guard fd >= 0 else { throw FileReadError(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    fchmod(fd, mode)
    var bytes = Array(text.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
        guard n > 0 else { throw FileReadError(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
        off += n
    }
}

/// `shardrank certs --out DIR`: a development CA and role certificates (docs/operations.md).
struct CertsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "Write a development CA and TLS certificates for a coordinator, shards and a client.",
        discussion: """
        Writes ca.pem, ca-key.pem and, for each role, ROLE.pem + ROLE-key.pem: coordinator, shard, \
        client. Each leaf carries the URI SAN spiffe://shardrank/ROLE and is valid for 127.0.0.1, ::1, \
        localhost and every --san. Keys are ECDSA P-256, written mode 0600. For tests and local \
        clusters; see docs/operations.md (Security).
        """)

    @Option(help: "Output directory (created if missing; existing files of the same names are replaced).")
    var out: String

    @Option(help: "Another DNS name or IP address every leaf certificate is valid for (repeatable).")
    var san: [String] = []

    @Option(help: "Days the certificates are valid.")
    var days: Int = 365

    func validate() throws {
        guard days >= 1 && days <= 3650 else { throw ValidationError("--days must be 1...3650 (got \(days))") }
        for h in san where h.isEmpty || h.contains(" ") || h.contains(",") || h.contains("/") {
            throw ValidationError("--san '\(h)' is not a host name or address")
        }
    }

    func run() throws {
        if mkdir(out, 0o755) != 0 && errno != EEXIST {
            CommandLineScheme.writeStderr("shardrank certs: cannot create \(out): \(String(cString: strerror(errno)))")
            throw ExitCode(2)
        }
        do {
            let ca = try DevCertificateAuthority(days: days)
            try writeTextFile("\(out)/ca.pem", try ca.certificatePEM, mode: 0o644)
            try writeTextFile("\(out)/ca-key.pem", ca.keyPEM, mode: 0o600)
            let hosts = ["127.0.0.1", "::1", "localhost"] + san
            for role in [PeerRole.coordinator, PeerRole.shard, PeerRole.client] {
                let (cert, key) = try ca.issue(role: role, commonName: "shardrank \(role)", hosts: hosts, days: days)
                try writeTextFile("\(out)/\(role).pem", cert, mode: 0o644)
                try writeTextFile("\(out)/\(role)-key.pem", key, mode: 0o600)
            }
        } catch {
            CommandLineScheme.writeStderr("shardrank certs: \(error)")
            throw ExitCode(2)
        }
        print(out)
    }
}
