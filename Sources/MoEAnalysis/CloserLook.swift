import MoECore

/// "A Closer Look into Mixture-of-Experts" (Lo et al. 2024): does the router pick the experts
/// whose outputs are largest? Per layer, the Spearman rank correlation between the router's
/// score and ‖expert_e(u)‖ over all E experts (averaged over tokens), and how often the top-1
/// gate is also the top-1 norm. Needs traces with `allExpertOutputNorms`.
public struct NormPreference: Codable, Sendable, Equatable {
    public var meanRankCorrelation: [Double]
    public var topOneAgreement: [Double]
    public var tokens: Int

    enum CodingKeys: String, CodingKey {
        case meanRankCorrelation = "mean_rank_correlation", topOneAgreement = "top1_agreement", tokens
    }

    public init(traces: [RoutingTrace]) {
        let layers = traces.first?.layers.count ?? 0
        var correlation = [Double](repeating: 0, count: layers), agreement = correlation
        var counted = [Int](repeating: 0, count: layers)
        for trace in traces {
            for (i, routing) in trace.layers.enumerated() {
                guard let norms = routing.allExpertOutputNorms else { continue }
                let scores = routing.probabilities.map(Double.init), sizes = norms.map(Double.init)
                correlation[i] += spearman(scores, sizes)
                agreement[i] += argmax(sizes) == routing.topExpert ? 1 : 0
                counted[i] += 1
            }
        }
        meanRankCorrelation = zip(correlation, counted).map { $1 > 0 ? $0 / Double($1) : 0 }
        topOneAgreement = zip(agreement, counted).map { $1 > 0 ? $0 / Double($1) : 0 }
        tokens = counted.first ?? 0
    }
}

func argmax(_ values: [Double]) -> Int { values.indices.max { values[$0] < values[$1] } ?? 0 }

/// Ranks 1…n with ties given their average rank.
public func ranks(_ values: [Double]) -> [Double] {
    let order = values.indices.sorted { values[$0] < values[$1] }
    var out = [Double](repeating: 0, count: values.count)
    var i = 0
    while i < order.count {
        var j = i
        while j + 1 < order.count, values[order[j + 1]] == values[order[i]] { j += 1 }
        let average = Double(i + j) / 2 + 1
        for k in i...j { out[order[k]] = average }
        i = j + 1
    }
    return out
}

/// Spearman's ρ: Pearson correlation of the ranks (0 when either side is constant).
public func spearman(_ a: [Double], _ b: [Double]) -> Double {
    let (ra, rb) = (ranks(a), ranks(b))
    let n = Double(a.count)
    let (ma, mb) = (ra.reduce(0, +) / n, rb.reduce(0, +) / n)
    var covariance = 0.0, va = 0.0, vb = 0.0
    for (x, y) in zip(ra, rb) { covariance += (x - ma) * (y - mb); va += (x - ma) * (x - ma); vb += (y - mb) * (y - mb) }
    return va > 0 && vb > 0 ? covariance / (va * vb).squareRoot() : 0
}
