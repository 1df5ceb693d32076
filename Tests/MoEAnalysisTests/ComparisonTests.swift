import Foundation
import MoECore
import Testing

@testable import MoEAnalysis

@Suite struct BootstrapTests {
    /// Windows of one token each whose losses are normal(μ, σ): the bootstrap interval of ln PPL
    /// is the textbook interval of a mean, μ̂ ± 1.96 σ̂ / √n, to within the resampling noise.
    @Test func perplexityIntervalIsTheIntervalOfTheMeanLoss() {
        var generator = SeededGenerator(seed: 5)
        let n = 400
        let mu = 2.0
        let sigma = 0.5
        let losses = (0..<n).map { _ -> Double in
            let u1 = Double(generator.next() % 1_000_000 + 1) / 1_000_001
            let u2 = Double(generator.next() % 1_000_000) / 1_000_000
            return mu + sigma * (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
        }
        let run = WindowLosses(loss: losses, tokens: Array(repeating: 1, count: n))
        let bootstrap = PerplexityBootstrap(strata: Array(repeating: 0, count: n), resamples: 4000)
        let interval = bootstrap.perplexity(run)
        let mean = losses.reduce(0, +) / Double(n)
        let sd = (losses.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)).squareRoot()
        let half = 1.96 * sd / Double(n).squareRoot()
        #expect(abs(interval.estimate - exp(mean)) < 1e-9)
        #expect(abs(log(interval.lower) - (mean - half)) < 0.15 * half)
        #expect(abs(log(interval.upper) - (mean + half)) < 0.15 * half)
    }

    /// Pairing: a router that is worse by the same 0.1 nats on every window has an exactly known
    /// ratio on every resample, however noisy each perplexity is on its own.
    @Test func pairedDifferenceRemovesTheWindowNoise() {
        var generator = SeededGenerator(seed: 2)
        let n = 60
        let base = (0..<n).map { _ in Double(generator.next() % 1000) / 100 }  // 0…10 nats per window
        let tokens = Array(repeating: 4, count: n)
        let a = WindowLosses(loss: base, tokens: tokens)
        let b = WindowLosses(loss: base.map { $0 + 0.4 }, tokens: tokens)  // +0.1 nats per token
        let bootstrap = PerplexityBootstrap(strata: (0..<n).map { $0 % 3 }, resamples: 500)
        let ratio = bootstrap.ratio([b], to: [a])
        #expect(abs(ratio.estimate - (exp(0.1) - 1)) < 1e-9)
        #expect(abs(ratio.lower - ratio.estimate) < 1e-9 && abs(ratio.upper - ratio.estimate) < 1e-9)
        #expect(ratio.excludes(0))
        let alone = bootstrap.perplexity(a)
        #expect(alone.upper / alone.lower > 1.2, "each perplexity alone is noisy")
    }

    /// Windows are drawn within their stratum, so every resample keeps each domain's window count.
    @Test func resamplesStayInsideTheirStrata() {
        let strata = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
        let bootstrap = PerplexityBootstrap(strata: strata, resamples: 50)
        for weights in bootstrap.windowWeights {
            for s in 0...2 {
                #expect(
                    strata.indices.filter { strata[$0] == s }.reduce(0) { $0 + weights[$1] }
                        == strata.filter { $0 == s }.count)
            }
        }
    }

    /// Seeds: the interval over seeds is wider than any one seed's when the seeds disagree.
    @Test func seedsWidenTheInterval() {
        let tokens = Array(repeating: 10, count: 40)
        let seeds = [3.0, 3.3, 2.7].map { level in
            WindowLosses(loss: (0..<40).map { level * 10 + Double($0 % 5) * 0.01 }, tokens: tokens)
        }
        let bootstrap = PerplexityBootstrap(strata: Array(repeating: 0, count: 40), resamples: 500)
        let over = bootstrap.meanPerplexity(seeds)
        #expect(abs(over.estimate - [3.0, 3.3, 2.7].map { exp($0 + 0.002) }.reduce(0, +) / 3) < 1e-9)  // jitter adds 0.002 nats
        #expect(over.lower < exp(2.9) && over.upper > exp(3.1))
        let one = bootstrap.perplexity(seeds[0])
        #expect(one.upper - one.lower < 0.01 * (over.upper - over.lower))
    }

    @Test func studentIntervalOverSeeds() {
        let interval = seedInterval([1, 2, 3])
        #expect(interval.estimate == 2)
        #expect(abs(interval.upper - (2 + 4.303 / 3.0.squareRoot())) < 1e-9)
        #expect(seedInterval([5]).lower.isNaN)
        #expect(quantile([0, 10], 0.25) == 2.5)
    }
}

@Suite struct DomainSplitTests {
    /// Each segment (domain) is cut into its own windows: no window crosses a domain, every
    /// prediction is counted once, and the overall loss is the token-weighted mean of the domains'.
    @Test func windowsNeverCrossDomains() throws {
        var source = RandomWeights(seed: 3)
        let config = ModelConfig.tiny(router: .linear)  // context 64
        let model = try MoEModel(config: config, from: &source)
        let segments = [(0..<10).map { $0 + 1 }, [4, 5, 6], (0..<70).map { ($0 * 7) % 250 + 1 }]
        let evaluation = try Evaluation.run(model, segments: segments)
        #expect(evaluation.windowSegments == [0, 1, 2, 2])
        #expect(evaluation.windows.tokens == [9, 2, 64, 5])
        #expect(evaluation.tokens == 80)
        let perDomain = (0..<3).map { log(evaluation.perplexity(segment: $0)) }
        let weighted = (perDomain[0] * 9 + perDomain[1] * 2 + perDomain[2] * 69) / 80
        #expect(abs(weighted - evaluation.crossEntropy) < 1e-9)
        // A domain scored alone gives the same windows' losses.
        let alone = try Evaluation.run(model, segments: [segments[2]])
        #expect(alone.windows.loss == Array(evaluation.windows.loss.suffix(2)))
        // A cap per domain keeps the first predictions of each.
        let capped = try Evaluation.run(model, segments: segments, maxTokensPerSegment: 5)
        #expect(capped.windows.tokens == [5, 2, 5])
    }

    /// The comparison pairs routers window by window and refuses evaluations on other windows.
    @Test func comparisonTablesEveryDomainAndTheDifferenceToTheBaseline() throws {
        func evaluation(_ losses: [Double]) -> Evaluation {
            var e = Evaluation(routing: RoutingSummary(numLayers: 1, numExperts: 2), routerParameters: 7)
            e.windows = WindowLosses(loss: losses, tokens: Array(repeating: 2, count: losses.count))
            e.windowSegments = [0, 0, 1, 1]
            e.tokens = 8
            return e
        }
        let linear = ComparisonGroup(
            label: "Linear", config: .tiny(router: .linear),
            seeds: [("seed-1", evaluation([2, 4, 6, 8]))])
        let gru = ComparisonGroup(
            label: "GRU", config: .tiny(router: .gru),
            seeds: [("seed-1", evaluation([3, 5, 7, 9])), ("seed-2", evaluation([3, 5, 7, 9]))])
        let comparison = try RouterComparison(
            groups: [linear, gru], domainNames: ["prose", "code"], baseline: "Linear", resamples: 200)
        #expect(comparison.domains.map(\.tokens) == [4, 4])
        #expect(abs(comparison.rows[0].domainPerplexity[0].estimate - exp(6.0 / 4)) < 1e-9)
        #expect(abs(comparison.rows[1].relativeDifferenceToBaseline!.estimate - (exp(0.5) - 1)) < 1e-9)
        #expect(comparison.rows[0].relativeDifferenceToBaseline == nil)
        #expect(comparison.markdown.contains("| GRU | 2 |"))
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let json = try encoder.encode(comparison)  // one seed: routing intervals have nan bounds
        #expect(String(decoding: json, as: UTF8.self).contains("relative_difference_to_baseline"))
        var other = evaluation([1, 1, 1, 1])
        other.windowSegments = [0, 1, 1, 1]
        #expect(throws: ComparisonError.self) {
            try RouterComparison(
                groups: [linear, ComparisonGroup(label: "x", config: .tiny(), seeds: [("s", other)])],
                domainNames: ["prose", "code"], baseline: "Linear")
        }
    }
}
