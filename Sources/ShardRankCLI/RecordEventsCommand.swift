import ArgumentParser
import Coordinator
import Foundation
import RPCCore
import ShardRankClient
import ShardRankWire

/// `shardrank record-events`: the CLI client of `Recommender/RecordEvents` (one user's events
/// from the flags) and `RecordEventsBatch` (an events file, batched per coordinator).
struct RecordEventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record-events",
        abstract: "Tell coordinators what users just did: the items join each user's session (excluded and used as the most recent items).",
        discussion: """
        Sessions live in the coordinator's memory: a user's events and Recommends must reach the same coordinator. \
        With several coordinators (comma-separated), each user is routed over them with the coordinator ring \
        (docs/operations.md, "The coordinator ring").
          shardrank record-events --target 127.0.0.1:7000 --user 42 --item-ids 1017,1033 --kind view
          shardrank record-events --target 127.0.0.1:7000,127.0.0.1:7001 --file events.csv
        An events file is CSV with a header naming user_id and item_id, optionally timestamp (Unix seconds; \
        0 or absent = when the coordinator receives it) and kind (view, click, purchase, rating, unspecified \
        or 0...4); other columns (e.g. rating) are ignored, so an interactions.csv replays as is. Rows apply \
        in file order; consecutive rows of one user form one entry, and entries go out in RecordEventsBatch \
        calls of at most --batch users (and 10,000 events). The whole file is checked before anything is \
        sent: a bad row exits 2 naming the file and line.
        """)

    @Option(help: "Coordinator address HOST:PORT, or several separated by commas (users are routed over them).")
    var target: String

    @Option(help: "User id (with --item-ids).")
    var user: UInt64?

    @Option(name: .customLong("item-ids"), help: "Comma-separated item ids, in the order they happened (oldest first).")
    var items: String?

    @Option(help: "Event kind for --item-ids: view, click, purchase, rating or unspecified.")
    var kind: String = "view"

    @Option(help: "When the --item-ids events happened, Unix seconds (0 = when the coordinator receives them).")
    var timestamp: Int64 = 0

    @Option(help: "Send the events of this CSV file instead (user_id,item_id[,timestamp][,kind]).")
    var file: String?

    @Option(help: "--file: most users (entries) per RecordEventsBatch call, 1...1000.")
    var batch: Int = 500

    @Option(help: timeoutHelp)
    var timeoutMs: Int = clientTimeoutMs

    @OptionGroup var security: ClientSecurityOptions

    func validate() throws {
        if file != nil {
            guard user == nil, items == nil else { throw ValidationError("give either --user with --item-ids, or --file, not both") }
        } else {
            guard user != nil, items != nil else { throw ValidationError("give --user with --item-ids (or --file)") }
        }
        guard (1...Recommender.maxBatchUsers).contains(batch) else { throw ValidationError("--batch must be 1...\(Recommender.maxBatchUsers) (got \(batch))") }
        guard timeoutMs >= 1 else { throw ValidationError("--timeout-ms must be ≥ 1") }
        guard !addresses.isEmpty, addresses.allSatisfy({ $0.contains(":") }) else {
            throw ValidationError("--target '\(target)' is not HOST:PORT[,HOST:PORT...]")
        }
    }

    var addresses: [String] { target.split(separator: ",").map { String($0.filter { $0 != " " }) }.filter { !$0.isEmpty } }

    func run() async throws {
        let ring = CoordinatorRing(addresses)
        let timeout = Duration.milliseconds(timeoutMs)
        if let file {
            let entries: [RecordEventsRequest]
            do { entries = try EventsFile.read(path: file) } catch {
                FileHandleStderr.write("shardrank record-events: \(error)\n")
                throw ExitCode(2)
            }
            var perCoordinator = [[RecordEventsRequest]](repeating: [], count: addresses.count)
            for e in entries { perCoordinator[ring.index(of: e.userID)].append(e) }
            var calls = 0, events = 0
            for (i, address) in addresses.enumerated() where !perCoordinator[i].isEmpty {
                let batches = EventsFile.batches(perCoordinator[i], maxUsers: batch, maxEvents: Recommender.maxBatchEvents)
                let (n, c) = try await withChannel(clientOptions(target: address, timeoutMs: timeoutMs, security: security)) { (ch) throws(RPCError) in
                    var accepted = 0
                    for b in batches {
                        accepted += Int(try await RecommenderClient(channel: ch).recordEventsBatch(b, timeout: timeout).accepted)
                    }
                    return (accepted, batches.count)
                }
                events += n; calls += c
            }
            let users = Set(entries.map(\.userID)).count
            print("\(events) events of \(users) users recorded in \(calls) calls to \(perCoordinator.filter { !$0.isEmpty }.count) coordinator(s)")
            return
        }
        guard let k = EventKind.allCases.first(where: { $0.description == kind }) else {
            throw ValidationError("--kind: '\(kind)' is not one of \(EventKind.allCases.map(\.description).joined(separator: ", "))")
        }
        let ids: [UInt64] = try items!.split(separator: ",").map {
            guard let v = UInt64($0.trimmingCharacters()) else { throw ValidationError("--item-ids: '\($0)' is not an unsigned integer") }
            return v
        }
        let user = user!
        let req = RecordEventsRequest(userID: user, events: ids.map { Event(itemID: $0, kind: k, timestampUnixSeconds: timestamp) })
        let r = try await withChannel(clientOptions(target: ring.coordinator(of: user), timeoutMs: timeoutMs, security: security)) { (ch) throws(RPCError) in
            try await RecommenderClient(channel: ch).recordEvents(req, timeout: timeout)
        }
        print("user \(user): \(r.accepted) events accepted; the coordinator holds \(r.sessionEvents) for the user")
    }
}

/// An events file for `record-events --file`: parsed and checked whole before anything is sent.
enum EventsFile {
    struct Failure: Error, CustomStringConvertible { let description: String }

    /// The file's rows as RecordEvents entries, in file order: consecutive rows of one user form
    /// one entry (of at most `Recommender.maxEventsPerCall` events). Throws naming the file and
    /// the 1-based line of the first bad row.
    static func read(path: String) throws(Failure) -> [RecordEventsRequest] {
        guard let data = FileManager.default.contents(atPath: path) else { throw Failure(description: "\(path): cannot read") }
        var header: [String] = [], cu = 0, ci = 0, ct: Int?, ck: Int?
        var out: [RecordEventsRequest] = []
        var line = 0
        for raw in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            line += 1
            let f = raw.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
                .map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
            if f.count == 1 && f[0].isEmpty { continue }
            func fail(_ m: String) -> Failure { Failure(description: "\(path):\(line): \(m)") }
            if header.isEmpty {
                header = f
                guard let u = f.firstIndex(of: "user_id"), let i = f.firstIndex(of: "item_id") else {
                    throw fail("the header must name user_id and item_id (optionally timestamp, kind), got \(f.joined(separator: ","))")
                }
                (cu, ci, ct, ck) = (u, i, f.firstIndex(of: "timestamp"), f.firstIndex(of: "kind"))
                continue
            }
            guard f.count == header.count else { throw fail("expected \(header.count) fields like the header, got \(f.count)") }
            guard let u = UInt64(f[cu]), u != 0 else { throw fail("user_id '\(f[cu])' is not a user id (an integer ≥ 1)") }
            guard let i = UInt64(f[ci]), i != 0 else { throw fail("item_id '\(f[ci])' is not an item id (an integer ≥ 1)") }
            var t: Int64 = 0
            if let ct, !f[ct].isEmpty {
                guard let v = Int64(f[ct]), v >= 0, v <= SessionStore.maxTimestamp else {
                    throw fail("timestamp '\(f[ct])' is not Unix seconds in 0...\(SessionStore.maxTimestamp) (0 = now)")
                }
                t = v
            }
            var kind = EventKind.view
            if let ck, !f[ck].isEmpty {
                if let k = EventKind.allCases.first(where: { $0.description == f[ck] }) { kind = k } else if let n = UInt32(f[ck]), let k = EventKind(rawValue: n) {
                    kind = k
                } else {
                    throw fail("kind '\(f[ck])' is not one of \(EventKind.allCases.map(\.description).joined(separator: ", ")) or 0...4")
                }
            }
            let e = Event(itemID: i, kind: kind, timestampUnixSeconds: t)
            if let last = out.last, last.userID == u, last.events.count < Recommender.maxEventsPerCall {
                out[out.count - 1].events.append(e)
            } else {
                out.append(RecordEventsRequest(userID: u, events: [e]))
            }
        }
        if header.isEmpty { throw Failure(description: "\(path): empty file: expected a header naming user_id,item_id") }
        return out
    }

    /// `entries` cut, in order, into batches of at most `maxUsers` entries and `maxEvents` events.
    static func batches(_ entries: [RecordEventsRequest], maxUsers: Int, maxEvents: Int) -> [RecordEventsBatchRequest] {
        var out: [RecordEventsBatchRequest] = []
        var cur: [RecordEventsRequest] = [], events = 0
        for e in entries {
            if !cur.isEmpty && (cur.count == maxUsers || events + e.events.count > maxEvents) {
                out.append(RecordEventsBatchRequest(users: cur)); cur = []; events = 0
            }
            cur.append(e); events += e.events.count
        }
        if !cur.isEmpty { out.append(RecordEventsBatchRequest(users: cur)) }
        return out
    }
}
