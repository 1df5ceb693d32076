import Foundation
import Testing

@testable import MoECore

/// The routing variants the A/B view and `diff` set beside a model.
@Suite struct RoutingVariantTests {
    @Test func roundingToNarrowFormats() {
        // BF16 keeps 8 significant bits: 1 + 2⁻⁸ is a tie and goes to even (1); 1 + 3·2⁻⁸ goes up.
        #expect(RoundedPrecision.bf16.round(1 + 0x1p-8) == 1)
        #expect(RoundedPrecision.bf16.round(1 + 3 * 0x1p-8) == 1 + 0x1p-6)
        #expect(RoundedPrecision.bf16.round(-2.5) == -2.5)
        #expect(RoundedPrecision.f16.round(1 + 0x1p-12) == 1)  // F16 keeps 11
        #expect(RoundedPrecision.f16.round(0.1) == Float(Float16(0.1)))
        #expect(RoundedPrecision.bf16.round(.infinity) == .infinity)
    }

    @Test func argumentsRoundTrip() {
        let all: [RoutingVariant] = [
            .withoutSelectionBias, .renormalisationFlipped, .topKPlusOne, .routerWeightsRounded(.f16), .routerWeightsRounded(.bf16),
            .routerInputNoise(relative: 0.05),
        ]
        for variant in all { #expect(RoutingVariant(argument: variant.argument) == variant) }
        for bad in ["noise:0", "noise:-1", "noise:nan", "noise:", "fp8", ""] { #expect(RoutingVariant(argument: bad) == nil) }
    }

    static func model(_ router: RouterKind = .linear) throws -> MoEModel {
        var c = ModelConfig.tiny(router: router)
        c.numExperts = 6
        c.topK = 2
        return try MoEModel(config: c, seed: 5)
    }

    @Test func ruleVariantsChangeTheRuleOnly() throws {
        let model = try Self.model()
        let tokens = [3, 17, 40, 2, 9]
        let base = try model.forward(tokens).routing
        let plain = try (model.applying(.renormalisationFlipped) as! MoEModel).forward(tokens).routing
        let wider = try (model.applying(.topKPlusOne) as! MoEModel).forward(tokens).routing
        #expect(model.applying(.withoutSelectionBias) == nil)  // no bias to drop
        // Layer 0 sees the same input: same choice, weights now the raw probabilities; k + 1 adds the next expert.
        for t in tokens.indices {
            let (a, b, c) = (base[t].layers[0], plain[t].layers[0], wider[t].layers[0])
            #expect(a.experts == b.experts && b.weights == b.experts.map { b.probabilities[$0] })
            #expect(abs(a.weights.reduce(0, +) - 1) < 1e-5)
            #expect(c.experts.count == 3 && Array(c.experts.prefix(2)) == a.experts)
            #expect(c.experts[2] == topK(a.probabilities[...], k: 3)[2])
        }
        #expect((model.applying(.topKPlusOne) as! MoEModel).topK == 3)
        #expect(model.applying(.topKPlusOne)!.routerName.hasSuffix("top-(k+1)"))
    }

    @Test func perturbationsAreSmallAndDeterministic() throws {
        for router in [RouterKind.linear, .gru, .attention] {
            let model = try Self.model(router)
            let tokens = Array(0..<24).map { ($0 * 37) % 200 }
            let base = try model.forward(tokens).routing
            let noisy = model.applying(.routerInputNoise(relative: 0.01)) as! MoEModel
            let once = try noisy.forward(tokens).routing
            // Seeded by (layer, position): the same again, and token by token equals the full pass.
            let again = try noisy.forward(tokens).routing
            #expect(zip(again, once).allSatisfy { a, o in zip(a.layers, o.layers).allSatisfy { $0.probabilities == $1.probabilities } })
            var cache = noisy.makeCache()
            var stepped: [RoutingTrace] = []
            for token in tokens { stepped += try noisy.forward([token], cache: &cache).routing }
            #expect(zip(stepped, once).allSatisfy { s, o in zip(s.layers, o.layers).allSatisfy { $0.experts == $1.experts } })
            // 1 % noise moves probabilities a little, not wholesale.
            let drift = zip(base, once).flatMap {
                zip($0.layers, $1.layers).map { zip($0.probabilities, $1.probabilities).map { abs($0 - $1) }.max()! }
            }
            #expect(drift.max()! > 0 && drift.max()! < 0.05)
            let rounded = try (model.applying(.routerWeightsRounded(.bf16)) as! MoEModel).forward(tokens).routing
            let change = zip(base, rounded).flatMap {
                zip($0.layers, $1.layers).map { zip($0.probabilities, $1.probabilities).map { abs($0 - $1) }.max()! }
            }
            #expect(change.max()! < 0.02, "\(router)")
        }
        #expect(try Self.model(.hash).routingVariants.isEmpty)
    }
}
