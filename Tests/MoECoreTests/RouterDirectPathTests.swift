import Testing

@testable import MoECore

/// Every router's direct inference path (plain tensors, no tape) against its tape forward, which
/// the finite-difference tests check: equal bit for bit, through every layer (the GRU's state
/// included), at the tiny test shape and at a wide one (64 experts, top-8, 5 layers), for one
/// token (decoding: the products' unpacked path), a few, and a long prompt (the packed path).
@Suite struct RouterDirectPathTests {
    static func config(_ kind: RouterKind, wide: Bool) -> ModelConfig {
        var config = ModelConfig.tiny(router: kind)
        config.initStd = 0.3  // large enough that every nonlinearity is exercised
        if wide {
            config.numExperts = 64
            config.topK = 8
            config.numLayers = 5
            config.hiddenSize = 96
            config.routerHiddenSize = 40
            config.gruHiddenSize = 48
        }
        return config
    }

    @Test(arguments: RouterKind.allCases, [false, true])
    func directLogitsEqualTheTapes(kind: RouterKind, wide: Bool) throws {
        let config = Self.config(kind, wide: wide)
        var source = RandomWeights(seed: 9)
        let router = try makeRouter(config, from: &source)
        for count in [1, 5, 37] {
            let tokens = (0..<count).map { $0 * 7 % config.vocabSize }
            var direct = RouterDepthState()
            var taped = RouterDepthState()
            for layer in 0..<config.numLayers {
                let u = GradientTests.random([count, config.hiddenSize], seed: UInt64(100 * count + layer))
                let a = router.logits(u, tokens: tokens, layer: layer, state: &direct, threads: 1)
                let b = router.tapeLogits(u, tokens: tokens, layer: layer, state: &taped, threads: 1)
                #expect(a.shape == b.shape && a.shape == [count, config.numExperts])
                #expect(a.scalars == b.scalars, "\(kind) layer \(layer), \(count) tokens")
                #expect(direct.hidden?.shape == taped.hidden?.shape && direct.hidden?.scalars == taped.hidden?.scalars)
            }
            #expect((direct.hidden != nil) == (kind == .gru))
        }
    }

    /// RMoE's ablation with the recurrence cut (h_{i−1} = 0 at every layer): the direct path
    /// must ignore the carried state exactly as the tape does, and differ from the recurrent GRU.
    @Test func directGRUWithTheRecurrenceCutEqualsTheTape() throws {
        var config = Self.config(.gru, wide: true)
        config.gruRecurrence = false
        var source = RandomWeights(seed: 9)
        let router = try makeRouter(config, from: &source)
        var recurrentConfig = config
        recurrentConfig.gruRecurrence = true
        var recurrentSource = RandomWeights(seed: 9)
        let recurrentRouter = try makeRouter(recurrentConfig, from: &recurrentSource)
        let tokens = [3, 1, 4, 1, 5]
        var direct = RouterDepthState()
        var taped = RouterDepthState()
        var recurrent = RouterDepthState()
        for layer in 0..<config.numLayers {
            let u = GradientTests.random([tokens.count, config.hiddenSize], seed: UInt64(200 + layer))
            let a = router.logits(u, tokens: tokens, layer: layer, state: &direct, threads: 1)
            let b = router.tapeLogits(u, tokens: tokens, layer: layer, state: &taped, threads: 1)
            let c = recurrentRouter.logits(u, tokens: tokens, layer: layer, state: &recurrent, threads: 1)
            #expect(a.scalars == b.scalars, "layer \(layer)")
            if layer > 0 { #expect(a.scalars != c.scalars, "layer \(layer) should not see the carried state") }
        }
    }

    /// The GRU writes each layer's state into the tensor two layers back held: a state a
    /// caller kept (the trace records every layer's) is never overwritten, and logits written
    /// into the caller's memory equal the returned tensor's.
    @Test func directGRUReusesItsStateWithoutOverwritingAKeptOne() throws {
        let config = Self.config(.gru, wide: false)
        var source = RandomWeights(seed: 9)
        let router = try makeRouter(config, from: &source)
        let u = GradientTests.random([1, config.hiddenSize], seed: 5)
        var state = RouterDepthState()
        var reference = RouterDepthState()
        var kept: [[Float]] = []
        var keptTensors: [Tensor] = []
        for layer in 0..<config.numLayers {
            var out = [Float](repeating: .nan, count: config.numExperts)
            out.withUnsafeMutableBufferPointer {
                router.logits(u, tokens: [3], layer: layer, state: &state, into: $0.baseAddress!, threads: 1)
            }
            let expected = router.logits(u, tokens: [3], layer: layer, state: &reference, threads: 1)
            #expect(out == expected.scalars)
            keptTensors.append(state.hidden!)
            kept.append(state.hidden!.scalars)
        }
        #expect(keptTensors.map(\.scalars) == kept)
        #expect(Set(kept.map { $0.map(\.bitPattern) }).count == config.numLayers)
    }

    /// A decoded token reads the GRU's packed weights gathered once (`DecodeWeights`): a
    /// parameter changed afterwards (a training step) must reach the next decoded token.
    @Test func directGRUSeesParametersChangedAfterDecoding() throws {
        let config = Self.config(.gru, wide: true)
        var source = RandomWeights(seed: 9)
        var router = try makeRouter(config, from: &source)
        let u = GradientTests.random([1, config.hiddenSize], seed: 11)
        func run() -> (direct: [Float], tape: [Float]) {
            var direct = RouterDepthState()
            var taped = RouterDepthState()
            var last: ([Float], [Float]) = ([], [])
            for layer in 0..<config.numLayers {
                last.0 = router.logits(u, tokens: [2], layer: layer, state: &direct, threads: 1).scalars
                last.1 = router.tapeLogits(u, tokens: [2], layer: layer, state: &taped, threads: 1).scalars
            }
            return last
        }
        let before = run()
        #expect(before.direct == before.tape)
        router.visitParameters { parameter in
            if parameter.name.hasSuffix("weight_ih") || parameter.name.hasSuffix("projector.weight") {
                parameter.value = parameter.value.mapped { $0 * 1.5 }
            }
        }
        let after = run()
        #expect(after.direct == after.tape)
        #expect(after.direct != before.direct)
    }

    /// A router's products may split over threads without changing a bit.
    @Test func directGRULogitsDoNotDependOnTheThreadCount() throws {
        let config = Self.config(.gru, wide: true)
        var source = RandomWeights(seed: 9)
        let router = try makeRouter(config, from: &source)
        let u = GradientTests.random([600, config.hiddenSize], seed: 3)
        var one = RouterDepthState()
        var two = RouterDepthState()
        for layer in 0..<config.numLayers {
            let a = router.logits(u, tokens: Array(repeating: 1, count: 600), layer: layer, state: &one, threads: 1)
            let b = router.logits(u, tokens: Array(repeating: 1, count: 600), layer: layer, state: &two, threads: 2)
            #expect(a.scalars == b.scalars)
        }
    }
}
