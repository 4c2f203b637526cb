import ArgumentParser

/// `shardrank recommend` (being built).
struct RecommendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "recommend", abstract: "(not available yet in this build)")

    func run() throws {
        throw ValidationError("'shardrank recommend' is not available yet in this build")
    }
}
