import Foundation
import Testing
import MoECore
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

        let logitError = zip(output.logits.scalars, reference.logits.scalars).map { abs($0 - $1) }.max() ?? .infinity
        let logitScale = reference.logits.scalars.map(abs).max() ?? 1
        #expect(output.logits.shape == reference.logits.shape)
        #expect(logitError <= 1e-4 * max(1, logitScale), "\(family): logits differ by \(logitError) (scale \(logitScale))")

        #expect(model.config.moeLayers.count == reference.routerLogits.count)
        var compared = 0
        for (l, expected) in reference.routerLogits.enumerated() {
            let e = expected.cols, k = model.config.topK
            for (t, trace) in output.routing.enumerated() {
                let ours = trace.layers[l]
                let theirs = Array(expected.row(t))
                let worst = zip(ours.logits, theirs).map { abs($0 - $1) }.max() ?? .infinity
                #expect(worst <= 1e-4 * max(1, theirs.map(abs).max()!), "\(family) L\(l) t\(t): router logits differ by \(worst)")
                // Top-k, skipping tokens whose ranking by the family's selection score is a
                // near-tie (within 1e-4). DeepSeek's routers take torch.topk unsorted, so there
                // the set is compared; elsewhere the order too.
                let moe = try #require(model.layers[model.config.moeLayers[l]].moe)
                let sorted = moe.route(theirs, rule: model.config.routing, k: k).selection.sorted(by: >)
                let tied = (0..<min(k, e - 1)).contains { sorted[$0] - sorted[$0 + 1] < 1e-4 }
                if tied { continue }
                let expected = reference.topK[l].row(t).map { Int($0) }
                if family.hasPrefix("deepseek") {
                    #expect(ours.experts.sorted() == expected.sorted(), "\(family) L\(l) t\(t)")
                } else {
                    #expect(ours.experts == expected, "\(family) L\(l) t\(t)")
                }
                compared += 1
            }
        }
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
        var logits: [Float] = [], routing: [RoutingTrace] = []
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
