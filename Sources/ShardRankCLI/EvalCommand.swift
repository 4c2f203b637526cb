import ArgumentParser

/// `shardrank eval` (being built).
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "eval", abstract: "(not available yet in this build)")

    func run() throws {
        throw ValidationError("'shardrank eval' is not available yet in this build")
    }
}
