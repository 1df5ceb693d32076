import Foundation
import MoEAnalysis
import MoECore

/// What every view of one frame reads: the state, and what is derived from it once per frame
/// (the load so far, the expert axis's order).
struct ViewContext {
    let state: ExplorerState
    /// Routed slots per expert over tokens 1…cursor, per layer.
    let load: [[Int]]
    /// Expert ids in display order.
    let order: [Int]
    /// Experts per group, where separators apply (id order of a grouped model).
    let groupSize: Int?
    /// Which side of the A/B view this is ("A linear"), for panel titles; nil elsewhere.
    var side: String?

    /// `order` overrides the axis order (side B of the A/B view is drawn in side A's order).
    init(_ state: ExplorerState, order: [Int]? = nil, side: String? = nil) {
        self.side = side
        self.state = state
        var load = [[Int]](repeating: [Int](repeating: 0, count: state.numExperts), count: state.numLayers)
        for trace in state.session.traces[0...state.cursor] {
            for (l, routing) in trace.layers.enumerated() {
                for e in routing.experts where e >= 0 && e < state.numExperts { load[l][e] += 1 }
            }
        }
        self.load = load
        self.order = order ?? ExpertOrdering.order(state, load: load[state.layer])
        groupSize = state.expertOrder == .id ? state.session.model.expertGroupSize : nil
    }

    var palette: Palette { state.palette }

    func axis(width: Int, numericWidth: Int = 5) -> ExpertAxis {
        ExpertAxis(
            order: order, groupSize: groupSize, width: width, zoom: state.expertZoom, cursor: state.expert,
            numericWidth: numericWidth)
    }
}

/// A rectangle of the screen and the view that fills it.
public struct PanelPlacement {
    public let name: String
    public let rect: Rect
    /// Whether the view frames itself with a box (tests check its border).
    public let boxed: Bool
    let draw: (ViewContext, Rect) -> CellGrid
}

/// Draws the explorer into a `CellGrid`: a status bar, the view of the moment (its panels, each
/// drawn into its own `Rect`), a footer, and the help overlay on top when asked for.
public enum ExplorerRenderer {
    public static let minimumWidth = 80
    public static let minimumHeight = 24

    public static func render(_ state: ExplorerState, width: Int, height: Int) -> CellGrid {
        var grid = CellGrid(width: width, height: height)
        guard width >= minimumWidth, height >= minimumHeight else {
            drawTooSmall(into: &grid)
            if state.palette.asciiOnly { AsciiFallback.apply(to: &grid) }
            return grid
        }
        let context = ViewContext(state)
        for panel in panels(state, width: width, height: height) {
            grid.blit(panel.draw(context, panel.rect), at: panel.rect)
        }
        if state.showingHelp { HelpOverlay.draw(state, into: &grid) }
        if state.palette.asciiOnly { AsciiFallback.apply(to: &grid) }
        return grid
    }

    /// Where everything goes on a `width` × `height` screen (at least the minimum size).
    public static func panels(_ state: ExplorerState, width: Int, height: Int) -> [PanelPlacement] {
        let screen = Rect(x: 0, y: 0, width: width, height: height)
        let (status, rest) = screen.splitTop(1)
        var (body, footer) = rest.splitTop(rest.height - 1)
        var placements = [
            PanelPlacement(name: "status", rect: status, boxed: false) { StatusBar.draw($0, in: $1) },
            PanelPlacement(name: "footer", rect: footer, boxed: false) { Footer.draw($0, in: $1) },
        ]
        if state.session.nonFiniteTokens > 0 {
            let (banner, below) = body.splitTop(1)
            placements.append(PanelPlacement(name: "banner", rect: banner, boxed: false) { NonFiniteBanner.draw($0, in: $1) })
            body = below
        }
        if state.isComparing { return placements + ABLayout.panels(state, body: body) }
        switch state.view {
        case .dashboard: placements += DashboardLayout.panels(state, body: body)
        case .expert: placements.append(PanelPlacement(name: "expert", rect: body, boxed: true) { ExpertView.draw($0, in: $1) })
        case .crossLayer:
            placements.append(PanelPlacement(name: "cross-layer", rect: body, boxed: true) { CrossLayerView.draw($0, in: $1) })
        case .expertNorms: placements.append(PanelPlacement(name: "norms", rect: body, boxed: true) { ExpertNormView.draw($0, in: $1) })
        case .expertSimilarity:
            placements.append(PanelPlacement(name: "similarity", rect: body, boxed: true) { ExpertSimilarityView.draw($0, in: $1) })
        case .coActivation:
            placements.append(PanelPlacement(name: "co-activation", rect: body, boxed: true) { CoActivationView.draw($0, in: $1) })
        }
        return placements
    }

    /// Below the minimum size: what is needed, word-wrapped so that no part is cut off.
    static func drawTooSmall(into grid: inout CellGrid) {
        let (width, height) = (grid.width, grid.height)
        let full = [
            "Terminal \(width)×\(height) is too small for moescope.",
            "It needs at least \(minimumWidth)×\(minimumHeight): enlarge the window, or press q to quit.",
        ]
        var lines = full.flatMap { TextLayout.wrap($0, width: width) }
        if lines.count > height || lines.contains(where: { $0.count > width }) {
            lines = TextLayout.wrap("Too small: needs \(minimumWidth)×\(minimumHeight). q quits.", width: width)
        }
        let top = max(0, (height - lines.count) / 2)
        for (i, line) in lines.prefix(height).enumerated() {
            grid.put(line, x: max(0, (width - line.count) / 2), y: top + i, style: CellStyle(bold: i == 0))
        }
    }

    /// How a token reads in one line: newlines and tabs as visible symbols, spaces as '·'.
    static func visible(_ text: String) -> String {
        String(
            text.map { c -> Character in
                switch c {
                case "\n": "⏎"
                case "\t": "⇥"
                case "\r", "\r\n": "␍"
                case " ": "·"
                default: c.isASCII && (c.asciiValue! < 0x20 || c.asciiValue! == 0x7F) ? "?" : c
                }
            })
    }

    /// A heat cell: the value as two digits (or "··" for under 0.5%), bracketed when chosen;
    /// "nan"/"inf" in the warning style for a non-finite value.
    static func heatCell(_ value: Double, chosen: Bool, palette: Palette) -> (String, CellStyle) {
        guard value.isFinite else {
            let text = value.isNaN ? "nan" : "inf"
            return (chosen ? "[\(text)]" : " \(text) ", palette.nonFinite)
        }
        let percent = Int((min(1, max(0, value)) * 100).rounded())
        let digits = percent >= 100 ? "1." : percent < 1 ? "··" : String(format: "%02d", percent)
        let glyph = palette.heatGlyph(value)
        var style = palette.heat(value)
        style.bold = chosen
        return (chosen ? "[\(glyph)\(digits)]" : " \(glyph)\(digits) ", style)
    }
}

/// Text helpers the views share.
enum TextLayout {
    /// `text` broken at spaces into lines of at most `width` columns (a word longer than a line
    /// is cut with "…").
    static func wrap(_ text: String, width: Int) -> [String] {
        guard width > 0 else { return [] }
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ", omittingEmptySubsequences: true) {
            var word = String(word)
            if word.count > width { word = String(word.prefix(width - 1)) + "…" }
            if line.isEmpty {
                line = word
            } else if line.count + 1 + word.count <= width {
                line += " " + word
            } else {
                lines.append(line)
                line = word
            }
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    /// Writes `paragraphs` word-wrapped into `rect`, from its top row down; returns the next
    /// free row. A paragraph that does not fit ends with "…" on the last row.
    @discardableResult
    static func paragraphs(_ paragraphs: [String], into grid: inout CellGrid, in rect: Rect, style: CellStyle = .plain) -> Int {
        var row = rect.y
        for paragraph in paragraphs {
            let lines = wrap(paragraph, width: rect.width)
            for (i, line) in lines.enumerated() {
                guard row < rect.maxY else { return row }
                let cut = row == rect.maxY - 1 && i < lines.count - 1
                grid.put(cut ? String(line.prefix(rect.width - 1)) + "…" : line, x: rect.x, y: row, style: style, maxWidth: rect.width)
                row += 1
            }
        }
        return row
    }

    /// The first of `candidates` that fits in `width` (the last one, cut, if none does).
    static func firstFitting(_ candidates: [String], width: Int) -> String {
        candidates.first { $0.count <= width } ?? candidates.last ?? ""
    }
}
