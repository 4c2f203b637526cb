import Testing
@testable import Coordinator

@Test func moduleLinks() { #expect(String(describing: CoordinatorModule.self).isEmpty == false) }
