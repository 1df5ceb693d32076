import Foundation
import MoECore
import Testing

@testable import MoEHub

/// A Hugging Face model against itself under a changed rule (the A/B view's and `diff`'s side B).
@Suite struct HubVariantTests {
    static func fixture(_ name: String) throws -> HubModel {
        try HubModel(
            folder: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fixtures/hf/\(name)").path)
    }

    @Test func deepSeekV3WithoutTheSelectionBiasChoosesByTheScoresAlone() throws {
        let model = try Self.fixture("deepseek_v3")
        #expect(model.routingVariants.contains(.withoutSelectionBias))
        let tokens = [5, 9, 14, 3]
        let off = model.applying(.withoutSelectionBias)!
        let routing = try (off as! HubModel).forward(tokens).routing
        // Without the bias the choice ranks the scores themselves: within the eligible groups the
        // chosen experts have the top scores (the shown distribution is the scores normalised).
        for trace in routing {
            for layer in trace.layers {
                let weakest = layer.experts.map { layer.probabilities[$0] }.min()!
                let groups = model.expertGroups
                let size = model.numExperts / groups
                let eligible = Set(layer.experts.map { $0 / size })
                for e in 0..<model.numExperts where eligible.contains(e / size) && !layer.experts.contains(e) {
                    #expect(layer.probabilities[e] <= weakest)
                }
            }
        }
        #expect(off.routerName.hasSuffix("without selection bias"))
        #expect(off.applying(.topKPlusOne) == nil)  // one variant at a time
    }

    @Test func renormalisationAndTopKPlusOne() throws {
        let model = try Self.fixture("olmoe")  // softmax top-k without renormalisation
        let tokens = [5, 9, 14]
        let base = try model.forward(tokens).routing
        let renormalised = try (model.applying(.renormalisationFlipped) as! HubModel).forward(tokens).routing
        let wider = try (model.applying(.topKPlusOne) as! HubModel).forward(tokens).routing
        #expect(!model.routingVariants.contains(.withoutSelectionBias))
        #expect(abs(base[0].layers[0].weights.reduce(0, +) - 1) > 1e-3)
        #expect(abs(renormalised[0].layers[0].weights.reduce(0, +) - 1) < 1e-5)
        #expect(base[0].layers[0].experts == renormalised[0].layers[0].experts)
        #expect(wider[0].layers[0].experts.count == model.topK + 1)
        #expect(model.applying(.topKPlusOne)!.topK == model.topK + 1)
        let rounded = try (model.applying(.routerWeightsRounded(.f16)) as! HubModel).forward(tokens).routing
        #expect(
            zip(base, rounded).allSatisfy {
                zip($0.layers, $1.layers).allSatisfy { zip($0.probabilities, $1.probabilities).allSatisfy { abs($0 - $1) < 1e-3 } }
            })
    }
}
