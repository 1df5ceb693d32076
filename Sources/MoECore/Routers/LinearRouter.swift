/// Linear router, the Switch Transformer / Mixtral baseline ("SMoE").
///
///     logits = W u,    W ∈ ℝ^{E×d}
///
/// Stored under Mixtral's name, `model.layers.N.block_sparse_moe.gate.weight`.
public struct LinearRouter: Router {
    public var kind: RouterKind { .linear }
    /// W of each layer.
    var gates: [NamedWeight]
    public var namedParameters: [String: Tensor] {
        get { gates.named }
        set { gates.assign(newValue) }
    }

    public init(
        _ config: ModelConfig, from source: inout some WeightSource,
        prefix: @escaping @Sendable (Int) -> String = routerPrefix
    ) throws {
        gates = try NamedWeight.draw(
            (0..<config.numLayers).map {
                ("\(prefix($0)).weight", [config.numExperts, config.hiddenSize], .normal(std: config.initStd))
            }, from: &source)
    }

    public func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (String) -> Variable
    ) -> Variable {
        tape.linear(u, parameter(gates[layer].name))
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, threads: Int) -> Tensor {
        linear(u, gates[layer].value, threads: threads)
    }
}
