import Testing
@testable import LoadTest

@Test func moduleLinks() { #expect(String(describing: LoadTestModule.self).isEmpty == false) }
