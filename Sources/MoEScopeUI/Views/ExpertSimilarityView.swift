import Foundation

/// Cosine similarity of the experts' weights at the selected layer (along the expert axis,
/// rows scrolling with the expert cursor), and its mean by layer.
enum ExpertSimilarityView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard let similarity = state.session.expertSimilarity else {
            grid.box(title: "Expert weight similarity")
            TextLayout.paragraphs(
                [
                    state.session.model.recording != nil
                        ? "A recorded trace holds routing, not weights: expert similarity needs the model (moescope analyze --model)."
                        : "This model's experts are too large to read whole here, so their similarity is not computed."
                ],
                into: &grid, in: inner.splitTop(1).rest)
            return grid
        }
        grid.box(
            title: TextLayout.firstFitting(
                [
                    "Expert weight similarity · layer \(state.layerName(state.layer)) (↑/↓ changes layer)",
                    "Similarity · \(state.layerName(state.layer))", "Similarity",
                ], width: rect.width - 6))
        guard inner.width > 20, inner.height >= 5 else { return grid }
        let meansWidth = inner.width >= 100 ? 36 : 0
        let noteRows = inner.height >= 24 ? 3 : inner.height >= 14 ? 2 : 0
        let matrixArea = Rect(x: inner.x, y: inner.y, width: inner.width - meansWidth, height: inner.height - noteRows)
        var legend = AxisDrawing.expertMatrix(
            similarity.matrices[state.layer], context: context, into: &grid, area: matrixArea)
        legend.append(String(format: "mean at %@: %.2f", state.layerName(state.layer), state.session.expertSimilarityMeans[state.layer]))
        grid.put(
            legend.joined(separator: " · "), x: matrixArea.x, y: matrixArea.maxY - 1, style: CellStyle(dim: true),
            maxWidth: matrixArea.width)
        if meansWidth > 0 {
            let x = matrixArea.maxX + 1
            grid.put("Mean over expert pairs, by layer", x: x, y: inner.y, style: CellStyle(bold: true), maxWidth: meansWidth - 1)
            let layers = ListWindow(total: state.numLayers, visible: matrixArea.height - 1, selected: state.layer)
            for (row, l) in layers.range.enumerated() {
                let mean = state.session.expertSimilarityMeans[l]
                let selected = l == state.layer
                let marker =
                    selected
                    ? "▸ " : row == 0 && layers.hiddenAbove > 0 ? "▲ " : row == layers.count - 1 && layers.hiddenBelow > 0 ? "▼ " : "  "
                grid.put(
                    marker + state.layerName(l).padding(toLength: 4, withPad: " ", startingAt: 0) + String(format: " %5.2f ", mean)
                        + Palette.bar(max(0, mean), width: meansWidth - 16), x: x, y: inner.y + 1 + row, style: CellStyle(bold: selected),
                    maxWidth: meansWidth - 1)
            }
        }
        if noteRows > 0 {
            TextLayout.paragraphs(
                [
                    "Each expert is summarised by the mean of its gate (w1) rows, up (w3) rows and down (w2) columns, each normalised and concatenated; cells are cosine similarities (1 = the same direction, 0 = unrelated). Lo et al. (2024) report similarity falling with depth (experts diversify), with the last layer an outlier. This is a property of the weights, the same for every text."
                ], into: &grid, in: inner.splitTop(inner.height - noteRows).rest, style: CellStyle(dim: true))
        }
        return grid
    }
}
