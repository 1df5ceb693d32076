/// MLP router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025). The paper does not
/// publish its formula; this two-layer form is moescope's interpretation.
///
///     logits = W2 GELU(W1 u),    W1 ∈ ℝ^{h×d}, W2 ∈ ℝ^{E×h}
public struct MLPRouter: Router {
    public var kind: RouterKind { .mlp }
    public var fc1: [Linear]
    public var fc2: [Linear]
    let names: @Sendable (Int) -> String

    public init(_ config: ModelConfig, from source: inout some WeightSource,
                prefix: @escaping @Sendable (Int) -> String = routerPrefix) throws {
        names = prefix
        fc1 = try (0..<config.numLayers).map {
            try Linear("\(prefix($0)).fc1.weight", in: config.hiddenSize, out: config.routerHiddenSize, std: config.initStd, from: &source)
        }
        fc2 = try (0..<config.numLayers).map {
            try Linear("\(prefix($0)).fc2.weight", in: config.routerHiddenSize, out: config.numExperts, std: config.initStd, from: &source)
        }
    }

    public var namedParameters: [String: Tensor] {
        var all: [String: Tensor] = [:]
        for layer in fc1.indices {
            all["\(names(layer)).fc1.weight"] = fc1[layer].weight
            all["\(names(layer)).fc2.weight"] = fc2[layer].weight
        }
        return all
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState) -> Tensor {
        fc2[layer](fc1[layer](u).mapped(Kernels.gelu))
    }
}
