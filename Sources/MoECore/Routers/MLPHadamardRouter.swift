/// MLP-Hadamard router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025), in moescope's
/// interpretation: a gated MLP whose hidden layer is the elementwise (Hadamard) product of two
/// projections of the token.
///
///     logits = Wo (GELU(Wa u) ⊙ (Wb u)),    Wa, Wb ∈ ℝ^{h×d}, Wo ∈ ℝ^{E×h}
public struct MLPHadamardRouter: Router {
    public var kind: RouterKind { .mlpHadamard }
    public var projectionA: [Linear]
    public var projectionB: [Linear]
    public var output: [Linear]

    public init(_ config: ModelConfig, from source: inout some WeightSource) throws {
        let (d, h, e, std) = (config.hiddenSize, config.routerHiddenSize, config.numExperts, config.initStd)
        projectionA = try (0..<config.numLayers).map { try Linear("\(routerPrefix($0)).proj_a.weight", in: d, out: h, std: std, from: &source) }
        projectionB = try (0..<config.numLayers).map { try Linear("\(routerPrefix($0)).proj_b.weight", in: d, out: h, std: std, from: &source) }
        output = try (0..<config.numLayers).map { try Linear("\(routerPrefix($0)).out.weight", in: h, out: e, std: std, from: &source) }
    }

    public var namedParameters: [String: Tensor] {
        var all: [String: Tensor] = [:]
        for layer in output.indices {
            all["\(routerPrefix(layer)).proj_a.weight"] = projectionA[layer].weight
            all["\(routerPrefix(layer)).proj_b.weight"] = projectionB[layer].weight
            all["\(routerPrefix(layer)).out.weight"] = output[layer].weight
        }
        return all
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState) -> Tensor {
        let a = projectionA[layer](u).mapped(Kernels.gelu)
        let b = projectionB[layer](u)
        return output[layer](Tensor(shape: a.shape, scalars: zip(a.scalars, b.scalars).map(*)))
    }
}
