import Foundation
import MoECore

/// A 95 % (or other) interval around a point estimate.
public struct Interval: Sendable, Equatable, Codable {
    public var estimate: Double
    public var lower: Double
    public var upper: Double

    public init(estimate: Double, lower: Double, upper: Double) {
        self.estimate = estimate
        self.lower = lower
        self.upper = upper
    }

    /// True when the interval does not contain `value` (a difference "is significant" when it
    /// excludes 0).
    public func excludes(_ value: Double) -> Bool { value < lower || value > upper }
}

/// The next-token losses of one checkpoint on the evaluation windows: `loss[j]` is the summed
/// cross-entropy (nats) of window j, `tokens[j]` its number of predictions. Every checkpoint of a
/// comparison is scored on the same windows, so window j pairs across checkpoints.
public struct WindowLosses: Sendable, Codable, Equatable {
    public var loss: [Double]
    public var tokens: [Int]

    public init(loss: [Double], tokens: [Int]) {
        precondition(loss.count == tokens.count, "one token count per window")
        self.loss = loss
        self.tokens = tokens
    }

    /// exp(Σ loss / Σ tokens) over the windows `windows`, each counted `weight[j]` times.
    func perplexity(weights: [Int]) -> Double {
        var sum = 0.0
        var count = 0
        for (j, w) in weights.enumerated() where w > 0 {
            sum += Double(w) * loss[j]
            count += w * tokens[j]
        }
        return count > 0 ? exp(sum / Double(count)) : .nan
    }
}

/// Paired, stratified bootstrap over evaluation windows (and over seeds) for held-out perplexity.
///
/// One resample draws, within each stratum (a domain), as many windows as it has, with
/// replacement; every group (a router, with one checkpoint per seed) is scored on the *same*
/// resampled windows, which is what makes a difference between two routers paired. Over seeds,
/// each resample also draws the group's seeds with replacement, so the interval holds both the
/// data's and the training seed's variation. Intervals are percentile intervals.
public struct PerplexityBootstrap: Sendable {
    /// Stratum of each window (e.g. its domain index); windows are resampled within strata.
    public let strata: [Int]
    public let resamples: Int
    public let confidence: Double
    /// Window multiplicities of every resample, [resamples][windows].
    let windowWeights: [[Int]]
    let seed: UInt64

    public init(strata: [Int], resamples: Int = 2000, confidence: Double = 0.95, seed: UInt64 = 1) {
        precondition(resamples >= 1 && confidence > 0 && confidence < 1)
        self.strata = strata
        self.resamples = resamples
        self.confidence = confidence
        self.seed = seed
        var byStratum: [Int: [Int]] = [:]
        for (j, s) in strata.enumerated() { byStratum[s, default: []].append(j) }
        let groups = byStratum.keys.sorted().map { byStratum[$0]! }
        var generator = SeededGenerator(seed: seed)
        windowWeights = (0..<resamples).map { _ in
            var weights = [Int](repeating: 0, count: strata.count)
            for members in groups {
                for _ in members.indices {
                    weights[members[Int(generator.next() % UInt64(members.count))]] += 1
                }
            }
            return weights
        }
    }

    /// Perplexity of one checkpoint, with its interval over windows.
    public func perplexity(_ run: WindowLosses) -> Interval {
        let all = [Int](repeating: 1, count: strata.count)
        return interval(
            estimate: run.perplexity(weights: all),
            samples: windowWeights.map { run.perplexity(weights: $0) })
    }

    /// Mean perplexity over a group's seeds, with an interval over windows and seeds.
    public func meanPerplexity(_ seeds: [WindowLosses]) -> Interval {
        let samples = seedSamples(seeds, stream: 0)
        return interval(estimate: pointMean(seeds), samples: samples)
    }

    /// Mean perplexity of `group` minus that of `baseline` (each the mean over its seeds), with
    /// the paired interval: both are scored on the same resampled windows.
    public func difference(_ group: [WindowLosses], minus baseline: [WindowLosses]) -> Interval {
        let a = seedSamples(group, stream: 1)
        let b = seedSamples(baseline, stream: 2)
        return interval(
            estimate: pointMean(group) - pointMean(baseline), samples: zip(a, b).map { $0 - $1 })
    }

    /// Relative difference (group / baseline − 1), paired as in `difference`.
    public func ratio(_ group: [WindowLosses], to baseline: [WindowLosses]) -> Interval {
        let a = seedSamples(group, stream: 1)
        let b = seedSamples(baseline, stream: 2)
        return interval(
            estimate: pointMean(group) / pointMean(baseline) - 1, samples: zip(a, b).map { $0 / $1 - 1 })
    }

    private func pointMean(_ seeds: [WindowLosses]) -> Double {
        let all = [Int](repeating: 1, count: strata.count)
        return seeds.map { $0.perplexity(weights: all) }.reduce(0, +) / Double(seeds.count)
    }

    /// Per resample: the mean perplexity of seeds drawn with replacement (a single seed is
    /// always itself). `stream` separates the seed draws of the two sides of a difference.
    private func seedSamples(_ seeds: [WindowLosses], stream: UInt64) -> [Double] {
        precondition(
            !seeds.isEmpty && seeds.allSatisfy { $0.loss.count == strata.count },
            "every seed scored on the same windows")
        var generator = SeededGenerator(seed: seed &* 0x9E37_79B9_7F4A_7C15 ^ (stream &+ 1))
        return windowWeights.map { weights in
            let perSeed = seeds.map { $0.perplexity(weights: weights) }
            if seeds.count == 1 { return perSeed[0] }
            var sum = 0.0
            for _ in seeds.indices { sum += perSeed[Int(generator.next() % UInt64(seeds.count))] }
            return sum / Double(seeds.count)
        }
    }

    private func interval(estimate: Double, samples: [Double]) -> Interval {
        let sorted = samples.sorted()
        let tail = (1 - confidence) / 2
        return Interval(
            estimate: estimate, lower: quantile(sorted, tail), upper: quantile(sorted, 1 - tail))
    }
}

/// Linear-interpolated quantile q ∈ [0, 1] of sorted values.
public func quantile(_ sorted: [Double], _ q: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let position = q * Double(sorted.count - 1)
    let below = Int(position.rounded(.down))
    let above = min(below + 1, sorted.count - 1)
    return sorted[below] + (position - Double(below)) * (sorted[above] - sorted[below])
}

/// Mean of per-seed values with a Student-t 95 % interval over seeds (nan bounds for one seed),
/// used for the routing statistics: it holds the seeds' variation, not the held-out windows'.
public func seedInterval(_ values: [Double]) -> Interval {
    let n = values.count
    let mean = values.reduce(0, +) / Double(max(n, 1))
    guard n >= 2 else { return Interval(estimate: mean, lower: .nan, upper: .nan) }
    let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
    let half = studentT975(degreesOfFreedom: n - 1) * (variance / Double(n)).squareRoot()
    return Interval(estimate: mean, lower: mean - half, upper: mean + half)
}

/// The 97.5 % quantile of Student's t (two-sided 95 %).
func studentT975(degreesOfFreedom df: Int) -> Double {
    let table: [Double] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    ]
    return df <= table.count ? table[max(df, 1) - 1] : 1.96 + 2.4 / Double(df)
}
