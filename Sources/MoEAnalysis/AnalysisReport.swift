import MoECore

/// Everything `moescope analyze` measures, in one value: printed as Markdown, exported as the
/// JSON format "moescope-analysis" (version 1, described in the README).
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

    public struct Distribution: Codable, Sendable {
        public var mean, p10, p25, median, p75, p90: Double
        init(_ values: [Double]) {
            let sorted = values.sorted()
            func quantile(_ q: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(q * Double(sorted.count - 1) + 0.5))] }
            mean = values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count)
            p10 = quantile(0.1); p25 = quantile(0.25); median = quantile(0.5); p75 = quantile(0.75); p90 = quantile(0.9)
        }
        public var box: BoxSummary { BoxSummary(p10: p10, p25: p25, median: median, p75: p75, p90: p90, mean: mean) }
    }

    public struct TokenCount: Codable, Sendable {
        public var tokenID: Int
        public var text: String
        public var count: Int
        enum CodingKeys: String, CodingKey { case tokenID = "token_id", text, count }
    }

    public struct LayerReport: Codable, Sendable {
        /// The model's own index of this routed layer.
        public var layer: Int
        /// Routing entropy per token (nats; ln E is the most).
        public var entropy: Distribution
        /// Per token: the smallest chosen score minus the largest unchosen one (probability units).
        public var selectionMargin: Distribution
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
            case layer, entropy, selectionMargin = "selection_margin"
            case gateNormRankHistogram = "gate_norm_rank_histogram"
            case expertShares = "expert_shares", loadCV = "load_cv", maxViolation = "max_vio", usageEntropy = "usage_entropy"
            case innerBalance = "inner_balance", outerBalance = "outer_balance"
            case gateNormRankCorrelation = "gate_norm_rank_correlation", topOneNormAgreement = "top1_norm_agreement"
            case expertSimilarity = "expert_similarity", meanExpertSimilarity = "mean_expert_similarity", topTokens = "top_tokens"
            case meanGateSimilarity = "mean_gate_similarity", meanUpSimilarity = "mean_up_similarity"
            case meanDownSimilarity = "mean_down_similarity"
        }
    }

    public struct DomainReport: Codable, Sendable {
        public var domain: String
        /// Per layer, the domain's share of slots per expert.
        public var sharesByLayer: [[Double]]
        /// Per layer, the most over-represented expert and its lift (share in domain / overall).
        public var mostSpecific: [SpecificExpert]
        enum CodingKeys: String, CodingKey { case domain, sharesByLayer = "shares_by_layer", mostSpecific = "most_specific" }
    }

    public struct SpecificExpert: Codable, Sendable {
        public var expert: Int
        public var lift: Double
    }

    enum CodingKeys: String, CodingKey {
        case format, version, router, checkpoint, tokens, layers, domains
        case randomInit = "random_init", numExperts = "num_experts", topK = "top_k"
        case crossLayerMutualInformation = "cross_layer_mutual_information", paperChecks = "paper_checks"
    }

    /// What the report is computed from, gathered a batch of traces at a time so that a long
    /// text never holds all its traces at once: only those that carry every expert's output
    /// norm (the "Closer Look" sample) are kept whole.
    public struct Accumulator: Sendable {
        public private(set) var summary: RoutingSummary
        public private(set) var specialisation: Specialisation
        public private(set) var normTraces: [RoutingTrace] = []
        public private(set) var paperCounts: PaperChecks.Counts

        /// `expectedTokens`: how many traces will be added in all (RMoE's per-token estimator
        /// subsamples above a work budget, and picks its stride from this).
        public init(model: any RoutingModel, expectedTokens: Int) {
            summary = RoutingSummary(numLayers: model.routedLayerCount, numExperts: model.numExperts)
            specialisation = Specialisation(numLayers: model.routedLayerCount, numExperts: model.numExperts)
            paperCounts = PaperChecks.Counts(
                numExperts: model.numExperts, topK: model.topK, layerCount: model.routedLayerCount,
                expectedTokens: expectedTokens)
        }

        /// `traces` follow on from the previous call's in text order; the same domain as the
        /// call before continues that domain's text.
        public mutating func add(_ traces: [RoutingTrace], domain: String) {
            summary.add(traces)
            specialisation.add(traces, domain: domain)
            normTraces += traces.filter { $0.layers.first?.allExpertOutputNorms != nil }
            paperCounts.add(traces, domain: domain)
        }
    }

    /// `textsByDomain`: the routed tokens of each domain (one domain, "text", for a single text).
    public init(model: any RoutingModel, tokenizer: any TextTokenizer, checkpoint: String, randomInit: Bool,
                tracesByDomain: [(domain: String, traces: [RoutingTrace])], topTokenCount: Int = 5) {
        var accumulated = Accumulator(model: model, expectedTokens: tracesByDomain.reduce(0) { $0 + $1.traces.count })
        for (domain, traces) in tracesByDomain { accumulated.add(traces, domain: domain) }
        self.init(model: model, tokenizer: tokenizer, checkpoint: checkpoint, randomInit: randomInit,
                  accumulated: accumulated, topTokenCount: topTokenCount)
    }

    public init(model: any RoutingModel, tokenizer: any TextTokenizer, checkpoint: String, randomInit: Bool,
                accumulated: Accumulator, topTokenCount: Int = 5) {
        let layerCount = model.routedLayerCount
        let (summary, specialisation) = (accumulated.summary, accumulated.specialisation)
        let norms = NormPreference(traces: accumulated.normTraces)
        let similarity = ExpertSimilarity(model: model)
        let perMatrix = model.isSmallEnoughToReadWhole ? ExpertSimilarity.PerMatrix(model: model) : nil
        router = model.routerID
        self.checkpoint = checkpoint
        self.randomInit = randomInit
        tokens = summary.tokenCount
        numExperts = model.numExperts
        topK = model.topK
        crossLayerMutualInformation = summary.crossLayerMutualInformation
        layers = (0..<layerCount).map { i in
            LayerReport(
                layer: model.routedLayers[i], entropy: Distribution(summary.entropies[i]),
                selectionMargin: Distribution(summary.selectionMargins[i]), expertShares: summary.load[i].shares,
                loadCV: summary.load[i].coefficientOfVariation, maxViolation: summary.load[i].maxViolation,
                usageEntropy: summary.load[i].normalizedUsageEntropy,
                innerBalance: median(summary.topRatios[i]), outerBalance: median(summary.topKMass[i]),
                gateNormRankCorrelation: norms.meanRankCorrelation.indices.contains(i) ? norms.meanRankCorrelation[i] : 0,
                topOneNormAgreement: norms.topOneAgreement.indices.contains(i) ? norms.topOneAgreement[i] : 0,
                gateNormRankHistogram: norms.rankHistogram.indices.contains(i) ? norms.rankHistogram[i] : [],
                expertSimilarity: similarity?.matrices[i], meanExpertSimilarity: similarity?.meanByLayer[i],
                meanGateSimilarity: perMatrix?.meanGateByLayer[i], meanUpSimilarity: perMatrix?.meanUpByLayer[i],
                meanDownSimilarity: perMatrix?.meanDownByLayer[i],
                topTokens: (0..<model.numExperts).map { e in
                    specialisation.topTokens(layer: i, expert: e, count: topTokenCount).map {
                        TokenCount(tokenID: $0.token, text: tokenizer.displayText(of: $0.token), count: $0.count)
                    }
                })
        }
        domains = specialisation.domains.map { domain in
            DomainReport(domain: domain,
                         sharesByLayer: (0..<layerCount).map { specialisation.shares(domain: domain, layer: $0) },
                         mostSpecific: (0..<layerCount).map {
                             let best = specialisation.mostSpecificExpert(domain: domain, layer: $0)
                             return SpecificExpert(expert: best.expert, lift: best.lift)
                         })
        }
        paperChecks = PaperChecks(counts: accumulated.paperCounts,
                                  routedLayers: model.routedLayers, innerBalance: layers.map(\.innerBalance),
                                  outerBalance: layers.map(\.outerBalance), topOneMutualInformation: crossLayerMutualInformation)
    }
}
