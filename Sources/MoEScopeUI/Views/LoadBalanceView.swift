import Foundation
import MoEAnalysis

/// Share of routed slots per expert at the selected layer over tokens 1…cursor, as a compact
/// histogram along the expert axis (sortable with `o`), the dead (never chosen) and hot (over
/// twice the mean load) experts, and CV / MaxVio / usage entropy per layer in a list that
/// scrolls with the selected layer.
enum LoadBalanceView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        grid.box(
            title: TextLayout.firstFitting(
                [
                    "Load balance · layer \(state.layerName(state.layer)) · \(state.countedTokens)",
                    "Load · \(state.layerName(state.layer))", "Load",
                ], width: rect.width - 6))
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard inner.width > 6, inner.height >= 3 else { return grid }
        let counts = context.load[state.layer]
        let stats = LoadBalanceStats(counts: counts)
        let shares = stats.shares
        let mean = Double(stats.total) / Double(max(1, counts.count))
        let dead = counts.filter { $0 == 0 }.count
        let hot = counts.filter { Double($0) > 2 * mean }.count
        let top = shares.max() ?? 0
        let axis = context.axis(width: inner.width)
        // Rows: bars, then the axis labels, the summary, and the per-layer list.
        let barRows = inner.height >= 12 ? 4 : inner.height >= 8 ? 3 : inner.height >= 5 ? 2 : 1
        for column in axis.columns {
            let share = column.experts.map { shares[$0] }.max() ?? 0
            let isDead = column.experts.allSatisfy { counts[$0] == 0 }
            let isHot = column.experts.contains { Double(counts[$0]) > 2 * mean }
            var style = isHot ? CellStyle(foreground: context.palette.mode == .monochrome ? nil : 208, bold: true) : CellStyle()
            if column.experts.contains(state.expert) { style.underline = true }
            let barWidth = axis.isNumeric ? axis.cellWidth - 1 : 1
            for row in 0..<barRows {
                let glyph: Character = isDead && row == 0 ? "·" : Palette.columnBar(top > 0 ? share / top : 0, row: row, rows: barRows)
                grid.put(
                    String(repeating: glyph, count: barWidth), x: inner.x + column.x, y: inner.y + barRows - 1 - row,
                    style: isDead ? CellStyle(dim: true) : style)
            }
        }
        for separator in axis.separators {
            for row in 0..<barRows { grid.set("│", x: inner.x + separator, y: inner.y + row, style: CellStyle(dim: true)) }
        }
        var row = inner.y + barRows
        AxisDrawing.header(axis, context: context, into: &grid, x: inner.x, y: row, limit: inner.width)
        row += 1
        guard row < inner.maxY else { return grid }
        let cursorShare = shares.indices.contains(state.expert) ? shares[state.expert] : 0
        // Experts off the axis (a panned window) are counted first; dead and hot count them all.
        let prefix = axis.hiddenBefore + axis.hiddenAfter > 0 ? "◂\(axis.hiddenBefore) \(axis.hiddenAfter)▸ · " : ""
        let full = String(
            format: "E%d %.1f%% · top %.1f%% · dead %d · hot %d (>2× mean) · CV %.2f · MaxVio %.2f · entropy %.2f", state.expert,
            cursorShare * 100, top * 100, dead, hot, stats.coefficientOfVariation, stats.maxViolation, stats.normalizedUsageEntropy)
        let medium = String(
            format: "E%d %.1f%% · dead %d · hot %d · CV %.2f · MaxVio %.2f · H %.2f", state.expert, cursorShare * 100, dead, hot,
            stats.coefficientOfVariation, stats.maxViolation, stats.normalizedUsageEntropy)
        let short = String(format: "dead %d · hot %d · CV %.2f · MaxVio %.2f", dead, hot, stats.coefficientOfVariation, stats.maxViolation)
        let tiny = "dead \(dead) · hot \(hot)"
        let summary = TextLayout.firstFitting([prefix + full, prefix + medium, prefix + short, prefix + tiny, tiny], width: inner.width)
        grid.put(summary, x: inner.x, y: row, style: CellStyle(bold: true), maxWidth: inner.width)
        row += 1
        let window = ListWindow(total: state.numLayers, visible: inner.maxY - row, selected: state.layer)
        for (offset, i) in window.range.enumerated() {
            let layerStats = LoadBalanceStats(counts: context.load[i])
            let marker =
                i == state.layer
                ? "▸ " : offset == 0 && window.hiddenAbove > 0 ? "▲ " : offset == window.count - 1 && window.hiddenBelow > 0 ? "▼ " : "  "
            let name = marker + state.layerName(i).padding(toLength: 4, withPad: " ", startingAt: 0)
            let line = TextLayout.firstFitting(
                [
                    name
                        + String(
                            format: " CV %.2f  MaxVio %.2f  entropy %.2f  dead %d", layerStats.coefficientOfVariation,
                            layerStats.maxViolation, layerStats.normalizedUsageEntropy, context.load[i].filter { $0 == 0 }.count),
                    name
                        + String(
                            format: " CV %.2f MaxVio %.2f H %.2f", layerStats.coefficientOfVariation, layerStats.maxViolation,
                            layerStats.normalizedUsageEntropy),
                ], width: inner.width)
            grid.put(line, x: inner.x, y: row + offset, style: CellStyle(dim: i != state.layer), maxWidth: inner.width)
        }
        return grid
    }
}
