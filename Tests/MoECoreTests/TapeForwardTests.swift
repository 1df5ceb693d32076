import Testing

@testable import MoECore

/// The training forward (on the tape, batched) and the inference forward (KV-cached) are two
/// implementations of one model: they must agree on logits and on every routing choice.
@Suite struct TapeForwardTests {
    @Test(arguments: RouterKind.allCases)
    func tapeForwardEqualsInferenceForward(router: RouterKind) throws {
        let model = try MoEModel(config: .tiny(router: router), seed: 11)
        let sequences = [[1, 72, 101, 108, 108, 111, 32, 299], [5, 72, 72, 200, 17, 17, 3, 250]]
        let t = sequences[0].count
        let tape = Tape()
        let forward = model.forward(batch: sequences.flatMap { $0 }, sequenceLength: t, on: tape, leaves: model.leaves(on: tape))
        let logits = tape.value(forward.logits)
        let vocab = model.config.vocabSize
        for (b, sequence) in sequences.enumerated() {
            let reference = try model.forward(sequence)
            for i in 0..<(t * vocab) {
                #expect(abs(logits.scalars[b * t * vocab + i] - reference.logits.scalars[i]) < 1e-4)
            }
            for (position, trace) in reference.routing.enumerated() {
                for (layer, routing) in trace.layers.enumerated() {
                    #expect(forward.routing[layer].choices[b * t + position] == routing.experts)
                }
            }
        }
    }

    /// Finite differences through the whole model: embedding, attention, router, dispatch, head.
    @Test(arguments: [RouterKind.linear, .gru])
    func wholeModelGradientMatchesFiniteDifferences(router: RouterKind) throws {
        let model = try MoEModel(config: .tiny(router: router), seed: 3)
        let tokens = [1, 72, 101, 108, 32, 299]
        let targets = [72, 101, 108, 32, 299, 5]
        let parameters = model.namedParameters
        let names = model.declaredParameters.map(\.name)
        func loss(_ overridden: [String: Tensor]) -> (Float, [String: Tensor], [[[Int]]]) {
            let tape = Tape()
            let leaves = names.map { tape.leaf(overridden[$0]!) }
            let forward = model.forward(batch: tokens, sequenceLength: tokens.count, on: tape, leaves: leaves)
            let ce = tape.crossEntropy(forward.logits, targets: targets)
            tape.backward(from: ce)
            let gradients = Dictionary(uniqueKeysWithValues: zip(names, leaves.map { tape.gradient($0) }))
            return (tape.value(ce).scalars[0], gradients, forward.routing.map(\.choices))
        }
        let (_, gradients, choices) = loss(parameters)
        let probes = [
            "model.layers.0.self_attn.q_proj.weight", "model.layers.1.block_sparse_moe.experts.2.w1.weight",
            "model.layers.2.post_attention_layernorm.weight", "model.embed_tokens.weight",
            router == .gru ? "model.layers.0.block_sparse_moe.gate.projector.weight" : "model.layers.0.block_sparse_moe.gate.weight",
        ]
        var generator = SeededGenerator(seed: 5)
        for name in probes {
            let count = parameters[name]!.count
            // Parameters of experts no token chose have zero gradient: probe the largest entries.
            let ranked = (0..<count).sorted { abs(gradients[name]!.scalars[$0]) > abs(gradients[name]!.scalars[$1]) }
            var checked = 0
            probing: for index in ranked.prefix(12) + [Int(generator.next() % UInt64(count))] where checked < 4 {
                for epsilon: Float in [1e-2, 4e-3] {
                    var plus = parameters
                    var minus = parameters
                    plus[name]!.scalars[index] += epsilon
                    minus[name]!.scalars[index] -= epsilon
                    let (up, down) = (loss(plus), loss(minus))
                    // Top-k is piecewise constant: a nudge that changes a choice jumps the loss,
                    // and finite differences across the jump are meaningless. Try a smaller one.
                    guard up.2 == choices, down.2 == choices else { continue }
                    let numeric = (up.0 - down.0) / (2 * epsilon)
                    let analytic = gradients[name]!.scalars[index]
                    #expect(abs(numeric - analytic) <= 2e-3 + 0.05 * abs(numeric), "\(name)[\(index)]: \(analytic) vs \(numeric)")
                    checked += 1
                    continue probing
                }
            }
            #expect(checked >= 2, "\(name): too few probes kept the routing unchanged")
        }
    }
}
