import MoECore

/// "A Closer Look into Mixture-of-Experts" (Lo et al. 2024): does the router pick the experts
/// whose outputs are largest? Per layer, the Spearman rank correlation between the router's
/// score and ‖expert_e(u)‖ over all E experts (averaged over tokens), and how often the top-1
/// gate is also the top-1 norm. Needs traces with `allExpertOutputNorms`.
public struct NormPreference: Codable, Sendable, Equatable {
    public var meanRankCorrelation: [Double]
    public var topOneAgreement: [Double]
    public var tokens: Int
    /// Per layer, P(norm rank | gate rank): rows are the gate-score rank (0 = highest), columns
    /// the output-norm rank, each in at most `rankBins` equal groups of ranks. A router that
    /// follows norms puts its mass on the diagonal; independence gives a flat 1/bins.
    public var rankHistogram: [[[Double]]] = []
    public static let rankBins = 32

    enum CodingKeys: String, CodingKey {
        case meanRankCorrelation = "mean_rank_correlation"
        case topOneAgreement = "top1_agreement"
        case tokens
    }

    public init(traces: [RoutingTrace]) {
        let layers = traces.first?.layers.count ?? 0
        var correlation = [Double](repeating: 0, count: layers)
        var agreement = correlation
        var counted = [Int](repeating: 0, count: layers)
        let experts = traces.first?.layers.first?.probabilities.count ?? 0
        let bins = min(experts, Self.rankBins)
        var histogram = [[[Double]]](repeating: [[Double]](repeating: [Double](repeating: 0, count: bins), count: bins), count: layers)
        for trace in traces {
            for (i, routing) in trace.layers.enumerated() {
                guard let norms = routing.allExpertOutputNorms else { continue }
                let scores = routing.probabilities.map(Double.init)
                let sizes = norms.map(Double.init)
                correlation[i] += spearman(scores, sizes)
                agreement[i] += argmax(sizes) == routing.topExpert ? 1 : 0
                let gateRank = descendingRanks(scores)
                let normRank = descendingRanks(sizes)
                for e in 0..<min(experts, scores.count) {
                    histogram[i][gateRank[e] * bins / experts][normRank[e] * bins / experts] += 1
                }
                counted[i] += 1
            }
        }
        meanRankCorrelation = zip(correlation, counted).map { $1 > 0 ? $0 / Double($1) : 0 }
        topOneAgreement = zip(agreement, counted).map { $1 > 0 ? $0 / Double($1) : 0 }
        tokens = counted.first ?? 0
        rankHistogram = zip(histogram, counted).map { rows, tokens in
            tokens == 0
                ? []
                : rows.map { row in
                    let total = row.reduce(0, +)
                    return total > 0 ? row.map { $0 / total } : row
                }
        }
    }
}

/// Ordinal ranks from the top: 0 for the largest value, ties to the lower index.
func descendingRanks(_ values: [Double]) -> [Int] {
    var out = [Int](repeating: 0, count: values.count)
    for (rank, index) in values.indices.sorted(by: { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }).enumerated() {
        out[index] = rank
    }
    return out
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
    var covariance = 0.0
    var va = 0.0
    var vb = 0.0
    for (x, y) in zip(ra, rb) {
        covariance += (x - ma) * (y - mb)
        va += (x - ma) * (x - ma)
        vb += (y - mb) * (y - mb)
    }
    return va > 0 && vb > 0 ? covariance / (va * vb).squareRoot() : 0
}
