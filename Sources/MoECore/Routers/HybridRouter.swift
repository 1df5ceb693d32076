/// Hybrid router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025), in moescope's
/// interpretation: a learned blend of the Linear and MLP routers.
///
///     logits = α · W u + (1 − α) · W2 GELU(W1 u),    α = σ(s), s a learned scalar per layer
public struct HybridRouter: Router {
    public var kind: RouterKind { .hybrid }
    var linear: LinearRouter
    var mlp: MLPRouter
    /// s of each layer.
    var mixLogits: [Parameter]

    public init(_ config: ModelConfig) {
        linear = LinearRouter(config, prefix: { "\(routerPrefix($0)).linear" })
        mlp = MLPRouter(config, prefix: { "\(routerPrefix($0)).mlp" })
        // s starts at 0: α = 0.5, an even blend.
        mixLogits = .init(layers: config.numLayers, { "\(routerPrefix($0)).mix_logit" }, shape: [1], initializer: .constant(0))
    }

    /// The Linear part, the MLP part, then s of each layer.
    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        try linear.visitParameters(visit)
        try mlp.visitParameters(visit)
        for l in mixLogits.indices { try visit(&mixLogits[l]) }
    }

    /// α of `layer`.
    public func mix(layer: Int) -> Float { Kernels.sigmoid(mixLogits[layer].value.scalars[0]) }

    public func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (Parameter) -> Variable
    ) -> Variable {
        let alpha = tape.sigmoid(parameter(mixLogits[layer]))
        let a = linear.logits(u, tokens: tokens, layer: layer, state: &state, on: tape, parameter: parameter)
        let b = mlp.logits(u, tokens: tokens, layer: layer, state: &state, on: tape, parameter: parameter)
        return tape.add(tape.scale(a, byScalar: alpha), tape.scale(b, byScalar: tape.oneMinus(alpha)))
    }

    public var expertCount: Int { linear.expertCount }

    public func logits(
        _ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, into a: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let alpha = mix(layer: layer)
        let beta = 1 - alpha
        linear.logits(u, tokens: tokens, layer: layer, state: &state, into: a, threads: threads)
        let count = u.rows * expertCount
        withScratch(count) { b in
            mlp.logits(u, layer: layer, into: b, threads: threads)
            for i in 0..<count {
                let (weightedLinear, weightedMLP) = (a[i] * alpha, b[i] * beta)  // each rounded, then summed, as on the tape
                a[i] = weightedLinear + weightedMLP
            }
        }
    }
}
