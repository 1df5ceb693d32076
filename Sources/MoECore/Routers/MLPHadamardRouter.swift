/// MLP-Hadamard router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025), in moescope's
/// interpretation: a gated MLP whose hidden layer is the elementwise (Hadamard) product of two
/// projections of the token.
///
///     logits = Wo (GELU(Wa u) ⊙ (Wb u)),    Wa, Wb ∈ ℝ^{h×d}, Wo ∈ ℝ^{E×h}
public struct MLPHadamardRouter: Router {
    public var kind: RouterKind { .mlpHadamard }
    /// Wa, Wb and Wo of each layer.
    var gated, linear, output: [Parameter]

    public init(_ config: ModelConfig) {
        let (d, h, e, layers, initializer) = (
            config.hiddenSize, config.routerHiddenSize, config.numExperts, config.numLayers, Initializer.normal(std: config.initStd)
        )
        gated = .init(layers: layers, { "\(routerPrefix($0)).proj_a.weight" }, shape: [h, d], initializer: initializer)
        linear = .init(layers: layers, { "\(routerPrefix($0)).proj_b.weight" }, shape: [h, d], initializer: initializer)
        output = .init(layers: layers, { "\(routerPrefix($0)).out.weight" }, shape: [e, h], initializer: initializer)
    }

    /// Layer by layer, Wa, Wb, Wo.
    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        for l in gated.indices {
            try visit(&gated[l])
            try visit(&linear[l])
            try visit(&output[l])
        }
    }

    public func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (Parameter) -> Variable
    ) -> Variable {
        let a = tape.gelu(tape.linear(u, parameter(gated[layer])))
        let b = tape.linear(u, parameter(linear[layer]))
        return tape.linear(tape.multiply(a, b), parameter(output[layer]))
    }

    public var expertCount: Int { output[0].value.rows }

    public func logits(
        _ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, into out: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let rows = u.rows
        let count = rows * gated[layer].value.rows
        withScratch(2 * count) { a in
            let b = a + count
            u.withBase { u in
                MoECore.linear(u, rows: rows, gated[layer], into: a, threads: threads)
                MoECore.linear(u, rows: rows, linear[layer], into: b, threads: threads)
            }
            Kernels.apply(Kernels.gelu, to: a, count: count)
            for i in 0..<count { a[i] *= b[i] }
            MoECore.linear(a, rows: rows, output[layer], into: out, threads: threads)
        }
    }
}
