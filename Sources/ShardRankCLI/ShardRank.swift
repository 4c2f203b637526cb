import ArgumentParser

/// `shardrank`: one binary, one subcommand per component (README.md).
@main
struct ShardRank: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shardrank",
        abstract: "ShardRank: a sharded, gRPC-wire-compatible recommendation server.",
        version: shardRankVersion,
        subcommands: [ShardCommand.self, LookupCommand.self, HealthCommand.self, InfoCommand.self] + extraCommands)
}

/// The release this binary belongs to (`shardrank --version`).
let shardRankVersion = "0.7.0"
