import Foundation
import MoECore

/// What `moescope analyze --trace` reports on a recorded trace: printed as Markdown, exported as
/// the JSON format "moescope-trace-analysis" (version 1).
public struct TraceAnalysisReport: Codable, Sendable {
    public var format = "moescope-trace-analysis"
    public var version = 1
    public var trace: String
    public var family: String
    public var routingRule: String
    public var source: String
    public var tokens: Int
    public var documents: Int
    public var numExperts: Int
    public var topK: Int
    public var layers: [Layer]
    public var domains: [Domain]
    public var placement: [Placement]
    /// The analyses the trace's data does not allow, one line each.
    public var notAvailable: [String]
    public var detailLayer: Int
    public var seconds: Double

    public struct Quantiles: Codable, Sendable {
        public var mean: Double?
        public var p10, median, p90: Double
    }

    public struct Layer: Codable, Sendable {
        public var layer: Int
        public var expertShares: [Double]
        public var loadCV, maxViolation, usageEntropy: Double
        /// Routing entropy (nats) and selection margin; nil without logits or probabilities.
        public var entropy: Quantiles?
        public var selectionMargin: Quantiles?
        /// The pair of experts chosen together most above chance: P(j | i) / P(j).
        public var strongestPair: [Double]?
        /// I(top-1 here; top-1 at the next routed layer), nats; nil at the last layer.
        public var mutualInformationWithNext: Double?
        enum CodingKeys: String, CodingKey {
            case layer, entropy
            case expertShares = "expert_shares"
            case loadCV = "load_cv"
            case maxViolation = "max_vio"
            case usageEntropy = "usage_entropy"
            case selectionMargin = "selection_margin"
            case strongestPair = "strongest_pair"
            case mutualInformationWithNext = "mutual_information_with_next"
        }
    }

    public struct Domain: Codable, Sendable {
        public var domain: String
        public var tokens: Int
        /// Per layer: the expert whose share of this domain's slots most exceeds its overall share.
        public var mostSpecific: [SpecificExpert]
        enum CodingKeys: String, CodingKey {
            case domain, tokens
            case mostSpecific = "most_specific"
        }
    }

    public struct SpecificExpert: Codable, Sendable {
        public var expert: Int
        public var lift: Double
    }

    public struct Placement: Codable, Sendable {
        public var devices: Int
        /// Per layer: each device's slots under contiguous placement, and the two balancednesses.
        public var layers: [PlacementLayer]
        public var meanContiguousBalancedness: Double
        public var meanGreedyBalancedness: Double
        public var meanGain: Double
        enum CodingKeys: String, CodingKey {
            case devices, layers
            case meanContiguousBalancedness = "mean_contiguous_balancedness"
            case meanGreedyBalancedness = "mean_greedy_balancedness"
            case meanGain = "mean_gain"
        }
    }

    public struct PlacementLayer: Codable, Sendable {
        public var layer: Int
        public var deviceLoads: [Int]
        public var contiguousBalancedness: Double
        public var greedyBalancedness: Double
        public var gain: Double
        enum CodingKeys: String, CodingKey {
            case layer, gain
            case deviceLoads = "device_loads"
            case contiguousBalancedness = "contiguous_balancedness"
            case greedyBalancedness = "greedy_balancedness"
        }
    }

    enum CodingKeys: String, CodingKey {
        case format, version, trace, family, source, tokens, documents, layers, domains, placement, seconds
        case routingRule = "routing_rule"
        case numExperts = "num_experts"
        case topK = "top_k"
        case notAvailable = "not_available"
        case detailLayer = "detail_layer"
    }

    public static let deviceCounts = [4, 8, 16]

    public init(trace: RoutingTraceFile, analysis: TraceAnalysis, detailLayer: Int, seconds: Double) {
        self.trace = trace.path
        family = trace.family
        routingRule = trace.routingRule
        source = trace.source
        tokens = analysis.tokens
        documents = trace.documentCount
        numExperts = trace.numExperts
        topK = trace.topK
        self.detailLayer = trace.routedLayers[detailLayer]
        self.seconds = seconds
        let layerCount = trace.routedLayerCount
        layers = (0..<layerCount).map { i in
            let stats = analysis.loadStats(layer: i)
            let entropy =
                analysis.hasScores
                ? Quantiles(
                    mean: analysis.meanEntropy(layer: i), p10: analysis.entropyQuantile(layer: i, 0.1),
                    median: analysis.entropyQuantile(layer: i, 0.5), p90: analysis.entropyQuantile(layer: i, 0.9)) : nil
            let margin =
                analysis.hasScores
                ? Quantiles(
                    mean: nil, p10: analysis.marginQuantile(layer: i, 0.1), median: analysis.marginQuantile(layer: i, 0.5),
                    p90: analysis.marginQuantile(layer: i, 0.9)) : nil
            return Layer(
                layer: trace.routedLayers[i], expertShares: stats.shares, loadCV: stats.coefficientOfVariation,
                maxViolation: stats.maxViolation, usageEntropy: stats.normalizedUsageEntropy, entropy: entropy, selectionMargin: margin,
                strongestPair: analysis.strongestPair(layer: i).map { [Double($0.i), Double($0.j), $0.lift] },
                mutualInformationWithNext: i + 1 < layerCount ? analysis.adjacentMutualInformation(i) : nil)
        }
        domains = analysis.domainOrder.map { domain in
            let counts = analysis.domainLoad[domain]!
            return Domain(
                domain: domain, tokens: counts[0].reduce(0, +) / max(1, trace.topK),
                mostSpecific: (0..<layerCount).map { l in
                    let overall = analysis.loadStats(layer: l).shares
                    let own = LoadBalanceStats(counts: counts[l]).shares
                    var best = SpecificExpert(expert: 0, lift: 0)
                    for e in 0..<trace.numExperts where overall[e] > 0 {
                        let lift = own[e] / overall[e]
                        if lift > best.lift { best = SpecificExpert(expert: e, lift: lift) }
                    }
                    return best
                })
        }
        placement = Self.deviceCounts.compactMap { g in
            let perLayer = (0..<layerCount).compactMap { l -> PlacementLayer? in
                guard let p = ExpertPlacement(load: analysis.load[l], devices: g) else { return nil }
                return PlacementLayer(
                    layer: trace.routedLayers[l], deviceLoads: p.contiguousLoads, contiguousBalancedness: p.contiguousBalancedness,
                    greedyBalancedness: p.greedyBalancedness, gain: p.gain)
            }
            guard !perLayer.isEmpty else { return nil }
            func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(values.count) }
            return Placement(
                devices: g, layers: perLayer, meanContiguousBalancedness: mean(perLayer.map(\.contiguousBalancedness)),
                meanGreedyBalancedness: mean(perLayer.map(\.greedyBalancedness)), meanGain: mean(perLayer.map(\.gain)))
        }
        var missing: [String] = []
        if !analysis.hasScores {
            missing.append(
                "routing entropy, selection margins, Inner/Outer balance: the trace has no router_logits or router_probabilities")
        }
        missing.append("gate vs expert-norm (Closer Look): needs every expert's output norm, which a trace does not hold")
        missing.append("expert weight similarity: needs the model's weights, not its routing")
        let skipped = Self.deviceCounts.filter { trace.numExperts % $0 != 0 }
        if !skipped.isEmpty {
            missing.append(
                "placement on \(skipped.map(String.init).joined(separator: ", ")) devices: \(trace.numExperts) experts do not divide evenly"
            )
        }
        notAvailable = missing
    }

    public var markdown: String {
        func f(_ v: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)f", v) }
        var out: [String] = []
        out.append("# Routing analysis of a recorded trace · \(family) · \(trace)")
        out.append(
            "\n\(tokens) tokens in \(documents) document(s) · top-\(topK) of \(numExperts) experts · \(layers.count) routed layers · rule: \(routingRule) · source: \(source)\n"
        )
        out.append("## Load, balance and entropy per layer\n")
        out.append(
            "| Layer | Load CV | MaxVio | Usage entropy | Entropy mean | p10 | median | p90 | Margin median | Top pair (lift) | MI with next |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        for l in layers {
            let e = l.entropy
            let pair = l.strongestPair.map { "E\(Int($0[0]))+E\(Int($0[1])) ×\(f($0[2], 2))" } ?? "—"
            out.append(
                "| L\(l.layer) | \(f(l.loadCV)) | \(f(l.maxViolation)) | \(f(l.usageEntropy)) | \(e?.mean.map { f($0) } ?? "—") | \(e.map { f($0.p10) } ?? "—") | \(e.map { f($0.median) } ?? "—") | \(e.map { f($0.p90) } ?? "—") | \(l.selectionMargin.map { f($0.median) } ?? "—") | \(pair) | \(l.mutualInformationWithNext.map { f($0) } ?? "—") |"
            )
        }
        if let detail = layers.first(where: { $0.layer == detailLayer }) {
            out.append("\n## Expert utilisation at L\(detail.layer) (share of routed slots, %)\n")
            let perRow = 16
            for start in stride(from: 0, to: numExperts, by: perRow) {
                let ids = start..<min(numExperts, start + perRow)
                out.append("| " + ids.map { "E\($0)" }.joined(separator: " | ") + " |")
                out.append("|" + String(repeating: "---:|", count: ids.count))
                out.append("| " + ids.map { f(detail.expertShares[$0] * 100, 2) }.joined(separator: " | ") + " |")
            }
        }
        if domains.count > 1 {
            out.append("\n## Domain specialisation: most over-represented expert per layer (lift = domain share / overall share)\n")
            out.append("| Domain | tokens | " + layers.map { "L\($0.layer)" }.joined(separator: " | ") + " |")
            out.append("|---|---:|" + String(repeating: "---|", count: layers.count))
            for d in domains {
                out.append(
                    "| \(d.domain) | \(d.tokens) | " + d.mostSpecific.map { "E\($0.expert) ×\(f($0.lift, 2))" }.joined(separator: " | ")
                        + " |")
            }
        }
        out.append("\n## Expert placement for expert-parallel serving\n")
        out.append(
            "Balancedness = mean device load / max device load (1 = even), contiguous placement (E/G experts per device in id order) vs a greedy re-placement (heaviest expert first onto the least-loaded device with a free slot); gain = contiguous max / greedy max.\n"
        )
        out.append("| Devices | Contiguous balancedness (mean) | worst layer | Greedy balancedness (mean) | Gain (mean) |")
        out.append("|---:|---:|---|---:|---:|")
        for p in placement {
            let worst = p.layers.min { $0.contiguousBalancedness < $1.contiguousBalancedness }!
            out.append(
                "| \(p.devices) | \(f(p.meanContiguousBalancedness)) | L\(worst.layer): \(f(worst.contiguousBalancedness)) | \(f(p.meanGreedyBalancedness)) | ×\(f(p.meanGain)) |"
            )
        }
        if let p = placement.first(where: { $0.devices == 8 }) ?? placement.first,
            let row = p.layers.first(where: { $0.layer == detailLayer })
        {
            out.append(
                "\nSlots per device at L\(row.layer), \(p.devices) devices, contiguous: "
                    + row.deviceLoads.map(String.init).joined(separator: " · "))
        }
        out.append("\n## Not available from this trace\n")
        for line in notAvailable { out.append("- \(line)") }
        return out.joined(separator: "\n")
    }
}
