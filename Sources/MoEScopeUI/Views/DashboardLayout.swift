/// The routing dashboard's panels for a body rectangle: side by side from 120 columns, stacked
/// below that, with the router panel collapsed to one line on small screens.
enum DashboardLayout {
    static func panels(_ state: ExplorerState, body: Rect) -> [PanelPlacement] {
        let stripRows = body.height >= 40 ? 8 : body.height >= 30 ? 6 : 4
        let (strip, rest) = body.splitTop(stripRows)
        var placements = [PanelPlacement(name: "tokens", rect: strip, boxed: true) { TokenStripView.draw($0, in: $1) }]
        // The heatmap takes the rows its layers need, up to about half of what is left.
        let wanted = state.numLayers + 4
        if body.width >= 120 {
            let needed = 12 + state.numExperts * 5
            let (left, right) = rest.splitLeft(min(max(needed, 56), body.width / 2))
            let upper = min(wanted, max(7, rest.height * 11 / 20))
            let (heatmap, history) = left.splitTop(upper)
            let (router, load) = right.splitTop(upper)
            placements += [
                PanelPlacement(name: "heatmap", rect: heatmap, boxed: true) { ExpertHeatmapView.draw($0, in: $1) },
                PanelPlacement(name: "history", rect: history, boxed: true) { HistoryView.draw($0, in: $1) },
                PanelPlacement(name: "router", rect: router, boxed: true) { RouterStateView.draw($0, in: $1) },
                PanelPlacement(name: "load", rect: load, boxed: true) { LoadBalanceView.draw($0, in: $1) },
            ]
        } else {
            let (routerLine, below) = rest.splitTop(1)
            let upper = min(wanted, max(6, below.height / 2))
            let (heatmap, lower) = below.splitTop(upper)
            let (history, load) = lower.splitLeft(lower.width / 2)
            placements += [
                PanelPlacement(name: "router", rect: routerLine, boxed: false) { RouterStateView.drawLine($0, in: $1) },
                PanelPlacement(name: "heatmap", rect: heatmap, boxed: true) { ExpertHeatmapView.draw($0, in: $1) },
                PanelPlacement(name: "history", rect: history, boxed: true) { HistoryView.draw($0, in: $1) },
                PanelPlacement(name: "load", rect: load, boxed: true) { LoadBalanceView.draw($0, in: $1) },
            ]
        }
        return placements
    }
}
