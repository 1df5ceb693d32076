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

    /// `counts`: the routing gathered so far (`Counts.add`, a batch of traces at a time);
    /// `innerBalance`/`outerBalance`: the report's per-layer rows;
    /// `topOneMutualInformation`: moescope's L × L top-1 estimator, set beside RMoE's.
    public init(
        counts: Counts, routedLayers: [Int], innerBalance: [Double], outerBalance: [Double],
        topOneMutualInformation: [[Double]]
    ) {
        mixtralRepetition = ConsecutiveRepetitionCheck(
            counts: counts.repetition, numExperts: counts.numExperts, topK: counts.topK, routedLayers: routedLayers)
        olmoeCoActivation = CoActivationCheck(counts: counts.coActivation, topK: counts.topK, routedLayers: routedLayers)
        olmoeVocabularySpecialisation = VocabularySpecialisationCheck(
            counts: counts.vocabulary, numExperts: counts.numExperts, topK: counts.topK, routedLayers: routedLayers)
        olmoeDomainSpecialisation = DomainSpecialisationCheck(
            counts: counts.domains, numExperts: counts.numExperts, topK: counts.topK, routedLayers: routedLayers)
        rmoeMutualInformation = RMoEMutualInformationCheck(sums: counts.mutualInformation, topOne: topOneMutualInformation)
        rmoeBalance = RMoEBalanceCheck(
            routedLayers: routedLayers, inner: innerBalance, outer: outerBalance,
            numExperts: counts.numExperts, topK: counts.topK)
    }

    /// What the checks are computed from, gathered a batch of traces at a time so that a long
    /// text's traces never need to be held at once: counts and sums, whose size depends on the
    /// model (and, for vocabulary specialisation, on the distinct token ids seen), not on the text.
    public struct Counts: Sendable {
        public let numExperts: Int
        public let topK: Int
        public private(set) var repetition: [(domain: String, counts: ConsecutiveRepetitionCheck.Counts)] = []
        public private(set) var coActivation: CoActivationCheck.Counts
        public private(set) var vocabulary: VocabularySpecialisationCheck.Counts
        public private(set) var domains: [(domain: String, counts: DomainSpecialisationCheck.Counts)] = []
        public private(set) var mutualInformation: RMoEMutualInformationCheck.Sums

        /// `expectedTokens`: how many traces will be added in all; RMoE's per-token estimator
        /// subsamples evenly above its work budget and must know the stride before the first trace.
        public init(numExperts: Int, topK: Int, layerCount: Int, expectedTokens: Int) {
            self.numExperts = numExperts
            self.topK = topK
            coActivation = CoActivationCheck.Counts(numExperts: numExperts, layerCount: layerCount)
            vocabulary = VocabularySpecialisationCheck.Counts(topK: topK, layerCount: layerCount)
            mutualInformation = RMoEMutualInformationCheck.Sums(
                layerCount: layerCount, numExperts: numExperts, expectedTokens: expectedTokens)
        }

        /// `traces` follow on from the previous call's in text order. A call with the same
        /// domain as the one before continues that domain's text (a token pair can straddle the
        /// two calls); another domain starts a new text.
        public mutating func add(_ traces: [RoutingTrace], domain: String) {
            if repetition.last?.domain != domain {
                repetition.append((domain, ConsecutiveRepetitionCheck.Counts(layerCount: coActivation.layerCount)))
                domains.append((domain, DomainSpecialisationCheck.Counts(numExperts: numExperts, layerCount: coActivation.layerCount)))
            }
            repetition[repetition.count - 1].counts.add(traces)
            domains[domains.count - 1].counts.add(traces)
            coActivation.add(traces)
            vocabulary.add(traces)
            mutualInformation.add(traces)
        }
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

    init(counts byDomain: [(domain: String, counts: Counts)], numExperts: Int, topK: Int, routedLayers: [Int]) {
        randomFirstChoice = 1 / Double(numExperts)
        randomAnyOverlap = Self.randomOverlap(experts: numExperts, k: topK)
        var total = [(first: Int, overlap: Int, pairs: Int)](repeating: (0, 0, 0), count: routedLayers.count)
        domains = byDomain.map { domain, counts in
            for (i, c) in counts.perLayer.enumerated() {
                total[i].first += c.first
                total[i].overlap += c.overlap
                total[i].pairs += c.pairs
            }
            return DomainRates(domain: domain, layers: Self.rates(counts.perLayer, routedLayers: routedLayers))
        }
        layers = Self.rates(total, routedLayers: routedLayers)
    }

    /// Whether `current` repeats `previous` (the routing of the token before it, same layer).
    public static func repeats(previous: LayerRouting, current: LayerRouting) -> (firstChoice: Bool, anyOverlap: Bool) {
        (previous.topExpert == current.topExpert, current.experts.contains { previous.experts.contains($0) })
    }

    /// One text's repetition counts, gathered a batch at a time: the last trace of a batch is
    /// kept to pair with the first of the next.
    public struct Counts: Sendable {
        /// Per layer: repeated first choices, overlapping top-k sets, consecutive pairs.
        public private(set) var perLayer: [(first: Int, overlap: Int, pairs: Int)]
        private var previous: RoutingTrace?

        public init(layerCount: Int) { perLayer = Array(repeating: (0, 0, 0), count: layerCount) }

        /// A pair counts only where positions follow on (never across context windows).
        public mutating func add(_ traces: [RoutingTrace]) {
            for current in traces {
                defer { previous = current }
                guard let previous, current.position == previous.position + 1 else { continue }
                for i in 0..<min(perLayer.count, current.layers.count, previous.layers.count) {
                    let r = ConsecutiveRepetitionCheck.repeats(previous: previous.layers[i], current: current.layers[i])
                    perLayer[i].first += r.firstChoice ? 1 : 0
                    perLayer[i].overlap += r.anyOverlap ? 1 : 0
                    perLayer[i].pairs += 1
                }
            }
        }
    }

    /// Per layer: repeated first choices, overlapping top-k sets and the number of consecutive
    /// pairs, over traces in text order (a pair counts only where positions follow on).
    public static func counts(_ traces: [RoutingTrace], layerCount: Int) -> [(first: Int, overlap: Int, pairs: Int)] {
        var counts = Counts(layerCount: layerCount)
        counts.add(traces)
        return counts.perLayer
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

    init(counts: Counts, topK: Int, routedLayers: [Int]) {
        let numExperts = counts.numExperts
        let e = Double(numExperts)
        let k = Double(topK)
        randomAllPairs = numExperts > 1 ? (k - 1) / (e - 1) : 0
        randomAdjacentPairs = numExperts > 1 ? 2 * (k - 1) / (k * (e - 1)) : 0
        var matrices: [[[Double]]] = []
        layers = routedLayers.indices.map { i in
            let all = counts.matrix(layer: i, form: .allPairs)
            matrices.append(all)
            let adjacent = counts.matrix(layer: i, form: .adjacentPairs)
            let used = counts.usedExperts(layer: i)
            return CoActivationLayer(
                layer: routedLayers[i], meanStrongestAllPairs: Self.meanRowMaximum(all, rows: used),
                meanStrongestAdjacentPairs: Self.meanRowMaximum(adjacent, rows: used),
                topAllPairs: Self.strongest(all, count: 5), topAdjacentPairs: Self.strongest(adjacent, count: 5))
        }
        allPairsMatrices = matrices
    }

    init(traces: [RoutingTrace], numExperts: Int, topK: Int, routedLayers: [Int]) {
        var counts = Counts(numExperts: numExperts, layerCount: routedLayers.count)
        counts.add(traces)
        self.init(counts: counts, topK: topK, routedLayers: routedLayers)
    }

    /// Per routed layer, how often each expert and each ordered pair of experts was chosen
    /// (both forms), gathered a batch of traces at a time.
    public struct Counts: Sendable {
        public let numExperts: Int
        public let layerCount: Int
        /// [layer][e]: tokens with e in their top-k.
        private var single: [[Int]]
        /// [layer][a · E + b], both forms.
        private var allPairs: [[Int]]
        private var adjacentPairs: [[Int]]

        public init(numExperts: Int, layerCount: Int) {
            self.numExperts = numExperts
            self.layerCount = layerCount
            single = Array(repeating: Array(repeating: 0, count: numExperts), count: layerCount)
            allPairs = Array(repeating: Array(repeating: 0, count: numExperts * numExperts), count: layerCount)
            adjacentPairs = allPairs
        }

        public mutating func add(_ traces: [RoutingTrace]) {
            for trace in traces {
                for layer in 0..<min(layerCount, trace.layers.count) { add(trace.layers[layer].experts, at: layer) }
            }
        }

        /// One token's top-k set, counted at slot `layer` of these counts.
        mutating func add(_ chosen: [Int], at layer: Int) {
            let n = numExperts
            for e in chosen { single[layer][e] += 1 }
            for a in chosen { for b in chosen where a != b { allPairs[layer][a * n + b] += 1 } }
            for (a, b) in zip(chosen, chosen.dropFirst()) where a != b {
                adjacentPairs[layer][a * n + b] += 1
                adjacentPairs[layer][b * n + a] += 1
            }
        }

        /// E × E matrix of P(j | i) at routed layer `layer` (row i, column j; diagonal 0).
        public func matrix(layer: Int, form: Form) -> [[Double]] {
            let pairs = form == .allPairs ? allPairs[layer] : adjacentPairs[layer]
            return (0..<numExperts).map { i in
                (0..<numExperts).map { j in
                    single[layer][i] > 0 ? Double(pairs[i * numExperts + j]) / Double(single[layer][i]) : 0
                }
            }
        }

        func usedExperts(layer: Int) -> [Bool] { single[layer].map { $0 > 0 } }
    }

    /// E × E matrix of P(j | i) at routed layer `layer` (row i, column j; diagonal 0). The
    /// explorer's co-activation view draws this for the selected layer.
    public static func matrix(_ traces: [RoutingTrace], layer: Int, numExperts: Int, form: Form) -> [[Double]] {
        // Counts for that one layer only: the explorer calls this every frame, and counting
        // every layer up to it would cost L · E² per frame at 256 experts.
        var counts = Counts(numExperts: numExperts, layerCount: 1)
        for trace in traces where layer < trace.layers.count { counts.add(trace.layers[layer].experts, at: 0) }
        return counts.matrix(layer: 0, form: form)
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
    public var publishedNote =
        "OLMoE publishes vocabulary specialisation as per-layer and per-expert plots (figures), not as a table; we found no numbers to set beside ours."

    enum CodingKeys: String, CodingKey {
        case definition, layers
        case randomTopOne = "random_top1"
        case randomTopK = "random_top_k"
        case frequentMinimum = "frequent_minimum"
        case publishedNote = "published_note"
    }

    init(counts: Counts, numExperts: Int, topK: Int, routedLayers: [Int]) {
        randomTopOne = 1 / Double(numExperts)
        randomTopK = Double(topK) / Double(numExperts)
        let minimum = frequentMinimum
        layers = routedLayers.indices.map { i in
            let one = counts.specialisation(layer: i, depth: 1, minimumOccurrences: 1)
            let k = counts.specialisation(layer: i, depth: topK, minimumOccurrences: 1)
            let frequent = counts.specialisation(layer: i, depth: 1, minimumOccurrences: minimum)
            return VocabularyLayer(
                layer: routedLayers[i], topOne: one.mean, topK: k.mean, topOneFrequent: frequent.mean,
                distinctTokens: one.tokens, frequentTokens: frequent.tokens)
        }
    }

    /// Per routed layer and token id: occurrences, and how often each expert was its first
    /// choice and in its top-k set — gathered a batch of traces at a time.
    public struct Counts: Sendable {
        public let topK: Int
        /// [layer][token]
        private var occurrences: [[Int: Int]]
        /// [layer][token][expert], first choice and top-k set.
        private var firstChoice: [[Int: [Int: Int]]]
        private var inTopK: [[Int: [Int: Int]]]

        public init(topK: Int, layerCount: Int) {
            self.topK = topK
            occurrences = Array(repeating: [:], count: layerCount)
            firstChoice = Array(repeating: [:], count: layerCount)
            inTopK = firstChoice
        }

        public mutating func add(_ traces: [RoutingTrace]) {
            for trace in traces {
                for layer in 0..<min(occurrences.count, trace.layers.count) {
                    occurrences[layer][trace.token, default: 0] += 1
                    let experts = trace.layers[layer].experts
                    if let first = experts.first { firstChoice[layer][trace.token, default: [:]][first, default: 0] += 1 }
                    for e in experts.prefix(topK) { inTopK[layer][trace.token, default: [:]][e, default: 0] += 1 }
                }
            }
        }

        /// Mean over token ids seen ≥ `minimumOccurrences` times of max_e N(x, e) / N(x), where
        /// N(x, e) counts occurrences of x with e among the first `depth` choices (1 or k).
        /// Summed in token-id order, so the result does not depend on hashing.
        public func specialisation(layer: Int, depth: Int, minimumOccurrences: Int) -> (mean: Double, tokens: Int) {
            precondition(depth == 1 || depth == topK, "specialisation is counted for the first choice and the top-k set")
            let byExpert = depth == 1 ? firstChoice[layer] : inTopK[layer]
            var total = 0.0
            var counted = 0
            for (token, n) in occurrences[layer].sorted(by: { $0.key < $1.key }) where n >= minimumOccurrences {
                total += Double(byExpert[token]?.values.max() ?? 0) / Double(n)
                counted += 1
            }
            return (counted > 0 ? total / Double(counted) : 0, counted)
        }
    }

    /// Mean over token ids seen ≥ `minimumOccurrences` times of max_e N(x, e) / N(x), where N(x, e)
    /// counts occurrences of x with e among the first `depth` choices.
    public static func specialisation(
        _ traces: [RoutingTrace], layer: Int, depth: Int,
        minimumOccurrences: Int
    ) -> (mean: Double, tokens: Int) {
        var counts = Counts(topK: depth, layerCount: layer + 1)
        counts.add(traces)
        return counts.specialisation(layer: layer, depth: depth, minimumOccurrences: minimumOccurrences)
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

    init(counts byDomain: [(domain: String, counts: Counts)], numExperts: Int, topK: Int, routedLayers: [Int]) {
        let baseline = Double(topK) / Double(numExperts)
        domains = byDomain.map { domain, counts in
            let tokens = Double(max(1, counts.tokens))
            let layers = routedLayers.indices.map { i -> DomainSpecialisationEntry in
                let c = counts.perLayer[i]
                let best = c.indices.max { c[$0] < c[$1] || (c[$0] == c[$1] && $0 > $1) } ?? 0
                return DomainSpecialisationEntry(
                    layer: routedLayers[i], expert: best, specialisation: Double(c[best]) / tokens, baseline: baseline)
            }
            return Domain(domain: domain, layers: layers)
        }
    }

    init(tracesByDomain: [(domain: String, traces: [RoutingTrace])], numExperts: Int, topK: Int, routedLayers: [Int]) {
        let counts = tracesByDomain.map { domain, traces in
            var c = Counts(numExperts: numExperts, layerCount: routedLayers.count)
            c.add(traces)
            return (domain, c)
        }
        self.init(counts: counts, numExperts: numExperts, topK: topK, routedLayers: routedLayers)
    }

    /// One domain's tokens, and per layer how many of them have each expert in their top-k.
    public struct Counts: Sendable {
        public private(set) var tokens = 0
        /// [layer][e] (a token's experts are distinct).
        public private(set) var perLayer: [[Int]]

        public init(numExperts: Int, layerCount: Int) {
            perLayer = Array(repeating: Array(repeating: 0, count: numExperts), count: layerCount)
        }

        public mutating func add(_ traces: [RoutingTrace]) {
            tokens += traces.count
            for trace in traces {
                for i in 0..<min(perLayer.count, trace.layers.count) { for e in trace.layers[i].experts { perLayer[i][e] += 1 } }
            }
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

        public mutating func add(_ traces: [RoutingTrace]) {
            var joint = [Int](repeating: 0, count: bins * bins)
            var binned: [Int] = [], marginal: [Int] = []   // reused from token to token
            for trace in traces {
                defer { seen += 1 }
                guard seen % stride == 0 else { continue }
                tokensUsed += 1
                let layers = min(layerCount, trace.layers.count)
                let experts = trace.layers.first?.probabilities.count ?? 0
                guard experts > 0 else { continue }
                // Bin indices and the per-layer bin histograms (the marginals) once per token.
                binned.removeAll(keepingCapacity: true)
                binned.append(contentsOf: repeatElement(0, count: layers * experts))
                marginal.removeAll(keepingCapacity: true)
                marginal.append(contentsOf: repeatElement(0, count: layers * bins))
                for i in 0..<layers {
                    for (e, p) in trace.layers[i].probabilities.enumerated() {
                        let b = min(bins - 1, max(0, Int(Double(p) * Double(bins))))
                        binned[i * experts + e] = b
                        marginal[i * bins + b] += 1
                    }
                }
                let n = Double(experts)
                for i in 0..<layers {
                    for j in i..<layers {
                        for k in joint.indices { joint[k] = 0 }
                        for e in 0..<experts { joint[binned[i * experts + e] * bins + binned[j * experts + e]] += 1 }
                        var mi = 0.0
                        for x in 0..<bins where marginal[i * bins + x] > 0 {
                            for y in 0..<bins where joint[x * bins + y] > 0 {
                                let c = Double(joint[x * bins + y])
                                mi += c / n * log(c * n / (Double(marginal[i * bins + x]) * Double(marginal[j * bins + y])))
                            }
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
        sums.add(traces)
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
