import Foundation

/// The figures `moescope analyze --figures DIR` writes, each a standalone SVG drawn from an
/// `AnalysisReport` alone (so the figures always show exactly what the report says).
public struct AnalysisFigures: Sendable {
    public let report: AnalysisReport
    /// What was analysed, for the caption: e.g. "held-out corpus split, 8 domains".
    public let textDescription: String
    /// Per-layer small multiples show at most this many layers, evenly spaced, first and last included.
    public static let maxPanels = 12

    public init(report: AnalysisReport, textDescription: String) {
        self.report = report
        self.textDescription = textDescription
    }

    /// Layer indices (into `report.layers`) drawn as panels.
    public var shownLayers: [Int] {
        let n = report.layers.count
        guard n > Self.maxPanels else { return Array(0..<n) }
        let picks = (0..<Self.maxPanels).map { Int((Double($0) * Double(n - 1) / Double(Self.maxPanels - 1)).rounded()) }
        return Array(Set(picks)).sorted()
    }

    var caption: String {
        let noise = report.randomInit ? " · RANDOM INIT: routing is noise" : ""
        return "moescope · model \(report.checkpoint) · router \(report.router) · text: \(textDescription) · \(report.tokens) tokens · "
            + "top-\(report.topK) of \(report.numExperts) experts, \(report.layers.count) routed layers\(noise)"
    }

    private func captionWithLayers(_ indices: [Int]) -> String {
        guard indices.count < report.layers.count else { return caption }
        return caption + " · layers shown: " + indices.map { "L\(report.layers[$0].layer)" }.joined(separator: ", ")
    }

    private var layerLabels: [String] { report.layers.map { "L\($0.layer)" } }
    private var expertLabels: [String] { (0..<report.numExperts).map { "E\($0)" } }

    /// File name → SVG text, in a fixed order.
    public var files: [(name: String, svg: String)] {
        var out: [(String, String)] = [("load.svg", load), ("cross_layer_mi.svg", crossLayerMI)]
        // Figures of router scores are left out, not drawn as zeros, when the routing came without
        // them (a trace that recorded only top-k ids): the report names them in `notAvailable`.
        if report.paperChecks.rmoeMutualInformation.tokensUsed > 0 { out.append(("cross_layer_mi_rmoe.svg", crossLayerMIPerToken)) }
        if report.layers.allSatisfy({ $0.entropy != nil }) { out.append(("entropy.svg", entropy)) }
        if report.layers.allSatisfy({ $0.selectionMargin != nil }) { out.append(("selection_margin.svg", selectionMargin)) }
        out.append(("repetition.svg", repetition))
        if report.topK > 1 && !report.paperChecks.olmoeCoActivation.allPairsMatrices.isEmpty {
            out.append(("coactivation.svg", coActivation))
        }
        if report.domains.count > 1 { out += [("domain_shares.svg", domainShares), ("domain_lift.svg", domainLift)] }
        if report.layers.contains(where: { !$0.gateNormRankHistogram.isEmpty }) { out.append(("gate_vs_norm.svg", gateVersusNorm)) }
        if report.layers.allSatisfy({ $0.expertSimilarity != nil }) {
            out += [("expert_similarity.svg", expertSimilarity), ("expert_similarity_by_depth.svg", similarityByDepth)]
        }
        return out
    }

    /// Writes every figure into `directory` (created if needed); returns the paths written.
    public func write(to directory: String) throws -> [String] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try files.map { name, svg in
            let path = (directory as NSString).appendingPathComponent(name)
            try Data(svg.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
            return path
        }
    }

    // MARK: figures

    var load: String {
        let values = report.layers.map { $0.expertShares.map { $0 * 100 } }
        let uniform = 100 / Double(report.numExperts)
        let scale = ColourScale(
            minimum: 0, maximum: max(uniform * 2, values.flatMap { $0 }.max() ?? 1),
            label: "share of routed slots (%)", ticks: [uniform])
        let panel = HeatmapPanel(
            title: "uniform load = \(Chart.format(uniform)) % per expert", values: values,
            rowLabels: layerLabels, columnLabels: expertLabels, xTitle: "expert", yTitle: "layer",
            cellText: { String(format: "%.1f", $0) })
        return Chart.heatmapFigure(
            title: "Expert load per layer", caption: caption, panels: [panel], scale: scale,
            cellTarget: (560, 560))
    }

    var crossLayerMI: String {
        miFigure(
            report.crossLayerMutualInformation, title: "Cross-layer dependence: mutual information of top-1 choices",
            panelTitle: "I(top-1 at Li; top-1 at Lj) · diagonal = entropy of the top-1 choice")
    }

    var crossLayerMIPerToken: String {
        let check = report.paperChecks.rmoeMutualInformation
        return miFigure(
            check.perToken, title: "Cross-layer mutual information, RMoE's per-token estimator",
            panelTitle: "binned probability vectors (\(check.bins) bins), mean over \(check.tokensUsed) tokens")
    }

    /// The diagonal (a layer with itself) is far above every pair, so the scale spans the
    /// off-diagonal values and the diagonal saturates — otherwise the pairs would all look alike.
    private func miFigure(_ matrix: [[Double]], title: String, panelTitle: String) -> String {
        var offDiagonal: [Double] = []
        for i in matrix.indices { for j in matrix.indices where i != j { offDiagonal.append(matrix[i][j]) } }
        let scale = ColourScale(
            minimum: 0, maximum: max(1e-6, offDiagonal.max() ?? 1),
            label: "MI (nats), diagonal saturated")
        let panel = HeatmapPanel(
            title: panelTitle, values: matrix, rowLabels: layerLabels, columnLabels: layerLabels,
            xTitle: "layer j", yTitle: "layer i", cellText: { String(format: "%.2f", $0) })
        return Chart.heatmapFigure(
            title: title, caption: caption, panels: [panel], scale: scale, cellTarget: (480, 480),
            squareCells: true)
    }

    var entropy: String {
        let e = Double(report.numExperts)
        let k = Double(report.topK)
        return Chart.boxPlotFigure(
            title: "Routing entropy per layer", caption: caption, categories: layerLabels,
            boxes: report.layers.map { $0.entropy?.box ?? AnalysisReport.Distribution.none.box },
            xTitle: "layer", yTitle: "entropy of the router's softmax (nats)",
            references: [
                ReferenceLine(value: log(e), label: "ln \(report.numExperts): uniform over all experts"),
                ReferenceLine(value: log(k), label: "ln \(report.topK): even over \(report.topK) experts"),
            ])
    }

    var selectionMargin: String {
        Chart.boxPlotFigure(
            title: "Selection margin per layer: k-th chosen minus best unchosen score", caption: caption,
            categories: layerLabels, boxes: report.layers.map { $0.selectionMargin?.box ?? AnalysisReport.Distribution.none.box },
            xTitle: "layer",
            yTitle: "margin (router probability)", references: [ReferenceLine(value: 0, label: "tie")])
    }

    var repetition: String {
        let check = report.paperChecks.mixtralRepetition
        let first = BarPanel(
            title: "same first choice as the previous token", yTitle: "share of token pairs",
            categories: layerLabels, values: check.layers.map(\.firstChoice),
            references: [ReferenceLine(value: check.randomFirstChoice, label: "random: 1/\(report.numExperts)")])
        let any = BarPanel(
            title: "top-\(report.topK) sets overlap", yTitle: "share of token pairs",
            categories: layerLabels, values: check.layers.map(\.anyOverlap),
            references: [
                ReferenceLine(
                    value: check.randomAnyOverlap,
                    label: "random: \(Chart.format(check.randomAnyOverlap * 100)) %")
            ])
        return Chart.barFigure(
            title: "Consecutive tokens routed alike (Mixtral, Table 5)", caption: caption,
            panels: [first, any], columns: 2, seriesLabel: "share of consecutive pairs", xTitle: "layer")
    }

    var coActivation: String {
        let shown = shownLayers
        let check = report.paperChecks.olmoeCoActivation
        let panels = shown.map { i in
            HeatmapPanel(
                title: "L\(report.layers[i].layer)", values: check.allPairsMatrices[i].map { $0.map { $0 * 100 } },
                rowLabels: expertLabels, columnLabels: expertLabels, xTitle: "expert j (also chosen)", yTitle: "expert i",
                cellText: { String(format: "%.0f", $0) })
        }
        let random = check.randomAllPairs * 100
        let maximum = panels.flatMap { $0.values.flatMap { $0 } }.max() ?? 1
        let scale = ColourScale(minimum: 0, maximum: max(random * 2, maximum), label: "P(j chosen | i chosen) (%)", ticks: [random])
        return Chart.heatmapFigure(
            title: "Expert co-activation (OLMoE): random top-\(report.topK) = \(Chart.format(random)) %", caption: captionWithLayers(shown),
            panels: panels, scale: scale, cellTarget: (320, 320), squareCells: true)
    }

    var domainShares: String {
        let shown = shownLayers
        let panels = shown.map { i in
            HeatmapPanel(
                title: "L\(report.layers[i].layer)", values: report.domains.map { $0.sharesByLayer[i].map { $0 * 100 } },
                rowLabels: report.domains.map(\.domain), columnLabels: expertLabels, xTitle: "expert", yTitle: "domain",
                cellText: { String(format: "%.0f", $0) })
        }
        let maximum = panels.flatMap { $0.values.flatMap { $0 } }.max() ?? 1
        let scale = ColourScale(minimum: 0, maximum: max(1, maximum), label: "share of the domain's slots (%)")
        return Chart.heatmapFigure(
            title: "Expert share per domain (uniform = \(Chart.format(100 / Double(report.numExperts))) %)",
            caption: captionWithLayers(shown), panels: panels, scale: scale,
            cellTarget: panelTarget)
    }

    var domainLift: String {
        let shown = shownLayers
        let panels = shown.map { i in
            let overall = report.layers[i].expertShares
            let values = report.domains.map { d in
                zip(d.sharesByLayer[i], overall).map { own, all in
                    all > 0 && own > 0 ? max(-2, min(2, log2(own / all))) : (all > 0 ? -2 : 0)
                }
            }
            return HeatmapPanel(
                title: "L\(report.layers[i].layer)", values: values, rowLabels: report.domains.map(\.domain),
                columnLabels: expertLabels, xTitle: "expert", yTitle: "domain",
                cellText: { String(format: "%.1f", pow(2, $0)) })
        }
        // cividis, not viridis: a ratio around ×1, so it should not read like the share figures.
        let scale = ColourScale(
            minimum: -2, maximum: 2, label: "lift = domain share / overall share", map: .cividis,
            tickLabel: { "×" + Chart.format(pow(2, $0)) })
        return Chart.heatmapFigure(
            title: "Domain specialisation: lift of each expert per domain (×1 = no preference, log scale)",
            caption: captionWithLayers(shown), panels: panels, scale: scale,
            cellTarget: panelTarget)
    }

    var gateVersusNorm: String {
        let shown = shownLayers.filter { !report.layers[$0].gateNormRankHistogram.isEmpty }
        let bins = report.layers[shown.first ?? 0].gateNormRankHistogram.count
        let labels = (0..<bins).map { "\($0 * report.numExperts / max(1, bins) + 1)" }
        let panels = shown.map { i in
            let l = report.layers[i]
            return HeatmapPanel(
                title:
                    "L\(l.layer) · ρ \(String(format: "%.2f", l.gateNormRankCorrelation)) · top-1 agree \(String(format: "%.0f", l.topOneNormAgreement * 100)) %",
                values: l.gateNormRankHistogram.map { $0.map { $0 * 100 } }, rowLabels: labels, columnLabels: labels,
                xTitle: "rank of ‖expert output‖", yTitle: "rank of gate score", cellText: { String(format: "%.0f", $0) })
        }
        let uniform = 100 / Double(max(1, bins))
        let maximum = panels.flatMap { $0.values.flatMap { $0 } }.max() ?? 1
        let scale = ColourScale(minimum: 0, maximum: max(uniform * 2, maximum), label: "P(norm rank | gate rank) (%)", ticks: [uniform])
        let grouped = bins < report.numExperts ? " (ranks in \(bins) groups)" : ""
        return Chart.heatmapFigure(
            title: "Gate score rank vs expert-output norm rank\(grouped); diagonal = router follows norms",
            caption: captionWithLayers(shown), panels: panels, scale: scale,
            cellTarget: (240, 240), squareCells: true)
    }

    var expertSimilarity: String {
        let shown = shownLayers
        let matrices = shown.map { report.layers[$0].expertSimilarity ?? [] }
        var offDiagonal: [Double] = []
        for m in matrices { for i in m.indices { for j in m.indices where i != j { offDiagonal.append(m[i][j]) } } }
        let scale = ColourScale(
            minimum: min(0, offDiagonal.min() ?? 0), maximum: max(0.05, offDiagonal.max() ?? 1),
            label: "cosine (diagonal 1, saturated)")
        let panels = zip(shown, matrices).map { i, m in
            HeatmapPanel(
                title: "L\(report.layers[i].layer) · mean \(String(format: "%.2f", report.layers[i].meanExpertSimilarity ?? 0))",
                values: m, rowLabels: expertLabels, columnLabels: expertLabels, xTitle: "expert", yTitle: "expert",
                cellText: { String(format: "%.2f", $0) })
        }
        return Chart.heatmapFigure(
            title: "Expert weight similarity per layer (Closer Look into MoE)", caption: captionWithLayers(shown),
            panels: panels, scale: scale, cellTarget: (320, 320), squareCells: true)
    }

    var similarityByDepth: String {
        let panel = BarPanel(
            title: "mean cosine similarity of distinct expert pairs", yTitle: "cosine similarity",
            categories: layerLabels, values: report.layers.map { $0.meanExpertSimilarity ?? .nan })
        return Chart.barFigure(
            title: "Expert similarity by depth (Lo et al.: diversity rises with depth)", caption: caption,
            panels: [panel], columns: 1, seriesLabel: "mean similarity", xTitle: "layer")
    }

    // MARK: layout helpers

    private var panelTarget: (width: Double, height: Double) {
        (Double(min(520, max(240, report.numExperts * 4))), Double(min(200, max(80, report.domains.count * 22))))
    }
}

/// `moescope compare --figures DIR`: the router comparison as bar charts, one panel per metric,
/// bars coloured by router. Each metric may carry an interval per router (e.g. a bootstrap
/// 95 % CI) that is drawn as an error bar.
public struct ComparisonFigure: Sendable {
    public struct Metric: Sendable {
        public var name: String
        public var unit: String
        public var values: [Double]
        public var intervals: [ClosedRange<Double>?]?
        public init(name: String, unit: String, values: [Double], intervals: [ClosedRange<Double>?]? = nil) {
            self.name = name
            self.unit = unit
            self.values = values
            self.intervals = intervals
        }
    }

    public var routers: [String]
    public var metrics: [Metric]
    public var caption: String

    public init(routers: [String], metrics: [Metric], caption: String) {
        self.routers = routers
        self.metrics = metrics
        self.caption = caption
    }

    public var svg: String {
        let panels = metrics.map {
            BarPanel(title: $0.name, yTitle: $0.unit, categories: routers, values: $0.values, intervals: $0.intervals)
        }
        let intervals = metrics.contains { $0.intervals?.contains { $0 != nil } ?? false }
        return Chart.barFigure(
            title: "Router comparison" + (intervals ? " (error bars: intervals)" : ""), caption: caption,
            panels: panels, columns: 3)
    }

    public func write(to directory: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = (directory as NSString).appendingPathComponent("comparison.svg")
        try Data(svg.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        return path
    }
}
