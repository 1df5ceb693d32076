import Foundation
import MoECore

/// The routing measurements three papers published, computed the papers' way on moescope's
/// routing, with the published numbers (where we found them) beside ours.
///
/// - Mixtral (Jiang et al. 2024, Table 5): consecutive tokens routed to the same expert.
/// - OLMoE (Muennighoff et al. 2024, §5 and its released `scripts/run_moe_analysis.py`):
///   expert co-activation, vocabulary specialisation, domain specialisation.
/// - RMoE (Qiu et al. 2024, appendix A.4 and Table 8): per-token cross-layer mutual
///   information, Inner/Outer Balance.
public struct PaperChecks: Codable, Sendable {
    public var mixtralRepetition: ConsecutiveRepetitionCheck
    public var olmoeCoActivation: CoActivationCheck
    public var olmoeVocabularySpecialisation: VocabularySpecialisationCheck
    public var olmoeDomainSpecialisation: DomainSpecialisationCheck
    public var rmoeMutualInformation: RMoEMutualInformationCheck
    public var rmoeBalance: RMoEBalanceCheck

    enum CodingKeys: String, CodingKey {
        case mixtralRepetition = "mixtral_repetition"
        case olmoeCoActivation = "olmoe_coactivation"
        case olmoeVocabularySpecialisation = "olmoe_vocabulary_specialisation"
        case olmoeDomainSpecialisation = "olmoe_domain_specialisation"
        case rmoeMutualInformation = "rmoe_mutual_information"
        case rmoeBalance = "rmoe_balance"
    }

    /// `counts`: the routing gathered so far (`RoutingCounts.add`, a block of tokens at a time);
    /// `innerBalance`/`outerBalance`: the report's per-layer rows;
    /// `topOneMutualInformation`: moescope's L × L top-1 estimator, set beside RMoE's.
    public init(
        counts: RoutingCounts, routedLayers: [Int], innerBalance: [Double], outerBalance: [Double],
        topOneMutualInformation: [[Double]]
    ) {
        mixtralRepetition = ConsecutiveRepetitionCheck(counts: counts, routedLayers: routedLayers)
        olmoeCoActivation = CoActivationCheck(counts: counts, routedLayers: routedLayers)
        olmoeVocabularySpecialisation = VocabularySpecialisationCheck(
            counts: counts.tokenExperts, numExperts: counts.numExperts, topK: counts.topK, routedLayers: routedLayers)
        olmoeDomainSpecialisation = DomainSpecialisationCheck(counts: counts, routedLayers: routedLayers)
        rmoeMutualInformation = RMoEMutualInformationCheck(sums: counts.perTokenMutualInformation, topOne: topOneMutualInformation)
        rmoeBalance = RMoEBalanceCheck(
            routedLayers: routedLayers, inner: innerBalance, outer: outerBalance,
            numExperts: counts.numExperts, topK: counts.topK)
    }
}

// MARK: - Mixtral Table 5: consecutive-token repetition

/// Share of consecutive token pairs (i, i+1) in a text whose routing repeats at a layer.
public struct RepetitionRate: Codable, Sendable, Equatable {
    public var layer: Int
    /// Same first-choice expert (Mixtral's "First choice").
    public var firstChoice: Double
    /// The two top-k sets share at least one expert (Mixtral's "First or second choice" at k = 2).
    public var anyOverlap: Double
    public var pairs: Int
    enum CodingKeys: String, CodingKey {
        case layer
        case firstChoice = "first_choice"
        case anyOverlap = "any_overlap"
        case pairs
    }
}

public struct ConsecutiveRepetitionCheck: Codable, Sendable {
    public var definition = """
        Jiang et al. 2024 (Mixtral of Experts), Table 5: the proportion of times token i and token i+1 of a text get \
        the same expert — the same first choice, or the same expert anywhere in the two top-k sets ("first or second \
        choice" at k = 2). Pairs never straddle a context window.
        """
    /// 1/E: the first-choice rate of routing chosen uniformly at random.
    public var randomFirstChoice: Double
    /// 1 − C(E−k, k)/C(E, k): the chance two random top-k sets overlap (≈ 46 % at 8 experts, top-2).
    public var randomAnyOverlap: Double
    public var layers: [RepetitionRate]
    public var domains: [DomainRates]
    public var published = MixtralTable5()

    public struct DomainRates: Codable, Sendable {
        public var domain: String
        public var layers: [RepetitionRate]
    }

    enum CodingKeys: String, CodingKey {
        case definition, layers, domains, published
        case randomFirstChoice = "random_first_choice"
        case randomAnyOverlap = "random_any_overlap"
    }

    init(counts: RoutingCounts, routedLayers: [Int]) {
        randomFirstChoice = 1 / Double(counts.numExperts)
        randomAnyOverlap = Self.randomOverlap(experts: counts.numExperts, k: counts.topK)
        var total = [(first: Int, overlap: Int, pairs: Int)](repeating: (0, 0, 0), count: routedLayers.count)
        domains = counts.domains.map { domain in
            let perLayer = routedLayers.indices.map { i in
                (first: domain.sameFirstChoice[i], overlap: domain.overlapping[i], pairs: domain.pairs[i])
            }
            for (i, c) in perLayer.enumerated() {
                total[i].first += c.first
                total[i].overlap += c.overlap
                total[i].pairs += c.pairs
            }
            return DomainRates(domain: domain.domain, layers: Self.rates(perLayer, routedLayers: routedLayers))
        }
        layers = Self.rates(total, routedLayers: routedLayers)
    }

    /// Whether `current` repeats `previous` (the routing of the token before it, same layer).
    public static func repeats(previous: LayerRouting, current: LayerRouting) -> (firstChoice: Bool, anyOverlap: Bool) {
        (previous.topExpert == current.topExpert, current.experts.contains { previous.experts.contains($0) })
    }

    static func rates(_ counts: [(first: Int, overlap: Int, pairs: Int)], routedLayers: [Int]) -> [RepetitionRate] {
        zip(routedLayers, counts).map { layer, c in
            RepetitionRate(
                layer: layer, firstChoice: c.pairs > 0 ? Double(c.first) / Double(c.pairs) : 0,
                anyOverlap: c.pairs > 0 ? Double(c.overlap) / Double(c.pairs) : 0, pairs: c.pairs)
        }
    }

    /// 1 − C(E−k, k)/C(E, k), as a product so large E never overflows.
    public static func randomOverlap(experts: Int, k: Int) -> Double {
        guard experts - k >= k else { return 1 }
        var disjoint = 1.0
        for i in 0..<k { disjoint *= Double(experts - k - i) / Double(experts - i) }
        return 1 - disjoint
    }
}

/// Mixtral 8x7B on The Pile, layers 0, 15 and 31 (Jiang et al. 2024, Table 5), as proportions.
public struct MixtralTable5: Codable, Sendable {
    public var source = "Jiang et al. 2024, Mixtral of Experts (arXiv:2401.04088), Table 5: Mixtral 8x7B (8 experts, top-2) on The Pile"
    public var layers = [0, 15, 31]
    public var domains: [Row] = [
        Row(domain: "ArXiv", firstChoice: [0.140, 0.279, 0.227], firstOrSecondChoice: [0.465, 0.623, 0.529]),
        Row(domain: "DM Mathematics", firstChoice: [0.141, 0.284, 0.197], firstOrSecondChoice: [0.449, 0.670, 0.445]),
        Row(domain: "Github", firstChoice: [0.149, 0.281, 0.197], firstOrSecondChoice: [0.499, 0.669, 0.492]),
        Row(domain: "Gutenberg", firstChoice: [0.139, 0.261, 0.263], firstOrSecondChoice: [0.495, 0.631, 0.522]),
        Row(domain: "PhilPapers", firstChoice: [0.136, 0.253, 0.221], firstOrSecondChoice: [0.469, 0.619, 0.513]),
        Row(domain: "PubMed Abstracts", firstChoice: [0.142, 0.246, 0.220], firstOrSecondChoice: [0.486, 0.616, 0.518]),
        Row(domain: "StackExchange", firstChoice: [0.136, 0.272, 0.236], firstOrSecondChoice: [0.482, 0.646, 0.536]),
        Row(domain: "Wikipedia (en)", firstChoice: [0.144, 0.236, 0.253], firstOrSecondChoice: [0.498, 0.621, 0.518]),
    ]

    public struct Row: Codable, Sendable {
        public var domain: String
        public var firstChoice: [Double]
        public var firstOrSecondChoice: [Double]
        enum CodingKeys: String, CodingKey {
            case domain
            case firstChoice = "first_choice"
            case firstOrSecondChoice = "first_or_second_choice"
        }
    }

    /// The published range over domains at each of the three layers.
    public var firstChoiceRange: [ClosedRange<Double>] { (0..<layers.count).map { i in range(domains.map { $0.firstChoice[i] }) } }
    public var firstOrSecondRange: [ClosedRange<Double>] {
        (0..<layers.count).map { i in range(domains.map { $0.firstOrSecondChoice[i] }) }
    }
    private func range(_ v: [Double]) -> ClosedRange<Double> { (v.min() ?? 0)...(v.max() ?? 0) }
}

// MARK: - OLMoE: co-activation

/// One strongly co-activated pair: P(j chosen | i chosen).
public struct ExpertPair: Codable, Sendable, Equatable {
    public var expert: Int
    public var with: Int
    public var rate: Double
}

public struct CoActivationLayer: Codable, Sendable {
    public var layer: Int
    /// Mean over the experts i ever chosen of max_j P(j | i): how firmly each expert has one
    /// partner. (The plain mean of P(j | i) says nothing: for all pairs it is always (k−1)/(E−1).)
    public var meanStrongestAllPairs: Double
    public var meanStrongestAdjacentPairs: Double
    /// The strongest pairs (at most 5) under each definition.
    public var topAllPairs: [ExpertPair]
    public var topAdjacentPairs: [ExpertPair]
    enum CodingKeys: String, CodingKey {
        case layer
        case meanStrongestAllPairs = "mean_strongest_all_pairs"
        case meanStrongestAdjacentPairs = "mean_strongest_adjacent_pairs"
        case topAllPairs = "top_all_pairs"
        case topAdjacentPairs = "top_adjacent_pairs"
    }
}

public struct CoActivationCheck: Codable, Sendable {
    public var definition = """
        Muennighoff et al. 2024 (OLMoE), §5.2: expert co-activation(i, j) = N(i, j) / N(i) = P(j | i), how often \
        expert j is chosen for a token when expert i is. Two forms: "adjacent_pairs", as OLMoE's released code counts it (only neighbours in the \
        top-k list, most probable first, in both directions, divided by i's count); and "all_pairs" (every pair in \
        the top-k set). Both are 0 at top-1.
        """
    /// (k−1)/(E−1): P(j | i) for top-k sets drawn uniformly at random — every partner equally
    /// likely, so also the least `mean_strongest_all_pairs` can be.
    public var randomAllPairs: Double
    /// 2(k−1)/(k(E−1)): the adjacent-pairs form under the same random routing.
    public var randomAdjacentPairs: Double
    public var layers: [CoActivationLayer]
    /// Per routed layer, the E × E all-pairs matrix P(j | i) (for the figure; not in the JSON,
    /// which would grow by L × E² numbers).
    public var allPairsMatrices: [[[Double]]] = []
    public var publishedNote = "OLMoE publishes co-activation as heatmaps (figures), not as numbers; we found none to set beside ours."

    enum CodingKeys: String, CodingKey {
        case definition, layers
        case randomAllPairs = "random_all_pairs"
        case randomAdjacentPairs = "random_adjacent_pairs"
        case publishedNote = "published_note"
    }

    public enum Form: Sendable { case allPairs, adjacentPairs }

    init(counts: RoutingCounts, routedLayers: [Int]) {
        let numExperts = counts.numExperts
        let e = Double(numExperts)
        let k = Double(counts.topK)
        randomAllPairs = numExperts > 1 ? (k - 1) / (e - 1) : 0
        randomAdjacentPairs = numExperts > 1 ? 2 * (k - 1) / (k * (e - 1)) : 0
        var matrices: [[[Double]]] = []
        layers = routedLayers.indices.map { i in
            let all = counts.coActivation(layer: i, form: .allPairs)
            matrices.append(all)
            let adjacent = counts.coActivation(layer: i, form: .adjacentPairs)
            let used = counts.layerLoad(i).counts.map { $0 > 0 }
            return CoActivationLayer(
                layer: routedLayers[i], meanStrongestAllPairs: Self.meanRowMaximum(all, rows: used),
                meanStrongestAdjacentPairs: Self.meanRowMaximum(adjacent, rows: used),
                topAllPairs: Self.strongest(all, count: 5), topAdjacentPairs: Self.strongest(adjacent, count: 5))
        }
        allPairsMatrices = matrices
    }

    /// Counts one token's top-k set `chosen` (k distinct experts, most probable first) into one
    /// layer's tables: `load[e]`, and at [i · E + j], i < j, the pairs in the set (`all`) and the
    /// neighbours in the list (`adjacent`). Both matrices are symmetric, so each pair is stored once.
    @inline(__always)
    static func count(
        _ chosen: UnsafePointer<Int32>, k: Int, e: Int, load: UnsafeMutablePointer<Int>, all: UnsafeMutablePointer<Int32>,
        adjacent: UnsafeMutablePointer<Int32>
    ) {
        for a in 0..<k {
            let i = Int(chosen[a])
            load[i] += 1
            for b in (a + 1)..<max(a + 1, k) {
                let j = Int(chosen[b])
                if i != j { all[i < j ? i * e + j : j * e + i] &+= 1 }
            }
            if a + 1 < k {
                let j = Int(chosen[a + 1])
                if i != j { adjacent[i < j ? i * e + j : j * e + i] &+= 1 }
            }
        }
    }

    /// E × E matrix of P(j | i) at routed layer `layer` (row i, column j; diagonal 0). The
    /// explorer's co-activation view draws this for the selected layer: it counts that one
    /// layer only (it is called every frame).
    public static func matrix(_ traces: [RoutingTrace], layer: Int, numExperts e: Int, form: Form) -> [[Double]] {
        var load = [Int](repeating: 0, count: e)
        var all = [Int32](repeating: 0, count: e * e)
        var adjacent = all
        for trace in traces where layer < trace.layers.count {
            let chosen = trace.layers[layer].experts.map { Int32($0) }
            count(chosen, k: chosen.count, e: e, load: &load, all: &all, adjacent: &adjacent)
        }
        let pairs = form == .allPairs ? all : adjacent
        return (0..<e).map { i in
            (0..<e).map { j in i != j && load[i] > 0 ? Double(pairs[min(i, j) * e + max(i, j)]) / Double(load[i]) : 0 }
        }
    }

    static func meanRowMaximum(_ m: [[Double]], rows used: [Bool]) -> Double {
        let maxima = m.indices.filter { used[$0] }.map { m[$0].max() ?? 0 }
        return maxima.isEmpty ? 0 : maxima.reduce(0, +) / Double(maxima.count)
    }

    static func strongest(_ m: [[Double]], count: Int) -> [ExpertPair] {
        var pairs: [ExpertPair] = []
        for i in m.indices {
            for j in m.indices where i != j && m[i][j] > 0 { pairs.append(ExpertPair(expert: i, with: j, rate: m[i][j])) }
        }
        return Array(pairs.sorted { $0.rate != $1.rate ? $0.rate > $1.rate : ($0.expert, $0.with) < ($1.expert, $1.with) }.prefix(count))
    }
}

// MARK: - OLMoE: vocabulary specialisation

public struct VocabularyLayer: Codable, Sendable {
    public var layer: Int
    /// Mean over token ids of (occurrences whose first choice is the id's most frequent first choice) / occurrences.
    public var topOne: Double
    /// The same with the top-k sets: max over experts of (occurrences with the expert in the top-k) / occurrences.
    public var topK: Double
    /// `topOne` over token ids seen at least `frequentMinimum` times only (ids seen once score 1 trivially).
    public var topOneFrequent: Double
    public var distinctTokens: Int
    public var frequentTokens: Int
    enum CodingKeys: String, CodingKey {
        case layer
        case topOne = "top1"
        case topK = "top_k"
        case topOneFrequent = "top1_frequent"
        case distinctTokens = "distinct_tokens"
        case frequentTokens = "frequent_tokens"
    }
}

public struct VocabularySpecialisationCheck: Codable, Sendable {
    public var definition = """
        Muennighoff et al. 2024 (OLMoE), §5.4: vocabulary specialisation(E, x) = N(x, E) / N(x), for each input token \
        id x the share of its occurrences routed to its most frequent expert, averaged over token ids (unweighted), as OLMoE's released \
        code computes it (top-1 by default; with top-k, each occurrence counts once for each expert in its set).
        """
    /// 1/E and k/E: what the measure tends to for a token seen many times under uniform random routing.
    public var randomTopOne: Double
    public var randomTopK: Double
    public var frequentMinimum = 10
    public var layers: [VocabularyLayer]
    /// Tokens left uncounted: on a very large trace the token × expert counts take an even
    /// subsample (a work budget) and at most `TokenExpertCounts.maxDistinctTokens` ids (a
    /// memory budget). 0 on every text within both.
    public var uncountedOccurrences = 0
    public var publishedNote =
        "OLMoE publishes vocabulary specialisation as per-layer and per-expert plots (figures), not as a table; we found no numbers to set beside ours."

    enum CodingKeys: String, CodingKey {
        case definition, layers
        case randomTopOne = "random_top1"
        case randomTopK = "random_top_k"
        case frequentMinimum = "frequent_minimum"
        case uncountedOccurrences = "uncounted_occurrences"
        case publishedNote = "published_note"
    }

    init(counts: TokenExpertCounts, numExperts: Int, topK: Int, routedLayers: [Int]) {
        randomTopOne = 1 / Double(numExperts)
        randomTopK = Double(topK) / Double(numExperts)
        let minimum = frequentMinimum
        layers = routedLayers.indices.map { i in
            let one = counts.specialisation(layer: i, topK: false, minimumOccurrences: 1)
            let k = counts.specialisation(layer: i, topK: true, minimumOccurrences: 1)
            let frequent = counts.specialisation(layer: i, topK: false, minimumOccurrences: minimum)
            return VocabularyLayer(
                layer: routedLayers[i], topOne: one.mean, topK: k.mean, topOneFrequent: frequent.mean,
                distinctTokens: one.tokens, frequentTokens: frequent.tokens)
        }
        uncountedOccurrences = counts.uncountedOccurrences
    }
}

// MARK: - OLMoE: domain specialisation

public struct DomainSpecialisationEntry: Codable, Sendable {
    public var layer: Int
    /// The expert the domain's tokens use most.
    public var expert: Int
    /// N(E, D) / N(D): the share of the domain's tokens that have that expert in their top-k.
    public var specialisation: Double
    /// k/E: the same share under uniform routing.
    public var baseline: Double
}

public struct DomainSpecialisationCheck: Codable, Sendable {
    public var definition = """
        Muennighoff et al. 2024 (OLMoE), §5.3 (equation 7): domain specialisation(E, D) = N(E, D) / N(D), the share \
        of domain D's tokens that have expert E among their top-k (100 % = every token of the domain uses E); reported \
        per domain and layer for the expert where it is largest, beside k/E, its value under uniform routing.
        """
    public var domains: [Domain]
    public var publishedNote =
        "OLMoE publishes domain specialisation as per-expert plots (figures), not as a table; we found no numbers to set beside ours."

    public struct Domain: Codable, Sendable {
        public var domain: String
        public var layers: [DomainSpecialisationEntry]
    }

    enum CodingKeys: String, CodingKey {
        case definition, domains
        case publishedNote = "published_note"
    }

    init(counts: RoutingCounts, routedLayers: [Int]) {
        let baseline = Double(counts.topK) / Double(counts.numExperts)
        let e = counts.numExperts
        domains = counts.domains.map { domain in
            let tokens = Double(max(1, domain.tokens))
            // A token's experts differ, so its slots per expert count its tokens with that expert.
            let layers = routedLayers.indices.map { i -> DomainSpecialisationEntry in
                let c = domain.load[i * e..<(i + 1) * e]
                let best = c.indices.max { c[$0] < c[$1] || (c[$0] == c[$1] && $0 > $1) }.map { $0 - i * e } ?? 0
                return DomainSpecialisationEntry(
                    layer: routedLayers[i], expert: best, specialisation: Double(c[i * e + best]) / tokens, baseline: baseline)
            }
            return Domain(domain: domain.domain, layers: layers)
        }
    }
}

// MARK: - RMoE: cross-layer mutual information, per-token estimator

public struct RMoEMutualInformationCheck: Codable, Sendable {
    public var definition = """
        Qiu et al. 2024 (RMoE), appendix A.4 — our reading of their estimator: for each token and each pair of layers, \
        the two routers' probability vectors are binned (equal-width bins on [0, 1]), the mutual information of the \
        E paired bin indices is computed, and the result is averaged over tokens. moescope's own estimator is the \
        mutual information of the layers' top-1 choices over all tokens ("top1" below).
        """
    public var bins: Int
    /// Tokens the per-token estimator averaged over (every token, or an even subsample on very large models).
    public var tokensUsed: Int
    /// L × L, nats.
    public var perToken: [[Double]]
    /// Means over all pairs of distinct layers and over adjacent layers (i, i+1), both estimators.
    public var perTokenMeanAllPairs: Double
    public var perTokenMeanAdjacent: Double
    public var topOneMeanAllPairs: Double
    public var topOneMeanAdjacent: Double
    public var publishedNote = "We could not find RMoE's appendix A.4 numbers in the sources we could search; none are set beside ours."

    enum CodingKeys: String, CodingKey {
        case definition, bins
        case tokensUsed = "tokens_used"
        case perToken = "per_token"
        case perTokenMeanAllPairs = "per_token_mean_all_pairs"
        case perTokenMeanAdjacent = "per_token_mean_adjacent"
        case topOneMeanAllPairs = "top1_mean_all_pairs"
        case topOneMeanAdjacent = "top1_mean_adjacent"
        case publishedNote = "published_note"
    }

    init(sums: Sums, topOne: [[Double]]) {
        bins = sums.bins
        tokensUsed = sums.tokensUsed
        perToken = sums.matrix
        (perTokenMeanAllPairs, perTokenMeanAdjacent) = Self.means(perToken)
        (topOneMeanAllPairs, topOneMeanAdjacent) = Self.means(topOne)
    }

    /// The per-token mutual information summed over the tokens used, gathered a batch of
    /// traces at a time.
    public struct Sums: Sendable {
        public let layerCount: Int
        public let bins: Int
        /// Every `stride`-th token (counted over the whole text) is used.
        public let stride: Int
        public private(set) var tokensUsed = 0
        private var seen = 0
        private var sums: [Double]

        /// `workBudget`: at most this many bin lookups (tokens × L² × E); above it an even
        /// subsample of the `expectedTokens` is used.
        public init(layerCount: Int, numExperts: Int, expectedTokens: Int, bins: Int = 10, workBudget: Int = 400_000_000) {
            self.layerCount = layerCount
            self.bins = bins
            let work = max(1, expectedTokens * layerCount * layerCount * numExperts)
            stride = max(1, (work + workBudget - 1) / workBudget)
            sums = Array(repeating: 0, count: layerCount * layerCount)
        }

        public mutating func add(_ block: RoutingBlock) {
            guard let probabilities = block.probabilities else {
                seen += block.count
                return
            }
            let layers = min(layerCount, block.layerCount)
            let experts = block.numExperts
            guard experts > 0 else { return }
            var joint = [Int](repeating: 0, count: bins * bins)
            var binned = [Int](repeating: 0, count: layers * experts)
            var marginal = [Int](repeating: 0, count: layers * bins)
            var cells = [Int](repeating: 0, count: experts)
            // A cell's row and column bin, looked up (two integer divisions per cell were a
            // third of this check's time).
            let (rowBin, columnBin) = ((0..<bins * bins).map { $0 / bins }, (0..<bins * bins).map { $0 % bins })
            let n = Double(experts)
            // A cell's term c/n · log(c·n / (m_x·m_y)) takes counts 1…E only: with few experts
            // every one is tabulated once (the same expression, so the same bits), where the
            // logarithms were most of this check's time.
            let terms: [Double]? =
                experts <= 16
                ? (0..<experts * experts * experts).map { index in
                    let (c, mx, my) = (
                        Double(index / (experts * experts) + 1), Double(index / experts % experts + 1), Double(index % experts + 1)
                    )
                    return c / n * log(c * n / (mx * my))
                } : nil
            @inline(__always) func term(_ count: Int, _ mx: Int, _ my: Int) -> Double {
                if let terms { return terms[((count - 1) * experts + mx - 1) * experts + my - 1] }
                let c = Double(count)
                return c / n * log(c * n / (Double(mx) * Double(my)))
            }
            for t in 0..<block.count {
                defer { seen += 1 }
                guard seen % stride == 0 else { continue }
                tokensUsed += 1
                // Bin indices and the per-layer bin histograms (the marginals) once per token.
                for k in marginal.indices { marginal[k] = 0 }
                for i in 0..<layers {
                    let row = (t * block.layerCount + i) * experts
                    for e in 0..<experts {
                        let b = min(bins - 1, max(0, Int(Double(probabilities[row + e]) * Double(bins))))
                        binned[i * experts + e] = b
                        marginal[i * bins + b] += 1
                    }
                }
                for i in 0..<layers {
                    for j in i..<layers {
                        // At most E of the bins² joint cells are filled: count those, then add
                        // their terms in row-major order (x, then y), as a scan of every cell
                        // would, and clear only them.
                        var filled = 0
                        for e in 0..<experts {
                            let cell = binned[i * experts + e] * bins + binned[j * experts + e]
                            joint[cell] += 1
                            if joint[cell] == 1 {
                                var slot = filled
                                while slot > 0 && cells[slot - 1] > cell {
                                    cells[slot] = cells[slot - 1]
                                    slot -= 1
                                }
                                cells[slot] = cell
                                filled += 1
                            }
                        }
                        var mi = 0.0
                        for cell in cells[..<filled] {
                            let (x, y) = (rowBin[cell], columnBin[cell])
                            mi += term(joint[cell], marginal[i * bins + x], marginal[j * bins + y])
                            joint[cell] = 0
                        }
                        sums[i * layerCount + j] += max(0, mi)
                        if j != i { sums[j * layerCount + i] += max(0, mi) }
                    }
                }
            }
        }

        /// L × L mean over the tokens used (zeros before any).
        public var matrix: [[Double]] {
            guard tokensUsed > 0 else { return Array(repeating: Array(repeating: 0, count: layerCount), count: layerCount) }
            let count = Double(tokensUsed)
            return (0..<layerCount).map { i in (0..<layerCount).map { j in sums[i * layerCount + j] / count } }
        }
    }

    /// L × L mean over tokens of the per-token mutual information between two layers' binned probability vectors.
    public static func matrix(_ traces: [RoutingTrace], layerCount: Int, bins: Int) -> [[Double]] {
        var sums = Sums(layerCount: layerCount, numExperts: 1, expectedTokens: 0, bins: bins)
        let experts = traces.first?.layers.first?.probabilities.count ?? 0
        sums.add(
            RoutingBlock(traces: traces, layerCount: layerCount, topK: traces.first?.layers.first?.experts.count ?? 0, numExperts: experts))
        return sums.matrix
    }

    static func means(_ m: [[Double]]) -> (allPairs: Double, adjacent: Double) {
        var all: [Double] = []
        var adjacent: [Double] = []
        for i in m.indices {
            for j in m.indices where i != j {
                all.append(m[i][j])
                if j == i + 1 { adjacent.append(m[i][j]) }
            }
        }
        func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }
        return (mean(all), mean(adjacent))
    }
}

// MARK: - RMoE Table 8: Inner / Outer Balance

public struct RMoEBalanceCheck: Codable, Sendable {
    public var definition = """
        Qiu et al. 2024 (RMoE), Table 8: Inner Balance = median over tokens of the top-1 score / the top-2 score \
        (1 = the two chosen experts weigh the same), Outer Balance = median over tokens of the summed top-k scores \
        (how much of the softmax the chosen experts hold; k/E for a uniform router).
        """
    public var layers: [Row]
    /// Uniform router: inner 1, outer k/E.
    public var uniformInner = 1.0
    public var uniformOuter: Double
    public var publishedNote = "We could not find RMoE's Table 8 numbers in the sources we could search; none are set beside ours."

    public struct Row: Codable, Sendable {
        public var layer: Int
        public var inner: Double
        public var outer: Double
    }

    enum CodingKeys: String, CodingKey {
        case definition, layers
        case uniformInner = "uniform_inner"
        case uniformOuter = "uniform_outer"
        case publishedNote = "published_note"
    }

    init(routedLayers: [Int], inner: [Double], outer: [Double], numExperts: Int, topK: Int) {
        layers = routedLayers.indices.map { Row(layer: routedLayers[$0], inner: inner[$0], outer: outer[$0]) }
        uniformOuter = Double(topK) / Double(numExperts)
    }
}
