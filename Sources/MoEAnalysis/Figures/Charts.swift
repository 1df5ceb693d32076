import Foundation

/// How values map to colours, and how the colour bar labels them.
public struct ColourScale: Sendable {
    public var minimum: Double
    public var maximum: Double
    /// Legend title with units, e.g. "share of routed slots (%)".
    public var label: String
    public var map: ColourMap = .viridis
    /// Tick text for a value on the scale (e.g. log₂ lift 1 → "×2").
    public var tickLabel: @Sendable (Double) -> String = { Chart.format($0) }
    /// Extra ticks to label (besides the evenly spaced ones), e.g. the uniform-routing value.
    public var ticks: [Double]? = nil

    public init(
        minimum: Double, maximum: Double, label: String, map: ColourMap = .viridis,
        ticks: [Double]? = nil, tickLabel: @escaping @Sendable (Double) -> String = { Chart.format($0) }
    ) {
        self.minimum = minimum.isFinite ? minimum : 0
        self.maximum = maximum.isFinite && maximum > self.minimum ? maximum : self.minimum + 1
        self.label = label
        self.map = map
        self.ticks = ticks
        self.tickLabel = tickLabel
    }

    public func position(_ v: Double) -> Double { (v - minimum) / (maximum - minimum) }
    public func colour(_ v: Double) -> String { map.hex(position(v)) }
}

/// One heatmap in a figure: rows × columns of values with labelled axes.
public struct HeatmapPanel: Sendable {
    public var title: String
    public var values: [[Double]]
    public var rowLabels: [String]
    public var columnLabels: [String]
    public var xTitle: String
    public var yTitle: String
    /// Cell text (drawn only where cells are large enough to hold it); nil: no numbers in cells.
    public var cellText: (@Sendable (Double) -> String)?

    public init(
        title: String, values: [[Double]], rowLabels: [String], columnLabels: [String], xTitle: String, yTitle: String,
        cellText: (@Sendable (Double) -> String)? = nil
    ) {
        self.title = title
        self.values = values
        self.rowLabels = rowLabels
        self.columnLabels = columnLabels
        self.xTitle = xTitle
        self.yTitle = yTitle
        self.cellText = cellText
    }
}

/// A distribution drawn as a box: 25–75 % box, 10–90 % whiskers, median line, mean dot.
public struct BoxSummary: Sendable {
    public var p10, p25, median, p75, p90, mean: Double
    public init(p10: Double, p25: Double, median: Double, p75: Double, p90: Double, mean: Double) {
        self.p10 = p10
        self.p25 = p25
        self.median = median
        self.p75 = p75
        self.p90 = p90
        self.mean = mean
    }
}

/// A dashed horizontal line with a label, e.g. the value uniform routing would give.
public struct ReferenceLine: Sendable {
    public var value: Double
    public var label: String
    public init(value: Double, label: String) {
        self.value = value
        self.label = label
    }
}

/// One bar chart: a value per category, with an optional interval (e.g. a bootstrap 95 % CI) drawn as an error bar.
public struct BarPanel: Sendable {
    public var title: String
    public var yTitle: String
    public var categories: [String]
    public var values: [Double]
    public var intervals: [ClosedRange<Double>?]
    public var references: [ReferenceLine]
    public init(
        title: String, yTitle: String, categories: [String], values: [Double],
        intervals: [ClosedRange<Double>?]? = nil, references: [ReferenceLine] = []
    ) {
        self.title = title
        self.yTitle = yTitle
        self.categories = categories
        self.values = values
        self.intervals = intervals ?? Array(repeating: nil, count: values.count)
        self.references = references
    }
}

/// Figure layout shared by every chart: a bold title, panels in a grid, a legend on the right,
/// and a caption line (model, router, text, token count) at the bottom. Every axis is drawn in
/// a `<g class="axis x|y">`, every legend in a `<g class="legend">` (tests look for them).
public enum Chart {
    static let titleSize = 16.0, labelSize = 12.0, tickSize = 11.0, captionSize = 11.0
    static let pad = 16.0

    // MARK: heatmaps

    /// Panels share one colour scale and one colour bar. `cellTarget`: the plot width (and
    /// height) a panel aims for; cells are whole pixels, 2–40 px, so 8 experts get big
    /// annotated cells and 256 experts one or two pixels each. More cells than 4096 in a panel
    /// are drawn as one embedded image rather than as rectangles.
    public static func heatmapFigure(
        title: String, caption: String, panels: [HeatmapPanel], scale: ColourScale,
        columns: Int? = nil, cellTarget: (width: Double, height: Double) = (480, 480),
        squareCells: Bool = false
    ) -> String {
        let shapes = panels.map { (rows: $0.values.count, cols: $0.values.first?.count ?? 0) }
        let maxRows = max(1, shapes.map(\.rows).max() ?? 1)
        let maxCols = max(1, shapes.map(\.cols).max() ?? 1)
        var cellW = min(40, max(1, (cellTarget.width / Double(maxCols)).rounded(.down)))
        var cellH = min(40, max(1, (cellTarget.height / Double(maxRows)).rounded(.down)))
        if squareCells {
            cellW = min(cellW, cellH)
            cellH = cellW
        }
        let plotW = cellW * Double(maxCols)
        let plotH = cellH * Double(maxRows)

        let rowLabelW = panels.flatMap(\.rowLabels).map { SVGDocument.textWidth($0, size: tickSize) }.max() ?? 0
        let left = 20 + rowLabelW + 8
        let top = 22.0
        let bottom = 44.0
        let titleW = panels.map { SVGDocument.textWidth($0.title, size: labelSize) }.max() ?? 0
        let panelW = max(left + plotW + 12, titleW + 8)
        let panelH = top + plotH + bottom
        // Unless told, as many panels across as fit in about 1100 px.
        let columns = max(1, min(columns ?? Int(1100 / panelW), panels.count))
        let gridRows = (panels.count + columns - 1) / columns

        let barX = pad + Double(columns - 1) * panelW + left + plotW + 24
        let barH = max(min(300, max(140, plotH)), SVGDocument.textWidth(scale.label, size: labelSize) + 12)
        let width =
            max(barX + colourBarWidth(scale), pad + Double(columns) * panelW, SVGDocument.textWidth(title, size: titleSize) + pad) + pad
        let headerH = 34.0
        let captionLines = wrap(caption, width: width - 2 * pad, size: captionSize)
        let bodyH = max(Double(gridRows) * panelH, top + barH + 12)
        let height = headerH + bodyH + 8 + Double(captionLines.count) * 15 + pad
        var svg = SVGDocument(width: width, height: height)
        svg.title(title)
        svg.text(title, x: pad, y: 24, size: titleSize, weight: "bold")

        for (index, panel) in panels.enumerated() {
            let ox = pad + Double(index % columns) * panelW
            let oy = headerH + Double(index / columns) * panelH
            let px = ox + left
            let py = oy + top
            svg.text(panel.title, x: px, y: oy + 14, size: labelSize, weight: "bold")
            drawCells(&svg, panel: panel, scale: scale, x: px, y: py, cellW: cellW, cellH: cellH)
            let rows = panel.values.count
            let cols = panel.values.first?.count ?? 0
            svg.rect(x: px, y: py, width: cellW * Double(cols), height: cellH * Double(rows), fill: "none", stroke: "#444")
            // x axis: column labels below, every `step`-th.
            svg.open(group: [("class", "axis x")])
            let labelW = (panel.columnLabels.map { SVGDocument.textWidth($0, size: tickSize) }.max() ?? 0) + 6
            let xStep = niceStep(Int((labelW / cellW).rounded(.up)))
            for c in stride(from: 0, to: cols, by: xStep) {
                let cx = px + (Double(c) + 0.5) * cellW
                svg.line(x1: cx, y1: py + Double(rows) * cellH, x2: cx, y2: py + Double(rows) * cellH + 4, stroke: "#444")
                svg.text(panel.columnLabels[c], x: cx, y: py + Double(rows) * cellH + 16, size: tickSize, anchor: .middle)
            }
            svg.text(
                panel.xTitle, x: px + Double(cols) * cellW / 2, y: py + Double(rows) * cellH + 34, size: labelSize, anchor: .middle,
                cls: "axis-title")
            svg.close()
            // y axis: row labels left, every `step`-th.
            svg.open(group: [("class", "axis y")])
            let yStep = niceStep(Int(((tickSize + 2) / cellH).rounded(.up)))
            for r in stride(from: 0, to: rows, by: yStep) {
                let cy = py + (Double(r) + 0.5) * cellH
                svg.line(x1: px - 4, y1: cy, x2: px, y2: cy, stroke: "#444")
                svg.text(panel.rowLabels[r], x: px - 6, y: cy + tickSize * 0.35, size: tickSize, anchor: .end)
            }
            svg.text(
                panel.yTitle, x: ox + 12, y: py + Double(rows) * cellH / 2, size: labelSize, anchor: .middle, rotate: -90,
                cls: "axis-title")
            svg.close()
        }
        drawColourBar(&svg, scale: scale, x: barX, y: headerH + top, height: barH)
        drawCaption(&svg, lines: captionLines, y: headerH + bodyH + 8)
        return svg.text
    }

    private static func drawCells(
        _ svg: inout SVGDocument, panel: HeatmapPanel, scale: ColourScale,
        x: Double, y: Double, cellW: Double, cellH: Double
    ) {
        let rows = panel.values.count
        let cols = panel.values.first?.count ?? 0
        guard rows > 0, cols > 0 else { return }
        if rows * cols > 4096 {
            // One image, each cell a cellW × cellH block of pixels: renderers smooth scaled images
            // (rsvg ignores image-rendering), so the image is drawn at its displayed size.
            let (sx, sy) = (Int(cellW), Int(cellH))
            let width = cols * sx
            let height = rows * sy
            var pixels = [UInt8](repeating: 0, count: width * height * 3)
            for r in 0..<rows {
                for c in 0..<cols {
                    let (red, green, blue) = scale.map.rgb(scale.position(panel.values[r][c]))
                    for py in (r * sy)..<((r + 1) * sy) {
                        for px in (c * sx)..<((c + 1) * sx) {
                            let i = (py * width + px) * 3
                            pixels[i] = red
                            pixels[i + 1] = green
                            pixels[i + 2] = blue
                        }
                    }
                }
            }
            svg.pngImage(
                PNGEncoder.rgb(width: width, height: height, pixels: pixels), x: x, y: y,
                width: Double(width), height: Double(height))
            return
        }
        svg.open(group: [("class", "cells")])
        let gap = cellW >= 8 && cellH >= 8 ? 0.5 : 0
        for r in 0..<rows {
            for c in 0..<cols {
                let v = panel.values[r][c]
                svg.rect(
                    x: x + Double(c) * cellW, y: y + Double(r) * cellH, width: cellW, height: cellH, fill: scale.colour(v),
                    stroke: gap > 0 ? "#ffffff" : nil, strokeWidth: gap)
            }
        }
        if let cellText = panel.cellText {
            let longest = panel.values.flatMap { $0 }.map { SVGDocument.textWidth(cellText($0), size: 10) }.max() ?? 0
            if cellW >= longest + 4, cellH >= 14 {
                for r in 0..<rows {
                    for c in 0..<cols {
                        let v = panel.values[r][c]
                        svg.text(
                            cellText(v), x: x + (Double(c) + 0.5) * cellW, y: y + (Double(r) + 0.5) * cellH + 3.5, size: 10,
                            anchor: .middle, fill: scale.map.textColour(on: scale.position(v)))
                    }
                }
            }
        }
        svg.close()
    }

    private static func colourBarWidth(_ scale: ColourScale) -> Double {
        16 + 23 + colourBarTickWidth(scale) + 10 + labelSize + 4
    }

    private static func colourBarTickWidth(_ scale: ColourScale) -> Double {
        colourBarTicks(scale).map { SVGDocument.textWidth(scale.tickLabel($0), size: tickSize) }.max() ?? 0
    }

    private static func colourBarTicks(_ scale: ColourScale) -> [Double] {
        // At least four labelled values inside the range, whatever its span.
        var count = 5
        var ticks: [Double] = []
        repeat {
            ticks = niceTicks(scale.minimum, scale.maximum, count: count).filter {
                $0 >= scale.minimum - 1e-12 && $0 <= scale.maximum + 1e-12
            }
            count += 2
        } while ticks.count < 4 && count < 15
        for extra in scale.ticks ?? [] where extra >= scale.minimum && extra <= scale.maximum {
            // An extra tick replaces evenly spaced ones too close to it to label both.
            let span = scale.maximum - scale.minimum
            ticks.removeAll { abs($0 - extra) < span * 0.12 }
            ticks.append(extra)
        }
        return ticks.sorted()
    }

    private static func drawColourBar(_ svg: inout SVGDocument, scale: ColourScale, x: Double, y: Double, height: Double) {
        svg.open(group: [("class", "legend")])
        // The title runs up the right-hand side of the bar, so it never widens the figure or meets a panel title.
        let titleX = x + 16 + 23 + colourBarTickWidth(scale) + 10 + labelSize * 0.8
        svg.text(scale.label, x: titleX, y: y + height / 2, size: labelSize, anchor: .middle, rotate: -90)
        let steps = 64
        for i in 0..<steps {
            let t = Double(i) / Double(steps - 1)
            let segment = height / Double(steps)
            svg.rect(x: x, y: y + height - Double(i + 1) * segment, width: 16, height: segment + 0.5, fill: scale.map.hex(t))
        }
        svg.rect(x: x, y: y, width: 16, height: height, fill: "none", stroke: "#444")
        for tick in colourBarTicks(scale) {
            let ty = y + height - scale.position(tick) * height
            svg.line(x1: x + 16, y1: ty, x2: x + 20, y2: ty, stroke: "#444")
            svg.text(scale.tickLabel(tick), x: x + 23, y: ty + tickSize * 0.35, size: tickSize)
        }
        svg.close()
    }

    // MARK: box plots

    /// One box per category (e.g. per layer) on a shared y axis.
    public static func boxPlotFigure(
        title: String, caption: String, categories: [String], boxes: [BoxSummary],
        xTitle: String, yTitle: String, references: [ReferenceLine] = []
    ) -> String {
        let n = max(1, categories.count)
        let slot = min(80, max(9, (560 / Double(n)).rounded(.down)))  // few layers: wide slots, boxes capped below
        let plotW = slot * Double(n)
        let plotH = 300.0
        let values = boxes.flatMap { [$0.p10, $0.p90, $0.mean] } + references.map(\.value)
        let ticks = niceTicks(values.min() ?? 0, values.max() ?? 1, count: 6)
        let (lo, hi) = (ticks.first ?? 0, ticks.last ?? 1)
        let tickW = ticks.map { SVGDocument.textWidth(format($0), size: tickSize) }.max() ?? 0
        let left = pad + 22 + tickW + 8
        let top = 40.0
        let legendW = 210.0
        let width = max(left + plotW + 20 + legendW, SVGDocument.textWidth(title, size: titleSize) + pad) + pad
        let captionLines = wrap(caption, width: width - 2 * pad, size: captionSize)
        let height = top + plotH + 48 + Double(captionLines.count) * 15 + pad
        var svg = SVGDocument(width: width, height: height)
        svg.title(title)
        svg.text(title, x: pad, y: 24, size: titleSize, weight: "bold")
        func y(_ v: Double) -> Double { top + plotH - (v - lo) / (hi - lo) * plotH }

        drawYAxis(&svg, ticks: ticks, x: left, plotW: plotW, y: y, title: yTitle, titleX: pad + 6, midY: top + plotH / 2)
        drawCategoryAxis(&svg, categories: categories, x: left, slot: slot, y: top + plotH, title: xTitle)
        let fill = ColourMap.viridis.hex(0.55)
        let edge = ColourMap.viridis.hex(0.15)
        svg.open(group: [("class", "boxes")])
        for (i, box) in boxes.enumerated() {
            let cx = left + (Double(i) + 0.5) * slot
            let w = min(36, max(3, slot * 0.6))
            svg.line(x1: cx, y1: y(box.p10), x2: cx, y2: y(box.p25), stroke: edge)
            svg.line(x1: cx, y1: y(box.p75), x2: cx, y2: y(box.p90), stroke: edge)
            svg.line(x1: cx - w / 4, y1: y(box.p10), x2: cx + w / 4, y2: y(box.p10), stroke: edge)
            svg.line(x1: cx - w / 4, y1: y(box.p90), x2: cx + w / 4, y2: y(box.p90), stroke: edge)
            svg.rect(x: cx - w / 2, y: y(box.p75), width: w, height: max(0.5, y(box.p25) - y(box.p75)), fill: fill, stroke: edge)
            svg.line(x1: cx - w / 2, y1: y(box.median), x2: cx + w / 2, y2: y(box.median), stroke: "#111", width: 2)
            svg.circle(cx: cx, cy: y(box.mean), r: min(3, w / 3), fill: "#ffffff", stroke: "#111")
        }
        svg.close()
        drawReferences(&svg, references, x: left, plotW: plotW, y: y)

        // Legend: what the glyphs mean.
        let lx = left + plotW + 24
        let ly = top + 4
        svg.open(group: [("class", "legend")])
        svg.rect(x: lx, y: ly, width: 14, height: 18, fill: fill, stroke: edge)
        svg.text("box: 25th–75th percentile", x: lx + 22, y: ly + 13, size: tickSize)
        svg.line(x1: lx, y1: ly + 36, x2: lx + 14, y2: ly + 36, stroke: "#111", width: 2)
        svg.text("line: median", x: lx + 22, y: ly + 40, size: tickSize)
        svg.circle(cx: lx + 7, cy: ly + 58, r: 3, fill: "#ffffff", stroke: "#111")
        svg.text("dot: mean", x: lx + 22, y: ly + 62, size: tickSize)
        svg.line(x1: lx + 7, y1: ly + 72, x2: lx + 7, y2: ly + 90, stroke: edge)
        svg.text("whiskers: 10th–90th pct.", x: lx + 22, y: ly + 85, size: tickSize)
        if !references.isEmpty {
            svg.line(x1: lx, y1: ly + 106, x2: lx + 14, y2: ly + 106, stroke: "#b2182b", dash: "5 3")
            svg.text("reference (labelled)", x: lx + 22, y: ly + 110, size: tickSize)
        }
        svg.close()
        drawCaption(&svg, lines: captionLines, y: top + plotH + 48)
        return svg.text
    }

    // MARK: bar charts

    /// Bar panels side by side (or in a grid). Without `seriesLabel`, bars are coloured by
    /// category with one legend naming them, so the same router has the same colour in every
    /// panel; with it (categories like layers), bars share one colour, the categories are
    /// labelled on the x axis and the legend names the series. Intervals, when given, are drawn
    /// as error bars and the y axis makes room for them.
    public static func barFigure(
        title: String, caption: String, panels: [BarPanel], columns: Int = 3,
        seriesLabel: String? = nil, xTitle: String? = nil
    ) -> String {
        let categories = panels.first?.categories ?? []
        let n = max(1, categories.count)
        let slot = min(seriesLabel == nil ? 44 : 80, max(8, (seriesLabel == nil ? 300 : 420) / Double(n)).rounded(.down))
        let plotW = slot * Double(n)
        let plotH = 190.0
        let byCategory = seriesLabel == nil
        let colours =
            byCategory
            ? (0..<n).map { ColourMap.viridis.hex(n == 1 ? 0.45 : 0.9 * Double($0) / Double(n - 1)) }
            : [ColourMap.viridis.hex(0.45)]
        let columns = max(1, min(columns, panels.count))
        let gridRows = (panels.count + columns - 1) / columns
        let allTicks = panels.map { panel -> [Double] in
            let spans =
                zip(panel.values, panel.intervals).flatMap { v, i in [v, i?.lowerBound ?? v, i?.upperBound ?? v] }
                + panel.references.map(\.value)
            let finite = spans.filter(\.isFinite)
            return niceTicks(min(0, finite.min() ?? 0), max(0, finite.max() ?? 1), count: 5)
        }
        let tickW = allTicks.flatMap { $0 }.map { SVGDocument.textWidth(format($0), size: tickSize) }.max() ?? 0
        let left = 22 + tickW + 10
        let labelW = (categories.map { SVGDocument.textWidth($0, size: tickSize) }.max() ?? 0) + 6
        let xStep = niceStep(Int((labelW / slot).rounded(.up)))
        let labelled = !byCategory || xStep == 1  // router names too wide for their bars are left to the legend
        let panelW = max(left + plotW + 16, (panels.map { SVGDocument.textWidth($0.title, size: labelSize) }.max() ?? 0) + 12)
        let panelH = 24 + plotH + (labelled ? 20 : 6) + (xTitle == nil ? 10 : 24)
        let legendEntries = byCategory ? categories.map { ($0, true) } : [(seriesLabel ?? "", true)]
        let legendW = 24 + (legendEntries.map { SVGDocument.textWidth($0.0, size: tickSize) }.max() ?? 0) + pad
        let width = max(pad + Double(columns) * panelW + legendW, SVGDocument.textWidth(title, size: titleSize) + pad) + pad
        let captionLines = wrap(caption, width: width - 2 * pad, size: captionSize)
        let headerH = 34.0
        let height = headerH + Double(gridRows) * panelH + 8 + Double(captionLines.count) * 15 + pad
        var svg = SVGDocument(width: width, height: height)
        svg.title(title)
        svg.text(title, x: pad, y: 24, size: titleSize, weight: "bold")

        for (index, panel) in panels.enumerated() {
            let ox = pad + Double(index % columns) * panelW
            let oy = headerH + Double(index / columns) * panelH
            let px = ox + left
            let py = oy + 24
            svg.text(panel.title, x: ox + 4, y: oy + 14, size: labelSize, weight: "bold")
            let ticks = allTicks[index]
            let (lo, hi) = (ticks.first ?? 0, ticks.last ?? 1)
            func y(_ v: Double) -> Double { py + plotH - (v - lo) / (hi - lo) * plotH }
            drawYAxis(&svg, ticks: ticks, x: px, plotW: plotW, y: y, title: panel.yTitle, titleX: ox + 10, midY: py + plotH / 2)
            svg.open(group: [("class", "axis x")])
            svg.line(x1: px, y1: y(max(lo, 0)), x2: px + plotW, y2: y(max(lo, 0)), stroke: "#444")
            if labelled {
                for c in stride(from: 0, to: categories.count, by: xStep) {
                    let cx = px + (Double(c) + 0.5) * slot
                    svg.line(x1: cx, y1: py + plotH, x2: cx, y2: py + plotH + 4, stroke: "#444")
                    svg.text(categories[c], x: cx, y: py + plotH + 16, size: tickSize, anchor: .middle)
                }
            }
            if let xTitle {
                svg.text(
                    xTitle, x: px + plotW / 2, y: py + plotH + (labelled ? 34 : 20), size: labelSize, anchor: .middle, cls: "axis-title")
            }
            svg.close()
            svg.open(group: [("class", "bars")])
            var bars: [(x: Double, y: Double, width: Double, height: Double)] = []
            for (i, v) in panel.values.enumerated() where v.isFinite {
                let x = px + Double(i) * slot + slot * 0.15
                let top = min(y(v), y(0), panel.intervals[i].map { y($0.upperBound) } ?? .infinity)
                bars.append((x, top, slot * 0.7, max(y(v), y(0)) - top))
                svg.rect(
                    x: x, y: min(y(v), y(0)), width: slot * 0.7, height: max(0.5, abs(y(v) - y(0))),
                    fill: colours[i % colours.count])
                if let interval = panel.intervals[i] {
                    let cx = x + slot * 0.35
                    svg.line(x1: cx, y1: y(interval.lowerBound), x2: cx, y2: y(interval.upperBound), stroke: "#111", width: 1.5)
                    svg.line(x1: cx - 4, y1: y(interval.lowerBound), x2: cx + 4, y2: y(interval.lowerBound), stroke: "#111", width: 1.5)
                    svg.line(x1: cx - 4, y1: y(interval.upperBound), x2: cx + 4, y2: y(interval.upperBound), stroke: "#111", width: 1.5)
                }
            }
            svg.close()
            // One reference per panel fits above the plot, right of the title.
            let titleEnd = ox + 4 + SVGDocument.textWidth(panel.title, size: labelSize) + 8
            drawReferences(
                &svg, panel.references, x: px, plotW: plotW, y: y, obstacles: bars,
                freeAbove: panel.references.count == 1 ? (py, titleEnd) : nil)
        }
        // Legend: colour → category (or the one series), then error bars and reference lines if drawn.
        let lx = pad + Double(columns) * panelW + 8
        var ly = headerH + 24
        svg.open(group: [("class", "legend")])
        for (i, entry) in legendEntries.enumerated() {
            svg.rect(x: lx, y: ly, width: 12, height: 12, fill: colours[i % colours.count])
            svg.text(entry.0, x: lx + 18, y: ly + 10, size: tickSize)
            ly += 18
        }
        if panels.contains(where: { $0.intervals.contains { $0 != nil } }) {
            svg.line(x1: lx + 6, y1: ly, x2: lx + 6, y2: ly + 12, stroke: "#111", width: 1.5)
            svg.text("interval", x: lx + 18, y: ly + 10, size: tickSize)
            ly += 18
        }
        if panels.contains(where: { !$0.references.isEmpty }) {
            svg.line(x1: lx, y1: ly + 6, x2: lx + 12, y2: ly + 6, stroke: "#b2182b", width: 1.2, dash: "5 3")
            svg.text("reference (labelled)", x: lx + 18, y: ly + 10, size: tickSize)
        }
        svg.close()
        drawCaption(&svg, lines: captionLines, y: headerH + Double(gridRows) * panelH + 8)
        return svg.text
    }

    // MARK: shared pieces

    private static func drawYAxis(
        _ svg: inout SVGDocument, ticks: [Double], x: Double, plotW: Double, y: (Double) -> Double,
        title: String, titleX: Double, midY: Double
    ) {
        svg.open(group: [("class", "axis y")])
        for tick in ticks {
            svg.line(x1: x, y1: y(tick), x2: x + plotW, y2: y(tick), stroke: "#e4e4e4")
            svg.line(x1: x - 4, y1: y(tick), x2: x, y2: y(tick), stroke: "#444")
            svg.text(format(tick), x: x - 6, y: y(tick) + tickSize * 0.35, size: tickSize, anchor: .end)
        }
        svg.line(x1: x, y1: y(ticks.first ?? 0), x2: x, y2: y(ticks.last ?? 1), stroke: "#444")
        svg.text(title, x: titleX, y: midY, size: labelSize, anchor: .middle, rotate: -90, cls: "axis-title")
        svg.close()
    }

    private static func drawCategoryAxis(_ svg: inout SVGDocument, categories: [String], x: Double, slot: Double, y: Double, title: String)
    {
        svg.open(group: [("class", "axis x")])
        svg.line(x1: x, y1: y, x2: x + slot * Double(categories.count), y2: y, stroke: "#444")
        let labelW = (categories.map { SVGDocument.textWidth($0, size: tickSize) }.max() ?? 0) + 6
        let step = niceStep(Int((labelW / slot).rounded(.up)))
        for c in stride(from: 0, to: categories.count, by: step) {
            let cx = x + (Double(c) + 0.5) * slot
            svg.line(x1: cx, y1: y, x2: cx, y2: y + 4, stroke: "#444")
            svg.text(categories[c], x: cx, y: y + 16, size: tickSize, anchor: .middle)
        }
        svg.text(title, x: x + slot * Double(categories.count) / 2, y: y + 36, size: labelSize, anchor: .middle, cls: "axis-title")
        svg.close()
    }

    /// Each reference line with its label at the first of four places (above the line at the
    /// right end, above at the left, below at the right, below at the left) whose text clears
    /// every `obstacle` (the bars), so a tall bar never hides it. With none clear, and room above
    /// the plot (`freeAbove`: the top of the plot, right of the panel's title), the label goes
    /// there, after a dash of the line's own style; otherwise at the first place, on its halo.
    private static func drawReferences(
        _ svg: inout SVGDocument, _ references: [ReferenceLine], x: Double, plotW: Double,
        y: (Double) -> Double, obstacles: [(x: Double, y: Double, width: Double, height: Double)] = [],
        freeAbove: (top: Double, left: Double)? = nil
    ) {
        guard !references.isEmpty else { return }
        let size = tickSize - 1
        svg.open(group: [("class", "references")])
        for reference in references {
            let lineY = y(reference.value)
            svg.line(x1: x, y1: lineY, x2: x + plotW, y2: lineY, stroke: "#b2182b", width: 1.2, dash: "5 3")
            let textW = SVGDocument.textWidth(reference.label, size: size)
            let places: [(textX: Double, baseline: Double, anchor: SVGDocument.Anchor, left: Double)] = [
                (x + plotW - 2, lineY - 4, .end, x + plotW - 2 - textW), (x + 2, lineY - 4, .start, x + 2),
                (x + plotW - 2, lineY + size + 2, .end, x + plotW - 2 - textW), (x + 2, lineY + size + 2, .start, x + 2),
            ]
            let clear = places.first { place in
                let top = place.baseline - size
                return !obstacles.contains { box in
                    place.left < box.x + box.width && box.x < place.left + textW && top < box.y + box.height && box.y < place.baseline + 2
                }
            }
            if clear == nil, let freeAbove, x + plotW - textW - 22 > freeAbove.left {
                let baseline = freeAbove.top - 4
                svg.line(
                    x1: x + plotW - textW - 20, y1: baseline - size / 3, x2: x + plotW - textW - 6, y2: baseline - size / 3,
                    stroke: "#b2182b", width: 1.2, dash: "5 3")
                svg.text(reference.label, x: x + plotW, y: baseline, size: size, anchor: .end, fill: "#b2182b")
                continue
            }
            let place = clear ?? places[0]
            svg.text(reference.label, x: place.textX, y: place.baseline, size: size, anchor: place.anchor, fill: "#b2182b", halo: true)
        }
        svg.close()
    }

    private static func drawCaption(_ svg: inout SVGDocument, lines: [String], y: Double) {
        svg.open(group: [("class", "caption")])
        for (i, line) in lines.enumerated() {
            svg.text(line, x: pad, y: y + 12 + Double(i) * 15, size: captionSize, fill: "#444")
        }
        svg.close()
    }

    /// Greedy word wrap to an estimated pixel width.
    static func wrap(_ text: String, width: Double, size: Double) -> [String] {
        let maxChars = max(20, Int(width / (size * 0.6)))
        var lines: [String] = []
        var current = ""
        for word in text.split(separator: " ", omittingEmptySubsequences: false) {
            if current.isEmpty {
                current = String(word)
            } else if current.count + 1 + word.count <= maxChars {
                current += " " + word
            } else {
                lines.append(current)
                current = String(word)
            }
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }

    /// The smallest "round" label step ≥ `minimum`.
    static func niceStep(_ minimum: Int) -> Int {
        let steps = [1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 40, 50, 64, 100, 128, 200, 256, 500, 1000]
        return steps.first { $0 >= minimum } ?? max(1, minimum)
    }

    /// About `count` evenly spaced round values covering [lo, hi].
    public static func niceTicks(_ lo: Double, _ hi: Double, count: Int) -> [Double] {
        var (lo, hi) = (lo.isFinite ? lo : 0, hi.isFinite ? hi : 1)
        if hi - lo < 1e-12 { hi = lo + (lo == 0 ? 1 : abs(lo) * 0.1) }
        let raw = (hi - lo) / Double(max(1, count - 1))
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        let start = (lo / step).rounded(.down) * step
        let end = (hi / step).rounded(.up) * step
        return stride(from: start, through: end + step * 1e-9, by: step).map { abs($0) < step * 1e-9 ? 0 : $0 }
    }

    /// Compact numbers for ticks: 3 significant digits, no trailing zeros.
    public static func format(_ v: Double) -> String {
        guard v.isFinite else { return "–" }
        if v == 0 { return "0" }
        let magnitude = abs(v)
        let digits = magnitude >= 100 ? 0 : magnitude >= 10 ? 1 : magnitude >= 1 ? 2 : magnitude >= 0.1 ? 2 : 3
        var s = String(format: "%.\(digits)f", v)
        if s.contains(".") {
            while s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
        }
        return s
    }
}
