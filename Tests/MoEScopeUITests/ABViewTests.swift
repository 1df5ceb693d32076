import Foundation
import MoEAnalysis
import MoECore
import MoEHub
import Testing

@testable import MoEScopeUI

/// The A/B view: two routings of the same tokens, moving together, their agreement, the
/// disagreements in the token strip, and the fragility lens — at every size and real shape.
@Suite struct ABViewTests {
    static let tokenizer = Tokenizer(merges: [])

    /// moescope's own model: each router its own random model of one shape.
    static func ownState(experts: Int = 8, layers: Int = 6, text: String = "Routers pick experts for every token of this text.") throws
        -> ExplorerState
    {
        let loader: SessionLoader = { router, tokens, text in
            let router = router ?? .linear
            var c = ModelConfig.tiny(router: router)
            c.numExperts = experts
            c.numLayers = layers
            let model = try MoEModel(config: c, seed: UInt64(router.number))
            return ExplorerSession(
                model: model, tokenizer: tokenizer, label: router.rawValue, isRandomInit: false,
                tokens: tokens ?? tokenizer.encode(text ?? ""))
        }
        return try ExplorerState(loader: loader, router: .linear, text: text)
    }

    @Test func twoRoutersMoveTogether() throws {
        var state = try Self.ownState()
        state.handle(.character("c"))
        #expect(state.isComparing)
        let ab = try #require(state.ab)
        #expect(ab.choice == .router(.gru))  // Linear against GRU first
        for _ in 0..<7 { state.handle(.right) }
        state.handle(.down)
        state.handle(.character("]"))
        #expect(state.ab!.session.traces.count == state.cursor + 1)
        #expect(state.ab!.session.tokens == state.session.tokens)
        for (width, height) in [(80, 24), (200, 60)] {
            ExplorerShapeTests.checkLayout(state, width: width, height: height, "A/B linear/gru \(width)×\(height)")
            let text = ExplorerRenderer.render(state, width: width, height: height).text
            #expect(text.contains("A Linear") && text.contains("B GRU"), "\(text)")
            #expect(text.contains("A/B agreement"))
            #expect(text.contains("▸ L1"))
        }
        // The strip marks exactly the tokens whose top-k sets differ at the selected layer.
        let disagreeing = (0...state.cursor).filter { state.ab!.disagrees(with: state.session, token: $0, layer: state.layer)! }
        let text = ExplorerRenderer.render(state, width: 200, height: 60).text
        #expect(text.components(separatedBy: "≠").count - 1 >= disagreeing.count)
        // The agreement panel's figures are AgreementAccumulator's.
        let layers = state.ab!.agreement(with: state.session, through: state.cursor, nearTie: state.lens.threshold)
        #expect(text.contains(DiffPercent.text(layers[1].top1Agreement)))
        // b picks the next side B; the cursor stays.
        let choices = ABState.choices(for: state.session)
        #expect(choices.prefix(6) == RouterKind.allCases.filter { $0 != .linear }.map(ABChoice.router)[...])
        #expect(choices.contains(.variant(.routerWeightsRounded(.bf16))))
        state.handle(.character("b"))
        #expect(state.ab!.choice == choices[choices.firstIndex(of: .router(.gru))! + 1])
        #expect(state.ab!.session.traces.count == state.cursor + 1)
        state.handle(.character("B"))
        state.handle(.character("B"))
        #expect(state.ab!.choice == choices[choices.firstIndex(of: .router(.gru))! - 1])
        // Side A switched to side B's router: B moves on rather than compare a router with itself.
        let bRouter: RouterKind = { if case .router(let r) = state.ab!.choice { return r } else { return .gru } }()
        state.handle(.character(Character(String(bRouter.number))))
        #expect(state.session.router == bRouter && state.ab!.choice != .router(bRouter))
        // A variant of side A follows side A to another router.
        while state.ab?.choice != .variant(.routerWeightsRounded(.bf16)) { state.handle(.character("b")) }
        state.handle(.character("2"))
        #expect(state.ab!.session.model.routerName == "MLP · router weights in BF16", "\(state.ab!.session.model.routerName)")
        // c again: back to the view it opened over; Tab leaves it for the next view.
        state.handle(.character("c"))
        #expect(!state.isComparing && state.view == .dashboard)
        state.handle(.character("c"))
        state.handle(.tab)
        #expect(!state.isComparing && state.view == .crossLayer)
    }

    @Test func identicalSidesAgreeFully() throws {
        var state = try Self.ownState()
        state.handle(.character("c"))
        // The same model routed with F16-rounded router weights: nearly always the same.
        while state.ab?.choice != .variant(.routerWeightsRounded(.f16)) { state.handle(.character("b")) }
        state.handle(.end)
        let layers = state.ab!.agreement(with: state.session, through: state.cursor, nearTie: 0.0125)
        #expect(layers.allSatisfy { $0.jensenShannon < 1e-3 && $0.jaccard > 0.9 })
    }

    @Test func fragilityLensMarksNearTies() throws {
        var state = try Self.ownState()
        for _ in 0..<10 { state.handle(.right) }
        state.handle(.character("f"))
        #expect(state.lens.isOn)
        // A threshold over every margin: every decision is a near-tie and shows "!".
        for _ in 0..<20 { state.handle(.character(">")) }
        #expect(state.lens.threshold == 0.5)
        var text = ExplorerRenderer.render(state, width: 140, height: 45).text
        #expect(text.contains("!") && text.contains("?"))
        #expect(text.contains("100% fragile at L0"), "\(text)")
        for _ in 0..<40 { state.handle(.character("<")) }
        text = ExplorerRenderer.render(state, width: 140, height: 45).text
        #expect(text.contains("0% fragile at L0"))
        for (width, height) in [(80, 24), (200, 60)] {
            ExplorerShapeTests.checkLayout(state, width: width, height: height, "lens \(width)×\(height)")
        }
        state.handle(.character("+"))
        state.handle(.character("+"))
        ExplorerShapeTests.checkLayout(state, width: 200, height: 60, "lens numeric")
    }

    /// Every real shape, in the A/B view, with the lens on, at every size.
    @Test(arguments: ExplorerShapeTests.shapes)
    func everyShapeFitsEverySize(_ shape: ExplorerShapeTests.Shape) throws {
        var state = try ExplorerShapeTests.state(try ExplorerShapeTests.model(shape))
        state.handle(.character("c"))
        #expect(state.ab != nil, "\(shape): no side B")
        for _ in 0..<9 { state.handle(.right) }
        for _ in 0..<(shape.layers - 2) { state.handle(.down) }
        for _ in 0..<30 { state.handle(.character("]")) }
        state.handle(.character("f"))
        for (width, height) in ExplorerShapeTests.sizes {
            ExplorerShapeTests.checkLayout(state, width: width, height: height, "\(shape) A/B \(width)×\(height)")
            let text = ExplorerRenderer.render(state, width: width, height: height).text
            #expect(text.contains("▸ L\(shape.denseFirst + shape.layers - 2)"), "\(shape) \(width)×\(height)\n\(text)")
        }
    }

    /// A Hugging Face model against itself under a changed rule.
    @Test func huggingFaceModelAgainstItself() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/hf/deepseek_v3").path
        let model = try HubModel(folder: folder)
        let tokenizer = try HubTokenizer(file: "\(folder)/tokenizer.json")
        let loader: SessionLoader = { _, tokens, text in
            ExplorerSession(
                model: model, tokenizer: tokenizer, label: "v3", isRandomInit: false, tokens: tokens ?? tokenizer.encode(text ?? ""))
        }
        var state = try ExplorerState(loader: loader, router: nil, text: "the router routes tokens to experts")
        state.handle(.character("c"))
        #expect(state.ab?.choice == .variant(.withoutSelectionBias))
        for _ in 0..<4 { state.handle(.right) }
        for (width, height) in [(80, 24), (200, 60)] {
            ExplorerShapeTests.checkLayout(state, width: width, height: height, "v3 A/B \(width)×\(height)")
            let text = ExplorerRenderer.render(state, width: width, height: height).text
            #expect(text.contains("A/B"))
        }
        #expect(ExplorerRenderer.render(state, width: 200, height: 60).text.contains("B without selection bias"))
        var seen: [ABChoice] = []
        for _ in ABState.choices(for: state.session) {
            seen.append(state.ab!.choice)
            state.handle(.character("b"))
            #expect(state.ab!.session.traces.count == state.cursor + 1)
        }
        #expect(Set(seen.map(\.name)).count == seen.count)
        #expect(seen.contains(.variant(.topKPlusOne)) && seen.contains(.variant(.routerInputNoise(relative: 0.1))))
    }

    @Test func keysAreInTheOneTable() {
        for key in ["c", "b", "B", "f", "<", ">"] { #expect(KeyBindings.action(for: .character(Character(key))) != nil) }
        #expect(KeyBindings.commandHelp.contains("A/B view"))
        #expect(KeyBindings.helpLines(ownModel: false).contains { $0.contains("fragility lens") })
    }
}
