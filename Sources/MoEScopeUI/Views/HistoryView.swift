/// Recent tokens × experts at the selected layer, ending at the current token.
enum HistoryView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard inner.width > 12, inner.height >= 2 else {
            grid.box(title: "History")
            return grid
        }
        // Token labels get up to 10 columns, fewer where that lets the numeric cells fit.
        let spare = inner.width - 5 * state.numExperts
        let labelWidth = spare >= 6 ? min(10, spare) : min(10, inner.width / 4)
        let axis = context.axis(width: inner.width - labelWidth)
        let offAxis = AxisDrawing.offAxisMark(axis)
        grid.box(
            title: TextLayout.firstFitting(
                [
                    "Token history · layer \(state.layerName(state.layer)) · tokens × experts\(offAxis)",
                    "History · \(state.layerName(state.layer))\(offAxis)", "History",
                ], width: rect.width - 6))
        AxisDrawing.header(axis, context: context, into: &grid, x: inner.x + labelWidth, y: inner.y, limit: inner.width - labelWidth)
        let rows = inner.height - 1
        let first = max(0, state.cursor - rows + 1)
        for (row, index) in (first...state.cursor).enumerated() {
            let routing = state.session.traces[index].layers[state.layer]
            var label = ExplorerRenderer.visible(state.session.text(of: index))
            if label.count > labelWidth - 1 { label = String(label.prefix(labelWidth - 2)) + "…" }
            let current = index == state.cursor
            grid.put(label, x: inner.x, y: inner.y + 1 + row, style: CellStyle(bold: current, reverse: current))
            AxisDrawing.heatRow(routing, axis: axis, context: context, into: &grid, x: inner.x + labelWidth, y: inner.y + 1 + row)
        }
        return grid
    }
}
