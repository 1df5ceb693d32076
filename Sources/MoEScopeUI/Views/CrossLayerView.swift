import Foundation
import MoEAnalysis

/// L × L mutual information between layers' top-1 choices over the tokens so far. Numeric
/// cells where they fit, else one coloured column per layer; rows and columns scroll to keep
/// the selected layer in view. Only the cells on screen are computed.
enum CrossLayerView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        grid.box(title: "Cross-layer dependence · \(state.countedTokens)")
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard inner.width > 12, inner.height >= 4 else { return grid }
        var pairs = PairwiseMutualInformation(
            (0..<state.numLayers).map { l in
                state.session.traces[0...state.cursor].map { $0.layers[l].experts.first ?? 0 }
            })
        var computed: [Int: Double] = [:]  // MI is symmetric: each visible pair once
        func information(_ i: Int, _ j: Int) -> Double {
            let key = min(i, j) * state.numLayers + max(i, j)
            if let value = computed[key] { return value }
            let value = pairs(i, j)
            computed[key] = value
            return value
        }
        let scale = max(1e-9, log(Double(state.numExperts)))
        let labelWidth = 3 + "\(state.session.model.layerCount - 1)".count + 2
        let notes = [
            "Cell (i, j): mutual information, in nats, between the top-1 experts that layers i and j chose for the same tokens (the colour scale tops out at ln E = \(String(format: "%.2f", scale)), the most two choices among \(state.numExperts) experts can share). The diagonal is each layer's own choice entropy.",
            "A bright off-diagonal cell means one layer's choice predicts another's; RMoE (Qiu et al. 2024) reports the GRU router raises this dependence. Few tokens inflate MI estimates: prefer `moescope compare` for held-out figures.",
        ]
        let noteRows = inner.height >= 30 ? 4 : inner.height >= 16 ? 2 : 0
        let matrixRows = inner.height - 2 - noteRows
        // Cells: "0.42" with room to spare where every layer fits at 5+ columns, else colour
        // blocks as wide as fit (at least one column; a window around the selected layer).
        let available = inner.width - labelWidth
        let cellWidth = max(1, min(7, available / max(1, state.numLayers)))
        let numeric = cellWidth >= 5
        let axis = ExpertAxis(
            order: Array(0..<state.numLayers), groupSize: nil, width: available,
            zoom: numeric ? .numeric : .columns, cursor: state.layer, numericWidth: cellWidth)
        for column in axis.columns {
            let j = column.experts.first!
            let name = state.layerName(j)
            let label =
                numeric
                ? " " + name
                : j == state.layer ? "▼" : cellWidth > name.count ? name : j % 5 == 0 ? "\(state.session.model.routedLayers[j] % 10)" : "·"
            grid.put(label, x: inner.x + labelWidth + column.x, y: inner.y, style: CellStyle(bold: j == state.layer), maxWidth: cellWidth)
        }
        let window = ListWindow(total: state.numLayers, visible: matrixRows, selected: state.layer)
        for (row, i) in window.range.enumerated() {
            let y = inner.y + 1 + row
            grid.put(
                (i == state.layer ? "▸ " : "  ") + state.layerName(i), x: inner.x, y: y, style: CellStyle(bold: i == state.layer),
                maxWidth: labelWidth - 1)
            for column in axis.columns {
                let j = column.experts.first!
                let value = information(i, j)
                var style = context.palette.heat(value / scale)
                style.bold = i == j
                let glyph = String(context.palette.heatGlyph(value / scale))
                let text =
                    numeric
                    ? String(format: " %4.2f", value).padding(toLength: cellWidth, withPad: " ", startingAt: 0)
                    : String(repeating: glyph, count: cellWidth)
                grid.put(text, x: inner.x + labelWidth + column.x, y: y, style: style, maxWidth: cellWidth)
            }
        }
        var legend: [String] = []
        if window.hiddenAbove + window.hiddenBelow > 0 {
            legend.append("▲\(window.hiddenAbove) ▼\(window.hiddenBelow) layers (↑/↓ scrolls)")
        }
        if axis.hiddenBefore + axis.hiddenAfter > 0 { legend.append("◂\(axis.hiddenBefore) \(axis.hiddenAfter)▸ columns") }
        if !numeric { legend.append("colour = MI / ln E; digits need \(labelWidth + 5 * state.numLayers + 4) columns") }
        grid.put(
            legend.joined(separator: " · "), x: inner.x, y: inner.y + 1 + matrixRows, style: CellStyle(dim: true), maxWidth: inner.width)
        if noteRows > 0 {
            TextLayout.paragraphs(
                notes, into: &grid, in: inner.splitTop(inner.height - noteRows).rest,
                style: CellStyle(dim: true))
        }
        return grid
    }
}
