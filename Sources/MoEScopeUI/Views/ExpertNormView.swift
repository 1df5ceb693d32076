import Foundation
import MoEAnalysis
import MoECore

/// "Closer Look": for the current token at the selected layer, each expert's router probability
/// beside the norm of its output (experts in display order, the list scrolling with the expert
/// cursor), and over the tokens so far how often the router's top-1 is the largest-norm expert.
enum ExpertNormView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let token = ExplorerRenderer.visible(state.session.text(of: state.cursor))
        grid.box(
            title: TextLayout.firstFitting(
                [
                    "Gate vs expert output norm · layer \(state.layerName(state.layer)) · token «\(token.prefix(16))»",
                    "Gate vs norm · \(state.layerName(state.layer))", "Gate vs norm",
                ], width: rect.width - 6))
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard inner.width > 20, inner.height >= 4 else { return grid }
        let routing = state.currentRouting
        guard let norms = routing.allExpertOutputNorms else {
            if let recording = state.session.model.recording {
                let known =
                    recording.hasExpertOutputNorms
                    ? "; the chosen experts': "
                        + zip(routing.experts, routing.expertOutputNorms).map { String(format: "E%d %.3f", $0, $1) }.joined(
                            separator: " · ")
                    : " (expert_output_norms)"
                TextLayout.paragraphs(
                    ["This recorded trace holds no norms of every expert\(known)."],
                    into: &grid, in: inner.splitTop(1).rest)
                return grid
            }
            let chosen = zip(routing.experts, routing.expertOutputNorms).map { String(format: "E%d ‖y‖ %.3f", $0, $1) }
            TextLayout.paragraphs(
                [
                    "This model is too large (over 2 GB, or more than \(ExplorerSession.everyExpertBudget) expert–layer pairs) to run every expert on every keypress, so only the chosen experts' norms are known:",
                    chosen.joined(separator: " · ") + ". `moescope analyze --model` measures all of them.",
                ], into: &grid, in: inner.splitTop(1).rest)
            return grid
        }
        // The selected layer only: a rank correlation over E experts per token and layer adds up.
        let preference = NormPreference(
            traces: state.session.traces[0...state.cursor].map {
                RoutingTrace(token: $0.token, position: $0.position, layers: [$0.layers[state.layer]])
            })
        let paragraphs = [
            String(
                format:
                    "Tokens 1–%d at %@: Spearman ρ(gate, norm) = %.2f; the top-1 gate is the largest-norm expert for %.0f%% of tokens (chance %.0f%%).",
                state.cursor + 1, state.layerName(state.layer), preference.meanRankCorrelation[0],
                preference.topOneAgreement[0] * 100, 100 / Double(state.numExperts)),
            "How to read: ▸ marks the experts the router chose. Lo et al. (2024) found routers tend to choose the experts whose outputs are largest; ρ near 1 and a high top-1 rate say this model does the same, ρ near 0 that gate and norm are unrelated.",
        ]
        let noteRows = inner.height >= 20 ? 4 : inner.height >= 10 ? 2 : 1
        let listRows = inner.height - 1 - noteRows
        let maxNorm = Double(norms.filter(\.isFinite).max() ?? 1)
        let idWidth = "\(state.numExperts - 1)".count + 3
        let barWidth = max(4, (inner.width - idWidth - 16) / 2)
        // Each heading over its column, clipped to it: "expert" ran into the next heading where
        // the id column is narrower than the word (up to 99 experts).
        let (barX, normX) = (inner.x + idWidth + 1, inner.x + idWidth + barWidth + 7)
        for (heading, x, width) in [
            (idWidth >= 6 ? "expert" : "E", inner.x, idWidth), ("router probability", barX, barWidth + 5),
            ("‖expert output‖", normX, inner.maxX - normX),
        ] {
            grid.put(heading, x: x, y: inner.y, style: CellStyle(bold: true), maxWidth: width)
        }
        let position = context.order.firstIndex(of: state.expert) ?? 0
        let window = ListWindow(total: state.numExperts, visible: listRows, selected: position)
        for (row, index) in window.range.enumerated() {
            let e = context.order[index]
            let y = inner.y + 1 + row
            let chosen = routing.experts.contains(e)
            var idStyle = context.palette.expert(e)
            if e == state.expert { idStyle.reverse = true }
            grid.put(
                ((chosen ? "▸E" : " E") + "\(e)").padding(toLength: idWidth, withPad: " ", startingAt: 0), x: inner.x, y: y, style: idStyle)
            let p = Double(routing.probabilities[e])
            grid.put(Palette.bar(p, width: barWidth), x: barX, y: y, style: context.palette.expert(e))
            grid.put(
                p.isFinite ? String(format: "%4.2f", p) : " nan", x: barX + barWidth + 1, y: y,
                style: p.isFinite ? .plain : context.palette.nonFinite)
            if e < norms.count {
                let n = Double(norms[e])
                grid.put(Palette.bar(maxNorm > 0 ? n / maxNorm : 0, width: barWidth), x: normX, y: y, style: CellStyle(dim: !chosen))
                grid.put(
                    n.isFinite ? String(format: "%6.3f", n) : "   nan", x: normX + barWidth + 1, y: y,
                    maxWidth: inner.maxX - normX - barWidth - 1
                )
            }
        }
        if window.hiddenAbove + window.hiddenBelow > 0 {
            grid.put(
                "▲\(window.hiddenAbove) ▼\(window.hiddenBelow) experts ([ ] moves, o orders)", x: inner.x,
                y: inner.y + 1 + listRows - 1 + 1,
                style: CellStyle(dim: true), maxWidth: inner.width)
        }
        TextLayout.paragraphs(
            paragraphs, into: &grid,
            in: inner.splitTop(inner.height - noteRows + (window.hiddenAbove + window.hiddenBelow > 0 ? 1 : 0)).rest)
        return grid
    }
}
