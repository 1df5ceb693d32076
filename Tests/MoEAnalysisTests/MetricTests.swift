import Foundation
import MoECore
import Testing

@testable import MoEAnalysis

@Suite struct MetricTests {
    /// A routing entry with the given probabilities and top-k (k = 2) taken from them.
    static func routing(_ probabilities: [Float], router ns: Double = 10) -> LayerRouting {
        let chosen = topK(probabilities[...], k: 2)
        let total = chosen.reduce(Float(0)) { $0 + probabilities[$1] }
        return LayerRouting(
            logits: probabilities.map { log($0) }, probabilities: probabilities, experts: chosen,
            weights: chosen.map { probabilities[$0] / total }, expertOutputNorms: [1, 1],
            gruHidden: nil, routerNanoseconds: ns)
    }

    @Test func evenLoadIsPerfectlyBalanced() {
        let stats = LoadBalanceStats(counts: [5, 5, 5, 5])
        #expect(stats.coefficientOfVariation == 0)
        #expect(stats.maxViolation == 0)
        #expect(abs(stats.normalizedUsageEntropy - 1) < 1e-12)
        #expect(stats.shares == [0.25, 0.25, 0.25, 0.25])
    }

    @Test func oneExpertTakingEverythingIsMaximallyUnbalanced() {
        let stats = LoadBalanceStats(counts: [12, 0, 0, 0])
        #expect(abs(stats.maxViolation - 3) < 1e-12)  // 12 / 3 − 1
        #expect(abs(stats.coefficientOfVariation - 3.0.squareRoot()) < 1e-12)
        #expect(stats.normalizedUsageEntropy == 0)
    }

    @Test func entropyOfUniformAndOneHot() {
        #expect(abs(entropy([Float](repeating: 0.125, count: 8)) - log(8)) < 1e-6)
        #expect(entropy([Float(1), 0, 0]) == 0)
    }

    @Test func mutualInformationOfIdenticalIndependentAndRelabelled() {
        let a = [0, 1, 2, 3, 0, 1, 2, 3]
        #expect(abs(mutualInformation(a, a) - log(4)) < 1e-12)  // = H(A)
        #expect(abs(mutualInformation(a, a.map { 3 - $0 }) - log(4)) < 1e-12)  // any bijection
        let b = [0, 0, 1, 1, 1, 1, 0, 0]  // independent of a's pattern
        #expect(abs(mutualInformation([0, 1, 0, 1, 0, 1, 0, 1], b)) < 1e-12)
        #expect(mutualInformation([2, 2, 2], [0, 1, 3]) == 0)  // constant carries nothing
    }

    /// The renamed, scratch-table pairwise MI equals the plain dense-table formula, at the
    /// expert counts real models have.
    @Test func pairwiseMutualInformationMatchesTheDenseFormula() {
        var random = SystemRandomNumberGenerator()
        for categories in [2, 8, 64, 256] {
            let layers = (0..<4).map { _ in
                (0..<150).map { _ in Int.random(in: 0..<categories, using: &random) % max(1, categories / 3 + 1) }
            }
            var pairs = PairwiseMutualInformation(layers)
            for i in 0..<4 {
                for j in 0..<4 {
                    let n = Double(layers[i].count)
                    var joint = [Double](repeating: 0, count: categories * categories)
                    var pa = [Double](repeating: 0, count: categories)
                    var pb = pa
                    for (x, y) in zip(layers[i], layers[j]) {
                        joint[x * categories + y] += 1 / n
                        pa[x] += 1 / n
                        pb[y] += 1 / n
                    }
                    var reference = 0.0
                    for x in 0..<categories {
                        for y in 0..<categories where joint[x * categories + y] > 0 {
                            let p = joint[x * categories + y]
                            reference += p * log(p / (pa[x] * pb[y]))
                        }
                    }
                    #expect(abs(pairs(i, j) - max(0, reference)) < 1e-9, "E \(categories), layers \(i), \(j)")
                }
            }
        }
    }

    @Test func summaryOfUniformRouting() {
        var summary = RoutingSummary(numLayers: 2, numExperts: 4)
        let uniform = Self.routing([0.25, 0.25, 0.25, 0.25])
        for position in 0..<10 { summary.add(RoutingTrace(token: 1, position: position, layers: [uniform, uniform])) }
        #expect(abs(summary.meanEntropy - log(4)) < 1e-6)
        #expect(summary.innerBalance == 1)
        #expect(abs(summary.outerBalance - 0.5) < 1e-6)
        #expect(summary.tokenCount == 10)
        #expect(summary.routerNanoseconds.allSatisfy { $0 == 20 })
    }

    @Test func identicalLayersHaveMaximalCrossLayerInformation() {
        var summary = RoutingSummary(numLayers: 3, numExperts: 4)
        for position in 0..<40 {
            var p: [Float] = [0.1, 0.1, 0.1, 0.1]
            p[position % 4] = 0.6
            p[(position + 1) % 4] = 0.2
            let same = Self.routing(p)
            // layer 2 ignores the token: always expert 0 first
            let fixed = Self.routing([0.7, 0.1, 0.1, 0.1])
            summary.add(RoutingTrace(token: position, position: position, layers: [same, same, fixed]))
        }
        let mi = summary.crossLayerMutualInformation
        #expect(abs(mi[0][1] - log(4)) < 1e-9)
        #expect(abs(mi[0][0] - log(4)) < 1e-9)
        #expect(mi[0][2] == 0 && mi[2][1] == 0)
        #expect(abs(summary.meanCrossLayerMutualInformation - log(4) / 3) < 1e-9)  // 2 of 6 ordered pairs
        #expect(summary.load[0].coefficientOfVariation == 0)
        #expect(summary.load[2].maxViolation > 0)
        #expect(abs(summary.topRatios[0][0] - 3) < 1e-6)  // 0.6 / 0.2
    }
}
