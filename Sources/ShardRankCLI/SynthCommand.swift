import ArgumentParser

/// `shardrank synth` (being built).
struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "synth", abstract: "(not available yet in this build)")

    func run() throws {
        throw ValidationError("'shardrank synth' is not available yet in this build")
    }
}
