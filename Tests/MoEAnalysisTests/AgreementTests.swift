import Foundation
import MoECore
import Testing

@testable import MoEAnalysis

/// The A/B measures on cases worked by hand.
@Suite struct AgreementTests {
    static func routing(_ experts: [Int], _ p: [Float]) -> LayerRouting {
        LayerRouting(
            logits: p.map { log($0) }, probabilities: p, experts: experts, weights: experts.map { _ in 1 / Float(experts.count) },
            expertOutputNorms: experts.map { _ in 0 }, gruHidden: nil, routerNanoseconds: 0)
    }

    @Test func jaccardOfTopKSets() {
        #expect(RoutingAgreement.jaccard([3, 1], [1, 3]) == 1)  // order does not matter
        #expect(RoutingAgreement.jaccard([0, 1], [2, 3]) == 0)
        #expect(abs(RoutingAgreement.jaccard([0, 1], [1, 2]) - 1.0 / 3) < 1e-12)
        #expect(abs(RoutingAgreement.jaccard([0, 1, 2, 3], [2, 3, 0, 9]) - 3.0 / 5) < 1e-12)
    }

    @Test func jensenShannonIsSymmetricBoundedAndZeroOnlyForEqual() {
        #expect(RoutingAgreement.jensenShannon([0.25, 0.25, 0.5], [0.25, 0.25, 0.5]) == 0)
        #expect(abs(RoutingAgreement.jensenShannon([1, 0], [0, 1]) - log(2)) < 1e-12)  // disjoint: ln 2
        // p = (1, 0), q = (½, ½): m = (¾, ¼); ½·ln(4/3) + ½·(½ ln(2/3) + ½ ln 2) = 0.2157615…
        #expect(abs(RoutingAgreement.jensenShannon([1, 0], [0.5, 0.5]) - 0.215_761_5) < 1e-6)
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<200 {
            let n = 2 + Int(rng.nextUniform() * 60)
            func draw() -> [Float] {
                let raw = (0..<n).map { _ in rng.nextUniform() < 0.3 ? 0 : rng.nextUniform() }
                let total = max(raw.reduce(0, +), 1e-6)
                return raw.map { $0 / total }
            }
            let (p, q) = (draw(), draw())
            let (pq, qp) = (RoutingAgreement.jensenShannon(p, q), RoutingAgreement.jensenShannon(q, p))
            #expect(abs(pq - qp) < 1e-12)
            #expect(pq >= 0 && pq <= log(2) + 1e-9)
        }
        #expect(RoutingAgreement.jensenShannon([.nan, 1], [0.5, 0.5]).isNaN)
    }

    @Test func identicalRoutingsAgreeFullyAndDisjointOnesNotAtAll() {
        let a = RoutingTrace(
            token: 1, position: 0, layers: [Self.routing([0, 1], [0.5, 0.3, 0.1, 0.1]), Self.routing([2, 3], [0.1, 0.1, 0.4, 0.4])])
        var same = AgreementAccumulator(layers: 2, nearTie: 0.01)
        same.add([a, a], [a, a])
        for layer in same.layers(routedLayers: [0, 1]) {
            #expect(layer.top1Agreement == 1 && layer.jaccard == 1 && layer.jensenShannon == 0 && layer.disagreements == 0)
            #expect(layer.tokens == 2)
        }
        let b = RoutingTrace(
            token: 1, position: 0, layers: [Self.routing([2, 3], [0, 0, 0.5, 0.5]), Self.routing([0, 1], [0.5, 0.5, 0, 0])])
        var disjoint = AgreementAccumulator(layers: 2, nearTie: 0.01)
        disjoint.add([a], [b])
        let layers = disjoint.layers(routedLayers: [3, 4])
        #expect(layers.map(\.layer) == [3, 4])
        for layer in layers { #expect(layer.top1Agreement == 0 && layer.jaccard == 0 && layer.disagreements == 1) }
        #expect(abs(layers[0].jensenShannon - RoutingAgreement.jensenShannon([0.5, 0.3, 0.1, 0.1], [0, 0, 0.5, 0.5])) < 1e-12)
        // Margins: A 0.2 and 0.3, B 0.5 and 0.5 — none below 0.01, so no disagreement is a near-tie.
        #expect(layers.allSatisfy { $0.nearTieDisagreements == 0 && $0.fragileShareA == 0 && $0.fragileShareB == 0 })
    }

    @Test func disagreementsAtNearTiesAreCounted() {
        // k = 1 of 3: A picks 0 at 0.34 over 0.33 (margin 0.01), B picks 1 decisively.
        let a = RoutingTrace(token: 0, position: 0, layers: [Self.routing([0], [0.34, 0.33, 0.33])])
        let b = RoutingTrace(token: 0, position: 0, layers: [Self.routing([1], [0.1, 0.8, 0.1])])
        var sums = AgreementAccumulator(layers: 1, nearTie: 0.02)
        sums.add([a, b], [b, b])
        let layer = sums.layers(routedLayers: [0])[0]
        #expect(layer.disagreements == 1 && layer.nearTieDisagreements == 1)
        #expect(layer.fragileShareA == 0.5 && layer.fragileShareB == 0)
        #expect(abs(a.layers[0].selectionMargin! - 0.01) < 1e-6)
        var strict = AgreementAccumulator(layers: 1, nearTie: 0.005)
        strict.add([a], [b])
        #expect(strict.layers(routedLayers: [0])[0].nearTieDisagreements == 0)
    }

    @Test func traceJSONCarriesTheSelectionMargin() throws {
        let routing = Self.routing([0, 1], [0.4, 0.3, 0.2, 0.1])
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(routing)) as! [String: Any]
        #expect(abs((json["selection_margin"] as! Double) - 0.1) < 1e-6)  // 0.3 − 0.2 by hand
        let all = Self.routing([0, 1], [0.6, 0.4])
        let none = try JSONSerialization.jsonObject(with: JSONEncoder().encode(all)) as! [String: Any]
        #expect(none["selection_margin"] == nil)  // every expert chosen: no margin
    }
}
