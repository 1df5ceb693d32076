import MoEAnalysis

/// How often experts are chosen together for a token at the selected layer, over the tokens up
/// to the cursor (OLMoE's co-activation, all pairs): row i, column j is P(j in top-k | i in top-k).
enum CoActivationView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let tokens = state.cursor + 1
        grid.box(
            title: TextLayout.firstFitting(
                [
                    "Expert co-activation · layer \(state.layerName(state.layer)) · \(tokens) tokens (↑/↓ changes layer)",
                    "Co-activation · \(state.layerName(state.layer))", "Co-activation",
                ], width: rect.width - 6))
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard inner.width > 20, inner.height >= 5 else { return grid }
        let noteRows = inner.height >= 24 ? 3 : inner.height >= 14 ? 2 : 0
        let matrix = CoActivationCheck.matrix(
            Array(state.session.traces[0...state.cursor]), layer: state.layer,
            numExperts: state.numExperts, form: .allPairs)
        let area = Rect(x: inner.x, y: inner.y, width: inner.width, height: inner.height - noteRows)
        let legend = AxisDrawing.expertMatrix(matrix, context: context, into: &grid, area: area)
        grid.put(
            legend.joined(separator: " · "), x: area.x, y: area.maxY - 1, style: CellStyle(dim: true),
            maxWidth: area.width)
        if noteRows > 0 {
            TextLayout.paragraphs(
                [
                    "Row i, column j: of the tokens so far whose top-\(state.session.model.topK) holds expert i, the share whose top-\(state.session.model.topK) also holds expert j (1 = j always comes with i; the diagonal is 0). OLMoE (Muennighoff et al., 2024) reads low co-activation as experts that specialise rather than duplicate one another."
                ], into: &grid, in: inner.splitTop(inner.height - noteRows).rest, style: CellStyle(dim: true))
        }
        return grid
    }
}
