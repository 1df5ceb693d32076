import Foundation
import MoECore

/// The router's own state: the GRU router's |h| per layer and hidden dimension with ‖h‖ per
/// layer (rows scroll with the selected layer); for other routers, why they have none, their
/// equation, and the Hybrid router's mix.
enum RouterStateView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let router = state.session.router
        let inner = rect.local.inset(dx: 2, dy: 1)
        let recordedState = state.currentTrace.layers.first?.gruHidden != nil
        guard router == .gru || recordedState else {
            grid.box(title: "Router state")
            guard inner.width > 4 else { return grid }
            if let recording = state.session.model.recording {
                TextLayout.paragraphs(
                    ["This recorded trace holds no router state (gru_hidden); it was routed by \(recording.routingRule)."],
                    into: &grid, in: inner)
                return grid
            }
            var paragraphs = [
                "The \(router?.displayName ?? state.session.model.routerName) router has no recurrent state: it routes every layer independently from that layer's hidden state alone.",
                "Equation: \(state.session.model.routerEquation)",
                router == nil
                    ? "moescope's GRU (RMoE) router is in its own models: run moescope without --model, press \(RouterKind.gru.number)."
                    : "Press \(RouterKind.gru.number) for the GRU (RMoE) router, whose state flows down the layers.",
            ]
            if let hybrid = (state.session.model as? MoEModel)?.router as? HybridRouter {
                // The Hybrid router's own state: how much of each layer's logits is the linear part.
                let alphas = (0..<state.numLayers).map { String(format: "L%d %.2f", $0, hybrid.mix(layer: $0)) }
                paragraphs.append("α, the Linear share: " + alphas.joined(separator: " "))
            }
            TextLayout.paragraphs(paragraphs, into: &grid, in: inner)
            return grid
        }
        let trace = state.currentTrace
        let size = trace.layers.first?.gruHidden?.count ?? 0
        let labelWidth = 3 + "\(state.session.model.layerCount - 1)".count + 2
        let room = max(1, inner.width - labelWidth - 11)
        let group = max(1, (size + room - 1) / room)  // dims per column when narrow
        let columns = (size + group - 1) / group
        grid.box(
            title: TextLayout.firstFitting(
                [
                    "GRU hidden state |h| · layers × \(size) dims\(group > 1 ? " (max of \(group)/column)" : "")",
                    "GRU |h| · layers × dims", "GRU |h|",
                ], width: rect.width - 6))
        guard inner.height >= 2, inner.width > labelWidth + 11 else { return grid }
        let window = ListWindow(total: state.numLayers, visible: inner.height - 1, selected: state.layer)
        for (row, i) in window.range.enumerated() {
            let hidden = trace.layers[i].gruHidden ?? []
            let selected = i == state.layer
            let y = inner.y + row
            grid.put(
                (selected ? "▸ " : "  ") + state.layerName(i), x: inner.x, y: y, style: CellStyle(bold: selected), maxWidth: labelWidth - 1)
            for c in 0..<columns {
                let slice = hidden[(c * group)..<min(hidden.count, (c + 1) * group)]
                let magnitude = Double(slice.map { abs($0) }.max() ?? 0)  // |h| ≤ 1 for a GRU
                grid.set(context.palette.heatGlyph(magnitude), x: inner.x + labelWidth + c, y: y, style: context.palette.heat(magnitude))
            }
            let norm = hidden.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
            grid.put(
                String(format: " ‖h‖ %5.2f", norm), x: inner.x + labelWidth + columns, y: y,
                maxWidth: inner.maxX - inner.x - labelWidth - columns)
        }
        var legend = "colour/glyph = |h_d| from 0 to 1 · h flows from layer to layer"
        if window.hiddenAbove + window.hiddenBelow > 0 { legend = "▲\(window.hiddenAbove) ▼\(window.hiddenBelow) layers · " + legend }
        grid.put(legend, x: inner.x, y: inner.maxY - 1, style: CellStyle(dim: true), maxWidth: inner.width)
        return grid
    }

    /// The router in one line, where the screen has no room for its panel.
    static func drawLine(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let text: String
        if state.session.router == .gru {
            let norms = state.currentTrace.layers.enumerated().map { i, routing in
                String(format: "%@ %.1f", state.layerName(i), (routing.gruHidden ?? []).reduce(Float(0)) { $0 + $1 * $1 }.squareRoot())
            }
            text = " GRU ‖h‖ by layer: " + norms.joined(separator: " ") + " (|h| per dimension from 120 columns)"
        } else {
            text = " Router \(state.session.router?.displayName ?? state.session.model.routerName): \(state.session.model.routerEquation)"
        }
        grid.put(text, x: 0, y: 0, style: CellStyle(dim: true), maxWidth: rect.width)
        return grid
    }
}
