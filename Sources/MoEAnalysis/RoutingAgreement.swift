import Foundation
import MoECore

/// How far two routings of the same token agree: the measures the A/B view and `moescope diff`
/// share.
public enum RoutingAgreement {
    /// |A ∩ B| / |A ∪ B| of two chosen sets: 1 when equal, 0 when disjoint.
    public static func jaccard(_ a: [Int], _ b: [Int]) -> Double {
        let a = Set(a)
        let b = Set(b)
        let union = a.union(b).count
        return union == 0 ? 1 : Double(a.intersection(b).count) / Double(union)
    }

    /// Jensen–Shannon divergence in nats, ½ KL(p‖m) + ½ KL(q‖m) with m = (p + q)/2: symmetric,
    /// 0 for equal distributions, at most ln 2 (disjoint supports). NaN if either holds a
    /// non-finite value.
    public static func jensenShannon(_ p: [Float], _ q: [Float]) -> Double {
        guard p.count == q.count else { return .nan }
        var total = 0.0
        for i in p.indices {
            let (a, b) = (Double(p[i]), Double(q[i]))
            guard a.isFinite, b.isFinite else { return .nan }
            let m = (a + b) / 2
            if a > 0 { total += 0.5 * a * log(a / m) }
            if b > 0 { total += 0.5 * b * log(b / m) }
        }
        return max(0, total)
    }

    /// The default near-tie threshold for `experts` experts: a tenth of the uniform probability
    /// (0.0125 at 8 experts, 0.0004 at 256), so it means the same at every width.
    public static func defaultNearTie(experts: Int) -> Double { 0.1 / Double(max(1, experts)) }
}

/// Agreement of two routings at one layer, over the tokens seen.
public struct LayerAgreement: Codable, Sendable, Equatable {
    /// The model's index of the layer.
    public var layer: Int
    public var tokens: Int
    /// Share of tokens whose top-1 expert is the same on both sides.
    public var top1Agreement: Double
    /// Mean Jaccard index of the two top-k sets.
    public var jaccard: Double
    /// Mean Jensen–Shannon divergence of the two probability vectors (nats, ≤ ln 2).
    public var jensenShannon: Double
    /// Tokens whose top-k sets differ.
    public var disagreements: Int
    /// Of those, the ones where either side's selection margin is below the near-tie threshold.
    public var nearTieDisagreements: Int
    /// Share of A's and of B's decisions whose selection margin is below the threshold.
    public var fragileShareA: Double
    public var fragileShareB: Double

    enum CodingKeys: String, CodingKey {
        case layer, tokens
        case top1Agreement = "top1_agreement"
        case jaccard
        case jensenShannon = "js_divergence"
        case disagreements
        case nearTieDisagreements = "near_tie_disagreements"
        case fragileShareA = "fragile_share_a"
        case fragileShareB = "fragile_share_b"
    }
}

/// Sums two routings of the same tokens, token by token, into per-layer agreement.
public struct AgreementAccumulator: Sendable {
    public let nearTie: Double
    private var tokens: [Int], top1: [Int], disagreements: [Int], nearTies: [Int], fragileA: [Int], fragileB: [Int]
    private var jaccard: [Double], jensenShannon: [Double]

    public init(layers: Int, nearTie: Double) {
        self.nearTie = nearTie
        tokens = [Int](repeating: 0, count: layers)
        (top1, disagreements, nearTies, fragileA, fragileB) = (tokens, tokens, tokens, tokens, tokens)
        jaccard = [Double](repeating: 0, count: layers)
        jensenShannon = jaccard
    }

    /// Whether a decision is a near-tie at this threshold (every expert chosen: never).
    public static func isNearTie(_ routing: LayerRouting, threshold: Double) -> Bool {
        guard let margin = routing.selectionMargin else { return false }
        return margin < threshold
    }

    public mutating func add(_ a: RoutingTrace, _ b: RoutingTrace) {
        for l in 0..<min(tokens.count, a.layers.count, b.layers.count) { add(a.layers[l], b.layers[l], layer: l) }
    }

    public mutating func add(_ a: [RoutingTrace], _ b: [RoutingTrace]) {
        for (x, y) in zip(a, b) { add(x, y) }
    }

    mutating func add(_ a: LayerRouting, _ b: LayerRouting, layer l: Int) {
        tokens[l] += 1
        if a.experts.first == b.experts.first { top1[l] += 1 }
        let j = RoutingAgreement.jaccard(a.experts, b.experts)
        jaccard[l] += j
        jensenShannon[l] += RoutingAgreement.jensenShannon(a.probabilities, b.probabilities)
        let (tieA, tieB) = (Self.isNearTie(a, threshold: nearTie), Self.isNearTie(b, threshold: nearTie))
        if tieA { fragileA[l] += 1 }
        if tieB { fragileB[l] += 1 }
        if j < 1 {
            disagreements[l] += 1
            if tieA || tieB { nearTies[l] += 1 }
        }
    }

    /// Per layer, named by the model's indices `routedLayers`.
    public func layers(routedLayers: [Int]) -> [LayerAgreement] {
        tokens.indices.map { l in
            let n = Double(max(1, tokens[l]))
            return LayerAgreement(
                layer: l < routedLayers.count ? routedLayers[l] : l, tokens: tokens[l], top1Agreement: Double(top1[l]) / n,
                jaccard: jaccard[l] / n, jensenShannon: jensenShannon[l] / n, disagreements: disagreements[l],
                nearTieDisagreements: nearTies[l], fragileShareA: Double(fragileA[l]) / n, fragileShareB: Double(fragileB[l]) / n)
        }
    }
}
