import Testing

@testable import MoECore

/// Central finite differences against the tape's gradients, for every differentiable op.
/// Each op's output is projected onto fixed random weights so every output element matters.
@Suite struct GradientTests {
    static func random(_ shape: [Int], seed: UInt64, std: Float = 1) -> Tensor {
        var g = SeededGenerator(seed: seed)
        return Tensor(randomNormal: shape, std: std, using: &g)
    }

    /// Checks ∂loss/∂input for every input (up to `samples` entries each).
    func check(
        _ inputs: [Tensor], epsilon: Float = 1e-2, tolerance: Float = 2e-2, samples: Int = 24,
        sourceLocation: SourceLocation = #_sourceLocation, _ build: (Tape, [Variable]) -> Variable
    ) {
        func loss(_ values: [Tensor]) -> (Float, Tape, [Variable]) {
            let tape = Tape()
            let variables = values.map { tape.leaf($0) }
            var out = build(tape, variables)
            if tape.value(out).count > 1 {
                let projection = tape.leaf(Self.random(tape.value(out).shape, seed: 99))
                out = tape.sum(tape.multiply(out, projection))
            }
            return (tape.value(out).scalars[0], tape, variables + [out])
        }
        let (_, tape, variables) = loss(inputs)
        tape.backward(from: variables.last!)
        for (index, input) in inputs.enumerated() {
            let analytic = tape.gradient(variables[index])
            let stride = max(1, input.count / samples)
            for j in Swift.stride(from: 0, to: input.count, by: stride) {
                var plus = inputs
                var minus = inputs
                plus[index].scalars[j] += epsilon
                minus[index].scalars[j] -= epsilon
                let numeric = (loss(plus).0 - loss(minus).0) / (2 * epsilon)
                let a = analytic.scalars[j]
                #expect(
                    abs(a - numeric) <= tolerance * max(1, abs(numeric)),
                    "input \(index)[\(j)]: analytic \(a), numeric \(numeric)", sourceLocation: sourceLocation)
            }
        }
    }

    let x = random([5, 6], seed: 1)
    let y = random([5, 6], seed: 2)

    @Test func linear() { check([x, Self.random([4, 6], seed: 3)]) { $0.linear($1[0], $1[1]) } }
    @Test func addAndMultiply() {
        check([x, y]) { $0.add($1[0], $1[1]) }
        check([x, y]) { $0.multiply($1[0], $1[1]) }
    }
    @Test func addRow() { check([x, Self.random([6], seed: 4)]) { $0.addRow($1[0], $1[1]) } }
    @Test func scales() {
        check([x]) { $0.scale($1[0], by: -1.5) }
        check([x, Tensor(shape: [1], scalars: [0.7])]) { $0.scale($1[0], byScalar: $1[1]) }
        check([x]) { $0.oneMinus($1[0]) }
    }
    @Test func columns() { check([x]) { $0.columns($1[0], 2..<5) } }
    @Test func nonlinearities() {
        check([x]) { $0.sigmoid($1[0]) }
        check([x]) { $0.tanh($1[0]) }
        check([x]) { $0.gelu($1[0]) }
    }
    /// 35 entries: two 16-lane passes of the vector kernel and a scalar tail.
    @Test func swiglu() {
        check([Self.random([5, 7], seed: 6, std: 2), Self.random([5, 7], seed: 7)]) { $0.swiglu(gate: $1[0], up: $1[1]) }
    }
    @Test func rmsNorm() {
        check([x, Self.random([6], seed: 5, std: 0.5)]) { $0.rmsNorm($1[0], gain: $1[1], epsilon: 1e-5) }
    }
    @Test func softmaxRows() { check([x]) { $0.softmaxRows($1[0]) } }
    @Test func gathers() {
        check([x]) { $0.gatherRows($1[0], [4, 0, 4, 2]) }
        check([x]) { $0.gatherEntries($1[0], [(0, 1), (3, 5), (0, 1)]) }
    }
    @Test func weightedScatterRows() {
        check([Self.random([4, 6], seed: 6), Self.random([4], seed: 7)]) {
            $0.weightedScatterRows($1[0], weights: $1[1], rows: [2, 0, 2, 1], count: 3)
        }
    }
    @Test func normalizeGroups() {
        let w = Tensor(shape: [6], scalars: [0.3, 0.2, 0.5, 0.1, 0.25, 0.05])
        check([w], epsilon: 1e-3) { $0.normalizeGroups($1[0], groupSize: 2) }
    }
    @Test func losses() {
        check([x]) { $0.crossEntropy($1[0], targets: [0, 5, 2, 2, 1]) }
        check([x]) { $0.zLoss($1[0]) }
        check([x]) { tape, v in
            tape.loadBalanceLoss(probabilities: tape.softmaxRows(v[0]), choices: [[0, 1], [1, 2], [5, 0], [3, 1], [1, 0]])
        }
    }
    @Test func rope() {
        let rotary = RotaryEmbedding(headDim: 4, context: 8, theta: 10_000)
        check([Self.random([6, 8], seed: 8)]) { $0.rope($1[0], rotary, numHeads: 2, sequenceLength: 3) }
    }
    @Test func causalAttention() {
        let (q, k, v) = (Self.random([6, 8], seed: 9), Self.random([6, 8], seed: 10), Self.random([6, 8], seed: 11))
        check([q, k, v]) { $0.causalAttention(q: $1[0], k: $1[1], v: $1[2], numHeads: 2, sequenceLength: 3) }
    }

    @Test func ropeInverseUndoesRotation() {
        let rotary = RotaryEmbedding(headDim: 8, context: 16, theta: 10_000)
        var row = Self.random([16], seed: 12).scalars
        let original = row
        row.withUnsafeMutableBufferPointer {
            rotary.apply($0.baseAddress!, numHeads: 2, position: 11)
            rotary.apply($0.baseAddress!, numHeads: 2, position: 11, inverse: true)
        }
        #expect(zip(row, original).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test func balanceLossIsKAtUniformRouting() {
        let (n, e, k) = (16, 8, 2)
        let tape = Tape()
        let uniform = tape.leaf(Tensor(repeating: 1 / Float(e), shape: [n, e]))
        // Each expert chosen equally often: token t picks experts 2t mod 8 and 2t+1 mod 8.
        let choices = (0..<n).map { [(2 * $0) % e, (2 * $0 + 1) % e] }
        let loss = tape.value(tape.loadBalanceLoss(probabilities: uniform, choices: choices)).scalars[0]
        #expect(abs(loss - Float(k)) < 1e-5)
        // Collapsing onto one expert pair raises it.
        let collapsed = tape.leaf(Tensor(shape: [n, e], scalars: (0..<(n * e)).map { $0 % e < 2 ? 0.5 : 0 }))
        let high = tape.value(tape.loadBalanceLoss(probabilities: collapsed, choices: Array(repeating: [0, 1], count: n))).scalars[0]
        #expect(high > Float(k) * 3)
    }

    /// RMoE's released code takes one balance loss over every layer's tokens pooled.
    @Test func pooledBalanceLossIsKAtUniformRoutingAndDiffersFromThePerLayerMean() {
        let (n, e, k, layers) = (12, 8, 2, 5)
        let tape = Tape()
        let uniform = (0..<layers).map { layer in
            (tape.leaf(Tensor(repeating: 1 / Float(e), shape: [n, e])), (0..<n).map { [(2 * $0 + layer) % e, (2 * $0 + layer + 1) % e] })
        }
        #expect(abs(tape.value(tape.loadBalanceLoss(pooling: uniform)).scalars[0] - Float(k)) < 1e-5)
        // One layer pooled is the per-layer loss.
        let p = tape.leaf(tape.value(tape.softmaxRows(tape.leaf(Self.random([n, e], seed: 8)))))
        let choices = (0..<n).map { [$0 % 3, 3 + $0 % 2] }
        #expect(
            tape.value(tape.loadBalanceLoss(pooling: [(p, choices)])).scalars[0]
                == tape.value(tape.loadBalanceLoss(probabilities: p, choices: choices)).scalars[0])
        // Two layers that each collapse onto a different expert pair: each alone scores E = 8
        // (4k), but pooled over the stack four experts share the load, which scores 4.
        let a = tape.leaf(Tensor(shape: [n, e], scalars: (0..<(n * e)).map { $0 % e < 2 ? 0.5 : 0 }))
        let b = tape.leaf(Tensor(shape: [n, e], scalars: (0..<(n * e)).map { (2..<4).contains($0 % e) ? 0.5 : 0 }))
        let ca = Array(repeating: [0, 1], count: n)
        let cb = Array(repeating: [2, 3], count: n)
        let perLayerMean =
            (tape.value(tape.loadBalanceLoss(probabilities: a, choices: ca)).scalars[0]
                + tape.value(tape.loadBalanceLoss(probabilities: b, choices: cb)).scalars[0]) / 2
        let pooled = tape.value(tape.loadBalanceLoss(pooling: [(a, ca), (b, cb)])).scalars[0]
        #expect(abs(perLayerMean - 8) < 1e-5)
        #expect(abs(pooled - 4) < 1e-5)
    }

    @Test func pooledBalanceLossGradient() {
        let n = 6
        let e = 4
        let choices = [(0..<n).map { [$0 % e, ($0 + 1) % e] }, (0..<n).map { [($0 * 3) % e, ($0 * 3 + 2) % e] }]
        check([Self.random([n, e], seed: 21), Self.random([n, e], seed: 22)]) { tape, v in
            tape.loadBalanceLoss(pooling: [(tape.softmaxRows(v[0]), choices[0]), (tape.softmaxRows(v[1]), choices[1])])
        }
    }
}

/// Every router's gradients — with respect to its input and every parameter — against finite
/// differences, through all layers at once so the GRU is checked through depth.
@Suite struct RouterGradientTests {
    @Test(arguments: RouterKind.allCases.filter { $0 != .hash })
    func routerGradientsMatchFiniteDifferences(kind: RouterKind) throws {
        var config = ModelConfig.tiny(router: kind)
        config.initStd = 0.3  // large enough that every nonlinearity is exercised
        var source = RandomWeights(seed: 4)
        let router = try makeRouter(config, from: &source)
        let names = router.namedParameters.keys.sorted()
        let u = GradientTests.random([3, config.hiddenSize], seed: 17)
        let inputs = [u] + names.map { router.namedParameters[$0]! }
        GradientTests().check(inputs, samples: 6) { tape, variables in
            let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0 + 1) })
            var state: Variable?
            var total: Variable?
            for layer in 0..<config.numLayers {
                let logits = router.logits(variables[0], tokens: [1, 2, 3], layer: layer, state: &state, on: tape) {
                    variables[index[$0.name]!]
                }
                let weighted = tape.scale(logits, by: Float(layer + 1))
                total = total.map { tape.add($0, weighted) } ?? weighted
            }
            return total!
        }
    }

    @Test func gruGradientReachesEarlierLayersThroughTheHiddenState() throws {
        var source = RandomWeights(seed: 4)
        let config = ModelConfig.tiny(router: .gru)
        let router = try GRURouter(config, from: &source)
        let tape = Tape()
        let parameters = router.namedParameters.mapValues { tape.leaf($0) }
        var state: Variable?
        let u = tape.leaf(GradientTests.random([2, config.hiddenSize], seed: 3))
        _ = router.logits(u, tokens: [1, 2], layer: 0, state: &state, on: tape) { parameters[$0.name]! }
        let last = router.logits(u, tokens: [1, 2], layer: 1, state: &state, on: tape) { parameters[$0.name]! }
        tape.backward(from: tape.sum(tape.multiply(last, tape.leaf(GradientTests.random([2, config.numExperts], seed: 5)))))
        // The loss reads only layer 1's logits, yet layer 0's projector gets a gradient via h_0 → h_1.
        let layer0 = tape.gradient(parameters["model.layers.0.block_sparse_moe.gate.projector.weight"]!)
        #expect(layer0.scalars.contains { abs($0) > 1e-7 })
        #expect(tape.gradient(parameters["model.layers.0.block_sparse_moe.gate.output.weight"]!).scalars.allSatisfy { $0 == 0 })
    }

    @Test func gruWithoutRecurrenceGradientsMatchFiniteDifferences() throws {
        var config = ModelConfig.tiny(router: .gru)
        config.initStd = 0.3
        config.gruRecurrence = false
        var source = RandomWeights(seed: 4)
        let router = try GRURouter(config, from: &source)
        let names = router.namedParameters.keys.sorted().filter { !$0.hasSuffix("weight_hh") }  // W_hh multiplies 0
        let u = GradientTests.random([3, config.hiddenSize], seed: 17)
        GradientTests().check([u] + names.map { router.namedParameters[$0]! }, samples: 6) { tape, variables in
            let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0 + 1) })
            var state: Variable?
            var total: Variable?
            for layer in 0..<config.numLayers {
                let logits = router.logits(variables[0], tokens: [1, 2, 3], layer: layer, state: &state, on: tape) {
                    index[$0.name].map { variables[$0] } ?? tape.leaf($0.value)
                }
                let weighted = tape.scale(logits, by: Float(layer + 1))
                total = total.map { tape.add($0, weighted) } ?? weighted
            }
            return total!
        }
    }

    /// Cutting the recurrence is the GRU cell run from h = 0 at every layer: layer by layer it
    /// equals the recurrent GRU given no state, ignores W_hh (zeroed or not), and so differs
    /// from the recurrent router below the first layer. (A GRU with W_hh = 0 alone is not the
    /// same router: its update gate still carries z ⊙ h_{i−1} down the stack.)
    @Test func gruWithoutRecurrenceIsTheCellFromZeroStateAtEveryLayer() throws {
        var config = ModelConfig.tiny(router: .gru)
        config.numLayers = 4
        config.initStd = 0.3
        var source = RandomWeights(seed: 9)
        let recurrent = try GRURouter(config, from: &source)
        config.gruRecurrence = false
        var same = NamedTensors(recurrent.namedParameters)
        let cut = try GRURouter(config, from: &same)
        var zeroed = cut
        zeroed.visitParameters { if $0.name == "model.router_gru.weight_hh" { $0.value = Tensor(zeros: $0.shape) } }
        let u = GradientTests.random([5, config.hiddenSize], seed: 2)
        let tokens = [1, 2, 3, 4, 5]
        var cutState = RouterDepthState()
        var zeroedState = RouterDepthState()
        var recurrentState = RouterDepthState()
        for layer in 0..<config.numLayers {
            let fromCut = cut.logits(u, tokens: tokens, layer: layer, state: &cutState)
            var fresh = RouterDepthState()
            let fromZeroState = recurrent.logits(u, tokens: tokens, layer: layer, state: &fresh)
            #expect(fromCut.scalars == fromZeroState.scalars, "layer \(layer)")
            #expect(zeroed.logits(u, tokens: tokens, layer: layer, state: &zeroedState).scalars == fromCut.scalars)
            let fromRecurrent = recurrent.logits(u, tokens: tokens, layer: layer, state: &recurrentState)
            if layer == 0 {
                #expect(fromRecurrent.scalars == fromCut.scalars)
            } else {
                #expect(zip(fromRecurrent.scalars, fromCut.scalars).contains { abs($0 - $1) > 1e-4 }, "layer \(layer)")
            }
        }
    }

    @Test func routerFLOPsCountEachProduct() {
        var config = ModelConfig()
        config.router = .linear
        #expect(config.routerFLOPsPerToken == 2 * 6 * 8 * 128)
        config.router = .gru
        let p = config.gruHiddenSize
        #expect(config.routerFLOPsPerToken == 2 * 6 * (p * 128 + 6 * p * p + 8 * p))
        config.gruRecurrence = false
        #expect(config.routerFLOPsPerToken == 2 * 6 * (p * 128 + 3 * p * p + 8 * p))
        config.router = .hash
        #expect(config.routerFLOPsPerToken == 0)
    }

    @Test func hashRouterIsAConstant() throws {
        let router = HashRouter(.tiny(router: .hash))
        let tape = Tape()
        let u = tape.leaf(GradientTests.random([2, 32], seed: 1))
        var state: Variable?
        let logits = router.logits(u, tokens: [5, 6], layer: 0, state: &state, on: tape) { _ in fatalError("no parameters") }
        #expect(tape.value(logits).scalars.filter { $0 == 0 }.count == 2 * router.topK)
        #expect(state == nil)
    }
}
