import ArgumentParser

/// `shardrank`: one binary, one subcommand per component (README.md).
@main
struct ShardRank: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shardrank",
        abstract: "ShardRank: a sharded, gRPC-wire-compatible recommendation server.",
        subcommands: [ShardCommand.self, LookupCommand.self, HealthCommand.self, InfoCommand.self] + extraCommands)
}
