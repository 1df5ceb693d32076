import Foundation
import MoECore
import MoEHub
import Testing

@testable import MoEScopeUI

/// The explorer driven by keys and read back from its cell grid, with tiny random models.
@Suite struct ExplorerTests {
    static let tokenizer = Tokenizer(merges: [])

    static func loader() -> SessionLoader {
        { router, tokens, text in
            let router = router ?? .gru
            let model = try MoEModel(config: .tiny(router: router), seed: UInt64(router.number))
            let ids = tokens ?? tokenizer.encode(text ?? "")
            return ExplorerSession(model: model, tokenizer: tokenizer, label: "tiny \(router.rawValue)", isRandomInit: false, tokens: ids)
        }
    }

    static func state(_ router: RouterKind = .gru, text: String = "Hello, routed world!") throws -> ExplorerState {
        try ExplorerState(loader: loader(), router: router, text: text)
    }

    static func screen(_ state: ExplorerState, width: Int = 140, height: Int = 45) -> String {
        ExplorerRenderer.render(state, width: width, height: height).text
    }

    @Test func dashboardShowsEveryPanel() throws {
        let text = Self.screen(try Self.state())
        for title in ["Tokens", "Expert assignment", "Token history", "GRU hidden state", "Load balance", "token 1/20", "layer L0 of 3"] {
            #expect(text.contains(title), "missing \(title)")
        }
        #expect(text.contains("‖h‖"))
        #expect(text.contains("["))  // chosen experts are bracketed
    }

    /// A Hugging Face model in the same explorer: its own router named, 1–7 refused with a
    /// message, steps decoding the same routing as one full pass, every view drawn.
    @Test func huggingFaceModelIsExplorable() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/hf/qwen2_moe").path
        let model = try HubModel(folder: folder)
        let tokenizer = try HubTokenizer(file: "\(folder)/tokenizer.json")
        let loader: SessionLoader = { _, tokens, text in
            ExplorerSession(
                model: model, tokenizer: tokenizer, label: folder, isRandomInit: false,
                tokens: tokens ?? tokenizer.encode(text ?? ""))
        }
        var state = try ExplorerState(loader: loader, router: nil, text: "the router routes tokens to experts")
        var text = Self.screen(state)
        #expect(text.contains("router qwen2_moe softmax top-2"))
        #expect(text.contains("layer L0 of 2"))
        for _ in 0..<4 { state.handle(.right) }
        let full = try model.forward(Array(state.session.tokens.prefix(5)))
        #expect(full.routing.map { $0.layers.map { $0.experts } } == state.session.traces.map { $0.layers.map { $0.experts } })
        state.handle(.character("3"))
        #expect(state.message?.contains("This model has its own router; 1–7, r and R switch only moescope's own models") == true)
        #expect(state.message!.count < 80)
        for _ in 1..<ExplorerView.allCases.count {
            state.handle(.tab)
            text = Self.screen(state)
            #expect(!text.contains("too small"))
        }
        #expect(state.view == .expert && text.contains("Expert E0 of 6"))
    }

    /// A model with a dense first layer: rows and the status line use the model's own layer
    /// numbers, and the router panel shows the family's equation.
    @Test func denseLayersAreSkippedAndLayersKeepTheirNumbers() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/hf/deepseek_v3").path
        let model = try HubModel(folder: folder)
        let tokenizer = try HubTokenizer(file: "\(folder)/tokenizer.json")
        let loader: SessionLoader = { _, tokens, text in
            ExplorerSession(
                model: model, tokenizer: tokenizer, label: "v3", isRandomInit: false, tokens: tokens ?? tokenizer.encode(text ?? ""))
        }
        var state = try ExplorerState(loader: loader, router: nil, text: "route me")
        var text = Self.screen(state)
        #expect(text.contains("layer L1 of 3"))
        #expect(text.contains("▸ L1") && text.contains("  L2") && !text.contains("  L0 "))
        #expect(text.contains("s = σ(x·Gᵀ)"))
        state.handle(.down)
        text = Self.screen(state)
        #expect(text.contains("layer L2 of 3"))
    }

    @Test func stepsDecodeIncrementallyAndMatchTheFullPass() throws {
        var state = try Self.state(.linear)
        for _ in 0..<5 { state.handle(.right) }
        #expect(state.cursor == 5)
        #expect(state.session.traces.count == 6)
        let full = try (state.session.model as! MoEModel).forward(Array(state.session.tokens.prefix(6)))
        #expect(
            zip(full.routing, state.session.traces).allSatisfy { a, b in
                zip(a.layers, b.layers).allSatisfy { $0.experts == $1.experts }
            })
        state.handle(.end)
        #expect(state.cursor == state.tokenCount - 1)
        state.handle(.home)
        #expect(state.cursor == 0)
        state.handle(.left)
        #expect(state.cursor == 0)
    }

    @Test func layerKeysMoveTheSelectedLayer() throws {
        var state = try Self.state()
        state.handle(.down)
        state.handle(.down)
        state.handle(.down)
        #expect(state.layer == 2)  // clamped to the tiny model's 3 layers
        #expect(Self.screen(state).contains("layer L2 of 3"))
        #expect(Self.screen(state).contains("Token history · layer L2"))
        state.handle(.up)
        #expect(state.layer == 1)
    }

    @Test func switchingRouterKeepsTheCursorAndChangesTheRouting() throws {
        var state = try Self.state(.gru)
        for _ in 0..<7 { state.handle(.right) }
        let before = state.session.traces.map { $0.layers.map(\.experts) }
        state.handle(.character("1"))
        #expect(state.session.router == .linear)
        #expect(state.cursor == 7)
        #expect(state.session.traces.count == 8)
        #expect(state.session.traces.map { $0.layers.map(\.experts) } != before)
        let text = Self.screen(state)
        #expect(text.contains("router Linear [1/7]"))
        #expect(text.contains("has no recurrent state"))
        state.handle(.character("r"))
        #expect(state.session.router == .mlp)
        state.handle(.character("4"))
        #expect(Self.screen(state).contains("α, the Linear share: L0 0.50"))  // s starts at 0
    }

    @Test func helpOverlayListsKeysAndAnyKeyClosesIt() throws {
        var state = try Self.state()
        state.handle(.character("?"))
        let text = Self.screen(state)
        for key in ["Home  End", "space", "1 … 7", "Tab", "q           quit"] { #expect(text.contains(key), "help lacks \(key)") }
        #expect(text.contains("?  h"), "help names both of its keys")
        state.handle(.right)
        #expect(!state.showingHelp)
        #expect(state.cursor == 0)  // the key only closed the overlay
        state.handle(.character("h"))
        #expect(state.showingHelp)
        state.handle(.character("q"))  // a quit key quits from the help too
        #expect(!state.showingHelp && state.quitRequested)
    }

    @Test func editingReplacesTheTextAndEmptyTextIsRefused() throws {
        var state = try Self.state()
        state.handle(.character("e"))
        #expect(state.editBuffer == "Hello, routed world!")  // e starts from the current text
        state.handle(.control("u"))
        for c in "abc" { state.handle(.character(c)) }
        state.handle(.backspace)
        #expect(Self.screen(state).contains("Text: ab "))
        state.handle(.enter)
        #expect(state.session.tokens == [97, 98])
        state.handle(.character("e"))
        state.handle(.control("u"))
        state.handle(.enter)
        #expect(state.message?.contains("empty") == true)
        #expect(state.session.tokens == [97, 98])
    }

    @Test func playStreamsAndGenerateAppends() throws {
        var state = try Self.state(text: "abcd")
        state.handle(.character(" "))
        #expect(state.playing)
        for _ in 0..<10 { state.tick() }
        #expect(state.cursor == 3 && !state.playing)
        state.handle(.character("g"))
        for _ in 0..<ExplorerState.generationLength { state.tick() }
        #expect(state.tokenCount == 4 + ExplorerState.generationLength)
        #expect(state.cursor == state.tokenCount - 1)
    }

    @Test func tooSmallTerminalGetsAMessage() throws {
        let text = Self.screen(try Self.state(), width: 60, height: 20)
        #expect(text.contains("too small"))
        #expect(text.contains("80×24"))
    }

    @Test func monochromeUsesGlyphsAndNoColours() throws {
        var state = try Self.state()
        state.palette = Palette(mode: .monochrome)
        let grid = ExplorerRenderer.render(state, width: 140, height: 45)
        #expect(grid.cells.allSatisfy { $0.style.foreground == nil && $0.style.background == nil })
        #expect(grid.text.contains { Palette.ramp.dropFirst().contains($0) })
    }

    @Test func analysisViewsCycleWithTab() throws {
        var state = try Self.state()
        state.handle(.end)
        state.handle(.tab)
        var text = Self.screen(state)
        #expect(text.contains("Cross-layer dependence") && text.contains("mutual information"))
        state.handle(.tab)
        text = Self.screen(state)
        #expect(text.contains("Gate vs expert output norm") && text.contains("Spearman"))
        state.handle(.tab)
        text = Self.screen(state)
        #expect(text.contains("Expert weight similarity") && text.contains("cosine"))
        #expect(text.contains(" 1.00"))  // every expert is identical to itself
        state.handle(.tab)
        text = Self.screen(state)
        #expect(text.contains("Expert co-activation") && text.contains("also holds expert j"))
        state.handle(.tab)
        #expect(state.view == .expert)
        state.handle(.tab)
        #expect(state.view == .dashboard)
        state.handle(.backTab)
        #expect(state.view == .expert)
    }

    @Test func barsAndHeatCells() {
        #expect(Palette.bar(0.5, width: 4) == "██")
        #expect(Palette.bar(0.5, width: 1) == "▌")
        #expect(ExplorerRenderer.heatCell(0.42, chosen: true, palette: Palette(mode: .full256)).0 == "[ 42]")
        #expect(ExplorerRenderer.heatCell(0.001, chosen: false, palette: Palette(mode: .monochrome)).0 == "  ·· ")
    }
}
