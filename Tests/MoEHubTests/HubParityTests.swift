import Foundation
import MoECore
import Testing

@testable import MoEHub

/// moescope against transformers on tiny random models of each family (made by
/// scripts/make_hf_fixtures.py): the same logits, router logits and top-k choices.
@Suite struct HubParityTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/hf").path

    struct Reference {
        let ids: [Int]
        let logits: Tensor
        let routerLogits: [Tensor]
        let topK: [Tensor]
        let text: String

        init(folder: String) throws {
            let file = try SafeTensorsFile(path: "\(folder)/reference.safetensors")
            ids = try file.tensor("input_ids").scalars.map { Int($0) }
            logits = try file.tensor("logits")
            let layers = file.entries.keys.filter { $0.hasPrefix("router_logits.") }.count
            routerLogits = try (0..<layers).map { try file.tensor("router_logits.\($0)") }
            topK = try (0..<layers).map { try file.tensor("top_k.\($0)") }
            text = file.metadata["text"] ?? ""
        }
    }

    @Test(arguments: ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"])
    func matchesTransformers(family: String) throws {
        let folder = "\(Self.fixtures)/\(family)"
        let reference = try Reference(folder: folder)
        let model = try HubModel(folder: folder)
        let output = try model.forward(reference.ids)

        #expect(output.logits.shape == reference.logits.shape)
        #expect(model.config.moeLayers.count == reference.routerLogits.count)
        // A token whose k-th and (k+1)-th selection scores tie within 1e-4 at some layer may
        // legitimately go to another expert there; its top-k and its logits are not compared.
        var tiedTokens = Set<Int>()
        var compared = 0
        for (l, expected) in reference.routerLogits.enumerated() {
            let e = expected.cols
            let k = model.config.topK
            let moe = try #require(model.layers[model.config.moeLayers[l]].moe)
            for (t, trace) in output.routing.enumerated() {
                let ours = trace.layers[l]
                let theirs = Array(expected.row(t))
                let worst = zip(ours.logits, theirs).map { abs($0 - $1) }.max() ?? .infinity
                if !tiedTokens.contains(t) {
                    #expect(worst <= 1e-4 * max(1, theirs.map(abs).max()!), "\(family) L\(l) t\(t): router logits differ by \(worst)")
                }
                let sorted = moe.route(theirs, rule: model.config.routing, k: k).selection.sorted(by: >)
                if (0..<min(k, e - 1)).contains(where: { sorted[$0] - sorted[$0 + 1] < 1e-4 }) {
                    tiedTokens.insert(t)
                    continue
                }
                // DeepSeek's routers take torch.topk unsorted, so there the set is compared.
                let expectedExperts = reference.topK[l].row(t).map { Int($0) }
                if family.hasPrefix("deepseek") {
                    #expect(ours.experts.sorted() == expectedExperts.sorted(), "\(family) L\(l) t\(t)")
                } else {
                    #expect(ours.experts == expectedExperts, "\(family) L\(l) t\(t)")
                }
                compared += 1
            }
        }
        let vocab = reference.logits.cols
        let logitScale = reference.logits.scalars.map(abs).max() ?? 1
        for t in 0..<reference.ids.count where !tiedTokens.contains(t) {
            let worst = (0..<vocab).map { abs(output.logits.scalars[t * vocab + $0] - reference.logits.scalars[t * vocab + $0]) }.max()!
            #expect(worst <= 1e-4 * max(1, logitScale), "\(family) t\(t): logits differ by \(worst) (scale \(logitScale))")
        }
        #expect(tiedTokens.count < reference.ids.count / 4, "\(family): \(tiedTokens.count) near-ties")
        #expect(compared > reference.ids.count, "too few tokens compared: \(compared)")
    }

    /// Decoding on the KV cache — one token, then three, then the rest — gives the full pass's
    /// logits and routing.
    @Test(arguments: ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"])
    func cachedDecodingEqualsTheFullPass(family: String) throws {
        let folder = "\(Self.fixtures)/\(family)"
        let ids = try Reference(folder: folder).ids
        let model = try HubModel(folder: folder)
        let full = try model.forward(ids)
        var cache = model.makeCache()
        var logits: [Float] = []
        var routing: [RoutingTrace] = []
        for chunk in [ids[0..<1], ids[1..<4], ids[4...]] {
            let part = try model.forward(Array(chunk), appendingTo: &cache)
            logits += part.logits.scalars
            routing += part.routing
        }
        #expect(cache.length == ids.count)
        let worst = zip(logits, full.logits.scalars).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst < 1e-4, "\(family): \(worst)")
        #expect(routing.map(\.position) == Array(0..<ids.count))
        #expect(routing.map { $0.layers.map(\.experts) } == full.routing.map { $0.layers.map(\.experts) })
    }
}
