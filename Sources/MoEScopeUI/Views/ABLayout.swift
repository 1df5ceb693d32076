import MoECore

/// The A/B view: the token strip (tokens whose top-k sets differ at the selected layer marked
/// ≠), side A's and side B's layers × experts heatmaps side by side on one expert axis, and
/// their agreement per layer.
enum ABLayout {
    static func panels(_ state: ExplorerState, body: Rect) -> [PanelPlacement] {
        let stripRows = body.height >= 40 ? 6 : 4
        let (strip, rest) = body.splitTop(stripRows)
        var placements = [PanelPlacement(name: "tokens", rect: strip, boxed: true) { TokenStripView.draw($0, in: $1) }]
        let a = PanelPlacement.self
        func sideA(_ context: ViewContext, _ rect: Rect) -> CellGrid {
            var side = context
            side.side = "A " + ABLayout.name(of: context.state.session)
            return ExpertHeatmapView.draw(side, in: rect)
        }
        func sideB(_ context: ViewContext, _ rect: Rect) -> CellGrid {
            guard let b = context.state.sideB, let choice = context.state.ab?.choice else {
                return ABAgreementView.unavailable(context, in: rect)
            }
            return ExpertHeatmapView.draw(ViewContext(b, order: context.order, side: "B " + choice.name), in: rect)
        }
        // Side by side at every width, so a layer's two rows sit on one line; the agreement
        // table takes what the heatmaps leave (at least its header and a few layers).
        let wanted = state.numLayers + 4
        let upper = min(wanted, max(8, rest.height * 3 / 5))
        let (maps, table) = rest.splitTop(upper)
        let (left, right) = maps.splitLeft(maps.width / 2)
        placements += [
            a.init(name: "side A", rect: left, boxed: true, draw: sideA),
            a.init(name: "side B", rect: right, boxed: true, draw: sideB),
            a.init(name: "agreement", rect: table, boxed: true) { ABAgreementView.draw($0, in: $1) },
        ]
        return placements
    }

    /// A session's routing as the panel titles name it.
    /// A Hugging Face model set against itself: side A is the rule as released.
    static func name(of session: ExplorerSession) -> String { session.router?.displayName ?? "as released" }
}
