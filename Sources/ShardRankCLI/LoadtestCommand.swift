import ArgumentParser

/// `shardrank loadtest` (being built).
struct LoadtestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "loadtest", abstract: "(not available yet in this build)")

    func run() throws {
        throw ValidationError("'shardrank loadtest' is not available yet in this build")
    }
}
