import Testing
import RPCCore
@testable import ShardRankWire

/// RecordEvents and the user-vector fields of Recommend: round trips, and their field numbers
/// from hand-written wire bytes.
@Suite struct SessionWireTests {
    @Test func recordEventsRoundTrip() throws {
        let q = RecordEventsRequest(userID: 42, events: [Event(itemID: 7, kind: .purchase, timestampUnixSeconds: 1_700_000_000),
                                                         Event(itemID: 8), Event(itemID: 9, kindValue: 99, timestampUnixSeconds: 0)])
        let back = try RecordEventsRequest.decode(Array(q.encoded().payload))
        #expect(back == q)
        #expect(back.events.map(\.kind) == [.purchase, .view, nil], "an unknown kind survives as its value")
        let r = RecordEventsResponse(accepted: 3, sessionEvents: 50)
        #expect(try RecordEventsResponse.decode(Array(r.encoded().payload)) == r)
        #expect(try RecordEventsRequest.decode([]) == RecordEventsRequest(userID: 0, events: []))
    }

    @Test func recommendCarriesTheModeTheSourceAndTheSessionEvents() throws {
        for mode in UserVectorMode.allCases {
            let q = RecommendRequest(userID: 1, k: 5, userVector: mode)
            #expect(try RecommendRequest.decode(Array(q.encoded().payload)).userVector == mode)
        }
        for source in UserVectorSource.allCases {
            let r = RecommendResponse(items: [ScoredItem(itemID: 4, score: 1)], version: 2, userVectorSource: source, sessionEvents: 17)
            #expect(try RecommendResponse.decode(Array(r.encoded().payload)) == r)
        }
    }

    @Test func fieldNumbersAreTheProtosOnes() throws {
        // RecommendRequest.user_vector (14) = TOWER (2); an unknown value decodes as nil.
        #expect(try RecommendRequest.decode([0x70, 0x02]).userVector == .tower)
        #expect(try RecommendRequest.decode([0x70, 0x07]).userVector == nil)
        #expect(try RecommendRequest.decode([]).userVector == .auto)
        // RecommendResponse: user_vector_source (8) = TOWER, session_events (9) = 3.
        #expect(Array(RecommendResponse(items: [], version: 0, userVectorSource: .tower, sessionEvents: 3).encoded().payload) == [0x40, 0x02, 0x48, 0x03])
        // RecordEventsRequest: user_id (1) = 5, events (2) = Event{item_id (1) = 7, kind (2) = 3, timestamp_unix_s (3) = 300}.
        let event: [UInt8] = [0x08, 0x07, 0x10, 0x03, 0x18, 0xAC, 0x02]
        let q = try RecordEventsRequest.decode([0x08, 0x05, 0x12, UInt8(event.count)] + event)
        #expect(q == RecordEventsRequest(userID: 5, events: [Event(itemID: 7, kind: .purchase, timestampUnixSeconds: 300)]))
        // RecordEventsResponse: accepted (1) = 2, session_events (2) = 9.
        #expect(Array(RecordEventsResponse(accepted: 2, sessionEvents: 9).encoded().payload) == [0x08, 0x02, 0x10, 0x09])
    }

    @Test func recordEventsBatchRoundTripAndFieldNumbers() throws {
        let q = RecordEventsBatchRequest(users: [
            RecordEventsRequest(userID: 1, events: [Event(itemID: 7, kind: .click, timestampUnixSeconds: 5)]),
            RecordEventsRequest(userID: 2, events: [], replace: true),
            RecordEventsRequest(userID: 1, events: [Event(itemID: 8), Event(itemID: 9, kindValue: 42, timestampUnixSeconds: 0)]),
        ])
        #expect(try RecordEventsBatchRequest.decode(Array(q.encoded().payload)) == q)
        #expect(try RecordEventsBatchRequest.decode([]) == RecordEventsBatchRequest(users: []))
        // users (1) = RecordEventsRequest{user_id (1) = 5}, twice.
        #expect(try RecordEventsBatchRequest.decode([0x0A, 0x02, 0x08, 0x05, 0x0A, 0x02, 0x08, 0x06]).users.map(\.userID) == [5, 6])
        // RecordEventsBatchResponse: accepted (1) = 300, users (2) = 3.
        let r = RecordEventsBatchResponse(accepted: 300, users: 3)
        #expect(Array(r.encoded().payload) == [0x08, 0xAC, 0x02, 0x10, 0x03])
        #expect(try RecordEventsBatchResponse.decode(Array(r.encoded().payload)) == r)
    }
}
