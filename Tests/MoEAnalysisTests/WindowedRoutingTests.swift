import Foundation
import Testing

@testable import MoEAnalysis
@testable import MoECore

/// `analyze`'s routing of a long text (`WindowedRouting`: windows batched, batches on worker
/// threads, summarised in order) against the plainest way to get the same traces: every
/// window decoded token by token on its own KV cache.
@Suite struct WindowedRoutingTests {
    /// A small GRU model with a short context, so a text of a few hundred tokens is many
    /// windows and several batches; 16 experts, top-2.
    static func model() throws -> MoEModel {
        var config = ModelConfig.tiny(router: .gru)
        config.contextLength = 24
        config.numExperts = 16
        config.numLayers = 4
        return try MoEModel(config: config, seed: 17)
    }

    static let ids: [Int] = {
        var generator = SeededGenerator(seed: 3)
        return (0..<200).map { _ in Int(generator.next() % 300) }
    }()

    static func report(_ model: MoEModel, _ tracesByDomain: [(domain: String, traces: [RoutingTrace])]) throws -> Any {
        let report = AnalysisReport(
            model: model, tokenizer: Tokenizer(merges: []), checkpoint: "test", randomInit: true,
            tracesByDomain: tracesByDomain)
        return try JSONSerialization.jsonObject(with: JSONEncoder().encode(report))
    }

    /// Whether two decoded JSON values agree: the same structure and strings, numbers within
    /// `tolerance` (absolute or relative, whichever is larger).
    static func agree(_ a: Any, _ b: Any, tolerance: Double, path: String = "") -> String? {
        switch (a, b) {
        case (let x as [String: Any], let y as [String: Any]):
            guard Set(x.keys) == Set(y.keys) else { return "\(path): keys \(x.keys.sorted()) vs \(y.keys.sorted())" }
            for key in x.keys.sorted() {
                if let problem = agree(x[key]!, y[key]!, tolerance: tolerance, path: path + "." + key) { return problem }
            }
            return nil
        case (let x as [Any], let y as [Any]):
            guard x.count == y.count else { return "\(path): \(x.count) vs \(y.count) entries" }
            for (i, (p, q)) in zip(x, y).enumerated() {
                if let problem = agree(p, q, tolerance: tolerance, path: path + "[\(i)]") { return problem }
            }
            return nil
        case (let x as String, let y as String):
            return x == y ? nil : "\(path): \(x) vs \(y)"
        case (let x as NSNumber, let y as NSNumber):
            let (p, q) = (x.doubleValue, y.doubleValue)
            return abs(p - q) <= tolerance * max(1, abs(p), abs(q)) ? nil : "\(path): \(p) vs \(q)"
        default:
            return "\(path): \(a) vs \(b)"
        }
    }

    @Test func batchedOnWorkersEqualsTokenByToken() throws {
        let model = try Self.model()
        let ids = Self.ids
        // Token by token: each context window on a decoder of its own, one token per step,
        // every expert's norm recorded (the text is inside the norm sample).
        var decoded: [RoutingTrace] = []
        for start in stride(from: 0, to: ids.count, by: model.contextLength) {
            var decoder = model.makeDecoder()
            for token in ids[start..<min(ids.count, start + model.contextLength)] {
                decoded += try decoder.feed([token], allExpertNorms: true).routing
            }
        }
        var batchedByThreads: [Int: [RoutingTrace]] = [:]
        for threads in [1, 2, 3] {
            var normTokens = 0
            var traces: [RoutingTrace] = []
            var calls = 0
            try WindowedRouting.route(ids, model, normTokens: &normTokens, threads: threads) {
                traces += $0.traces
                calls += 1
            }
            #expect(calls == (ids.count + model.contextLength - 1) / model.contextLength)  // one call per window, in order
            #expect(normTokens == ids.count)
            batchedByThreads[threads] = traces
        }
        // Bit-identical for every thread count: each batch runs on one core (all but the
        // router's wall time, which a trace records too).
        func timeless(_ traces: [RoutingTrace]) -> [RoutingTrace] {
            traces.map { trace in
                var trace = trace
                for l in trace.layers.indices { trace.layers[l].routerNanoseconds = 0 }
                return trace
            }
        }
        let (one, two, three) = (timeless(batchedByThreads[1]!), timeless(batchedByThreads[2]!), timeless(batchedByThreads[3]!))
        #expect(one == two && one == three)

        let batched = batchedByThreads[2]!
        #expect(batched.map(\.token) == ids && decoded.map(\.token) == ids)
        #expect(batched.map(\.position) == decoded.map(\.position))
        for (a, b) in zip(decoded, batched) {
            for (x, y) in zip(a.layers, b.layers) {
                #expect(x.experts == y.experts)
                #expect(zip(x.probabilities, y.probabilities).allSatisfy { abs($0 - $1) < 1e-5 })
                #expect(zip(x.weights, y.weights).allSatisfy { abs($0 - $1) < 1e-5 })
                #expect(zip(x.allExpertOutputNorms!, y.allExpertOutputNorms!).allSatisfy { abs($0 - $1) < 1e-4 * max(1, abs($0)) })
            }
        }
        // Past the norm sample the batches skip what only the output reads (the last layer's
        // experts, the LM head): the same routing, the last layer's chosen-expert norms left empty.
        var normTokens = WindowedRouting.normSampleTokens
        var unsampled: [RoutingTrace] = []
        try WindowedRouting.route(ids, model, normTokens: &normTokens, threads: 2) { unsampled += $0.traces }
        #expect(unsampled.map(\.token) == ids)
        let last = model.layerCount - 1
        for (a, b) in zip(batched, unsampled) {
            for (l, (x, y)) in zip(a.layers, b.layers).enumerated() {
                #expect(x.experts == y.experts && x.probabilities == y.probabilities && x.weights == y.weights)
                #expect(y.allExpertOutputNorms == nil)
                #expect(l == last ? y.expertOutputNorms.isEmpty : y.expertOutputNorms == x.expertOutputNorms)
            }
        }
        // The whole analysis report agrees to rounding (the batch sums some products in
        // another order than one row at a time).
        let fromDecoded = try Self.report(model, [("text", decoded)])
        let fromBatched = try Self.report(model, [("text", batched)])
        #expect(
            Self.agree(fromDecoded, fromBatched, tolerance: 1e-4) == nil, "\(Self.agree(fromDecoded, fromBatched, tolerance: 1e-4) ?? "")")
        // …and the check can fail: a report of another text does not agree.
        let other = try Self.report(model, [("text", Array(batched.reversed()))])
        #expect(Self.agree(fromBatched, other, tolerance: 1e-4) != nil)
    }

    @Test func normSampleSpansTextsAndBatchesNeverMixIt() {
        let perBatch = WindowedRouting.windowsPerBatch
        var normTokens = WindowedRouting.normSampleTokens - 300
        // Two windows of norms, then 2·perBatch − 1 windows, the last one short.
        let ids = Array(repeating: 1, count: (2 * perBatch + 1) * 256 - 10)
        let batches = WindowedRouting.batches(ids, contextLength: 256, normTokens: &normTokens)
        // 300 sample tokens left: the first two windows (512 tokens) record norms, alone in their batch.
        #expect(batches.map(\.windows.count) == [2, perBatch, perBatch - 1])
        #expect(batches.map(\.allExpertNorms) == [true, false, false])
        #expect(Array(batches.map(\.windows).joined().joined()) == ids)
        #expect(batches.last?.windows.last?.count == 246)
        #expect(normTokens == WindowedRouting.normSampleTokens - 300 + 512)
    }

    /// A NaN stops the routing with the layer named, and no worker outlives the call.
    @Test func nonFiniteStopsAllWorkers() throws {
        var model = try Self.model()
        for expert in model.layers[2].moe.experts.indices { model.layers[2].moe.experts[expert].down.weight.value.scalars[0] = .nan }
        var normTokens = WindowedRouting.normSampleTokens
        var consumed = 0
        do {
            try WindowedRouting.route(Self.ids, model, normTokens: &normTokens, threads: 2) { consumed += $0.count }
            Issue.record("a NaN expert weight routed without an error")
        } catch InferenceError.nonFinite(let location, let value) {
            #expect(location.hasPrefix("layer L2, expert output norms"), "\(location)")
            #expect(value.isNaN)
        }
        #expect(consumed == 0)
        // The last layer's experts run only in the norm sample (nothing else reads their
        // output): NaN weights there are caught on the first batches, which run every expert.
        var lastBroken = try Self.model()
        let last = lastBroken.layers.count - 1
        for expert in lastBroken.layers[last].moe.experts.indices {
            lastBroken.layers[last].moe.experts[expert].down.weight.value.scalars[0] = .nan
        }
        normTokens = 0
        do {
            try WindowedRouting.route(Self.ids, lastBroken, normTokens: &normTokens, threads: 2) { _ in }
            Issue.record("a NaN expert weight in the last layer routed without an error inside the norm sample")
        } catch InferenceError.nonFinite(let location, _) {
            #expect(location.hasPrefix("layer L\(last), expert output norms"), "\(location)")
        }
        #expect(throws: InferenceError.emptyInput) { try WindowedRouting.route([], model, normTokens: &normTokens) { _ in } }
    }
}
