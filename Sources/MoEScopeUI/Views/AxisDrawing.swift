import MoECore

/// Drawing along an `ExpertAxis`: the header of expert ids and rows of heat cells, shared by
/// every panel that has experts across.
enum AxisDrawing {
    /// Expert ids over the axis: every cell's id in numeric mode, else ids where they fit, with
    /// the expert cursor's id reversed over its column.
    static func header(_ axis: ExpertAxis, context: ViewContext, into grid: inout CellGrid, x: Int, y: Int, limit: Int) {
        let palette = context.palette
        let cursor = context.state.expert
        for separator in axis.separators { grid.set("│", x: x + separator, y: y, style: CellStyle(dim: true)) }
        if axis.isNumeric {
            for column in axis.columns {
                let e = column.experts.first!
                var style = palette.expert(e)
                if e == cursor { style.reverse = true }
                grid.put(
                    " E\(e)".padding(toLength: axis.cellWidth, withPad: " ", startingAt: 0), x: x + column.x, y: y, style: style,
                    maxWidth: min(axis.cellWidth, limit - column.x))
            }
            return
        }
        // The cursor's label first; tick labels (the first expert of a column) where they fit
        // around it, one blank apart.
        let cursorColumn = axis.columns.first { $0.experts.contains(cursor) }
        let cursorLabel = "▼E\(cursor)"
        let cursorStart = cursorColumn.map { min($0.x, max(0, axis.width - cursorLabel.count)) }
        var free = 0
        for column in axis.columns where column.x >= free {
            let label = "\(column.experts.first!)"
            guard column.x + label.count <= axis.width else { continue }
            if let start = cursorStart, column.x + label.count >= start - 1, column.x <= start + cursorLabel.count { continue }
            if axis.separators.contains(where: { $0 >= column.x && $0 < column.x + label.count }) { continue }
            grid.put(label, x: x + column.x, y: y, style: CellStyle(dim: true))
            free = column.x + label.count + 1
        }
        if let start = cursorStart {
            grid.put(cursorLabel, x: x + start, y: y, style: CellStyle(bold: true, reverse: true), maxWidth: limit - start)
        }
    }

    /// One routing decision as heat cells along the axis: numeric cells, or one coloured (or
    /// glyph) column per expert group, the maximum probability of its experts; chosen experts
    /// bracketed or marked "•"; non-finite values in the warning style.
    static func heatRow(_ routing: LayerRouting, axis: ExpertAxis, context: ViewContext, into grid: inout CellGrid, x: Int, y: Int) {
        let palette = context.palette
        for separator in axis.separators { grid.set("│", x: x + separator, y: y, style: CellStyle(dim: true)) }
        let probabilities = routing.probabilities
        // The fragility lens: the chosen experts and the runner-up coloured by how near the
        // decision is to a tie, the rest blank; near-ties marked ! (chosen) and ? (runner-up).
        let lens = context.state.lens
        let fragility = lens.isOn ? lens.fragility(routing) : nil
        let nearTie = lens.isOn && lens.isNearTie(routing)
        let runnerUp = lens.isOn ? FragilityLens.runnerUp(routing) : nil
        for column in axis.columns {
            var value = -Double.infinity
            var finite = true
            var chosen = false
            var nan = false
            for e in column.experts where e < probabilities.count {
                let p = Double(probabilities[e])
                if !p.isFinite {
                    finite = false
                    nan = nan || p.isNaN
                    continue
                }
                value = max(value, p)
            }
            for e in routing.experts where column.experts.contains(e) { chosen = true }
            if !finite { value = nan ? .nan : .infinity }
            let isRunnerUp = runnerUp.map { column.experts.contains($0) } ?? false
            if lens.isOn && finite {
                let shade = (chosen || isRunnerUp) ? fragility ?? 0 : 0
                var style = palette.heat(shade)
                style.bold = chosen
                if column.experts.contains(context.state.expert) { style.underline = true }
                let mark: Character = chosen ? (nearTie ? "!" : "•") : isRunnerUp ? (nearTie ? "?" : "·") : " "
                if axis.isNumeric {
                    let (text, _) = ExplorerRenderer.heatCell(value, chosen: chosen, palette: palette)
                    var cells = Array(text)
                    if mark != " " && mark != "•" && cells.count > 1 { cells[1] = mark }
                    grid.put(String(cells), x: x + column.x, y: y, style: style)
                } else {
                    if palette.mode == .monochrome && shade > 0 { style.reverse = true }
                    grid.set(mark == " " ? palette.heatGlyph(0) : mark, x: x + column.x, y: y, style: style)
                }
                continue
            }
            if axis.isNumeric {
                let (text, style) = ExplorerRenderer.heatCell(value, chosen: chosen, palette: palette)
                grid.put(text, x: x + column.x, y: y, style: style)
            } else {
                var style = palette.heat(value)
                var glyph = palette.heatGlyph(value)
                if chosen && value.isFinite {
                    // Without colour the glyph carries the probability: reversed, and "•" where it is blank.
                    if palette.mode == .monochrome {
                        style.reverse = true
                        if glyph == " " { glyph = "•" }
                    } else {
                        glyph = "•"
                        style.bold = true
                    }
                }
                if column.experts.contains(context.state.expert), value.isFinite { style.underline = true }
                grid.set(glyph, x: x + column.x, y: y, style: style)
            }
        }
    }

    /// " · ◂12 40▸" for a title when the axis is a window; "" when every expert shows.
    static func offAxisMark(_ axis: ExpertAxis) -> String {
        axis.hiddenBefore + axis.hiddenAfter > 0 ? " · ◂\(axis.hiddenBefore) \(axis.hiddenAfter)▸" : ""
    }

    /// "◂ 12 · 40 ▸ experts" when the axis is a window; "" when every expert shows.
    static func hiddenNote(_ axis: ExpertAxis) -> String {
        guard axis.hiddenBefore + axis.hiddenAfter > 0 else { return "" }
        return "◂\(axis.hiddenBefore) · \(axis.hiddenAfter)▸ experts off-axis"
    }
}

extension AxisDrawing {
    /// An E × E matrix (values in [0, 1]) with the expert axis across and expert rows down,
    /// the rows scrolling to keep the expert cursor in view; a column holding several experts
    /// shows their maximum. Returns the notes for the legend line (hidden rows and columns).
    static func expertMatrix(_ matrix: [[Double]], context: ViewContext, into grid: inout CellGrid, area: Rect) -> [String] {
        let state = context.state
        let labelWidth = "\(state.numExperts - 1)".count + 4
        let axis = context.axis(width: area.width - labelWidth - 1, numericWidth: 7)
        for separator in axis.separators {
            grid.set("│", x: area.x + labelWidth + separator, y: area.y, style: CellStyle(dim: true))
        }
        if axis.isNumeric {
            for column in axis.columns {
                let e = column.experts.first!
                var style = context.palette.expert(e)
                if e == state.expert { style.reverse = true }
                grid.put("  E\(e)", x: area.x + labelWidth + column.x, y: area.y, style: style, maxWidth: axis.cellWidth)
            }
        } else {
            header(axis, context: context, into: &grid, x: area.x + labelWidth, y: area.y, limit: axis.width)
        }
        let position = context.order.firstIndex(of: state.expert) ?? 0
        let window = ListWindow(total: state.numExperts, visible: area.height - 2, selected: position)
        for (row, index) in window.range.enumerated() {
            let i = context.order[index]
            let y = area.y + 1 + row
            var style = context.palette.expert(i)
            if i == state.expert { style.reverse = true }
            grid.put("E\(i)", x: area.x + 1, y: y, style: style, maxWidth: labelWidth - 1)
            for separator in axis.separators { grid.set("│", x: area.x + labelWidth + separator, y: y, style: CellStyle(dim: true)) }
            for column in axis.columns {
                let value = column.experts.map { matrix[i][$0] }.max() ?? 0
                let shade = max(0, value)
                if axis.isNumeric {
                    grid.put(
                        String(format: " %@%5.2f", String(context.palette.heatGlyph(shade)), value),
                        x: area.x + labelWidth + column.x, y: y, style: context.palette.heat(shade))
                } else {
                    grid.set(context.palette.heatGlyph(shade), x: area.x + labelWidth + column.x, y: y, style: context.palette.heat(shade))
                }
            }
        }
        var notes: [String] = []
        if window.hiddenAbove + window.hiddenBelow > 0 { notes.append("▲\(window.hiddenAbove) ▼\(window.hiddenBelow) rows ([ ] moves)") }
        let hidden = hiddenNote(axis)
        if !hidden.isEmpty { notes.append(hidden) }
        if axis.expertsPerColumn > 1 { notes.append("max of \(axis.expertsPerColumn)/column") }
        return notes
    }
}
