import MoECore

/// The routing metrics of DESIGN.md accumulated over any number of routed tokens: what the
/// `compare` table, `analyze` and the TUI's load panel report.
public struct RoutingSummary: Sendable {
    public let numLayers: Int
    public let numExperts: Int
    /// Per layer: slots routed to each expert.
    public private(set) var load: [LoadBalanceStats]
    /// Per layer: routing entropy H = −Σ p ln p of every token's full softmax.
    public private(set) var entropies: [[Double]]
    /// Per layer: top-1 / top-2 score of every token (RMoE's Inner Balance is the median).
    public private(set) var topRatios: [[Double]]
    /// Per layer: the summed top-k scores of every token (Outer Balance is the median).
    public private(set) var topKMass: [[Double]]
    /// Per layer: the selection margin of every token — the k-th chosen expert's score minus the
    /// best unchosen one's (how close the routing came to choosing differently; negative where a
    /// rule other than the score, e.g. DeepSeek's group limit, decided).
    public private(set) var selectionMargins: [[Double]]
    /// Per layer: every token's top-1 expert, for cross-layer dependence.
    public private(set) var topExperts: [[Int]]
    /// Router wall time per token summed over layers (ns).
    public private(set) var routerNanoseconds: [Double] = []

    public init(numLayers: Int, numExperts: Int) {
        self.numLayers = numLayers
        self.numExperts = numExperts
        load = Array(repeating: LoadBalanceStats(numExperts: numExperts), count: numLayers)
        entropies = Array(repeating: [], count: numLayers)
        topRatios = entropies
        topKMass = entropies
        selectionMargins = entropies
        topExperts = Array(repeating: [], count: numLayers)
    }

    public mutating func add(_ trace: RoutingTrace) {
        for (i, layer) in trace.layers.enumerated() {
            load[i].record(experts: layer.experts)
            entropies[i].append(entropy(layer.probabilities))
            let scores = layer.experts.map { Double(layer.probabilities[$0]) }
            if scores.count >= 2, scores[1] > 0 { topRatios[i].append(scores[0] / scores[1]) }
            topKMass[i].append(scores.reduce(0, +))
            if let margin = layer.selectionMargin { selectionMargins[i].append(margin) }
            topExperts[i].append(layer.topExpert)
        }
        routerNanoseconds.append(trace.layers.reduce(0) { $0 + $1.routerNanoseconds })
    }

    public mutating func add(_ traces: [RoutingTrace]) { for trace in traces { add(trace) } }

    public var tokenCount: Int { topExperts.first?.count ?? 0 }

    /// Mean routing entropy over tokens and layers (nats).
    public var meanEntropy: Double { mean(entropies.flatMap { $0 }) }
    /// Load CV and MaxVio averaged over layers.
    public var meanLoadCV: Double { mean(load.map(\.coefficientOfVariation)) }
    public var meanMaxViolation: Double { mean(load.map(\.maxViolation)) }
    /// RMoE's balance pair, pooled over layers.
    public var innerBalance: Double { median(topRatios.flatMap { $0 }) }
    public var outerBalance: Double { median(topKMass.flatMap { $0 }) }

    /// L × L mutual information (nats) between the top-1 choices of layers i and j.
    public var crossLayerMutualInformation: [[Double]] {
        var pairs = PairwiseMutualInformation(topExperts)
        return (0..<numLayers).map { i in (0..<numLayers).map { j in pairs(i, j) } }
    }

    /// Mean mutual information over all pairs of distinct layers.
    public var meanCrossLayerMutualInformation: Double {
        let matrix = crossLayerMutualInformation
        var values: [Double] = []
        for i in 0..<numLayers { for j in 0..<numLayers where i != j { values.append(matrix[i][j]) } }
        return mean(values)
    }

    private func mean(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count) }
}
