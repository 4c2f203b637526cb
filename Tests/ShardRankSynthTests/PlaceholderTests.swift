import Testing
@testable import ShardRankSynth

@Test func moduleLinks() { #expect(String(describing: Synth.self).isEmpty == false) }
