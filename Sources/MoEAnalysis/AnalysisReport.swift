import Foundation
import MoECore

/// Everything `moescope analyze` measures, in one value: printed as Markdown, exported as the
/// JSON format "moescope-analysis" (version 1, described in the README). The same report comes
/// from a model run here (`init(model:…)`) and from a recorded routing trace
/// (`init(trace:…)`): both feed one `Accumulator`; what a source's data does not allow is
/// left empty and named, with the reason, in `notAvailable`.
public struct AnalysisReport: Codable, Sendable {
    public var format = "moescope-analysis"
    public var version = 1
    public var router: String
    public var checkpoint: String
    public var randomInit: Bool
    public var tokens: Int
    public var numExperts: Int
    public var topK: Int
    public var layers: [LayerReport]
    /// L × L mutual information (nats) between the layers' top-1 choices.
    public var crossLayerMutualInformation: [[Double]]
    public var domains: [DomainReport]
    /// Mixtral's, OLMoE's and RMoE's own routing measurements, with their published numbers.
    public var paperChecks: PaperChecks
    /// Expert-parallel serving: per device count, each layer's load under contiguous and greedy placement.
    public var placement: [Placement]
    /// The analyses the data does not allow, one line each naming what is missing.
    public var notAvailable: [String]
    /// Where a recorded trace came from (its engine and settings); nil for a model run here.
    public var recordedBy: String?

    public struct Distribution: Codable, Sendable {
        public var mean, p10, p25, median, p75, p90: Double
        /// Quantiles to within the sketch's bin width (exact where a bin's values are equal).
        init(_ sketch: QuantileSketch) {
            mean = sketch.mean
            p10 = sketch.quantile(0.1)
            p25 = sketch.quantile(0.25)
            median = sketch.quantile(0.5)
            p75 = sketch.quantile(0.75)
            p90 = sketch.quantile(0.9)
        }
        private init() { (mean, p10, p25, median, p75, p90) = (0, 0, 0, 0, 0, 0) }
        /// All zeros: the figures' stand-in where a source has no scores (`analyze` refuses figures for a trace).
        static let none = Distribution()
        public var box: BoxSummary { BoxSummary(p10: p10, p25: p25, median: median, p75: p75, p90: p90, mean: mean) }
    }

    public struct TokenCount: Codable, Sendable {
        public var tokenID: Int
        public var text: String
        public var count: Int
        enum CodingKeys: String, CodingKey {
            case tokenID = "token_id"
            case text, count
        }
    }

    public struct LayerReport: Codable, Sendable {
        /// The model's own index of this routed layer.
        public var layer: Int
        /// Routing entropy per token (nats; ln E is the most); nil without router scores.
        public var entropy: Distribution?
        /// Per token: the smallest chosen score minus the largest unchosen one (probability
        /// units); nil without router scores.
        public var selectionMargin: Distribution?
        public var expertShares: [Double]
        public var loadCV: Double
        public var maxViolation: Double
        /// Usage-histogram entropy / ln E.
        public var usageEntropy: Double
        public var innerBalance: Double
        public var outerBalance: Double
        /// Spearman ρ of gate score vs expert output norm, mean over tokens (Closer Look).
        public var gateNormRankCorrelation: Double
        /// How often the top-1 gate is the expert with the largest output norm.
        public var topOneNormAgreement: Double
        /// P(norm rank | gate rank), ranks grouped into at most 32 bins (empty without expert norms).
        public var gateNormRankHistogram: [[Double]]
        /// RMoE's expert similarity (normalised means concatenated). Nil for a model whose
        /// expert weights were too large to read (a large Hugging Face model).
        public var expertSimilarity: [[Double]]?
        public var meanExpertSimilarity: Double?
        /// Closer Look's per-matrix similarity: mean over expert pairs of the flattened gate, up
        /// and down matrices' cosine similarity.
        public var meanGateSimilarity: Double?
        public var meanUpSimilarity: Double?
        public var meanDownSimilarity: Double?
        /// The tokens each expert receives most often (top-k slots).
        public var topTokens: [[TokenCount]]

        enum CodingKeys: String, CodingKey {
            case layer, entropy
            case selectionMargin = "selection_margin"
            case gateNormRankHistogram = "gate_norm_rank_histogram"
            case expertShares = "expert_shares"
            case loadCV = "load_cv"
            case maxViolation = "max_vio"
            case usageEntropy = "usage_entropy"
            case innerBalance = "inner_balance"
            case outerBalance = "outer_balance"
            case gateNormRankCorrelation = "gate_norm_rank_correlation"
            case topOneNormAgreement = "top1_norm_agreement"
            case expertSimilarity = "expert_similarity"
            case meanExpertSimilarity = "mean_expert_similarity"
            case topTokens = "top_tokens"
            case meanGateSimilarity = "mean_gate_similarity"
            case meanUpSimilarity = "mean_up_similarity"
            case meanDownSimilarity = "mean_down_similarity"
        }
    }

    public struct DomainReport: Codable, Sendable {
        public var domain: String
        /// Per layer, the domain's share of slots per expert.
        public var sharesByLayer: [[Double]]
        /// Per layer, the most over-represented expert and its lift (share in domain / overall).
        public var mostSpecific: [SpecificExpert]
        enum CodingKeys: String, CodingKey {
            case domain
            case sharesByLayer = "shares_by_layer"
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

    public static let placementDeviceCounts = [4, 8, 16]

    enum CodingKeys: String, CodingKey {
        case format, version, router, checkpoint, tokens, layers, domains, placement
        case randomInit = "random_init"
        case numExperts = "num_experts"
        case topK = "top_k"
        case crossLayerMutualInformation = "cross_layer_mutual_information"
        case paperChecks = "paper_checks"
        case notAvailable = "not_available"
        case recordedBy = "recorded_by"
    }

    /// What the report is computed from, gathered a block of tokens at a time so that a long
    /// text or a trace larger than memory is never held whole: counts whose size depends on the
    /// model, not the text (`RoutingCounts`), and the few live tokens that carry every expert's
    /// output norm (the "Closer Look" sample), kept whole.
    public struct Accumulator: Sendable {
        public private(set) var counts: RoutingCounts
        public private(set) var normTraces: [RoutingTrace] = []

        /// `expectedTokens`: how many tokens will be added in all (RMoE's per-token estimator
        /// subsamples above a work budget, and picks its stride from this).
        public init(numExperts: Int, topK: Int, layerCount: Int, expectedTokens: Int) {
            counts = RoutingCounts(numExperts: numExperts, topK: topK, layerCount: layerCount, expectedTokens: expectedTokens)
        }

        public init(model: any RoutingModel, expectedTokens: Int) {
            self.init(numExperts: model.numExperts, topK: model.topK, layerCount: model.routedLayerCount, expectedTokens: expectedTokens)
        }

        /// A live model's routing: `traces` follow on from the previous call's of the same
        /// domain in text order.
        public mutating func add(_ traces: [RoutingTrace], domain: String) {
            counts.add(traces, domain: domain)
            normTraces += traces.filter { $0.layers.first?.allExpertOutputNorms != nil }
        }

        /// A window of a live model's routing (`WindowedRouting`), in the same order rule.
        public mutating func add(_ window: RoutedWindow, domain: String) {
            counts.add(window.block, domain: domain)
            if window.hasAllExpertNorms { normTraces += window.traces }
        }

        /// Recorded routing (`RoutingBlock(trace:tokens:)`), in the same order rule.
        public mutating func add(_ block: RoutingBlock, domain: String) { counts.add(block, domain: domain) }
    }

    /// `textsByDomain`: the routed tokens of each domain (one domain, "text", for a single text).
    public init(
        model: any RoutingModel, tokenizer: any TextTokenizer, checkpoint: String, randomInit: Bool,
        tracesByDomain: [(domain: String, traces: [RoutingTrace])], topTokenCount: Int = 5
    ) {
        var accumulated = Accumulator(model: model, expectedTokens: tracesByDomain.reduce(0) { $0 + $1.traces.count })
        for (domain, traces) in tracesByDomain { accumulated.add(traces, domain: domain) }
        self.init(
            model: model, tokenizer: tokenizer, checkpoint: checkpoint, randomInit: randomInit,
            accumulated: accumulated, topTokenCount: topTokenCount)
    }

    public init(
        model: any RoutingModel, tokenizer: any TextTokenizer, checkpoint: String, randomInit: Bool,
        accumulated: Accumulator, topTokenCount: Int = 5
    ) {
        let similarity = ExpertSimilarity(model: model)
        var missing: [String] = []
        if similarity == nil { missing.append("expert weight similarity: the expert weights are too large to read whole") }
        if accumulated.normTraces.isEmpty {
            missing.append("gate vs expert-output norm (Closer Look): no token recorded every expert's output norm")
        }
        self.init(
            router: model.routerID, checkpoint: checkpoint, randomInit: randomInit, routedLayers: model.routedLayers,
            tokenizer: tokenizer, accumulated: accumulated, similarity: similarity,
            perMatrix: model.isSmallEnoughToReadWhole ? ExpertSimilarity.PerMatrix(model: model) : nil,
            missing: missing, recordedBy: nil, topTokenCount: topTokenCount)
    }

    /// A recorded trace's report: `accumulated` holds its blocks (`RoutingTraceFile.forEachBlock`).
    public init(trace: RoutingTraceFile, tokenizer: any TextTokenizer, accumulated: Accumulator, topTokenCount: Int = 5) {
        var missing: [String] = []
        if !accumulated.counts.hasScores {
            missing.append(
                "routing entropy, selection margins, Inner/Outer Balance and RMoE's per-token mutual information: the trace has no router_logits or router_probabilities"
            )
        }
        missing.append("gate vs expert-output norm (Closer Look): needs every expert's output norm, which a trace does not hold")
        missing.append("expert weight similarity: needs the model's weights, not its routing")
        self.init(
            router: "\(trace.family) · \(trace.routingRule)", checkpoint: trace.path, randomInit: false,
            routedLayers: trace.routedLayers, tokenizer: tokenizer, accumulated: accumulated, similarity: nil,
            perMatrix: nil, missing: missing, recordedBy: trace.source, topTokenCount: topTokenCount)
    }

    /// The report of any source: the public initialisers name what their source lacks in `missing`.
    init(
        router: String, checkpoint: String, randomInit: Bool, routedLayers: [Int], tokenizer: any TextTokenizer,
        accumulated: Accumulator, similarity: ExpertSimilarity?, perMatrix: ExpertSimilarity.PerMatrix?,
        missing: [String], recordedBy: String?, topTokenCount: Int
    ) {
        let counts = accumulated.counts
        let layerCount = routedLayers.count
        let norms = NormPreference(traces: accumulated.normTraces)
        self.router = router
        self.checkpoint = checkpoint
        self.randomInit = randomInit
        self.recordedBy = recordedBy
        tokens = counts.tokens
        numExperts = counts.numExperts
        topK = counts.topK
        crossLayerMutualInformation = counts.topOneMutualInformation
        let withScores = counts.hasScores
        layers = (0..<layerCount).map { i in
            let load = counts.layerLoad(i)
            let inner = withScores && counts.logTopRatio[i].count > 0 ? exp(counts.logTopRatio[i].quantile(0.5)) : 0
            return LayerReport(
                layer: routedLayers[i], entropy: withScores ? Distribution(counts.entropy[i]) : nil,
                selectionMargin: withScores ? Distribution(counts.margin[i]) : nil, expertShares: load.shares,
                loadCV: load.coefficientOfVariation, maxViolation: load.maxViolation,
                usageEntropy: load.normalizedUsageEntropy,
                innerBalance: inner, outerBalance: withScores ? counts.topKMass[i].quantile(0.5) : 0,
                gateNormRankCorrelation: norms.meanRankCorrelation.indices.contains(i) ? norms.meanRankCorrelation[i] : 0,
                topOneNormAgreement: norms.topOneAgreement.indices.contains(i) ? norms.topOneAgreement[i] : 0,
                gateNormRankHistogram: norms.rankHistogram.indices.contains(i) ? norms.rankHistogram[i] : [],
                expertSimilarity: similarity?.matrices[i], meanExpertSimilarity: similarity?.meanByLayer[i],
                meanGateSimilarity: perMatrix?.meanGateByLayer[i], meanUpSimilarity: perMatrix?.meanUpByLayer[i],
                meanDownSimilarity: perMatrix?.meanDownByLayer[i],
                topTokens: (0..<counts.numExperts).map { e in
                    counts.tokenExperts.topTokens(layer: i, expert: e, count: topTokenCount).map {
                        TokenCount(tokenID: $0.token, text: tokenizer.displayText(of: $0.token), count: $0.count)
                    }
                })
        }
        let e = counts.numExperts
        domains = counts.domains.map { domain in
            DomainReport(
                domain: domain.domain,
                sharesByLayer: (0..<layerCount).map { LoadBalanceStats(counts: Array(domain.load[$0 * e..<($0 + 1) * e])).shares },
                mostSpecific: (0..<layerCount).map { i in
                    // The expert most over-represented in the domain: its share there over its share overall.
                    let own = LoadBalanceStats(counts: Array(domain.load[i * e..<(i + 1) * e])).shares
                    let overall = counts.layerLoad(i).shares
                    let lifts = zip(own, overall).map { $1 > 0 ? $0 / $1 : 0 }
                    let best = lifts.indices.max { lifts[$0] < lifts[$1] } ?? 0
                    return SpecificExpert(expert: best, lift: lifts.isEmpty ? 0 : lifts[best])
                })
        }
        paperChecks = PaperChecks(
            counts: counts, routedLayers: routedLayers, innerBalance: layers.map(\.innerBalance),
            outerBalance: layers.map(\.outerBalance), topOneMutualInformation: crossLayerMutualInformation)
        placement = Self.placementDeviceCounts.compactMap { g in
            let perLayer = (0..<layerCount).compactMap { l -> PlacementLayer? in
                guard let p = ExpertPlacement(load: counts.layerLoad(l).counts, devices: g) else { return nil }
                return PlacementLayer(
                    layer: routedLayers[l], deviceLoads: p.contiguousLoads, contiguousBalancedness: p.contiguousBalancedness,
                    greedyBalancedness: p.greedyBalancedness, gain: p.gain)
            }
            guard !perLayer.isEmpty else { return nil }
            func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(values.count) }
            return Placement(
                devices: g, layers: perLayer, meanContiguousBalancedness: mean(perLayer.map(\.contiguousBalancedness)),
                meanGreedyBalancedness: mean(perLayer.map(\.greedyBalancedness)), meanGain: mean(perLayer.map(\.gain)))
        }
        var notAvailable = missing
        let skipped = Self.placementDeviceCounts.filter { e % $0 != 0 }
        if !skipped.isEmpty {
            notAvailable.append(
                "expert placement on \(skipped.map(String.init).joined(separator: ", ")) devices: \(e) experts do not divide evenly")
        }
        let vocabulary = counts.tokenExperts
        if vocabulary.isPartial {
            notAvailable.append(
                "top tokens and vocabulary specialisation count \(counts.tokens - vocabulary.uncountedOccurrences) of \(counts.tokens) tokens (one token in \(vocabulary.stride), and at most \(vocabulary.maxDistinctTokens) distinct ids: the work and memory budgets of token × expert counts)"
            )
        }
        self.notAvailable = notAvailable
    }
}

extension AnalysisReport.Accumulator {
    /// A recorded trace streamed through the accumulator a block of tokens at a time (memory:
    /// the counts and one block, never the trace); `progress` gets the tokens done after each
    /// block. The memory the counts will take is checked against the budget first.
    public static func reading(_ trace: RoutingTraceFile, progress: (Int) -> Void = { _ in }) throws -> Self {
        let l = trace.routedLayerCount
        let e = trace.numExperts
        let tables = RoutingCounts.workingBytes(numExperts: e, layers: l)
        let needed = MemoryBudget.sum([
            tables.fixed, tables.perToken.flatMap { MemoryBudget.product([$0, trace.tokenCount]) },
            MemoryBudget.product([l, e, 8, max(1, (1 << 22) / max(1, l * e))]),
        ])
        let available = MemoryBudget.availableBytes
        guard let needed, needed < available / 2 else {
            throw CheckpointError.tooLarge(
                path: trace.path, what: "analysing \(trace.tokenCount) tokens × \(l) layers × \(e) experts", neededBytes: needed,
                availableBytes: available)
        }
        var accumulated = Self(numExperts: e, topK: trace.topK, layerCount: l, expectedTokens: trace.tokenCount)
        var done = 0
        try trace.forEachBlock { block, domain in
            accumulated.add(block, domain: domain)
            done += block.count
            progress(done)
        }
        return accumulated
    }
}
