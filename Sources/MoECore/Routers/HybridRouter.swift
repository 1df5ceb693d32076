/// Hybrid router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025), in moescope's
/// interpretation: a learned blend of the Linear and MLP routers.
///
///     logits = α · W u + (1 − α) · W2 GELU(W1 u),    α = σ(s), s a learned scalar per layer
public struct HybridRouter: Router {
    public var kind: RouterKind { .hybrid }
    public var linear: LinearRouter
    public var mlp: MLPRouter
    /// s per layer; α = σ(s) starts at 0.5.
    public var mixLogits: [Tensor]

    public init(_ config: ModelConfig, from source: inout some WeightSource) throws {
        linear = try LinearRouter(config, from: &source, prefix: { "\(routerPrefix($0)).linear" })
        mlp = try MLPRouter(config, from: &source, prefix: { "\(routerPrefix($0)).mlp" })
        mixLogits = try (0..<config.numLayers).map {
            try source.tensor("\(routerPrefix($0)).mix_logit", shape: [1], initializer: .constant(0))
        }
    }

    public var namedParameters: [String: Tensor] {
        var all = linear.namedParameters.merging(mlp.namedParameters) { a, _ in a }
        for (layer, mix) in mixLogits.enumerated() { all["\(routerPrefix(layer)).mix_logit"] = mix }
        return all
    }

    public func mix(layer: Int) -> Float { Kernels.sigmoid(mixLogits[layer].scalars[0]) }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState) -> Tensor {
        let alpha = mix(layer: layer)
        let a = linear.logits(u, tokens: tokens, layer: layer, state: &state)
        let b = mlp.logits(u, tokens: tokens, layer: layer, state: &state)
        return Tensor(shape: a.shape, scalars: zip(a.scalars, b.scalars).map { alpha * $0 + (1 - alpha) * $1 })
    }
}
