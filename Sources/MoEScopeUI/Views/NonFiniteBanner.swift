/// One warning line while the model has produced non-finite routing.
enum NonFiniteBanner {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let session = context.state.session
        let text = TextLayout.firstFitting(
            [
                " ⚠ This model produces non-finite routing: \(session.nonFiniteTokens) of \(session.traces.count) tokens have NaN or ∞ router probabilities (shown as nan / !). Check its weights and config.",
                " ⚠ Non-finite routing: \(session.nonFiniteTokens) of \(session.traces.count) tokens have NaN/∞ probabilities (nan, !).",
                " ⚠ NaN/∞ routing in \(session.nonFiniteTokens) tokens",
            ], width: rect.width)
        grid.fill(rect.local, with: Cell(" ", style: context.palette.nonFinite))
        grid.put(text, x: 0, y: 0, style: context.palette.nonFinite)
        return grid
    }
}
