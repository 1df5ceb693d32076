/// Attention router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025), in moescope's
/// interpretation: the token forms a query and scores it against one learned key per expert.
///
///     logits = (Wq u) Kᵀ / √a,    Wq ∈ ℝ^{a×d}, K ∈ ℝ^{E×a}
public struct AttentionRouter: Router {
    public var kind: RouterKind { .attention }
    public var namedParameters: [String: Tensor]
    let keyWidth: Int

    public init(_ config: ModelConfig, from source: inout some WeightSource) throws {
        let a = config.routerHiddenSize
        keyWidth = a
        namedParameters = try loadParameters((0..<config.numLayers).flatMap { layer in [
            ("\(routerPrefix(layer)).query.weight", [a, config.hiddenSize], .normal(std: config.initStd)),
            ("\(routerPrefix(layer)).expert_keys", [config.numExperts, a], .normal(std: 1)),
        ] }, from: &source)
    }

    public func logits(_ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
                       on tape: Tape, parameter: (String) -> Variable) -> Variable {
        let query = tape.linear(u, parameter("\(routerPrefix(layer)).query.weight"))
        // (Wq u) Kᵀ is a linear layer whose weight is K.
        let scores = tape.linear(query, parameter("\(routerPrefix(layer)).expert_keys"))
        return tape.scale(scores, by: 1 / Float(keyWidth).squareRoot())
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, threads: Int) -> Tensor {
        let query = linear(u, parameter("\(routerPrefix(layer)).query.weight"), threads: threads)
        let scale = 1 / Float(keyWidth).squareRoot()
        return linear(query, parameter("\(routerPrefix(layer)).expert_keys"), threads: threads).mapped { $0 * scale }
    }
}
