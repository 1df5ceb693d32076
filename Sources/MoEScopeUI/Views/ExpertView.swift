import Foundation

/// The expert under the expert cursor: its router probability along the text at the selected
/// layer, its share of the load at every layer, and the tokens it receives most.
enum ExpertView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let e = state.expert
        let session = state.session
        let layerName = state.layerName(state.layer)
        grid.box(
            title: TextLayout.firstFitting(
                [
                    "Expert E\(e) of \(state.numExperts) · layer \(layerName) · \(state.countedTokens) · [ ] choose the expert",
                    "Expert E\(e) · \(layerName)", "E\(e)",
                ], width: rect.width - 6))
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard inner.width > 10, inner.height >= 6 else { return grid }
        // Probability along the text: one column per token, ending at the cursor.
        let sparkRows = inner.height >= 20 ? 5 : inner.height >= 12 ? 3 : 2
        let tokens = min(state.cursor + 1, inner.width)
        let firstToken = state.cursor + 1 - tokens
        // Bars scaled to the largest probability shown, so a rarely chosen expert still reads.
        let shownProbabilities = (0..<tokens).map { Double(session.traces[firstToken + $0].layers[state.layer].probabilities[e]) }
        let peak = max(1e-9, shownProbabilities.filter(\.isFinite).max() ?? 0)
        grid.put(
            TextLayout.firstFitting(
                [
                    String(
                        format:
                            "Router probability of E%d at %@ along the text (one column per token, bars up to %.1f%%; • = chosen, ▲ = current token)",
                        e, layerName, peak * 100),
                    String(format: "P(E%d) at %@ by token, up to %.1f%% (• chosen)", e, layerName, peak * 100), "P(E\(e)) by token",
                ], width: inner.width), x: inner.x, y: inner.y, style: CellStyle(bold: true), maxWidth: inner.width)
        for t in 0..<tokens {
            let routing = session.traces[firstToken + t].layers[state.layer]
            let p = shownProbabilities[t]
            for row in 0..<sparkRows {
                let glyph: Character = p.isFinite ? Palette.columnBar(p / peak, row: row, rows: sparkRows) : row == 0 ? "!" : " "
                grid.set(
                    glyph, x: inner.x + t, y: inner.y + sparkRows - row,
                    style: p.isFinite ? context.palette.expert(e) : context.palette.nonFinite)
            }
            let chosen = routing.experts.contains(e)
            let marker: Character = firstToken + t == state.cursor ? "▲" : chosen ? "•" : " "
            grid.set(marker, x: inner.x + t, y: inner.y + sparkRows + 1, style: CellStyle(bold: true))
        }
        let p = Double(state.currentRouting.probabilities[e])
        grid.put(
            String(
                format: "at the current token: %@ %@", p.isFinite ? String(format: "%.1f%%", p * 100) : "non-finite",
                state.currentRouting.experts.contains(e) ? "(chosen)" : "(not chosen)"),
            x: inner.x, y: inner.y + sparkRows + 2, style: CellStyle(dim: true), maxWidth: inner.width)
        // Below: load share by layer (left) and the tokens it receives most (right).
        let top = inner.y + sparkRows + 4
        guard top + 2 <= inner.maxY else { return grid }
        let (left, right) = Rect(x: inner.x, y: top, width: inner.width, height: inner.maxY - top).splitLeft(inner.width / 2)
        grid.put(
            "Load share by layer (mean \(String(format: "%.1f%%", 100 / Double(state.numExperts))))", x: left.x, y: left.y,
            style: CellStyle(bold: true), maxWidth: left.width - 1)
        let window = ListWindow(total: state.numLayers, visible: left.height - 1, selected: state.layer)
        let barWidth = max(1, left.width - 20)
        for (row, l) in window.range.enumerated() {
            let counts = context.load[l]
            let total = counts.reduce(0, +)
            let share = total > 0 ? Double(counts[e]) / Double(total) : 0
            let marker =
                l == state.layer
                ? "▸ " : row == 0 && window.hiddenAbove > 0 ? "▲ " : row == window.count - 1 && window.hiddenBelow > 0 ? "▼ " : "  "
            let label =
                marker + state.layerName(l).padding(toLength: 4, withPad: " ", startingAt: 0) + String(format: " %5.1f%% ", share * 100)
            grid.put(
                label + Palette.bar(min(1, share * Double(state.numExperts) / 4), width: barWidth), x: left.x, y: left.y + 1 + row,
                style: CellStyle(bold: l == state.layer), maxWidth: left.width - 1)
        }
        grid.put("Tokens E\(e) receives most at \(layerName)", x: right.x, y: right.y, style: CellStyle(bold: true), maxWidth: right.width)
        var received: [Int: Int] = [:]
        for trace in session.traces[0...state.cursor] where trace.layers[state.layer].experts.contains(e) {
            received[trace.token, default: 0] += 1
        }
        let ranked = received.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        if ranked.isEmpty {
            grid.put(
                "none yet: E\(e) was not chosen at \(layerName) for \(state.countedTokens)", x: right.x, y: right.y + 1,
                style: CellStyle(dim: true), maxWidth: right.width)
        }
        for (row, entry) in ranked.prefix(right.height - 1).enumerated() {
            let text = ExplorerRenderer.visible(session.tokenizer.displayText(of: entry.key))
            grid.put(
                "×\(entry.value)".padding(toLength: 6, withPad: " ", startingAt: 0) + "«\(text)»", x: right.x, y: right.y + 1 + row,
                maxWidth: right.width)
        }
        return grid
    }
}
