/// Which coordinator serves a user, when a topology has several: rendezvous (highest random
/// weight) hashing of the user id over the coordinators' addresses.
///
/// A coordinator keeps the sessions it is sent (`RecordEvents`) in its own memory, so a user's
/// events and that user's `Recommend`s must reach the same coordinator; clients that spread
/// users over several coordinators route each user with this ring. For user `u` every
/// coordinator `c` gets the score `mix64(fnv1a64(address_c) ^ mix64(u))` and the highest wins
/// (ties: the earlier address). Removing a coordinator moves only the users it served; adding
/// one takes about 1/n of the users from the others; the order of the list does not matter.
/// `mix64` is the splitmix64 finalizer, `fnv1a64` the 64-bit FNV-1a hash of the address's UTF-8
/// bytes (docs/operations.md spells both out for other languages).
public struct CoordinatorRing: Sendable, Equatable {
    /// The coordinators' `host:port`, as given.
    public let addresses: [String]
    /// `fnv1a64` of each address.
    let seeds: [UInt64]

    /// - Precondition: `addresses` is not empty.
    public init(_ addresses: [String]) {
        precondition(!addresses.isEmpty, "CoordinatorRing needs at least one coordinator")
        self.addresses = addresses
        seeds = addresses.map { Self.fnv1a64($0) }
    }

    /// The index into `addresses` of the coordinator that serves `user`.
    public func index(of user: UInt64) -> Int {
        if seeds.count == 1 { return 0 }
        let u = Self.mix64(user)
        var best = 0
        var bestScore = Self.mix64(seeds[0] ^ u)
        for i in 1 ..< seeds.count {
            let s = Self.mix64(seeds[i] ^ u)
            if s > bestScore { best = i; bestScore = s }
        }
        return best
    }

    /// The address of the coordinator that serves `user`.
    public func coordinator(of user: UInt64) -> String { addresses[index(of: user)] }

    /// The splitmix64 finalizer.
    @inline(__always)
    public static func mix64(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 64-bit FNV-1a of the UTF-8 bytes of `s`.
    public static func fnv1a64(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        return h
    }
}
