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
    let sorted = values.sorted()
    let mid = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/// Mutual information (nats) between two paired categorical sequences, from their empirical
/// joint distribution: I(A;B) = Σ p(a,b) ln(p(a,b) / (p(a) p(b))). Equals H(A) when B = A.
public func mutualInformation(_ a: [Int], _ b: [Int]) -> Double {
    precondition(a.count == b.count)
    var pairs = PairwiseMutualInformation([a, b])
    return pairs(0, 1)
}

/// Mutual information between any two of several paired categorical sequences (the top-1
/// choices of every layer over the same tokens), each pair in O(tokens) with no allocation: the
/// sequences are renamed 0, 1, 2… in order of appearance (MI does not depend on the names), and
/// the joint counts go into one scratch table, cleared behind them.
public struct PairwiseMutualInformation {
    let sequences: [[Int]]
    let marginals: [[Int]]
    let width: Int
    var scratch: [Int]

    public init(_ sequences: [[Int]]) {
        var renamed: [[Int]] = []
        var marginals: [[Int]] = []
        for sequence in sequences {
            var names: [Int: Int] = [:]
            var counts: [Int] = []
            renamed.append(
                sequence.map { value in
                    if let name = names[value] {
                        counts[name] += 1
                        return name
                    }
                    names[value] = counts.count
                    counts.append(1)
                    return counts.count - 1
                })
            marginals.append(counts)
        }
        self.sequences = renamed
        self.marginals = marginals
        width = max(1, marginals.map(\.count).max() ?? 1)
        scratch = [Int](repeating: 0, count: width * width)
    }

    /// I(i; j) in nats.
    public mutating func callAsFunction(_ i: Int, _ j: Int) -> Double {
        let a = sequences[i]
        let b = sequences[j]
        precondition(a.count == b.count)
        guard !a.isEmpty else { return 0 }
        let n = Double(a.count)
        for t in a.indices { scratch[a[t] * width + b[t]] += 1 }
        var total = 0.0
        for t in a.indices {
            let cell = a[t] * width + b[t]
            let count = scratch[cell]
            guard count > 0 else { continue }  // already summed
            let p = Double(count) / n
            total += p * log(p * n * n / (Double(marginals[i][a[t]]) * Double(marginals[j][b[t]])))
            scratch[cell] = 0
        }
        return max(0, total)
    }
}
