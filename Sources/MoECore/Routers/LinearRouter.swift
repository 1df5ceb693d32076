/// Linear router, the Switch Transformer / Mixtral baseline ("SMoE").
///
///     logits = W u,    W ∈ ℝ^{E×d}
///
/// Stored under Mixtral's name, `model.layers.N.block_sparse_moe.gate.weight`.
public struct LinearRouter: Router {
    public var kind: RouterKind { .linear }
    /// W of each layer.
    var gates: [Parameter]

    public init(_ config: ModelConfig) { self.init(config, prefix: routerPrefix) }

    /// Declared under `prefix(layer)` (the Hybrid router nests one).
    init(_ config: ModelConfig, prefix: (Int) -> String) {
        gates = .init(
            layers: config.numLayers, { "\(prefix($0)).weight" }, shape: [config.numExperts, config.hiddenSize],
            initializer: .normal(std: config.initStd))
    }

    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        for l in gates.indices { try visit(&gates[l]) }
    }

    public func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (Parameter) -> Variable
    ) -> Variable {
        tape.linear(u, parameter(gates[layer]))
    }

    public var expertCount: Int { gates[0].value.rows }

    public func logits(
        _ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, into out: UnsafeMutablePointer<Float>, threads: Int
    ) {
        u.withBase { linear($0, rows: u.rows, gates[layer], into: out, threads: threads) }
    }
}
