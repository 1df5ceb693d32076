/// MLP router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025). The paper does not
/// publish its formula; this two-layer form is moescope's interpretation.
///
///     logits = W2 GELU(W1 u),    W1 ∈ ℝ^{h×d}, W2 ∈ ℝ^{E×h}
public struct MLPRouter: Router {
    public var kind: RouterKind { .mlp }
    /// W1 and W2 of each layer.
    var hidden, output: [NamedWeight]
    public var namedParameters: [String: Tensor] {
        get { (hidden + output).named }
        set {
            hidden.assign(newValue)
            output.assign(newValue)
        }
    }

    public init(
        _ config: ModelConfig, from source: inout some WeightSource,
        prefix: @escaping @Sendable (Int) -> String = routerPrefix
    ) throws {
        let (d, h, e, std) = (config.hiddenSize, config.routerHiddenSize, config.numExperts, config.initStd)
        let drawn = try NamedWeight.draw(
            (0..<config.numLayers).flatMap { layer in
                [
                    ("\(prefix(layer)).fc1.weight", [h, d], .normal(std: std)),
                    ("\(prefix(layer)).fc2.weight", [e, h], .normal(std: std)),
                ]
            }, from: &source)
        (hidden, output) = (NamedWeight.every(2, from: 0, of: drawn), NamedWeight.every(2, from: 1, of: drawn))
    }

    public func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (String) -> Variable
    ) -> Variable {
        let activated = tape.gelu(tape.linear(u, parameter(hidden[layer].name)))
        return tape.linear(activated, parameter(output[layer].name))
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, threads: Int) -> Tensor {
        var out = Tensor(uninitialized: [u.rows, output[layer].value.rows])
        out.withMutableBase { logits(u, layer: layer, into: $0, threads: threads) }
        return out
    }

    /// The direct path into `out` [T × E], its hidden layer in scratch memory.
    func logits(_ u: Tensor, layer: Int, into out: UnsafeMutablePointer<Float>, threads: Int) {
        let count = u.rows * hidden[layer].value.rows
        withScratch(count) { activated in
            u.withBase { linear($0, rows: u.rows, hidden[layer].value, into: activated, threads: threads) }
            for i in 0..<count { activated[i] = Kernels.gelu(activated[i]) }
            linear(activated, rows: u.rows, output[layer].value, into: out, threads: threads)
        }
    }
}
