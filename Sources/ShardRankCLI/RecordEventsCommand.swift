import ArgumentParser
import RPCCore
import ShardRankClient
import ShardRankWire

/// `shardrank record-events`: the CLI client of `Recommender/RecordEvents`.
struct RecordEventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record-events",
        abstract: "Tell a coordinator what a user just did: the items join the user's session (excluded and used as the most recent items).",
        discussion: """
        Sessions live in the coordinator's memory: send a user's events and Recommends to the same coordinator \
        (docs/operations.md, "Sessions").
          shardrank record-events --coordinator 127.0.0.1:7000 --user 42 --items 1017,1033 --kind view
        """)

    @Option(help: "Coordinator address HOST:PORT.")
    var coordinator: String

    @Option(help: "User id.")
    var user: UInt64

    @Option(help: "Comma-separated item ids, in the order they happened (oldest first).")
    var items: String

    @Option(help: "Event kind: view, click, purchase, rating or unspecified.")
    var kind: String = "view"

    @Option(help: "When they happened, Unix seconds (0 = when the coordinator receives them).")
    var timestamp: Int64 = 0

    @Option(help: "Deadline in milliseconds.")
    var timeoutMs: Int = 1000

    func run() async throws {
        guard let k = EventKind.allCases.first(where: { $0.description == kind }) else {
            throw ValidationError("--kind: '\(kind)' is not one of \(EventKind.allCases.map(\.description).joined(separator: ", "))")
        }
        let ids: [UInt64] = try items.split(separator: ",").map {
            guard let v = UInt64($0.trimmingCharacters()) else { throw ValidationError("--items: '\($0)' is not an unsigned integer") }
            return v
        }
        let req = RecordEventsRequest(userID: user, events: ids.map { Event(itemID: $0, kind: k, timestampUnixSeconds: timestamp) })
        let timeout = Duration.milliseconds(timeoutMs)
        let r = try await withChannel(ClientOptions.parse(["--target", coordinator, "--timeout-ms", String(timeoutMs)])) { (ch) throws(RPCError) in
            try await RecommenderClient(channel: ch).recordEvents(req, timeout: timeout)
        }
        print("user \(user): \(r.accepted) events accepted; the coordinator holds \(r.sessionEvents) for the user")
    }
}
