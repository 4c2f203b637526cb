import ArgumentParser

/// `shardrank coordinator` (being built).
struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "coordinator", abstract: "(not available yet in this build)")

    func run() throws {
        throw ValidationError("'shardrank coordinator' is not available yet in this build")
    }
}
