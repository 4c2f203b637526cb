import ArgumentParser

/// `shardrank`: one binary, one subcommand per component (README.md; the flags follow docs/cli.md).
@main
struct ShardRank: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shardrank",
        abstract: "ShardRank: a sharded, gRPC-wire-compatible recommendation server.",
        discussion: "Flags, defaults and exit statuses shared by the commands: docs/cli.md.",
        version: shardRankVersion,
        subcommands: [ShardCommand.self, LookupCommand.self, HealthCommand.self, InfoCommand.self] + extraCommands)

    /// ArgumentParser's entry point, with the scheme of docs/cli.md around it: old flag spellings
    /// and negative numbers are normalised first, an unknown command is named (with the nearest
    /// one), and a usage error found while a subcommand runs shows that subcommand's usage.
    static func main() async {
        let args = CommandLineScheme.normalize(Array(CommandLine.arguments.dropFirst()))
        if let message = CommandLineScheme.unknownCommand(args) {
            CommandLineScheme.writeStderr(message)
            exit(withError: ExitCode.validationFailure)
        }
        let command: any ParsableCommand
        do { command = try parseAsRoot(args) } catch { exit(withError: error) }
        do {
            var c = command
            if var asyncCommand = c as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try c.run()
            }
        } catch let error as ValidationError {
            CommandLineScheme.writeStderr(CommandLineScheme.usageError(error.message, command: type(of: command)))
            exit(withError: ExitCode.validationFailure)
        } catch {
            exit(withError: error)
        }
    }
}

/// The release this binary belongs to (`shardrank --version`).
let shardRankVersion = "0.7.0"
