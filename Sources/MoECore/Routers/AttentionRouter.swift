/// Attention router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025), in moescope's
/// interpretation: the token forms a query and scores it against one learned key per expert.
///
///     logits = (Wq u) Kᵀ / √a,    Wq ∈ ℝ^{a×d}, K ∈ ℝ^{E×a}
public struct AttentionRouter: Router {
    public var kind: RouterKind { .attention }
    /// Wq and K of each layer.
    var queries, expertKeys: [Parameter]
    let keyWidth: Int

    public init(_ config: ModelConfig) {
        let (a, layers) = (config.routerHiddenSize, config.numLayers)
        keyWidth = a
        queries = .init(
            layers: layers, { "\(routerPrefix($0)).query.weight" }, shape: [a, config.hiddenSize],
            initializer: .normal(std: config.initStd))
        expertKeys = .init(
            layers: layers, { "\(routerPrefix($0)).expert_keys" }, shape: [config.numExperts, a], initializer: .normal(std: 1))
    }

    /// Layer by layer, Wq then K.
    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        for l in queries.indices {
            try visit(&queries[l])
            try visit(&expertKeys[l])
        }
    }

    public func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (Parameter) -> Variable
    ) -> Variable {
        let query = tape.linear(u, parameter(queries[layer]))
        // (Wq u) Kᵀ is a linear layer whose weight is K.
        let scores = tape.linear(query, parameter(expertKeys[layer]))
        return tape.scale(scores, by: 1 / Float(keyWidth).squareRoot())
    }

    public var expertCount: Int { expertKeys[0].value.rows }

    public func logits(
        _ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, into scores: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let scale = 1 / Float(keyWidth).squareRoot()
        let count = u.rows * expertCount
        withScratch(u.rows * keyWidth) { query in
            u.withBase { linear($0, rows: u.rows, queries[layer], into: query, threads: threads) }
            linear(query, rows: u.rows, expertKeys[layer], into: scores, threads: threads)
            for i in 0..<count { scores[i] *= scale }
        }
    }
}
