/// A recorded routing trace (`RoutingTraceFile`) in the place of a model: its decoder steps
/// through the recorded tokens, so the explorer and the analyses read a recording exactly as
/// they read a model that runs. `window` is the stretch of the recording it replays (the
/// explorer keeps the routing of the tokens it has stepped through).
public struct RecordedRoutingModel: RoutingModel, @unchecked Sendable {
    public let trace: RoutingTraceFile
    public let window: Range<Int>

    /// The tokens of `window`, clamped to the recording.
    public init(trace: RoutingTraceFile, window: Range<Int>? = nil) {
        self.trace = trace
        let requested = window ?? 0..<trace.tokenCount
        let start = max(0, min(trace.tokenCount - 1, requested.lowerBound))
        self.window = start..<max(start + 1, min(trace.tokenCount, requested.upperBound))
    }

    public var recording: RoutingTraceFile? { trace }
    public var routerName: String { "\(trace.family) · \(trace.routingRule) (recorded)" }
    public var routerKind: RouterKind? { nil }
    public var routerEquation: String { "recorded routing: \(trace.routingRule); source \(trace.source)" }
    public var layerCount: Int { trace.layerCount }
    public var routedLayers: [Int] { trace.routedLayers }
    public var numExperts: Int { trace.numExperts }
    public var topK: Int { trace.topK }
    public var vocabSize: Int { SizeLimits.vocabulary }
    public var contextLength: Int { window.count }
    /// No weights: nothing is run, and the all-experts views stay off.
    public var weightBytes: Int { Int.max }
    public func expertWeights(routedLayer: Int) -> [(gate: Tensor, up: Tensor, down: Tensor)]? { nil }
    public func makeDecoder() -> any RoutingDecoder { RecordedDecoder(trace: trace, next: window.lowerBound, end: window.upperBound) }

    /// The token ids of the window.
    public var tokens: [Int] { window.map(trace.tokenID) }
}

/// Reads the recording's routing for the next tokens; the token ids fed are the recording's own.
struct RecordedDecoder: RoutingDecoder {
    let trace: RoutingTraceFile
    var next: Int
    let end: Int

    mutating func feed(_ tokens: [Int], allExpertNorms: Bool) throws -> (routing: [RoutingTrace], lastLogits: [Float]) {
        guard next + tokens.count <= end else { throw InferenceError.contextFull(needed: next + tokens.count, capacity: end) }
        let routing = try (next..<next + tokens.count).map { try trace.routing(token: $0) }
        next += tokens.count
        return (routing, [])
    }
}
