import Synchronization

/// What a handler knows about its call: the method, the caller's metadata, the deadline, and a
/// cancellation flag the transport sets when the stream is reset, its deadline passes, or the
/// server stops. Shared between the connection's event loop and a worker thread, so every mutable
/// part is atomic or behind a `Mutex`.
public final class ServerContext: Sendable {
    /// `/package.Service/Method`.
    public let path: String
    /// Custom metadata sent by the caller (reserved headers removed, `-bin` values decoded).
    public let metadata: Metadata
    /// When the caller stops waiting, if it said (`grpc-timeout`).
    public let deadline: ContinuousClock.Instant?
    /// The peer's address, for logs.
    public let peer: String
    /// Correlates the log lines of one request across processes: the caller's `x-request-id`
    /// metadata when it sent one, else an id the server made up. Forward it on sub-calls.
    public var requestID: String {
        if let givenRequestID { return givenRequestID }
        return "\(generatedIDPrefix)-\(generatedIDNumber)"
    }
    private let givenRequestID: String?
    // The parts of a generated id, joined only when someone asks (most calls never log it).
    private let generatedIDPrefix: String
    private let generatedIDNumber: Int64

    private let cancelled = Atomic<Bool>(false)
    private let cancelReason = Mutex<RPCError?>(nil)
    private let onCancel = Mutex<[@Sendable () -> Void]>([])
    private let onFinish = Mutex<(status: RPCStatusCode?, callbacks: [@Sendable (RPCStatusCode) -> Void])>((nil, []))

    public init(path: String, metadata: Metadata = Metadata(), deadline: ContinuousClock.Instant? = nil, peer: String = "",
                requestID: String? = nil) {
        self.path = path
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
        self.givenRequestID = requestID ?? metadata.string("x-request-id") ?? ""
        self.generatedIDPrefix = ""
        self.generatedIDNumber = 0
    }

    /// A context whose request id is the caller's `x-request-id`, or else
    /// `"<generatedIDPrefix>-<generatedIDNumber>"` (e.g. a connection tag and a stream id), built
    /// only when it is read.
    public init(path: String, metadata: Metadata, deadline: ContinuousClock.Instant?, peer: String,
                generatedIDPrefix: String, generatedIDNumber: Int64) {
        self.path = path
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
        self.givenRequestID = metadata.isEmpty ? nil : metadata.string("x-request-id")
        self.generatedIDPrefix = generatedIDPrefix
        self.generatedIDNumber = generatedIDNumber
    }

    /// True once the call was cancelled; a handler should stop its work and return.
    public var isCancelled: Bool { cancelled.load(ordering: .acquiring) }

    /// Why the call was cancelled (DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE on shutdown).
    public var cancellationError: RPCError? { cancelReason.withLock { $0 } }

    /// Throws the cancellation error if the call was cancelled: call it between chunks of work.
    public func checkCancellation() throws(RPCError) {
        if isCancelled { throw cancellationError ?? .cancelled() }
    }

    /// Time left before the deadline, or nil when there is none.
    public var timeRemaining: Duration? {
        deadline.map { ContinuousClock.now.duration(to: $0) }
    }

    /// Registers work to run once when the call is cancelled (at once if it already was).
    public func whenCancelled(_ body: @escaping @Sendable () -> Void) {
        let runNow = onCancel.withLock { list -> Bool in
            if isCancelled { return true }
            list.append(body)
            return false
        }
        if runNow { body() }
    }

    /// Registers work to run once when the call has ended, with the status the caller got: OK
    /// only once the answer is sent (an answer the handler returned but that never reached the
    /// caller — reset, deadline, a peer that stopped reading — ends with that status instead).
    /// Runs at once if the call already ended. For what must count delivered answers only.
    public func whenFinished(_ body: @escaping @Sendable (RPCStatusCode) -> Void) {
        let ended = onFinish.withLock { state -> RPCStatusCode? in
            if let s = state.status { return s }
            state.callbacks.append(body)
            return nil
        }
        if let ended { body(ended) }
    }

    /// Records how the call ended and runs the `whenFinished` callbacks once (later calls are
    /// ignored). Called by the transport when the call's status is final.
    public func finished(_ status: RPCStatusCode) {
        let callbacks = onFinish.withLock { state -> [@Sendable (RPCStatusCode) -> Void] in
            guard state.status == nil else { return [] }
            state.status = status
            let l = state.callbacks
            state.callbacks.removeAll()
            return l
        }
        for c in callbacks { c(status) }
    }

    /// Marks the call cancelled and runs the registered callbacks once. Called by the transport.
    public func cancel(_ reason: RPCError) {
        cancelReason.withLock { if $0 == nil { $0 = reason } }
        let callbacks = onCancel.withLock { list -> [@Sendable () -> Void] in
            if cancelled.exchange(true, ordering: .acquiringAndReleasing) { return [] }
            let l = list
            list.removeAll()
            return l
        }
        for c in callbacks { c() }
    }
}
