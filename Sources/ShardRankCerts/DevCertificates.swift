import Crypto
import SwiftASN1
public import X509
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A development PKI for `shardrank certs` (docs/operations.md "Security"): one CA and leaf
/// certificates whose role is a URI SAN `spiffe://shardrank/<role>`, valid for 127.0.0.1, ::1 and
/// localhost (and any extra host names), ECDSA P-256. For tests and local clusters: a production
/// deployment brings certificates from its own CA with the same SAN convention.
public struct DevCertificateAuthority {
    public static let rolePrefix = "spiffe://shardrank/"

    let key: P256.Signing.PrivateKey
    public let certificate: Certificate
    public let name: DistinguishedName

    /// A new CA valid from now (less a minute for clock skew) for `days`.
    public init(commonName: String = "ShardRank development CA", days: Int) throws {
        key = P256.Signing.PrivateKey()
        let issuerKey = Certificate.PrivateKey(key)
        name = try DistinguishedName {
            OrganizationName("ShardRank")
            CommonName(commonName)
        }
        let now = Date()
        certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: issuerKey.publicKey,
            notValidBefore: now - 60, notValidAfter: now + Double(days) * 86_400,
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: issuerKey)
    }

    /// A leaf certificate for `role` (both TLS server and client use), signed by this CA.
    /// - Parameters:
    ///   - hosts: DNS names and IP addresses (v4 dotted or v6 `::1`) it is valid for.
    /// - Returns: the certificate and its private key, both PEM.
    public func issue(role: String, commonName: String, hosts: [String], days: Int) throws -> (certificatePEM: String, keyPEM: String) {
        let leafKey = P256.Signing.PrivateKey()
        var names: [GeneralName] = [.uniformResourceIdentifier(Self.rolePrefix + role)]
        for h in hosts {
            if let ip = Self.ipBytes(h) { names.append(.ipAddress(ASN1OctetString(contentBytes: ip[...]))) } else { names.append(.dnsName(h)) }
        }
        let now = Date()
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(leafKey.publicKey),
            notValidBefore: now - 60, notValidAfter: now + Double(days) * 86_400,
            issuer: name,
            subject: try DistinguishedName {
                OrganizationName("ShardRank")
                CommonName(commonName)
            },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        return (try cert.serializeAsPEM().pemString + "\n", leafKey.pemRepresentation + "\n")
    }

    public var certificatePEM: String { get throws { try certificate.serializeAsPEM().pemString + "\n" } }
    public var keyPEM: String { key.pemRepresentation + "\n" }

    /// The bytes of an IPv4 (a.b.c.d) or IPv6 address, or nil for a host name.
    static func ipBytes(_ s: String) -> [UInt8]? {
        let v4 = s.split(separator: ".", omittingEmptySubsequences: false)
        if v4.count == 4, v4.allSatisfy({ UInt8($0) != nil }) { return v4.map { UInt8($0)! } }
        guard s.contains(":") else { return nil }
        // IPv6: groups of hex digits, at most one "::".
        var halves: [String] = [""]
        var chars = Array(s)[...]
        while let c = chars.first {
            if c == ":", chars.dropFirst().first == ":" { halves.append(""); chars = chars.dropFirst(2) } else { halves[halves.count - 1].append(c); chars = chars.dropFirst() }
        }
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            for g in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard let v = UInt16(g, radix: 16), g.count <= 4 else { return nil }
                out.append(v)
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        var all = head
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count < 8 else { return nil }
            all += [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard all.count == 8 else { return nil }
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }
}
