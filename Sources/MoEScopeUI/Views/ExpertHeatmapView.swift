/// Layers × experts for the current token: router probability as colour (and digits where
/// they fit), top-k marked. The layer axis scrolls to keep the selected layer in view, with
/// counts of the layers above and below; the expert axis fits, zooms and pans (`ExpertAxis`).
enum ExpertHeatmapView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let token = ExplorerRenderer.visible(state.session.text(of: state.cursor))
        let titles =
            context.side.map { side in
                ["\(side) · «\(token.prefix(12))» · layers × experts", "\(side) · «\(token.prefix(8))»", side, String(side.prefix(1))]
            } ?? ["Expert assignment · «\(token.prefix(12))» · layers × experts", "Experts · «\(token.prefix(8))»", "Experts"]
        grid.box(title: TextLayout.firstFitting(titles, width: rect.width - 6))
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard inner.width > 8, inner.height >= 3 else { return grid }
        let labelWidth = 3 + "\(state.session.model.layerCount - 1)".count + 2
        let axis = context.axis(width: inner.width - labelWidth)
        AxisDrawing.header(axis, context: context, into: &grid, x: inner.x + labelWidth, y: inner.y, limit: inner.width - labelWidth)
        let window = ListWindow(total: state.numLayers, visible: inner.height - 2, selected: state.layer)
        if window.hiddenAbove > 0 {
            grid.put("▲\(window.hiddenAbove)", x: inner.x, y: inner.y, style: CellStyle(bold: true), maxWidth: labelWidth - 1)
        }
        for (row, i) in window.range.enumerated() {
            let selected = i == state.layer
            let y = inner.y + 1 + row
            grid.put(
                (selected ? "▸ " : "  ") + state.layerName(i), x: inner.x, y: y, style: CellStyle(bold: selected), maxWidth: labelWidth - 1)
            AxisDrawing.heatRow(state.currentTrace.layers[i], axis: axis, context: context, into: &grid, x: inner.x + labelWidth, y: y)
        }
        var legend: [String] = []
        if window.hiddenBelow > 0 { legend.append("▼\(window.hiddenBelow) more layers (↑/↓)") }
        let hidden = AxisDrawing.hiddenNote(axis)
        if !hidden.isEmpty { legend.append(hidden) }
        if state.lens.isOn {
            let share = state.lens.fragileShare(state.session.traces[0...state.cursor], layer: state.layer)
            legend.append(
                "\(DiffPercent.text(share)) fragile at \(state.layerName(state.layer)) · ! near-tie (margin < \(state.lens.thresholdText)) · ? runner-up · colour = fragility"
            )
        }
        legend.append(
            axis.isNumeric
                ? "[nn] chosen top-\(state.session.model.topK), nn = probability %"
                : "• chosen top-\(state.session.model.topK), colour = probability")
        if axis.expertsPerColumn > 1 { legend.append("max of \(axis.expertsPerColumn) experts/column (+ zooms)") }
        grid.put(
            legend.joined(separator: " · "), x: inner.x, y: inner.maxY - 1, style: CellStyle(dim: window.hiddenBelow == 0),
            maxWidth: inner.width)
        return grid
    }
}
