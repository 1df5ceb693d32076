#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import MoECore

/// A model measured on held-out text: perplexity from full-context windows, the routing
/// summary of every token, and the router's latency when decoding one token at a time.
public struct Evaluation: Sendable {
    public var tokens = 0
    /// Mean next-token cross-entropy (nats).
    public var crossEntropy = 0.0
    public var perplexity: Double { exp(crossEntropy) }
    public var routing: RoutingSummary
    /// Median router wall time per decoded token, all layers together (ns).
    public var routerNanosecondsPerToken = 0.0
    public var routerParameters: Int

    /// Runs `model` over consecutive windows of its context length taken from `stream` (at most
    /// `maxTokens` predictions). `progress` gets (tokens done, total).
    public static func run(_ model: MoEModel, on stream: [Int], maxTokens: Int, decodeTokens: Int = 64,
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> Evaluation {
        let window = model.config.contextLength
        var result = Evaluation(routing: RoutingSummary(numLayers: model.config.numLayers, numExperts: model.config.numExperts),
                                routerParameters: model.router.parameterCount)
        let total = min(maxTokens, max(0, stream.count - 1))
        var start = 0, lossSum = 0.0
        while result.tokens < total {
            let length = min(window, total - result.tokens)
            let input = Array(stream[start ..< start + length])
            let forward = try model.forward(input)
            if let problem = InferenceError.firstNonFinite(in: forward.routing, routedLayers: Array(0..<model.config.numLayers),
                                                           outputLogits: Array(forward.logits.scalars)) {
                throw problem
            }
            let vocab = forward.logits.cols
            forward.logits.scalars.withUnsafeBufferPointer { logits in
                for t in 0..<length {
                    let row = logits.baseAddress! + t * vocab
                    var maximum = -Float.infinity
                    for v in 0..<vocab { maximum = max(maximum, row[v]) }
                    var sum: Double = 0
                    for v in 0..<vocab { sum += Double(expf(row[v] - maximum)) }
                    lossSum += Double(maximum) + log(sum) - Double(row[stream[start + t + 1]])
                }
            }
            result.routing.add(forward.routing)
            result.tokens += length
            start += length
            progress(result.tokens, total)
        }
        result.crossEntropy = result.tokens > 0 ? lossSum / Double(result.tokens) : .nan

        // Latency: the decode path the TUI uses, one token at a time with a KV cache.
        var cache = model.makeCache()
        var times: [Double] = []
        for token in stream.prefix(min(decodeTokens, window)) {
            let step = try model.forward([token], cache: &cache, recordGRUState: false)
            times.append(step.routing[0].layers.reduce(0) { $0 + $1.routerNanoseconds })
        }
        result.routerNanosecondsPerToken = median(times)
        return result
    }
}
