import Foundation
import MoEAnalysis
import MoECore

/// Per layer, how far side A and side B agree: for the current token (top-1 the same?, Jaccard
/// of the top-k sets, Jensen–Shannon divergence) and averaged over tokens 1…cursor, each side's
/// share of near-tie decisions, and how many of the tokens whose sets differ were near-ties.
enum ABAgreementView {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        guard let ab = state.ab else { return unavailable(context, in: rect) }
        let a = state.session
        grid.box(
            title: TextLayout.firstFitting(
                [
                    "A/B agreement · A \(ABLayout.name(of: a)) · B \(ab.choice.name) · tokens 1–\(state.cursor + 1)",
                    "A/B agreement · tokens 1–\(state.cursor + 1)", "A/B agreement", "A/B",
                ], width: rect.width - 6))
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard inner.width > 8, inner.height >= 2 else { return grid }
        let layers = ab.agreement(with: a, through: state.cursor, nearTie: state.lens.threshold)
        let current = a.traces[state.cursor]
        let other = ab.session.traces[state.cursor]
        func cells(_ l: Int) -> [String] {
            let (x, y) = (current.layers[l], other.layers[l])
            let same = x.experts.first == y.experts.first
            let agreement = layers[l]
            let near = agreement.disagreements == 0 ? "–" : "\(agreement.nearTieDisagreements)"
            return [
                same ? "✓" : "✗",
                String(format: "%5.2f", RoutingAgreement.jaccard(x.experts, y.experts)),
                String(format: "%7.4f", RoutingAgreement.jensenShannon(x.probabilities, y.probabilities)),
                "│ " + DiffPercent.text(agreement.top1Agreement).leftPadded(5), String(format: "%5.2f", agreement.jaccard),
                String(format: "%7.4f", agreement.jensenShannon),
                "│ " + DiffPercent.text(agreement.fragileShareA).leftPadded(4), DiffPercent.text(agreement.fragileShareB).leftPadded(4),
                "│ " + "\(agreement.disagreements)".leftPadded(4), near.leftPadded(5),
            ]
        }
        let header = ["top-1", "J", "JS", "│ top-1", "J", "JS", "│ A %", "B %", "│ sets≠", "ties"]
        let titles = ["now", "", "", "│ avg", "", "", "│ ties", "", "│ tokens", ""]
        let labelWidth = 3 + "\(a.model.layerCount - 1)".count + 2
        // Each column as wide as its widest row; as many columns as fit, whole sections first.
        let sample = cells(min(state.layer, state.numLayers - 1))
        let widths = (0..<header.count).map { max(titles[$0].count, header[$0].count, sample[$0].count) }
        func width(_ count: Int) -> Int { labelWidth + widths.prefix(count).map { $0 + 1 }.reduce(0, +) }
        let columns = [10, 8, 6, 3].first { width($0) <= inner.width } ?? 3
        func line(_ items: [String]) -> String {
            items.indices.prefix(columns).map { i in
                // Text left-aligned; figures (and their headers) right-aligned under the section's bar.
                let item = items[i]
                return item.hasPrefix("│") || i == 0
                    ? item.padding(toLength: widths[i], withPad: " ", startingAt: 0) : item.leftPadded(widths[i])
            }.joined(separator: " ")
        }
        let titled = inner.height >= 6
        let rows = inner.height - (titled ? 3 : 2)
        if titled {
            grid.put(
                String(repeating: " ", count: labelWidth) + line(titles), x: inner.x, y: inner.y, style: CellStyle(dim: true),
                maxWidth: inner.width)
        }
        grid.put(
            String(repeating: " ", count: labelWidth) + line(header), x: inner.x, y: inner.y + (titled ? 1 : 0),
            style: CellStyle(bold: true), maxWidth: inner.width)
        let window = ListWindow(total: state.numLayers, visible: max(0, rows), selected: state.layer)
        for (row, l) in window.range.enumerated() {
            let selected = l == state.layer
            let label = ((selected ? "▸ " : "  ") + state.layerName(l)).padding(toLength: labelWidth, withPad: " ", startingAt: 0)
            var style = CellStyle(bold: selected)
            if current.layers[l].experts.first != other.layers[l].experts.first {
                style = context.palette.nonFinite
                style.bold = selected
            }
            grid.put(label + line(cells(l)), x: inner.x, y: inner.y + (titled ? 2 : 1) + row, style: style, maxWidth: inner.width)
        }
        var legend: [String] = []
        if window.hiddenAbove > 0 { legend.append("▲\(window.hiddenAbove)") }
        if window.hiddenBelow > 0 { legend.append("▼\(window.hiddenBelow) more layers") }
        legend.append(
            "J = Jaccard of the top-\(a.model.topK) sets, JS in nats (≤ ln 2) · ties: share of near-ties (margin < \(state.lens.thresholdText), < >) · sets≠: tokens whose sets differ, ties: of them near-ties · b/B: side B"
        )
        grid.put(legend.joined(separator: " · "), x: inner.x, y: inner.maxY - 1, style: CellStyle(dim: true), maxWidth: inner.width)
        return grid
    }

    /// Side B could not be made (a model with no second routing): the reason, in a box.
    static func unavailable(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        grid.box(title: TextLayout.firstFitting(["A/B", "B"], width: rect.width - 6))
        let inner = rect.local.inset(dx: 2, dy: 1)
        guard inner.width > 4, inner.height >= 1 else { return grid }
        TextLayout.paragraphs(
            [context.state.message ?? "No side B: this model has no second router or routing variant to set beside it."], into: &grid,
            in: inner, style: CellStyle(dim: true))
        return grid
    }
}

extension String {
    /// Right-aligned in `width` columns (never cut).
    fileprivate func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
