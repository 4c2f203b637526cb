import Testing
@testable import ShardRankTables
@Test func placeholder() { #expect(Bool(true)) }
