import Foundation
import Testing

@testable import MoEAnalysis
@testable import MoECore

@Suite struct AnalysisTests {
    @Test func ranksAverageTies() {
        #expect(ranks([10, 30, 20]) == [1, 3, 2])
        #expect(ranks([5, 5, 1]) == [2.5, 2.5, 1])
    }

    @Test func spearmanOfMonotoneReversedAndConstant() {
        #expect(abs(spearman([1, 2, 3, 4], [10, 20, 30, 400]) - 1) < 1e-12)
        #expect(abs(spearman([1, 2, 3, 4], [4, 3, 2, 1]) + 1) < 1e-12)
        #expect(spearman([1, 2, 3], [7, 7, 7]) == 0)
    }

    static func routing(probabilities: [Float], norms: [Float]) -> LayerRouting {
        let chosen = topK(probabilities[...], k: 2)
        var r = LayerRouting(
            logits: probabilities, probabilities: probabilities, experts: chosen, weights: [0.5, 0.5],
            expertOutputNorms: chosen.map { norms[$0] }, gruHidden: nil, routerNanoseconds: 0)
        r.allExpertOutputNorms = norms
        return r
    }

    @Test func normPreferenceWhenTheRouterFollowsOrOpposesNorms() {
        let follows = Self.routing(probabilities: [0.1, 0.2, 0.3, 0.4], norms: [1, 2, 3, 4])
        let opposes = Self.routing(probabilities: [0.1, 0.2, 0.3, 0.4], norms: [4, 3, 2, 1])
        let preference = NormPreference(traces: [
            RoutingTrace(token: 0, position: 0, layers: [follows, opposes]),
            RoutingTrace(token: 1, position: 1, layers: [follows, opposes]),
        ])
        #expect(preference.meanRankCorrelation.map { ($0 * 1e9).rounded() / 1e9 } == [1, -1])
        #expect(preference.topOneAgreement == [1, 0])
        #expect(preference.tokens == 2)
    }

    @Test func identicalExpertsHaveSimilarityOne() throws {
        var model = try MoEModel(config: .tiny(router: .linear), seed: 5)
        let first = model.layers[0].moe.experts[0]
        for e in model.layers[0].moe.experts.indices { model.layers[0].moe.experts[e] = first }
        let similarity = try #require(ExpertSimilarity(model: model))
        #expect(abs(similarity.meanByLayer[0] - 1) < 1e-9)
        #expect(similarity.meanByLayer[1] < 0.9)  // random experts differ
        #expect(similarity.matrices[1].indices.allSatisfy { abs(similarity.matrices[1][$0][$0] - 1) < 1e-9 })
        #expect(ExpertSimilarity.cosineMatrix([[1, 0], [0, 2], [-3, 0]]) == [[1, 0, -1], [0, 1, 0], [-1, 0, 1]])
    }

    @Test func domainLiftAndTopTokens() {
        func trace(_ token: Int, _ experts: [Int]) -> RoutingTrace {
            RoutingTrace(
                token: token, position: 0,
                layers: [
                    LayerRouting(
                        logits: [], probabilities: [0.25, 0.25, 0.25, 0.25],
                        experts: experts, weights: [0.5, 0.5], expertOutputNorms: [1, 1], gruHidden: nil, routerNanoseconds: 0)
                ])
        }
        var accumulated = AnalysisReport.Accumulator(numExperts: 4, topK: 2, layerCount: 1, expectedTokens: 4)
        accumulated.add([trace(7, [0, 1]), trace(7, [0, 1])], domain: "code")
        accumulated.add([trace(9, [2, 3]), trace(8, [2, 0])], domain: "prose")
        let report = AnalysisReport(
            router: "test", checkpoint: "-", randomInit: false, routedLayers: [3], tokenizer: TokenIDsOnly(), accumulated: accumulated,
            similarity: nil, perMatrix: nil, missing: [], recordedBy: nil, topTokenCount: 2)
        #expect(report.domains.map(\.domain) == ["code", "prose"])
        #expect(report.domains[0].sharesByLayer[0] == [0.5, 0.5, 0, 0])
        let best = report.domains[0].mostSpecific[0]
        #expect(best.expert == 1 && abs(best.lift - 0.5 / 0.25) < 1e-12)  // E1 only ever sees code
        #expect(report.layers[0].topTokens[0].map(\.tokenID) == [7, 8])
        #expect(report.layers[0].topTokens[0].map(\.count) == [2, 1])
        #expect(report.layers[0].topTokens[0][0].text == "#7")
        #expect(report.layers[0].layer == 3)
    }

    @Test func allExpertNormsIncludeTheChosenOnes() throws {
        let model = try MoEModel(config: .tiny(router: .gru), seed: 2)
        let result = try model.forward([5, 6, 7], allExpertNorms: true)
        for trace in result.routing {
            for layer in trace.layers {
                let all = try #require(layer.allExpertOutputNorms)
                for (slot, e) in layer.experts.enumerated() { #expect(abs(all[e] - layer.expertOutputNorms[slot]) < 1e-5) }
            }
        }
    }
}
