import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// The command-line scheme every subcommand follows (docs/cli.md): what `shardrank` does to the
/// arguments before ArgumentParser sees them, and how it reports a mistake.
enum CommandLineScheme {
    /// Flags renamed to follow docs/cli.md, per subcommand: the old spelling still works (it is
    /// rewritten to the new one here, so it never shows in `--help`). docs/cli.md lists them too.
    static let renamedFlags: [String: [String: String]] = [
        "recommend": ["--coordinator": "--target", "--recent": "--recent-ids", "--exclude": "--exclude-ids", "--items": "--items-csv"],
        "record-events": ["--coordinator": "--target", "--items": "--item-ids"],
        "eval": ["--coordinator": "--target", "--users": "--max-users"],
        "loadtest": ["--users": "--user-space", "--p99-target": "--p99-target-ms"],
        "coordinator": ["--model": "--mlp", "--model-config": "--mlp-config"],
        "synth": ["--heldout": "--heldout-per-user"],
    ]

    /// `args` (without the program name) as ArgumentParser should see them: old flag spellings
    /// renamed, and a negative number after an option joined to it (`--duration -5` becomes
    /// `--duration=-5`), so that it is that option's value, not an unknown flag `-5`.
    static func normalize(_ args: [String]) -> [String] {
        guard let command = args.first else { return args }
        var out = [command]
        let renames = renamedFlags[command] ?? [:]
        for arg in args.dropFirst() {
            var a = arg
            if a.hasPrefix("--") {
                let name = a.split(separator: "=", maxSplits: 1).first.map(String.init) ?? a
                if let new = renames[name] { a = new + a.dropFirst(name.count) }
            }
            if isNegativeNumber(a), out.count >= 2, let prev = out.last, prev.hasPrefix("--"), prev.count > 2, !prev.contains("=") {
                out[out.count - 1] = prev + "=" + a
            } else {
                out.append(a)
            }
        }
        return out
    }

    /// `-5`, `-0.25`, `-.5`, `-1e3`: a number, never a flag (no flag of shardrank starts with a digit).
    static func isNegativeNumber(_ s: String) -> Bool {
        guard s.hasPrefix("-"), s.count >= 2 else { return false }
        let rest = Array(s.utf8.dropFirst())
        func digit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
        return digit(rest[0]) || (rest[0] == UInt8(ascii: ".") && rest.count > 1 && digit(rest[1]))
    }

    /// The names `shardrank` answers to as its first argument.
    static var commandNames: [String] {
        ShardRank.configuration.subcommands.map { $0._commandName } + ["help"]
    }

    /// A message (and exit status 64) when the first argument is not a subcommand, else nil.
    static func unknownCommand(_ args: [String]) -> String? {
        guard let first = args.first, !first.hasPrefix("-"), !commandNames.contains(first) else { return nil }
        let names = ShardRank.configuration.subcommands.map { $0._commandName }
        let best = (names + ["help"]).map { ($0, editDistance(first.lowercased(), $0)) }.min { $0.1 < $1.1 }
        var text = "Error: unknown command '\(first)'"
        if let (name, d) = best, d <= max(2, first.count / 3) || name.hasPrefix(first.lowercased()) {
            text += "; did you mean '\(name)'?"
        }
        text += "\nCommands: \(names.joined(separator: ", "))\n  See 'shardrank --help' for more information."
        return text
    }

    /// Levenshtein distance (commands are short).
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0 ... b.count)
        for i in 1 ... a.count {
            var cur = [i] + [Int](repeating: 0, count: b.count)
            for j in 1 ... b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }

    /// A usage error found while a subcommand ran: the message and that subcommand's usage (not
    /// the top level's), as ArgumentParser prints one found while parsing.
    static func usageError(_ message: String, command: any ParsableCommand.Type) -> String {
        let usage = ShardRank.usageString(for: command)
        let name = command._commandName
        return "Error: \(message)\nUsage: \(usage)\n  See 'shardrank \(name) --help' for more information."
    }

    static func writeStderr(_ s: String) {
        var b = Array((s.hasSuffix("\n") ? s : s + "\n").utf8)
        _ = b.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
