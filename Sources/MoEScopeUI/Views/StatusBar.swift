import MoECore

/// The top line: model, router, position, view; parts shorten, then drop, to fit.
enum StatusBar {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let session = state.session
        let routers = RouterKind.allCases.count
        let router =
            session.router.map { ("router \($0.displayName) [\($0.number)/\(routers)]", $0.displayName) }
            ?? ("router \(session.model.routerName)", session.model.routerName)
        var position = ("token \(state.cursor + 1)/\(state.tokenCount)", "t\(state.cursor + 1)/\(state.tokenCount)")
        if let recorded = state.recordedPosition {
            // A recorded trace is shown a window at a time: the position is in the whole trace.
            let domain = recorded.domain.isEmpty ? "" : " \(recorded.domain)"
            position = (
                "token \(recorded.token + 1)/\(recorded.tokens) · doc \(recorded.document + 1)/\(recorded.documents)\(domain)",
                "t\(recorded.token + 1)/\(recorded.tokens)"
            )
        }
        let layer = ("layer \(state.layerName(state.layer)) of \(session.model.layerCount)", state.layerName(state.layer))
        let expert = ("expert E\(state.expert) of \(state.numExperts)", "E\(state.expert)")
        let playback = state.pendingGeneration > 0 ? ("generating…", "gen") : state.playing ? ("▶ playing", "▶") : ("❚❚ paused", "❚❚")
        let viewTitle = state.isComparing ? "A/B" : state.view.title
        let source = session.label.split(separator: "/").last.map(String.init) ?? session.label
        let candidates: [[String]] = [
            ["moescope", router.0, session.label, position.0, layer.0, expert.0, viewTitle, playback.0],
            ["moescope", router.0, source, position.0, layer.0, expert.0, viewTitle, playback.0],
            ["moescope", router.1, position.0, layer.0, expert.0, viewTitle, playback.1],
            [router.1, position.0, layer.0, expert.1, viewTitle, playback.1],
            [router.1, position.1, layer.1, expert.1, viewTitle, playback.1],
            [position.0, layer.0, expert.0, viewTitle, playback.1],
            [position.1, layer.1, expert.1, viewTitle, playback.1],
            [position.1, layer.1, expert.1, playback.1],
        ]
        let line = TextLayout.firstFitting(candidates.map { " " + $0.joined(separator: " │ ") }, width: rect.width)
        grid.fill(rect.local, with: Cell(" ", style: CellStyle(reverse: true)))
        grid.put(line, x: 0, y: 0, style: CellStyle(bold: true, reverse: true))
        return grid
    }
}
