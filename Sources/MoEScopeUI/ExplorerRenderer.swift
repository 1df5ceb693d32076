import Foundation
import MoEAnalysis
import MoECore

/// Draws the explorer into a `CellGrid`: a status bar, the view of the moment, a footer, and
/// the help overlay on top when asked for.
public enum ExplorerRenderer {
    public static let minimumWidth = 100
    public static let minimumHeight = 30

    public static func render(_ state: ExplorerState, width: Int, height: Int) -> CellGrid {
        var grid = CellGrid(width: width, height: height)
        guard width >= minimumWidth, height >= minimumHeight else {
            let lines = ["Terminal \(width)×\(height) is too small for moescope.",
                         "It needs at least \(minimumWidth)×\(minimumHeight): enlarge the window, or press q to quit."]
            for (i, line) in lines.enumerated() {
                grid.put(line, x: max(0, (width - line.count) / 2), y: max(0, height / 2 - 1 + i), style: CellStyle(bold: i == 0))
            }
            return grid
        }
        drawStatusBar(state, into: &grid)
        let body = (y: 1, height: height - 2)
        switch state.view {
        case .dashboard: DashboardView.draw(state, into: &grid, top: body.y, height: body.height)
        case .crossLayer: CrossLayerView.draw(state, into: &grid, top: body.y, height: body.height)
        case .expertNorms: ExpertNormView.draw(state, into: &grid, top: body.y, height: body.height)
        case .expertSimilarity: ExpertSimilarityView.draw(state, into: &grid, top: body.y, height: body.height)
        }
        drawFooter(state, into: &grid)
        if state.showingHelp { HelpOverlay.draw(into: &grid) }
        return grid
    }

    static func drawStatusBar(_ state: ExplorerState, into grid: inout CellGrid) {
        let bar = CellStyle(reverse: true)
        grid.put(String(repeating: " ", count: grid.width), x: 0, y: 0, style: bar)
        let session = state.session
        let parts = [
            "moescope",
            session.router.map { "router \($0.displayName) [\($0.number)/\(RouterKind.allCases.count)]" } ?? "router \(session.model.routerName)",
            session.label,
            "token \(state.cursor + 1)/\(state.tokenCount)",
            "layer \(state.layerName(state.layer)) of \(state.session.model.layerCount)",
            state.view.title,
            state.pendingGeneration > 0 ? "generating…" : state.playing ? "▶ playing" : "❚❚ paused",
        ]
        grid.put(" " + parts.joined(separator: " │ "), x: 0, y: 0, style: CellStyle(bold: true, reverse: true))
    }

    static func drawFooter(_ state: ExplorerState, into grid: inout CellGrid) {
        let y = grid.height - 1
        if let buffer = state.editBuffer {
            grid.put("New text: ", x: 0, y: y, style: CellStyle(bold: true))
            let room = grid.width - 10 - 40
            grid.put(String(buffer.suffix(room)) + "█", x: 10, y: y)
            grid.put("Enter: run it · Esc: cancel", x: grid.width - 28, y: y, style: CellStyle(dim: true))
        } else if let message = state.message {
            grid.put(message, x: 1, y: y, style: CellStyle(bold: true))
        } else {
            grid.put("←/→ token  ↑/↓ layer  Home/End  space play  1-7/r router  e edit  g generate  Tab view  ? help  q quit",
                     x: 1, y: y, style: CellStyle(dim: true))
        }
    }

    /// How a token reads in one line: newlines and tabs as visible symbols, spaces as '·'.
    static func visible(_ text: String) -> String {
        String(text.map { c -> Character in
            switch c {
            case "\n": "⏎"
            case "\t": "⇥"
            case "\r", "\r\n": "␍"
            case " ": "·"
            default: c
            }
        })
    }

    /// A heat cell: the value as two digits (or "··" for under 0.5%), bracketed when chosen.
    static func heatCell(_ value: Double, chosen: Bool, palette: Palette) -> (String, CellStyle) {
        let percent = Int((value * 100).rounded())
        let digits = percent >= 100 ? "1." : percent < 1 ? "··" : String(format: "%02d", percent)
        let glyph = palette.heatGlyph(value)
        var style = palette.heat(value)
        style.bold = chosen
        return (chosen ? "[\(glyph)\(digits)]" : " \(glyph)\(digits) ", style)
    }
}

/// The main view: token strip, expert heatmaps, GRU state and load balance.
enum DashboardView {
    static func draw(_ state: ExplorerState, into grid: inout CellGrid, top: Int, height: Int) {
        let stripHeight = 8
        TokenStrip.draw(state, into: &grid, x: 0, y: top, width: grid.width, height: stripHeight)
        let panelsTop = top + stripHeight, panelsHeight = height - stripHeight
        let leftWidth = min(grid.width / 2, 15 + state.numExperts * 5)
        let upperHeight = state.numLayers + 4
        drawExpertHeatmap(state, into: &grid, x: 0, y: panelsTop, width: leftWidth, height: upperHeight)
        drawHistory(state, into: &grid, x: 0, y: panelsTop + upperHeight, width: leftWidth, height: panelsHeight - upperHeight)
        let rightWidth = grid.width - leftWidth
        drawRecurrentState(state, into: &grid, x: leftWidth, y: panelsTop, width: rightWidth, height: upperHeight)
        drawLoadBalance(state, into: &grid, x: leftWidth, y: panelsTop + upperHeight, width: rightWidth, height: panelsHeight - upperHeight)
    }

    static func expertHeader(_ experts: Int, into grid: inout CellGrid, x: Int, y: Int, palette: Palette) {
        for e in 0..<experts { grid.put(String(format: " E%-2d ", e), x: x + e * 5, y: y, style: palette.expert(e)) }
    }

    /// One routing decision as a row of heat cells, one per expert, under `expertHeader`.
    static func heatRow(_ routing: LayerRouting, palette: Palette, into grid: inout CellGrid, x: Int, y: Int) {
        for (e, probability) in routing.probabilities.enumerated() {
            let (text, style) = ExplorerRenderer.heatCell(Double(probability), chosen: routing.experts.contains(e), palette: palette)
            grid.put(text, x: x + e * 5, y: y, style: style)
        }
    }

    /// Layers × experts for the current token: router probability as colour, top-k bracketed.
    static func drawExpertHeatmap(_ state: ExplorerState, into grid: inout CellGrid, x: Int, y: Int, width: Int, height: Int) {
        let token = ExplorerRenderer.visible(state.session.text(of: state.cursor))
        grid.box(x: x, y: y, width: width, height: height, title: "Expert assignment · «\(token.prefix(12))» · layers × experts")
        expertHeader(state.numExperts, into: &grid, x: x + 8, y: y + 1, palette: state.palette)
        for (i, routing) in state.currentTrace.layers.enumerated() {
            let selected = i == state.layer
            grid.put((selected ? "▸ " : "  ") + state.layerName(i), x: x + 2, y: y + 2 + i, style: CellStyle(bold: selected))
            heatRow(routing, palette: state.palette, into: &grid, x: x + 8, y: y + 2 + i)
        }
        grid.put("[nn] = chosen top-\(state.session.model.topK) · nn = router probability %", x: x + 2, y: y + height - 2, style: CellStyle(dim: true), maxWidth: width - 4)
    }

    /// Recent tokens × experts at the selected layer.
    static func drawHistory(_ state: ExplorerState, into grid: inout CellGrid, x: Int, y: Int, width: Int, height: Int) {
        guard height >= 4 else { return }
        grid.box(x: x, y: y, width: width, height: height, title: "Token history · layer \(state.layerName(state.layer)) · tokens × experts")
        expertHeader(state.numExperts, into: &grid, x: x + 12, y: y + 1, palette: state.palette)
        let rows = height - 3
        let first = max(0, state.cursor - rows + 1)
        for (row, index) in (first...state.cursor).enumerated() {
            let routing = state.session.traces[index].layers[state.layer]
            let label = ExplorerRenderer.visible(state.session.text(of: index))
            let current = index == state.cursor
            grid.put(String(label.prefix(9)), x: x + 2, y: y + 2 + row, style: CellStyle(bold: current, reverse: current))
            heatRow(routing, palette: state.palette, into: &grid, x: x + 12, y: y + 2 + row)
        }
    }

    /// |h| of the GRU router per layer and hidden dimension, with ‖h‖ per layer.
    static func drawRecurrentState(_ state: ExplorerState, into grid: inout CellGrid, x: Int, y: Int, width: Int, height: Int) {
        let router = state.session.router
        guard router == .gru else {
            grid.box(x: x, y: y, width: width, height: height, title: "Router state")
            let lines = ["The \(router?.displayName ?? state.session.model.routerName) router has no recurrent state: it routes every layer",
                         "independently from that layer's hidden state alone.",
                         "Equation: \(state.session.model.routerEquation)",
                         router == nil ? "moescope's GRU (RMoE) router is in its own models: run moescope without --model, press 7."
                                       : "Press 7 for the GRU (RMoE) router, whose state flows down the layers."]
            for (i, line) in lines.enumerated() { grid.put(line, x: x + 2, y: y + 1 + i, maxWidth: width - 4) }
            if let hybrid = (state.session.model as? MoEModel)?.router as? HybridRouter {
                // The Hybrid router's own state: how much of each layer's logits is the linear part.
                let alphas = (0..<state.numLayers).map { String(format: "L%d %.2f", $0, hybrid.mix(layer: $0)) }
                grid.put("α, the Linear share: " + alphas.joined(separator: " "), x: x + 2, y: y + 2 + lines.count, maxWidth: width - 4)
            }
            return
        }
        let trace = state.currentTrace
        let size = trace.layers.first?.gruHidden?.count ?? 0
        let room = width - 4 - 6 - 10
        let group = max(1, (size + room - 1) / max(1, room))    // dims per column when narrow
        let columns = (size + group - 1) / group
        grid.box(x: x, y: y, width: width, height: height,
                 title: "GRU hidden state |h| · layers × \(size) dims\(group > 1 ? " (max of \(group)/column)" : "")")
        for (i, routing) in trace.layers.enumerated() {
            let hidden = routing.gruHidden ?? []
            let selected = i == state.layer
            grid.put((selected ? "▸ " : "  ") + state.layerName(i), x: x + 2, y: y + 1 + i, style: CellStyle(bold: selected))
            for c in 0..<columns {
                let slice = hidden[(c * group) ..< min(hidden.count, (c + 1) * group)]
                let magnitude = Double(slice.map { abs($0) }.max() ?? 0)   // |h| ≤ 1 for a GRU
                var style = state.palette.heat(magnitude)
                if state.palette.mode == .monochrome { style = .plain }
                grid.put(String(state.palette.mode == .monochrome ? Palette.ramp[Palette.level(magnitude, count: Palette.ramp.count)] : " "),
                         x: x + 8 + c, y: y + 1 + i, style: style)
            }
            let norm = hidden.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
            grid.put(String(format: " ‖h‖ %5.2f", norm), x: x + 8 + columns, y: y + 1 + i)
        }
        grid.put("colour/glyph = |h_d| from 0 to 1 · h flows from layer to layer", x: x + 2, y: y + height - 2, style: CellStyle(dim: true), maxWidth: width - 4)
    }

    /// Share of routed slots per expert at the selected layer, over tokens 1…cursor.
    static func drawLoadBalance(_ state: ExplorerState, into grid: inout CellGrid, x: Int, y: Int, width: Int, height: Int) {
        guard height >= 4 else { return }
        grid.box(x: x, y: y, width: width, height: height, title: "Load balance · layer \(state.layerName(state.layer)) · tokens 1–\(state.cursor + 1)")
        let stats = routingSoFar(state).load
        let selected = stats[state.layer]
        let barWidth = max(10, width - 22)
        for (e, share) in selected.shares.enumerated() where 1 + e < height - 2 {
            grid.put(String(format: "E%-2d", e), x: x + 2, y: y + 1 + e, style: state.palette.expert(e))
            grid.put(Palette.bar(share, width: barWidth), x: x + 6, y: y + 1 + e, style: state.palette.expert(e))
            grid.put(String(format: "%5.1f%%", share * 100), x: x + 7 + barWidth, y: y + 1 + e)
        }
        var row = y + 1 + state.numExperts
        guard row < y + height - 1 else { return }
        grid.put(String(format: "CV %.2f · MaxVio %.2f · usage entropy %.2f (1 = even)", selected.coefficientOfVariation,
                        selected.maxViolation, selected.normalizedUsageEntropy), x: x + 2, y: row, style: CellStyle(bold: true), maxWidth: width - 4)
        row += 1
        for (i, layerStats) in stats.enumerated() where row < y + height - 1 {
            grid.put(String(format: "%@%@  CV %.2f  MaxVio %.2f  entropy %.2f", i == state.layer ? "▸ " : "  ", state.layerName(i),
                            layerStats.coefficientOfVariation, layerStats.maxViolation, layerStats.normalizedUsageEntropy),
                     x: x + 2, y: row, style: CellStyle(dim: i != state.layer), maxWidth: width - 4)
            row += 1
        }
    }

}

/// The routing metrics of tokens 1…cursor, the same accumulator `compare` and `analyze` use.
func routingSoFar(_ state: ExplorerState) -> RoutingSummary {
    var summary = RoutingSummary(numLayers: state.numLayers, numExperts: state.numExperts)
    summary.add(Array(state.session.traces[0...state.cursor]))
    return summary
}

/// The text as tokens, wrapped, each coloured by its top-1 expert at the selected layer, with
/// that expert's id under it; the current token reversed.
enum TokenStrip {
    static func draw(_ state: ExplorerState, into grid: inout CellGrid, x: Int, y: Int, width: Int, height: Int) {
        grid.box(x: x, y: y, width: width, height: height,
                 title: "Tokens · coloured by top-1 expert at layer \(state.layerName(state.layer)) (expert id below)")
        let inner = width - 4
        // Lay out every token into lines.
        var lines: [[(index: Int, column: Int, text: String)]] = [[]]
        var column = 0
        for index in 0..<state.tokenCount {
            let text = String(ExplorerRenderer.visible(state.session.text(of: index)).prefix(inner))
            if column + text.count > inner { lines.append([]); column = 0 }
            lines[lines.count - 1].append((index, column, text))
            column += text.count + 1
        }
        let visibleLines = (height - 2) / 2
        let cursorLine = lines.firstIndex { $0.contains { $0.index == state.cursor } } ?? 0
        let firstLine = max(0, min(cursorLine - visibleLines / 2, lines.count - visibleLines))
        for (row, line) in lines[firstLine ..< min(lines.count, firstLine + visibleLines)].enumerated() {
            for item in line {
                let decoded = item.index < state.session.traces.count
                let expert = decoded ? state.session.traces[item.index].layers[state.layer].topExpert : nil
                var style = expert.map { state.palette.expert($0) } ?? CellStyle(dim: true)
                if item.index == state.cursor { style.reverse = true; style.bold = true }
                grid.put(item.text, x: x + 2 + item.column, y: y + 1 + 2 * row, style: style)
                grid.put(expert.map(String.init) ?? "·", x: x + 2 + item.column, y: y + 2 + 2 * row,
                         style: expert.map { state.palette.expert($0) } ?? CellStyle(dim: true))
            }
        }
    }
}

/// L × L mutual information between layers' top-1 choices over the tokens so far.
enum CrossLayerView {
    static func draw(_ state: ExplorerState, into grid: inout CellGrid, top: Int, height: Int) {
        let summary = routingSoFar(state)
        let matrix = summary.crossLayerMutualInformation
        let scale = max(1e-9, log(Double(state.numExperts)))
        grid.box(x: 0, y: top, width: grid.width, height: height, title: "Cross-layer dependence · tokens 1–\(state.cursor + 1)")
        for j in 0..<state.numLayers { grid.put("  " + state.layerName(j).padding(toLength: 5, withPad: " ", startingAt: 0), x: 10 + j * 7, y: top + 2) }
        for i in 0..<state.numLayers {
            grid.put("  " + state.layerName(i), x: 2, y: top + 3 + i)
            for j in 0..<state.numLayers {
                let value = matrix[i][j]
                var style = state.palette.heat(value / scale)
                style.bold = i == j
                let glyph = state.palette.heatGlyph(value / scale)
                grid.put(String(format: " %@%4.2f ", String(glyph), value), x: 10 + j * 7, y: top + 3 + i, style: style)
            }
        }
        let notes = [
            "Cell (i, j): mutual information, in nats, between the top-1 experts that layers i and j chose for the same tokens",
            "(the colour scale tops out at ln E = \(String(format: "%.2f", scale)), the most two choices among \(state.numExperts) experts can share).",
            "The diagonal is each layer's own choice entropy. A bright off-diagonal cell means one layer's choice predicts another's;",
            "RMoE (Qiu et al. 2024) reports the GRU router raises this dependence. Mean over layer pairs: \(String(format: "%.3f", summary.meanCrossLayerMutualInformation)) nats.",
            "Few tokens inflate MI estimates: compare routers on the same text, and prefer `moescope compare` for held-out figures.",
        ]
        for (k, note) in notes.enumerated() where top + 5 + state.numLayers + k < top + height - 1 {
            grid.put(note, x: 2, y: top + 5 + state.numLayers + k, maxWidth: grid.width - 4)
        }
    }
}

/// Every key, over whatever view is showing.
enum HelpOverlay {
    static let lines = [
        "←  →        previous / next token (the model decodes as you go)",
        "↑  ↓        previous / next layer",
        "Home  End   first / last token",
        "space       play / pause streaming through the text",
        "1 … 7       switch router: \(RouterKind.allCases.map { "\($0.number) \($0.displayName)" }.joined(separator: ", "))",
        "r  R        next / previous router (same text, cursor stays on the token)",
        "e           type a new text (Enter runs it, Esc cancels)",
        "g           generate the next \(ExplorerState.generationLength) tokens",
        "Tab  ⇧Tab   next / previous view: routing, cross-layer MI, gate vs norm, expert similarity",
        "?           this help (any key closes it)",
        "q           quit",
    ]

    static func draw(into grid: inout CellGrid) {
        let width = min(grid.width - 4, (lines.map(\.count).max() ?? 40) + 6)
        let height = lines.count + 4
        let x = (grid.width - width) / 2, y = max(1, (grid.height - height) / 2)
        grid.fill(x: x, y: y, width: width, height: height)
        grid.box(x: x, y: y, width: width, height: height, title: "Keys", style: CellStyle(bold: true))
        for (i, line) in lines.enumerated() { grid.put(line, x: x + 3, y: y + 2 + i, maxWidth: width - 6) }
    }
}

/// "Closer Look": for the current token at the selected layer, each expert's router probability
/// beside the norm of its output, and over the tokens so far how often the router's top-1 is the
/// largest-norm expert.
enum ExpertNormView {
    static func draw(_ state: ExplorerState, into grid: inout CellGrid, top: Int, height: Int) {
        grid.box(x: 0, y: top, width: grid.width, height: height, title: "Gate vs expert output norm · layer \(state.layerName(state.layer)) · token «\(ExplorerRenderer.visible(state.session.text(of: state.cursor)).prefix(16))»")
        let routing = state.currentRouting
        guard let norms = routing.allExpertOutputNorms else {
            grid.put("This model is too large to run every expert on every token interactively, so only the chosen experts' norms are known:",
                     x: 2, y: top + 2, maxWidth: grid.width - 4)
            let chosen = zip(routing.experts, routing.expertOutputNorms).map { String(format: "E%d ‖y‖ %.3f", $0, $1) }
            grid.put(chosen.joined(separator: " · ") + ". `moescope analyze --model` measures all of them.", x: 2, y: top + 3, maxWidth: grid.width - 4)
            return
        }
        let maxNorm = Double(norms.max() ?? 1)
        let barWidth = max(10, (grid.width - 40) / 2)
        grid.put("expert   router probability" + String(repeating: " ", count: max(0, barWidth - 16)) + "‖expert output‖", x: 2, y: top + 2, style: CellStyle(bold: true))
        for e in 0..<state.numExperts {
            let y = top + 3 + e
            let chosen = routing.experts.contains(e)
            grid.put((chosen ? "▸E" : " E") + "\(e)", x: 2, y: y, style: state.palette.expert(e))
            let p = Double(routing.probabilities[e])
            grid.put(Palette.bar(p, width: barWidth - 8), x: 9, y: y, style: state.palette.expert(e))
            grid.put(String(format: "%4.2f", p), x: 9 + barWidth - 7, y: y)
            if e < norms.count {
                let n = Double(norms[e])
                grid.put(Palette.bar(maxNorm > 0 ? n / maxNorm : 0, width: barWidth - 8), x: 11 + barWidth, y: y, style: CellStyle(dim: !chosen))
                grid.put(String(format: "%6.3f", n), x: 11 + 2 * barWidth - 7, y: y)
            }
        }
        let traces = Array(state.session.traces[0...state.cursor])
        let preference = NormPreference(traces: traces)
        var y = top + 4 + state.numExperts
        let lines = [
            String(format: "Tokens 1–%d at %@: Spearman ρ(gate, norm) = %.2f; the top-1 gate is the largest-norm expert for %.0f%% of tokens (chance %.0f%%).",
                   state.cursor + 1, state.layerName(state.layer), preference.meanRankCorrelation[state.layer], preference.topOneAgreement[state.layer] * 100, 100 / Double(state.numExperts)),
            "How to read: ▸ marks the experts the router chose. Lo et al. (2024) found routers tend to choose the experts whose outputs",
            "are largest; ρ near 1 and a high top-1 rate say this model does the same, ρ near 0 that gate and norm are unrelated.",
        ]
        for line in lines where y < top + height - 1 { grid.put(line, x: 2, y: y, maxWidth: grid.width - 4); y += 1 }
    }
}

/// Cosine similarity of the experts' weights at the selected layer, and its mean by layer.
enum ExpertSimilarityView {
    static func draw(_ state: ExplorerState, into grid: inout CellGrid, top: Int, height: Int) {
        guard let similarity = state.session.expertSimilarity else {
            grid.box(x: 0, y: top, width: grid.width, height: height, title: "Expert weight similarity")
            grid.put("This model's experts are too large to read whole here, so their similarity is not computed.", x: 2, y: top + 2, maxWidth: grid.width - 4)
            return
        }
        let matrix = similarity.matrices[state.layer]
        grid.box(x: 0, y: top, width: grid.width, height: height, title: "Expert weight similarity · layer \(state.layerName(state.layer)) (↑/↓ changes layer)")
        for e in 0..<state.numExperts { grid.put(String(format: "  E%-2d  ", e), x: 8 + e * 7, y: top + 2, style: state.palette.expert(e)) }
        for i in 0..<state.numExperts {
            grid.put("  E\(i)", x: 2, y: top + 3 + i, style: state.palette.expert(i))
            for j in 0..<state.numExperts {
                let value = matrix[i][j]
                let shade = max(0, value)
                grid.put(String(format: " %@%5.2f", String(state.palette.heatGlyph(shade)), value), x: 8 + j * 7, y: top + 3 + i, style: state.palette.heat(shade))
            }
        }
        let meansX = 12 + state.numExperts * 7
        grid.put("Mean over expert pairs, by layer", x: meansX, y: top + 2, style: CellStyle(bold: true))
        for (l, mean) in similarity.meanByLayer.enumerated() {
            let selected = l == state.layer
            grid.put(String(format: "%@%@  %5.2f  ", selected ? "▸ " : "  ", state.layerName(l), mean) + Palette.bar(max(0, mean), width: 20),
                     x: meansX, y: top + 3 + l, style: CellStyle(bold: selected))
        }
        let lines = [
            "Each expert is summarised by the mean of its gate (w1) rows, up (w3) rows and down (w2) columns, each normalised and concatenated;",
            "cells are cosine similarities (1 = the same direction, 0 = unrelated). Lo et al. (2024) report similarity falling with depth",
            "(experts diversify), with the last layer an outlier. This is a property of the weights, the same for every text.",
        ]
        var y = top + 4 + max(state.numExperts, state.numLayers)
        for line in lines where y < top + height - 1 { grid.put(line, x: 2, y: y, maxWidth: grid.width - 4); y += 1 }
    }
}
