import ArgumentParser

/// Subcommands that live in their own files (build, ...).
let extraCommands: [any ParsableCommand.Type] = [
    BuildCommand.self, SynthCommand.self, CoordinatorCommand.self, RecommendCommand.self, RecordEventsCommand.self,
    LoadtestCommand.self, EvalCommand.self, RouteCommand.self, CertsCommand.self,
]
