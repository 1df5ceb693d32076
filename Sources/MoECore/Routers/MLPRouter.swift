/// MLP router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025). The paper does not
/// publish its formula; this two-layer form is moescope's interpretation.
///
///     logits = W2 GELU(W1 u),    W1 ∈ ℝ^{h×d}, W2 ∈ ℝ^{E×h}
public struct MLPRouter: Router {
    public var kind: RouterKind { .mlp }
    /// W1 and W2 of each layer.
    var hidden, output: [Parameter]

    public init(_ config: ModelConfig) { self.init(config, prefix: routerPrefix) }

    /// Declared under `prefix(layer)` (the Hybrid router nests one).
    init(_ config: ModelConfig, prefix: (Int) -> String) {
        let (d, h, e, std) = (config.hiddenSize, config.routerHiddenSize, config.numExperts, config.initStd)
        hidden = .init(layers: config.numLayers, { "\(prefix($0)).fc1.weight" }, shape: [h, d], initializer: .normal(std: std))
        output = .init(layers: config.numLayers, { "\(prefix($0)).fc2.weight" }, shape: [e, h], initializer: .normal(std: std))
    }

    /// Layer by layer, W1 then W2.
    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        for l in hidden.indices {
            try visit(&hidden[l])
            try visit(&output[l])
        }
    }

    public func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (Parameter) -> Variable
    ) -> Variable {
        let activated = tape.gelu(tape.linear(u, parameter(hidden[layer])))
        return tape.linear(activated, parameter(output[layer]))
    }

    public var expertCount: Int { output[0].value.rows }

    public func logits(
        _ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, into out: UnsafeMutablePointer<Float>, threads: Int
    ) {
        logits(u, layer: layer, into: out, threads: threads)
    }

    /// The direct path into `out` [T × E], its hidden layer in scratch memory.
    func logits(_ u: Tensor, layer: Int, into out: UnsafeMutablePointer<Float>, threads: Int) {
        let count = u.rows * hidden[layer].value.rows
        withScratch(count) { activated in
            u.withBase { linear($0, rows: u.rows, hidden[layer], into: activated, threads: threads) }
            Kernels.apply(Kernels.gelu, to: activated, count: count)
            linear(activated, rows: u.rows, output[layer], into: out, threads: threads)
        }
    }
}
