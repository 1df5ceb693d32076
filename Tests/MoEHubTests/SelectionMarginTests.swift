import Foundation
import MoECore
import Testing

@testable import MoEHub

/// The selection margin is measured on the scores the rule ranked, not on the shown distribution.
@Suite struct SelectionMarginTests {
    /// 8 experts in 4 groups of 2; sigmoid scores s chosen exactly: σ(±ln 4) = 0.8 / 0.2,
    /// σ(ln 3) = 0.75, σ(0) = 0.5.
    static let logits: [Float] = [log(4), -log(4), 0, 0, log(3), -log(4), -log(4), -log(4)]
    static let bias: [Float] = [0, 0.5, 0, 0, 0, 0, 0.3, 0.1]
    static func moe(bias: [Float]?) -> SparseMoE<MappedLinear> {
        SparseMoE(
            experts: [], topK: 2, rule: .softmaxTopK(normalize: true),
            selectionBias: bias.map { Tensor(shape: [8], scalars: $0) })
    }

    @Test func deepSeekV3MarginIsOnTheBiasedScoresAndTheGroups() {
        // s      = [0.8, 0.2, 0.5, 0.5, 0.75, 0.2, 0.2, 0.2]
        // s + b  = [0.8, 0.7, 0.5, 0.5, 0.75, 0.2, 0.5, 0.3]
        // groups (sum of best two): 1.5, 1.0, 0.95, 0.8 → keep groups 0 and 1; choose 0 (0.8) and 1 (0.7).
        // expert gap 0.7 − 0.5 = 0.2; group gap 1.0 − 0.95 = 0.05 → margin 0.05.
        let routed = Self.moe(bias: Self.bias).route(
            Self.logits, rule: .deepseekV3(groups: 4, topGroups: 2, normalize: true, scale: 1), k: 2)
        #expect(routed.experts == [0, 1])
        #expect(abs(routed.margin! - 0.05) < 1e-6)
        var layer = LayerRouting(
            logits: Self.logits, probabilities: routed.probabilities, experts: routed.experts,
            weights: routed.weights, expertOutputNorms: [0, 0], gruHidden: nil, routerNanoseconds: 0)
        // On the shown distribution expert 1 (s = 0.2) sits below unchosen expert 4 (s = 0.75):
        // (0.2 − 0.75) / Σs = −0.55 / 3.35.
        #expect(abs(layer.selectionMargin! - (-0.55 / 3.35)) < 1e-6)
        layer.rankedScoreMargin = routed.margin
        #expect(abs(layer.selectionMargin! - 0.05) < 1e-6)

        // One group: no group gap; choose 0 (0.8) and 4 (0.75) over 1 (0.7) → 0.05 on s + b.
        let flat = Self.moe(bias: Self.bias).route(
            Self.logits, rule: .deepseekV3(groups: 1, topGroups: 1, normalize: true, scale: 1), k: 2)
        #expect(flat.experts == [0, 4])
        #expect(abs(flat.margin! - 0.05) < 1e-6)
        // Without the bias, groups 1.0, 1.0, 0.95, 0.4: keep 0 and 1 (group gap 0.05); choose 0 and then
        // 2 over 3 (both 0.5): the margin is that exact tie.
        let unbiased = Self.moe(bias: nil).route(
            Self.logits, rule: .deepseekV3(groups: 4, topGroups: 2, normalize: true, scale: 1), k: 2)
        #expect(unbiased.experts == [0, 2])
        #expect(abs(unbiased.margin!) < 1e-6)
    }

    @Test func deepSeekV2GroupLimitedMarginIsOnTheEligibleExperts() {
        // p ∝ e^logits; groups by their best p. Logits [3, 0, 2.5, 2.4, 2.9, 0, 0, 0] in 4 groups of 2:
        // group bests 3, 2.5, 2.9, 0 (in logit units) → keep groups 0 and 2 → choose 0 and 4;
        // unchosen eligible best is expert 1 (0) — expert gap p(2.9) − p(0); group gap p(2.9) − p(2.5).
        let logits: [Float] = [3, 0, 2.5, 2.4, 2.9, 0, 0, 0]
        let routed = Self.moe(bias: nil).route(
            logits, rule: .deepseekV2(groupLimited: true, groups: 4, topGroups: 2, scale: 1), k: 3)
        let z = logits.map { exp(Double($0)) }.reduce(0, +)
        // k = 3: chosen 0, 4 and 1 (the best left in the kept groups, p(0)); next eligible: expert 5 (p(0)) — a tie;
        // groups 2.9 vs 2.5. Old margin: p(0) − p(2.5) < 0.
        #expect(routed.experts == [0, 4, 1])
        #expect(abs(routed.margin!) < 1e-6)
        let layer = LayerRouting(
            logits: logits, probabilities: routed.probabilities, experts: routed.experts,
            weights: routed.weights, expertOutputNorms: [0, 0, 0], gruHidden: nil, routerNanoseconds: 0)
        #expect(layer.selectionMargin! < 0)
        let two = Self.moe(bias: nil).route(
            logits, rule: .deepseekV2(groupLimited: true, groups: 4, topGroups: 2, scale: 1), k: 2)
        #expect(two.experts == [0, 4])
        #expect(abs(two.margin! - (exp(2.9) - exp(2.5)) / z) < 1e-6)  // group gap < expert gap (p(2.9) − p(0))
    }

    @Test func everyRecordedDecisionHasANonNegativeMargin() throws {
        for name in ["deepseek_v3", "deepseek_v2"] {
            let model = try HubVariantTests.fixture(name)
            for variant in [nil] + model.routingVariants {
                let m = variant.flatMap { model.applying($0) as? HubModel } ?? model
                for trace in try m.forward([5, 9, 14, 3, 7, 1]).routing {
                    for layer in trace.layers {
                        if let margin = layer.selectionMargin {
                            #expect(margin >= 0, "\(name) \(String(describing: variant))")
                        }
                    }
                }
            }
        }
    }
}
