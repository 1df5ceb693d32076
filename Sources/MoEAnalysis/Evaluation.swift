import MoECore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A model measured on held-out text: perplexity from full-context windows (overall, per domain
/// and per window, for paired bootstrap intervals), the routing summary of every token, and the
/// router's latency when decoding one token at a time.
public struct Evaluation: Sendable {
    public var tokens = 0
    /// Mean next-token cross-entropy (nats).
    public var crossEntropy = 0.0
    public var perplexity: Double { exp(crossEntropy) }
    public var routing: RoutingSummary
    /// Median router wall time per decoded token, all layers together (ns).
    public var routerNanosecondsPerToken = 0.0
    public var routerParameters: Int
    /// Summed loss and prediction count of every window, in evaluation order.
    public var windows = WindowLosses(loss: [], tokens: [])
    /// Segment (domain) index of every window.
    public var windowSegments: [Int] = []

    /// Perplexity of the windows of segment `index`.
    public func perplexity(segment index: Int) -> Double {
        var loss = 0.0
        var count = 0
        for (j, s) in windowSegments.enumerated() where s == index {
            loss += windows.loss[j]
            count += windows.tokens[j]
        }
        return count > 0 ? exp(loss / Double(count)) : .nan
    }

    /// Runs `model` over consecutive windows of its context length taken from `stream` (at most
    /// `maxTokens` predictions). `progress` gets (tokens done, total).
    public static func run(
        _ model: MoEModel, on stream: [Int], maxTokens: Int, decodeTokens: Int = 64,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> Evaluation {
        try run(model, segments: [stream], maxTokensPerSegment: maxTokens, decodeTokens: decodeTokens, progress: progress)
    }

    /// Runs `model` over each segment (e.g. one domain's held-out token stream) cut into
    /// consecutive windows of its context length; window predictions never cross segments.
    /// At most `maxTokensPerSegment` predictions per segment (nil: all of it).
    public static func run(
        _ model: MoEModel, segments: [[Int]], maxTokensPerSegment: Int? = nil, decodeTokens: Int = 64,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> Evaluation {
        let window = model.config.contextLength
        var result = Evaluation(
            routing: RoutingSummary(numLayers: model.config.numLayers, numExperts: model.config.numExperts),
            routerParameters: model.router.parameterCount)
        let totals = segments.map { min(maxTokensPerSegment ?? Int.max, max(0, $0.count - 1)) }
        let total = totals.reduce(0, +)
        var lossSum = 0.0
        for (index, stream) in segments.enumerated() {
            var start = 0
            while start < totals[index] {
                let length = min(window, totals[index] - start)
                let input = Array(stream[start..<start + length])
                let forward = try model.forward(input)
                if let problem = InferenceError.firstNonFinite(
                    in: forward.routing, routedLayers: Array(0..<model.config.numLayers),
                    outputLogits: Array(forward.logits.scalars))
                {
                    throw problem
                }
                let vocab = forward.logits.cols
                var windowLoss = 0.0
                forward.logits.scalars.withUnsafeBufferPointer { logits in
                    for t in 0..<length {
                        let row = logits.baseAddress! + t * vocab
                        var maximum = -Float.infinity
                        for v in 0..<vocab { maximum = max(maximum, row[v]) }
                        var sum: Double = 0
                        for v in 0..<vocab { sum += Double(expf(row[v] - maximum)) }
                        windowLoss += Double(maximum) + log(sum) - Double(row[stream[start + t + 1]])
                    }
                }
                lossSum += windowLoss
                result.windows.loss.append(windowLoss)
                result.windows.tokens.append(length)
                result.windowSegments.append(index)
                result.routing.add(forward.routing)
                result.tokens += length
                start += length
                progress(result.tokens, total)
            }
        }
        result.crossEntropy = result.tokens > 0 ? lossSum / Double(result.tokens) : .nan

        // Latency: the decode path the TUI uses, one token at a time with a KV cache.
        var cache = model.makeCache()
        var times: [Double] = []
        for token in (segments.first { !$0.isEmpty } ?? []).prefix(min(decodeTokens, window)) {
            let step = try model.forward([token], cache: &cache, recordGRUState: false)
            times.append(step.routing[0].layers.reduce(0) { $0 + $1.routerNanoseconds })
        }
        result.routerNanosecondsPerToken = median(times)
        return result
    }
}
