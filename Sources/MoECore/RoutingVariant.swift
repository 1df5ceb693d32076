import Foundation

/// A change to how a model routes, for setting a model beside itself (the explorer's A/B view,
/// `moescope diff`): a different routing rule, or a perturbation of the router that a stable
/// routing should shrug off. The model code applies it (`RoutingModel.applying(_:)`); nothing
/// here knows of a screen.
public enum RoutingVariant: Hashable, Sendable, CustomStringConvertible {
    /// DeepSeek-V3: choose by the sigmoid scores s alone, without the selection bias b.
    case withoutSelectionBias
    /// Mixture weights renormalised over the k where the model does not, and not where it does.
    case renormalisationFlipped
    /// One expert more per token than the model was trained with (top-(k+1)).
    case topKPlusOne
    /// The router's weights rounded to a narrower float format, then run in F32.
    case routerWeightsRounded(RoundedPrecision)
    /// Gaussian noise added to the router's input u: u + σ·rms(u)·ε, ε ~ N(0, I), seeded by
    /// (layer, position) so decoding token by token gives what the full pass gives.
    case routerInputNoise(relative: Float)

    public var description: String {
        switch self {
        case .withoutSelectionBias: "without selection bias"
        case .renormalisationFlipped: "renormalisation flipped"
        case .topKPlusOne: "top-(k+1)"
        case .routerWeightsRounded(let precision): "router weights in \(precision.rawValue.uppercased())"
        case .routerInputNoise(let relative): "router input noise \(RoutingVariant.percent(relative))"
        }
    }

    /// The name `moescope diff --variant` takes: bias-off, renorm, top-k+1, f16, bf16, noise:0.01.
    public var argument: String {
        switch self {
        case .withoutSelectionBias: "bias-off"
        case .renormalisationFlipped: "renorm"
        case .topKPlusOne: "top-k+1"
        case .routerWeightsRounded(let precision): precision.rawValue
        case .routerInputNoise(let relative): "noise:\(relative)"
        }
    }

    /// Parses `argument`'s form; nil for anything else.
    public init?(argument: String) {
        switch argument.lowercased() {
        case "bias-off": self = .withoutSelectionBias
        case "renorm": self = .renormalisationFlipped
        case "top-k+1", "topk+1": self = .topKPlusOne
        case "f16": self = .routerWeightsRounded(.f16)
        case "bf16": self = .routerWeightsRounded(.bf16)
        default:
            let parts = argument.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "noise", let value = Float(parts[1]), value.isFinite, value > 0, value <= 10
            else { return nil }
            self = .routerInputNoise(relative: value)
        }
    }

    public static let argumentForms = "bias-off, renorm, top-k+1, f16, bf16, noise:SIZE (0 < SIZE ≤ 10, relative to rms(u))"

    /// The perturbations every model takes, smallest first (the explorer's and `diff`'s probe).
    public static let perturbations: [RoutingVariant] = [
        .routerWeightsRounded(.f16), .routerWeightsRounded(.bf16), .routerInputNoise(relative: 0.01),
        .routerInputNoise(relative: 0.1),
    ]

    static func percent(_ value: Float) -> String {
        let p = Double(value) * 100
        return p == p.rounded() ? "\(Int(p))%" : String(format: "%.2g%%", p)
    }
}

/// A float format router weights can be rounded to.
public enum RoundedPrecision: String, Hashable, Sendable, CaseIterable {
    case f16, bf16

    /// `x` rounded to the nearest value of this format (ties to even), as a Float again.
    public func round(_ x: Float) -> Float {
        switch self {
        case .f16: return Float(Float16(x))
        case .bf16:
            guard x.isFinite else { return x }
            let bits = x.bitPattern
            let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
            return Float(bitPattern: rounded & 0xFFFF_0000)
        }
    }

    public func round(_ tensor: Tensor) -> Tensor { tensor.mapped(round) }
}

/// Seeded Gaussian noise on the router input (see `RoutingVariant.routerInputNoise`).
public struct RouterInputNoise: Sendable, Equatable {
    public var relative: Float
    public var seed: UInt64 = 17

    public init(relative: Float) { self.relative = relative }

    /// u [T × d], row t the token at position `positions[t]` (several sequences may run as one
    /// batch), at layer `layer`, with noise added.
    public func applied(to u: Tensor, positions: [Int], layer: Int) -> Tensor {
        var out = u
        let d = u.cols
        out.scalars.withUnsafeMutableBufferPointer { p in
            for t in 0..<u.rows {
                let row = p.baseAddress! + t * d
                let rms = (Kernels.sumOfSquares(row, count: d) / Float(d)).squareRoot()
                var rng = SeededGenerator(seed: seed ^ (UInt64(layer) << 40) ^ UInt64(positions[t]) &* 0x9E37_79B9)
                for j in 0..<d { row[j] += relative * rms * rng.nextNormal() }
            }
        }
        return out
    }
}

extension LayerRouting {
    /// The selection margin: how far the decision is from a tie of the scores the rule ranked.
    /// The margin the rule recorded (`rankedScoreMargin`) when there is one; otherwise the
    /// smallest chosen expert's probability minus the largest unchosen one (the k-th minus the
    /// (k+1)-th score under plain top-k). Near 0 the decision is fragile: a rounding or a tiny
    /// perturbation flips it. nil when every expert is chosen.
    public var selectionMargin: Double? {
        if let rankedScoreMargin { return rankedScoreMargin }
        guard let weakest = experts.map({ Double(probabilities[$0]) }).min() else { return nil }
        var unchosen = -Double.infinity
        for (e, p) in probabilities.enumerated() where !experts.contains(e) { unchosen = max(unchosen, Double(p)) }
        return unchosen.isFinite ? weakest - unchosen : nil
    }
}
