/// MLP router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025). The paper does not
/// publish its formula; this two-layer form is moescope's interpretation.
///
///     logits = W2 GELU(W1 u),    W1 ∈ ℝ^{h×d}, W2 ∈ ℝ^{E×h}
public struct MLPRouter: Router {
    public var kind: RouterKind { .mlp }
    public var namedParameters: [String: Tensor]
    let names: @Sendable (Int) -> String

    public init(_ config: ModelConfig, from source: inout some WeightSource,
                prefix: @escaping @Sendable (Int) -> String = routerPrefix) throws {
        names = prefix
        let (d, h, e, std) = (config.hiddenSize, config.routerHiddenSize, config.numExperts, config.initStd)
        namedParameters = try loadParameters((0..<config.numLayers).flatMap { layer in [
            ("\(prefix(layer)).fc1.weight", [h, d], .normal(std: std)),
            ("\(prefix(layer)).fc2.weight", [e, h], .normal(std: std)),
        ] }, from: &source)
    }

    public func logits(_ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
                       on tape: Tape, parameter: (String) -> Variable) -> Variable {
        let hidden = tape.gelu(tape.linear(u, parameter("\(names(layer)).fc1.weight")))
        return tape.linear(hidden, parameter("\(names(layer)).fc2.weight"))
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, threads: Int) -> Tensor {
        let hidden = linear(u, parameter("\(names(layer)).fc1.weight"), threads: threads).mapped(Kernels.gelu)
        return linear(hidden, parameter("\(names(layer)).fc2.weight"), threads: threads)
    }
}
