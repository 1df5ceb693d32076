/// Layerwise Recurrent Router (RMoE; Qiu et al. 2024). A GRU carries routing state down the
/// layer stack: the recurrence runs over depth for each token, never along the sequence, so
/// KV-cached decoding needs no extra state between tokens.
///
///     x_i = P_i u_i                                   (P_i ∈ ℝ^{p×d}, per layer, no bias)
///     r   = σ(W_ir x + b_ir + W_hr h + b_hr)
///     z   = σ(W_iz x + b_iz + W_hz h + b_hz)
///     n   = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
///     h_i = (1 − z) ⊙ n + z ⊙ h_{i−1},   h_0 = 0      (one GRU cell shared by all layers)
///     logits_i = G_i h_i                              (G_i ∈ ℝ^{E×p}, per layer, no bias)
///
/// The GRU cell follows PyTorch's `GRUCell` layout: `weight_ih` stacks [W_ir; W_iz; W_in].
public struct GRURouter: Router {
    public var kind: RouterKind { .gru }
    public var projectors: [Linear]
    public var outputs: [Linear]
    public var inputWeights: Linear    // [3p × p]
    public var hiddenWeights: Linear   // [3p × p]
    public var inputBias: Tensor       // [3p]
    public var hiddenBias: Tensor      // [3p]
    public let stateSize: Int

    static let cellPrefix = "model.router_gru"

    public init(_ config: ModelConfig, from source: inout some WeightSource) throws {
        let p = config.gruHiddenSize
        stateSize = p
        // PyTorch initialises GRU weights U(−1/√p, 1/√p); a normal with the same variance.
        let cellStd = 1 / (3 * Float(p)).squareRoot()
        projectors = try (0..<config.numLayers).map {
            try Linear("\(routerPrefix($0)).projector.weight", in: config.hiddenSize, out: p, std: config.initStd, from: &source)
        }
        outputs = try (0..<config.numLayers).map {
            try Linear("\(routerPrefix($0)).output.weight", in: p, out: config.numExperts, std: config.initStd, from: &source)
        }
        inputWeights = try Linear("\(Self.cellPrefix).weight_ih", in: p, out: 3 * p, std: cellStd, from: &source)
        hiddenWeights = try Linear("\(Self.cellPrefix).weight_hh", in: p, out: 3 * p, std: cellStd, from: &source)
        inputBias = try source.tensor("\(Self.cellPrefix).bias_ih", shape: [3 * p], initializer: .normal(std: cellStd))
        hiddenBias = try source.tensor("\(Self.cellPrefix).bias_hh", shape: [3 * p], initializer: .normal(std: cellStd))
    }

    public var namedParameters: [String: Tensor] {
        var all: [String: Tensor] = [
            "\(Self.cellPrefix).weight_ih": inputWeights.weight,
            "\(Self.cellPrefix).weight_hh": hiddenWeights.weight,
            "\(Self.cellPrefix).bias_ih": inputBias,
            "\(Self.cellPrefix).bias_hh": hiddenBias,
        ]
        for layer in projectors.indices {
            all["\(routerPrefix(layer)).projector.weight"] = projectors[layer].weight
            all["\(routerPrefix(layer)).output.weight"] = outputs[layer].weight
        }
        return all
    }

    /// One GRU step for T tokens at once: x, h: [T × p] → h′ [T × p].
    public func cell(input x: Tensor, hidden h: Tensor) -> Tensor {
        let p = stateSize
        let gi = inputWeights(x), gh = hiddenWeights(h)
        var next = Tensor(zeros: h.shape)
        for t in 0..<h.rows {
            let i0 = t * 3 * p, o = t * p
            for j in 0..<p {
                let r = Kernels.sigmoid(gi.scalars[i0 + j] + inputBias.scalars[j] + gh.scalars[i0 + j] + hiddenBias.scalars[j])
                let z = Kernels.sigmoid(gi.scalars[i0 + p + j] + inputBias.scalars[p + j]
                                        + gh.scalars[i0 + p + j] + hiddenBias.scalars[p + j])
                let n = tanhf(gi.scalars[i0 + 2 * p + j] + inputBias.scalars[2 * p + j]
                              + r * (gh.scalars[i0 + 2 * p + j] + hiddenBias.scalars[2 * p + j]))
                next.scalars[o + j] = (1 - z) * n + z * h.scalars[o + j]
            }
        }
        return next
    }

    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState) -> Tensor {
        let previous = state.hidden ?? Tensor(zeros: [u.rows, stateSize])
        let hidden = cell(input: projectors[layer](u), hidden: previous)
        state.hidden = hidden
        return outputs[layer](hidden)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
