import Foundation

/// How evenly routed slots spread over the experts of one layer (DESIGN.md, metrics):
/// shares, load CV (std / mean), MaxVio (max load / mean load − 1) and the entropy of the
/// usage histogram normalised by ln E (1 = perfectly even, 0 = one expert takes everything).
public struct LoadBalanceStats: Sendable, Equatable {
    /// Routed slots per expert.
    public private(set) var counts: [Int]

    public init(numExperts: Int) { counts = Array(repeating: 0, count: numExperts) }
    public init(counts: [Int]) { self.counts = counts }

    public mutating func record(experts: [Int]) { for e in experts { counts[e] += 1 } }

    public var total: Int { counts.reduce(0, +) }

    /// Fraction of routed slots each expert received (zeros before any token).
    public var shares: [Double] {
        let t = total
        return counts.map { t == 0 ? 0 : Double($0) / Double(t) }
    }

    private var mean: Double { Double(total) / Double(counts.count) }

    public var coefficientOfVariation: Double {
        guard total > 0 else { return 0 }
        let m = mean
        let variance = counts.reduce(0) { $0 + (Double($1) - m) * (Double($1) - m) } / Double(counts.count)
        return variance.squareRoot() / m
    }

    public var maxViolation: Double {
        guard total > 0 else { return 0 }
        return Double(counts.max()!) / mean - 1
    }

    public var normalizedUsageEntropy: Double {
        guard total > 0, counts.count > 1 else { return 0 }
        return entropy(shares) / log(Double(counts.count))
    }
}

/// −Σ p ln p in nats (terms with p = 0 contribute 0).
public func entropy<C: Collection>(_ distribution: C) -> Double where C.Element: BinaryFloatingPoint {
    distribution.reduce(0) { total, p in
        let x = Double(p)
        return x > 0 ? total - x * log(x) : total
    }
}

/// Median of a non-empty list (mean of the middle two for an even count); 0 when empty.
public func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted(), mid = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/// Mutual information (nats) between two paired categorical sequences, from their empirical
/// joint distribution: I(A;B) = Σ p(a,b) ln(p(a,b) / (p(a) p(b))). Equals H(A) when B = A.
public func mutualInformation(_ a: [Int], _ b: [Int], categories: Int) -> Double {
    precondition(a.count == b.count)
    guard !a.isEmpty else { return 0 }
    var pa = [Double](repeating: 0, count: categories), pb = pa
    let n = Double(a.count)
    for (x, y) in zip(a, b) { pa[x] += 1 / n; pb[y] += 1 / n }
    // The joint table is sparse when there are many experts (256² cells, a few thousand tokens):
    // count only the pairs that occur.
    var joint: [Int: Double] = [:]
    joint.reserveCapacity(min(a.count, categories * categories))
    for (x, y) in zip(a, b) { joint[x * categories + y, default: 0] += 1 / n }
    var total = 0.0
    for cell in joint.keys.sorted() {   // a fixed order: the same routing gives the same bits
        let p = joint[cell]!
        total += p * log(p / (pa[cell / categories] * pb[cell % categories]))
    }
    return max(0, total)
}
