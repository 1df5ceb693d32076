import MoEAnalysis

/// The text as tokens, wrapped, each coloured by its top-1 expert at the selected layer with
/// that expert's id under it; the current token reversed. A token takes the width of its text
/// or of its id, whichever is wider, so ids never run together. A token whose top-1 expert is
/// the previous token's is marked ↺ before its id (Mixtral's consecutive-token repetition), and
/// the title gives the share of such tokens up to the cursor.
enum TokenStripView {
    static let repetitionMark = "↺"

    /// Whether token `index` has the same top-1 expert at `layer` as the token before it.
    static func repeatsPrevious(_ session: ExplorerSession, token index: Int, layer: Int) -> Bool {
        guard index > 0, index < session.traces.count else { return false }
        return ConsecutiveRepetitionCheck.repeats(
            previous: session.traces[index - 1].layers[layer], current: session.traces[index].layers[layer]
        ).firstChoice
    }

    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let session = state.session
        // In the A/B view a token whose two top-k sets differ at this layer shows "a≠b" (the
        // two top-1 experts; "a≠" when only lower choices differ).
        let ab = state.isComparing ? state.ab : nil
        func idText(_ index: Int) -> (String, Bool) {
            guard index < session.traces.count else { return ("·", false) }
            let a = session.traces[index].layers[state.layer].experts.first.map(String.init) ?? "·"
            let mark = repeatsPrevious(session, token: index, layer: state.layer) ? repetitionMark : ""
            guard let ab, ab.disagrees(with: session, token: index, layer: state.layer) == true else { return (mark + a, false) }
            let b = ab.session.traces[index].layers[state.layer].experts.first
            return (b.map { $0 == session.traces[index].layers[state.layer].experts.first ? "\(a)≠" : "\(a)≠\($0)" } ?? a, true)
        }
        let pairs = min(state.cursor, session.traces.count - 1)
        let repeated = pairs > 0 ? (1...pairs).filter { repeatsPrevious(session, token: $0, layer: state.layer) }.count : 0
        let share =
            pairs > 0 ? " · \(repetitionMark) same top-1 as previous: \(Int((100 * Double(repeated) / Double(pairs)).rounded()))%" : ""
        grid.box(
            title: TextLayout.firstFitting(
                (ab == nil
                    ? []
                    : [
                        "Tokens · A's top-1 expert at \(state.layerName(state.layer)) · a≠b: A and B choose different top-k (B's top-1 after ≠)",
                        "Tokens · ≠: A and B differ at \(state.layerName(state.layer))",
                    ]) + [
                        "Tokens · coloured by top-1 expert at layer \(state.layerName(state.layer)) (expert id below)" + share,
                        "Tokens · top-1 expert at \(state.layerName(state.layer))" + share, "Tokens" + share, "Tokens",
                    ], width: rect.width - 6))
        let inner = rect.width - 5  // a column is kept for the ▲/▼ scroll marks
        guard inner > 0, rect.height > 3 else { return grid }
        var lines: [[(index: Int, column: Int, text: String, id: String)]] = [[]]
        var column = 0
        for index in 0..<state.tokenCount {
            let id = idText(index).0
            var text = ExplorerRenderer.visible(session.text(of: index))
            if text.count > inner { text = String(text.prefix(inner - 1)) + "…" }
            let cell = max(text.count, id.count)
            if column > 0, column + cell > inner {
                lines.append([])
                column = 0
            }
            lines[lines.count - 1].append((index, column, text, id))
            column += cell + 1
        }
        let visibleLines = (rect.height - 2) / 2
        let cursorLine = lines.firstIndex { $0.contains { $0.index == state.cursor } } ?? 0
        let firstLine = max(0, min(cursorLine - visibleLines / 2, lines.count - visibleLines))
        for (row, line) in lines[firstLine..<min(lines.count, firstLine + visibleLines)].enumerated() {
            for item in line {
                let expert = item.index < session.traces.count ? session.traces[item.index].layers[state.layer].experts.first : nil
                var style = expert.map { context.palette.expert($0) } ?? CellStyle(dim: true)
                var idStyle = style
                if idText(item.index).1 {
                    idStyle = context.palette.nonFinite
                    idStyle.bold = true
                }
                if item.index == state.cursor {
                    style.reverse = true
                    style.bold = true
                }
                if expert == state.expert { style.underline = true }
                grid.put(item.text, x: 2 + item.column, y: 1 + 2 * row, style: style, maxWidth: inner - item.column)
                grid.put(item.id, x: 2 + item.column, y: 2 + 2 * row, style: idStyle, maxWidth: inner - item.column)
            }
        }
        if firstLine > 0 { grid.put("▲", x: rect.width - 3, y: 1, style: CellStyle(dim: true)) }
        if firstLine + visibleLines < lines.count { grid.put("▼", x: rect.width - 3, y: rect.height - 2, style: CellStyle(dim: true)) }
        return grid
    }
}
