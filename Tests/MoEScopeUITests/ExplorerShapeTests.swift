import Foundation
import MoECore
import MoEHub
import Testing

@testable import MoEScopeUI

/// moescope's own model with a real model's layer structure around it: dense layers first
/// (numbered, not routed) and expert groups, as DeepSeek-V3 has; no router switching, as for a
/// Hugging Face model.
struct ShapedModel: RoutingModel {
    let base: MoEModel
    let denseFirst: Int
    let groups: Int
    var routerName: String { "shaped \(base.routerName)" }
    var routerKind: RouterKind? { denseFirst > 0 ? nil : base.routerKind }
    var routerEquation: String { base.routerEquation }
    var layerCount: Int { base.layerCount + denseFirst }
    var routedLayers: [Int] { Array(denseFirst..<layerCount) }
    var numExperts: Int { base.numExperts }
    var topK: Int { base.topK }
    var expertGroups: Int { groups }
    var vocabSize: Int { base.vocabSize }
    var contextLength: Int { base.contextLength }
    /// Over 64 experts, stand in for the real model's size: too large to run every expert per
    /// keypress or read them all for the similarity view (keeps the debug-build test fast too).
    var weightBytes: Int { numExperts > 64 ? 3_000_000_000 : base.weightBytes }
    func makeDecoder() -> any RoutingDecoder { base.makeDecoder() }
    func expertWeights(routedLayer: Int) -> [(gate: Tensor, up: Tensor, down: Tensor)]? {
        isSmallEnoughToReadWhole ? base.expertWeights(routedLayer: routedLayer) : nil
    }
    var routingVariants: [RoutingVariant] { base.routingVariants }
    func applying(_ variant: RoutingVariant) -> (any RoutingModel)? {
        (base.applying(variant) as? MoEModel).map { ShapedModel(base: $0, denseFirst: denseFirst, groups: groups) }
    }
}

/// A decoder whose router probabilities turn NaN at one layer (and +∞ at another), as a model
/// with NaN weights or a negative norm epsilon produces.
struct PoisonedDecoder: RoutingDecoder {
    var inner: any RoutingDecoder
    mutating func feed(_ tokens: [Int], allExpertNorms: Bool) throws -> (routing: [RoutingTrace], lastLogits: [Float]) {
        var result = try inner.feed(tokens, allExpertNorms: allExpertNorms)
        for t in result.routing.indices {
            result.routing[t].layers[0].probabilities = result.routing[t].layers[0].probabilities.map { _ in .nan }
            if result.routing[t].layers.count > 1 { result.routing[t].layers[1].probabilities[0] = .infinity }
        }
        return result
    }
}

/// moescope's own model with its decoder wrapped, so a test can hand the views any routing.
struct DecoderWrappedModel: RoutingModel {
    let base: MoEModel
    let wrap: @Sendable (any RoutingDecoder) -> any RoutingDecoder
    var routerName: String { base.routerName }
    var routerKind: RouterKind? { nil }
    var routerEquation: String { base.routerEquation }
    var layerCount: Int { base.layerCount }
    var routedLayers: [Int] { base.routedLayers }
    var numExperts: Int { base.numExperts }
    var topK: Int { base.topK }
    var vocabSize: Int { base.vocabSize }
    var contextLength: Int { base.contextLength }
    var weightBytes: Int { base.weightBytes }
    func makeDecoder() -> any RoutingDecoder { wrap(base.makeDecoder()) }
    func expertWeights(routedLayer: Int) -> [(gate: Tensor, up: Tensor, down: Tensor)]? { nil }
}

/// Every view at every terminal size from 80 × 24 up, for the shapes real MoE models have:
/// no panel outside its rectangle, every border intact, every layer reachable.
@Suite struct ExplorerShapeTests {
    struct Shape: CustomStringConvertible, Sendable {
        let experts: Int, layers: Int, topK: Int, denseFirst: Int, groups: Int, router: RouterKind
        var description: String { "\(experts)e/\(layers)L/top-\(topK)" }
    }

    static let shapes = [
        Shape(experts: 8, layers: 6, topK: 2, denseFirst: 0, groups: 1, router: .gru),  // shipped
        Shape(experts: 64, layers: 16, topK: 8, denseFirst: 0, groups: 1, router: .linear),  // OLMoE
        Shape(experts: 60, layers: 24, topK: 4, denseFirst: 0, groups: 1, router: .mlp),  // Qwen1.5-MoE
        Shape(experts: 128, layers: 48, topK: 8, denseFirst: 0, groups: 1, router: .gru),  // Qwen3-MoE
        Shape(experts: 256, layers: 58, topK: 8, denseFirst: 3, groups: 8, router: .linear),  // DeepSeek-V3
    ]
    static let sizes = [(80, 24), (100, 30), (140, 45), (200, 60), (320, 90)]
    static let tokenizer = Tokenizer(merges: [])

    static func model(_ shape: Shape) throws -> any RoutingModel {
        var c = ModelConfig.tiny(router: shape.router)
        c.hiddenSize = 8
        c.numHeads = 2
        c.expertHiddenSize = 4
        c.routerHiddenSize = 4
        c.gruHiddenSize = 6
        c.numExperts = shape.experts
        c.topK = shape.topK
        c.numLayers = shape.layers
        let base = try MoEModel(config: c, seed: UInt64(shape.experts))
        return ShapedModel(base: base, denseFirst: shape.denseFirst, groups: shape.groups)
    }

    static func state(_ model: any RoutingModel, text: String = "Routers pick experts for every token of this text.") throws
        -> ExplorerState
    {
        let loader: SessionLoader = { _, tokens, text in
            ExplorerSession(
                model: model, tokenizer: tokenizer, label: "shape", isRandomInit: false, tokens: tokens ?? tokenizer.encode(text ?? ""))
        }
        return try ExplorerState(loader: loader, router: model.routerKind, text: text)
    }

    /// Whether two rectangles share a cell (empty ones share none).
    static func overlap(_ a: Rect, _ b: Rect) -> Bool {
        !a.isEmpty && !b.isEmpty && a.x < b.maxX && b.x < a.maxX && a.y < b.maxY && b.y < a.maxY
    }

    /// The border of every boxed panel is whole, the column inside each side is blank, panels
    /// lie on the screen without overlapping, and the footer fits.
    static func checkLayout(_ state: ExplorerState, width: Int, height: Int, _ context: String) {
        let grid = ExplorerRenderer.render(state, width: width, height: height)
        let panels = ExplorerRenderer.panels(state, width: width, height: height)
        let screen = Rect(x: 0, y: 0, width: width, height: height)
        for (i, panel) in panels.enumerated() {
            #expect(
                screen.contains(x: panel.rect.x, y: panel.rect.y) && panel.rect.maxX <= width && panel.rect.maxY <= height,
                "\(context): \(panel.name) \(panel.rect) is off the screen")
            for other in panels[(i + 1)...] {
                #expect(!overlap(panel.rect, other.rect), "\(context): \(panel.name) \(panel.rect) overlaps \(other.name) \(other.rect)")
            }
            guard panel.boxed, panel.rect.width >= 2, panel.rect.height >= 2 else { continue }
            let r = panel.rect
            let corners = [grid[r.x, r.y], grid[r.maxX - 1, r.y], grid[r.x, r.maxY - 1], grid[r.maxX - 1, r.maxY - 1]].map(\.character)
            var broken: [String] = []
            if corners != ["┌", "┐", "└", "┘"] { broken.append("corners \(corners)") }
            for y in r.y + 1..<r.maxY - 1 {
                if grid[r.x, y].character != "│" || grid[r.maxX - 1, y].character != "│" { broken.append("side at row \(y)") }
                if grid[r.x + 1, y].character != " " || grid[r.maxX - 2, y].character != " " {
                    broken.append("margin at row \(y): \(grid.line(y))")
                }
            }
            for x in r.x..<r.maxX where grid[x, r.maxY - 1].character != "─" && x != r.x && x != r.maxX - 1 {
                broken.append("bottom at \(x)")
            }
            // The top edge: the title sits on it, between two runs of the rule.
            let top = String((r.x..<r.maxX).map { grid[$0, r.y].character })
            if !top.hasPrefix("┌─") || !top.hasSuffix("─┐") { broken.append("top edge \(top)") }
            #expect(broken.isEmpty, "\(context): \(panel.name) border broken: \(broken.prefix(3))\n\(grid.text)")
        }
        let footer = grid.line(height - 1).trimmingCharacters(in: .whitespaces)
        #expect(!footer.hasSuffix("…") || state.message != nil, "\(context): footer cut: \(footer)")
    }

    /// The gate-vs-norm list's headings each sit apart over their own column, at every size:
    /// the id column (4 wide for 8 experts, 5 for 64) is narrower than the word "expert".
    @Test(arguments: shapes.prefix(2))
    func gateNormHeadingsStayApart(_ shape: Shape) throws {
        var state = try Self.state(try Self.model(shape))
        state.handle(.end)
        while state.view != .expertNorms { state.handle(.tab) }
        for (width, height) in Self.sizes {
            let grid = ExplorerRenderer.render(state, width: width, height: height)
            let headings = try #require(
                (0..<height).map(grid.line).first { $0.contains("router probability") }, "\(shape) \(width)×\(height)\n\(grid.text)")
            #expect(headings.contains(" router probability ") && headings.contains(" ‖expert output‖"), "\(shape): \(headings)")
            #expect(headings.contains("│ E ") || headings.contains("│ expert "), "\(shape): \(headings)")
        }
    }

    @Test(arguments: shapes)
    func everyViewFitsEverySize(_ shape: Shape) throws {
        var state = try Self.state(try Self.model(shape))
        for _ in 0..<12 { state.handle(.right) }
        for _ in 0..<(shape.layers / 2) { state.handle(.down) }
        for _ in 0..<5 { state.handle(.character("]")) }
        for view in ExplorerView.allCases {
            while state.view != view { state.handle(.tab) }
            for (width, height) in Self.sizes {
                Self.checkLayout(state, width: width, height: height, "\(shape) \(view.title) \(width)×\(height)")
            }
        }
        // The zoomed-in axes, other orders and the last layer, at the smallest and a middle size.
        state.handle(.tab)
        #expect(state.view == .dashboard)
        for _ in 0..<shape.layers { state.handle(.down) }
        state.handle(.character("+"))
        state.handle(.character("o"))
        for (width, height) in [(80, 24), (140, 45)] {
            Self.checkLayout(state, width: width, height: height, "\(shape) zoomed by load \(width)×\(height)")
        }
        state.handle(.character("+"))
        state.handle(.character("o"))
        for (width, height) in [(80, 24), (200, 60)] {
            Self.checkLayout(state, width: width, height: height, "\(shape) numbers by probability \(width)×\(height)")
        }
        // The help overlay: its own box whole, on the screen.
        state.handle(.character("?"))
        for (width, height) in [(80, 24), (200, 60)] {
            let text = ExplorerRenderer.render(state, width: width, height: height).text
            #expect(text.contains("┌─ Keys ") && text.contains("q           quit"), "\(shape) help \(width)×\(height)\n\(text)")
        }
    }

    /// Every layer can be reached: the selected one always shows, and hidden ones are counted.
    @Test(arguments: shapes)
    func layerAxisScrollsWithTheSelectedLayer(_ shape: Shape) throws {
        var state = try Self.state(try Self.model(shape))
        let last = "▸ L\(shape.denseFirst + shape.layers - 1)"
        for (width, height) in [(80, 24), (200, 60)] {
            let text = ExplorerRenderer.render(state, width: width, height: height).text
            #expect(text.contains("▸ L\(shape.denseFirst)"), "\(shape) \(width)×\(height): first layer not selected")
            let rowsShown = text.split(separator: "\n").filter { $0.contains("│   L") || $0.contains("│ ▸ L") }.count
            if rowsShown < shape.layers {
                #expect(text.contains("▼"), "\(shape) \(width)×\(height): hidden layers without a mark\n\(text)")
            }
        }
        for _ in 0..<shape.layers { state.handle(.down) }
        for (width, height) in [(80, 24), (200, 60)] {
            let text = ExplorerRenderer.render(state, width: width, height: height).text
            #expect(text.contains(last), "\(shape) \(width)×\(height): the last layer is not in view\n\(text)")
        }
    }

    /// The expert cursor walks the axis, which pans to keep it in view, and the Expert view
    /// describes it.
    @Test func expertCursorPansTheAxis() throws {
        var state = try Self.state(try Self.model(Self.shapes[4]))
        for _ in 0..<20 { state.handle(.right) }
        for _ in 0..<200 { state.handle(.character("]")) }
        #expect(state.expert == 200)
        state.handle(.character("+"))  // one column per expert: 256 do not fit at 80 columns
        var text = ExplorerRenderer.render(state, width: 80, height: 24).text
        #expect(text.contains("▼E200"), "\(text)")
        #expect(text.contains("experts off-axis"))
        state.handle(.character("}"))
        #expect(state.expert == 232)  // a group of 32
        state.handle(.character("{"))
        state.handle(.character("{"))
        #expect(state.expert == 168)
        state.handle(.backTab)
        #expect(state.view == .expert)
        text = ExplorerRenderer.render(state, width: 100, height: 30).text
        #expect(text.contains("Expert E168 of 256"))
        #expect(text.contains("Load share by layer"))
        #expect(text.contains("Tokens E168 receives most"))
    }

    /// With experts in groups, id order separates them; at fit zoom all 256 experts show.
    @Test func groupsAreSeparatedAndFitShowsEveryExpert() throws {
        let state = try Self.state(try Self.model(Self.shapes[4]))
        let context = ViewContext(state)
        let axis = context.axis(width: 66)
        #expect(axis.separators.count == 7)
        #expect(axis.hiddenBefore + axis.hiddenAfter == 0)
        #expect(axis.columns.flatMap(\.experts).count == 256)
        let numbers = ExpertAxis(order: Array(0..<256), groupSize: 32, width: 66, zoom: .numeric, cursor: 255)
        #expect(numbers.isNumeric && numbers.columns.last?.experts.last == 255 && numbers.hiddenBefore > 0 && numbers.width <= 66)
    }

    /// Expert ids in the token strip never run together, whatever their digits.
    @Test func tokenStripIdsNeverCollide() throws {
        var state = try Self.state(try Self.model(Self.shapes[4]), text: "a b c d e f g h i j k l m n o p")
        state.handle(.end)
        state.handle(.home)
        let grid = ExplorerRenderer.render(state, width: 80, height: 24)
        let strip = ExplorerRenderer.panels(state, width: 80, height: 24).first { $0.name == "tokens" }!.rect
        // Every id row holds the top-1 ids of the tokens shown, separated by blanks.
        let idRow = grid.line(strip.y + 2).dropFirst(2).dropLast(3)
        let ids = idRow.split(separator: " ").map { Int($0) }
        #expect(!ids.isEmpty && ids.allSatisfy { $0 != nil && $0! < 256 }, "\(idRow)")
        let expected = state.session.traces.prefix(ids.count).map { $0.layers[0].experts[0] }
        #expect(ids.compactMap { $0 } == expected)
    }

    /// NaN and infinite probabilities are drawn as such, with a banner, and never trap.
    @Test func nonFiniteRoutingIsShownNotFatal() throws {
        var c = ModelConfig.tiny(router: .linear)
        c.numExperts = 8
        let model = DecoderWrappedModel(base: try MoEModel(config: c, seed: 3)) { PoisonedDecoder(inner: $0) }
        var state = try Self.state(model)
        for _ in 0..<3 { state.handle(.right) }
        for view in ExplorerView.allCases {
            while state.view != view { state.handle(.tab) }
            for (width, height) in [(80, 24), (140, 45)] {
                let text = ExplorerRenderer.render(state, width: width, height: height).text
                #expect(text.contains("non-finite routing") || text.contains("NaN/∞"), "no banner: \(view) \(width)×\(height)")
                Self.checkLayout(state, width: width, height: height, "poisoned \(view.title) \(width)×\(height)")
            }
        }
        state.handle(.tab)
        let grid = ExplorerRenderer.render(state, width: 140, height: 45)
        #expect(grid.text.contains("nan"))
        #expect(grid.cells.contains { $0.style == Palette(mode: .full256).nonFinite && $0.character == "n" })
        #expect(state.session.nonFiniteTokens == 4)
    }

    /// A Hugging Face model with 64 experts (the committed OLMoE fixture) through every view at
    /// the smallest and a large size.
    @Test func huggingFace64ExpertModel() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/hf/olmoe_64e").path
        let model = try HubModel(folder: folder)
        let tokenizer = try HubTokenizer(file: "\(folder)/tokenizer.json")
        #expect(model.numExperts == 64 && model.topK == 8)
        let loader: SessionLoader = { _, tokens, text in
            ExplorerSession(
                model: model, tokenizer: tokenizer, label: folder, isRandomInit: false, tokens: tokens ?? tokenizer.encode(text ?? ""))
        }
        var state = try ExplorerState(loader: loader, router: nil, text: "the router routes tokens to experts")
        for _ in 0..<5 { state.handle(.right) }
        state.handle(.down)
        for view in ExplorerView.allCases {
            while state.view != view { state.handle(.tab) }
            for (width, height) in [(80, 24), (100, 30), (200, 60)] {
                Self.checkLayout(state, width: width, height: height, "olmoe_64e \(view.title) \(width)×\(height)")
            }
        }
        state.handle(.character("3"))
        #expect(state.message?.contains("has its own router") == true)
        #expect(!KeyBindings.footer(width: 200, ownModel: false).contains("router"))
    }
}

/// The pieces every view is made of.
@Suite struct ExplorerWidgetTests {
    @Test func cutTextAlwaysEndsInAnEllipsis() {
        var grid = CellGrid(width: 10, height: 1)
        #expect(grid.put("abcdefghijkl", x: 0, y: 0) == 10)
        #expect(grid.line(0) == "abcdefghi…")
        grid = CellGrid(width: 10, height: 1)
        grid.put("abcdef", x: 2, y: 0, maxWidth: 4)
        #expect(grid.line(0) == "  abc…    ")
        #expect(TextLayout.wrap("one two three four", width: 9) == ["one two", "three", "four"])
        #expect(TextLayout.wrap("abcdefghijkl", width: 5) == ["abcd…"])
    }

    @Test func blitNeverLeavesItsRect() {
        var screen = CellGrid(width: 6, height: 3)
        var panel = CellGrid(width: 10, height: 10)
        panel.put("XXXXXXXXXX", x: 0, y: 0)
        panel.put("XXXXXXXXXX", x: 0, y: 1)
        screen.blit(panel, at: Rect(x: 2, y: 1, width: 2, height: 1))
        #expect(screen.text == "      \n  XX  \n      ")
    }

    @Test func tooSmallMessageIsNeverCut() throws {
        let state = try ExplorerTests.state()
        for (width, height) in [(79, 24), (40, 10), (20, 6), (12, 4)] {
            let text = ExplorerRenderer.render(state, width: width, height: height).text
            #expect(!text.contains("…"), "\(width)×\(height):\n\(text)")
            #expect(text.contains("80×24"), "\(width)×\(height):\n\(text)")
        }
    }

    @Test func footerAbbreviatesWholeEntries() {
        for width in [40, 60, 80, 100, 200] {
            let footer = KeyBindings.footer(width: width, ownModel: true)
            #expect(footer.count <= width && !footer.contains("…") && footer.contains("quit"))
        }
        #expect(KeyBindings.footer(width: 200, ownModel: true).contains("\(KeyBindings.routerDigits)/r router"))
    }

    @Test func oneKeyTableDrivesHandlerHelpAndFooter() {
        for binding in KeyBindings.table {
            for entry in binding.keys { #expect(KeyBindings.action(for: entry.key) == entry.action) }
        }
        // Every row is in the help of a recorded trace; a model that runs leaves out the paging rows.
        #expect(KeyBindings.helpLines(ownModel: false, recording: true).count == KeyBindings.table.count)
        let help = KeyBindings.helpLines(ownModel: true)
        #expect(help.count == KeyBindings.table.filter { !$0.recordingsOnly }.count && !help.contains { $0.contains("PgUp") })
        #expect(KeyBindings.commandHelp.contains("1 … \(RouterKind.allCases.count)"))
        #expect(KeyBindings.helpLines(ownModel: false).contains { $0.contains("own models only") })
    }

    @Test func lineEditorBehavesLikeReadline() {
        var field = LineEditor("hello brave world")
        field.handle(.control("w"))
        #expect(field.text == "hello brave " && field.cursor == 12)
        field.handle(.control("a"))
        field.handle(.delete)
        #expect(field.text == "ello brave ")
        field.handle(.right)
        field.handle(.backspace)
        #expect(field.text == "llo brave " && field.cursor == 0)
        field.handle(.control("e"))
        field.handle(.character("!"))
        field.handle(.left)
        field.handle(.control("u"))
        #expect(field.text == "!" && field.cursor == 0)
        field.handle(.character("\u{07}"))  // bell: ignored
        field.handle(.character("\u{1B}"))
        #expect(field.text == "!")
        field.handle(.paste("line one\nline two\u{1B}[A"))
        #expect(field.text == "line one\nline two\u{1B}[A!")
    }

    @Test func pasteNeverQuitsOrLosesText() throws {
        var state = try ExplorerTests.state()
        state.handle(.character("e"))
        state.handle(.character("X"))
        state.handle(.paste("q\nmore\u{1B}text"))
        #expect(!state.quitRequested)
        #expect(state.editBuffer == "Hello, routed world!Xq\nmore\u{1B}text")
        let long = String(repeating: "pasted text ", count: 420)  // 5,040 characters
        let began = monotonicNanoseconds()
        state.handle(.paste(long))
        _ = ExplorerRenderer.render(state, width: 80, height: 24)
        #expect(secondsSince(began) < 5)  // generous: a debug build on a busy machine
        #expect(state.editBuffer!.hasSuffix(long))
        // A paste outside the text field opens it instead of being read as keys.
        state.handle(.escape)
        state.handle(.paste("qqq"))
        #expect(!state.quitRequested && state.editBuffer?.hasSuffix("qqq") == true)
    }

    @Test func asciiPaletteDrawsOnlyAscii() throws {
        var state = try ExplorerTests.state()
        state.palette = Palette(mode: .monochrome, asciiOnly: true)
        for view in ExplorerView.allCases {
            while state.view != view { state.handle(.tab) }
            let grid = ExplorerRenderer.render(state, width: 100, height: 30)
            #expect(grid.cells.allSatisfy { $0.character.isASCII }, "\(view)")
            #expect(grid.text.contains("+--") && grid.text.contains("|"))
        }
    }

    @Test func dumbOrMissingTerminalIsRefused() {
        #expect(throws: TerminalError.self) { try ExplorerApp.checkTerminal([:]) }
        #expect(throws: TerminalError.self) { try ExplorerApp.checkTerminal(["TERM": "dumb"]) }
        #expect(throws: Never.self) { try ExplorerApp.checkTerminal(["TERM": "xterm-256color"]) }
    }
}
