/// Linear router, the Switch Transformer / Mixtral baseline ("SMoE").
///
///     logits = W u,    W ∈ ℝ^{E×d}
///
/// Stored under Mixtral's name, `model.layers.N.block_sparse_moe.gate.weight`.
public struct LinearRouter: Router {
    public var kind: RouterKind { .linear }
    public var gates: [Linear]
    let names: @Sendable (Int) -> String

    public init(_ config: ModelConfig, from source: inout some WeightSource,
                prefix: @escaping @Sendable (Int) -> String = routerPrefix) throws {
        names = prefix
        gates = try (0..<config.numLayers).map { layer in
            try Linear("\(prefix(layer)).weight", in: config.hiddenSize, out: config.numExperts,
                       std: config.initStd, from: &source)
        }
    }

    public var namedParameters: [String: Tensor] {
        Dictionary(uniqueKeysWithValues: gates.enumerated().map { ("\(names($0.offset)).weight", $0.element.weight) })
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState) -> Tensor {
        gates[layer](u)
    }
}
