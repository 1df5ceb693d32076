/// MLP-Hadamard router — "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025), in moescope's
/// interpretation: a gated MLP whose hidden layer is the elementwise (Hadamard) product of two
/// projections of the token.
///
///     logits = Wo (GELU(Wa u) ⊙ (Wb u)),    Wa, Wb ∈ ℝ^{h×d}, Wo ∈ ℝ^{E×h}
public struct MLPHadamardRouter: Router {
    public var kind: RouterKind { .mlpHadamard }
    public var namedParameters: [String: Tensor]

    public init(_ config: ModelConfig, from source: inout some WeightSource) throws {
        let (d, h, e, std) = (config.hiddenSize, config.routerHiddenSize, config.numExperts, config.initStd)
        namedParameters = try loadParameters((0..<config.numLayers).flatMap { layer in [
            ("\(routerPrefix(layer)).proj_a.weight", [h, d], .normal(std: std)),
            ("\(routerPrefix(layer)).proj_b.weight", [h, d], .normal(std: std)),
            ("\(routerPrefix(layer)).out.weight", [e, h], .normal(std: std)),
        ] }, from: &source)
    }

    public func logits(_ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
                       on tape: Tape, parameter: (String) -> Variable) -> Variable {
        let a = tape.gelu(tape.linear(u, parameter("\(routerPrefix(layer)).proj_a.weight")))
        let b = tape.linear(u, parameter("\(routerPrefix(layer)).proj_b.weight"))
        return tape.linear(tape.multiply(a, b), parameter("\(routerPrefix(layer)).out.weight"))
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, threads: Int) -> Tensor {
        let a = linear(u, parameter("\(routerPrefix(layer)).proj_a.weight"), threads: threads).mapped(Kernels.gelu)
        let b = linear(u, parameter("\(routerPrefix(layer)).proj_b.weight"), threads: threads)
        return linear(a.zipped(b, *), parameter("\(routerPrefix(layer)).out.weight"), threads: threads)
    }
}
