/// Attention router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025), in moescope's
/// interpretation: the token forms a query and scores it against one learned key per expert.
///
///     logits = (Wq u) Kᵀ / √a,    Wq ∈ ℝ^{a×d}, K ∈ ℝ^{E×a}
public struct AttentionRouter: Router {
    public var kind: RouterKind { .attention }
    public var query: [Linear]
    /// K as a Linear layer: (Wq u) Kᵀ is exactly `expertKeys(q)`.
    public var expertKeys: [Linear]
    let keyWidth: Int

    public init(_ config: ModelConfig, from source: inout some WeightSource) throws {
        let a = config.routerHiddenSize
        keyWidth = a
        query = try (0..<config.numLayers).map {
            try Linear("\(routerPrefix($0)).query.weight", in: config.hiddenSize, out: a, std: config.initStd, from: &source)
        }
        expertKeys = try (0..<config.numLayers).map {
            try Linear("\(routerPrefix($0)).expert_keys", in: a, out: config.numExperts, std: 1, from: &source)
        }
    }

    public var namedParameters: [String: Tensor] {
        var all: [String: Tensor] = [:]
        for layer in query.indices {
            all["\(routerPrefix(layer)).query.weight"] = query[layer].weight
            all["\(routerPrefix(layer)).expert_keys"] = expertKeys[layer].weight
        }
        return all
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState) -> Tensor {
        let scale = 1 / Float(keyWidth).squareRoot()
        return expertKeys[layer](query[layer](u)).mapped { $0 * scale }
    }
}
