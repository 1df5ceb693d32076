/// Linear router, the Switch Transformer / Mixtral baseline ("SMoE").
///
///     logits = W u,    W ∈ ℝ^{E×d}
///
/// Stored under Mixtral's name, `model.layers.N.block_sparse_moe.gate.weight`.
public struct LinearRouter: Router {
    public var kind: RouterKind { .linear }
    public var namedParameters: [String: Tensor]
    let names: @Sendable (Int) -> String

    public init(_ config: ModelConfig, from source: inout some WeightSource,
                prefix: @escaping @Sendable (Int) -> String = routerPrefix) throws {
        names = prefix
        namedParameters = try loadParameters((0..<config.numLayers).map {
            ("\(prefix($0)).weight", [config.numExperts, config.hiddenSize], .normal(std: config.initStd))
        }, from: &source)
    }

    public func logits(_ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
                       on tape: Tape, parameter: (String) -> Variable) -> Variable {
        tape.linear(u, parameter("\(names(layer)).weight"))
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, threads: Int) -> Tensor {
        linear(u, parameter("\(names(layer)).weight"), threads: threads)
    }
}
