import Foundation
import MoECore

/// One router (or ablation) in a comparison: a checkpoint per training seed, each evaluated on
/// the same held-out windows.
public struct ComparisonGroup: Sendable {
    public var label: String
    public var config: ModelConfig
    /// (seed name, evaluation), one per checkpoint.
    public var seeds: [(name: String, evaluation: Evaluation)]

    public init(label: String, config: ModelConfig, seeds: [(name: String, evaluation: Evaluation)]) {
        self.label = label
        self.config = config
        self.seeds = seeds
    }
}

/// The router comparison `compare` prints: held-out perplexity over every domain with paired
/// bootstrap intervals, per seed and over seeds, per domain, the difference to a baseline
/// router, routing statistics and router cost.
public struct RouterComparison: Codable, Sendable {
    public struct Domain: Codable, Sendable {
        public var name: String
        public var windows: Int
        public var tokens: Int
    }

    public struct Seed: Codable, Sendable {
        public var seed: String
        public var perplexity: Interval
        public var domainPerplexity: [Double]
        public var entropy: Double
        public var loadCV: Double
        public var maxViolation: Double
        public var innerBalance: Double
        public var outerBalance: Double
        public var crossLayerMI: Double
        public var routerMicrosecondsPerToken: Double

        enum CodingKeys: String, CodingKey {
            case seed, perplexity, entropy
            case domainPerplexity = "domain_perplexity"
            case loadCV = "load_cv"
            case maxViolation = "max_violation"
            case innerBalance = "inner_balance"
            case outerBalance = "outer_balance"
            case crossLayerMI = "cross_layer_mi"
            case routerMicrosecondsPerToken = "router_us_per_token"
        }
    }

    public struct Row: Codable, Sendable {
        public var label: String
        public var router: String
        public var seeds: [Seed]
        /// Mean over seeds; interval over windows and seeds.
        public var perplexity: Interval
        /// Mean perplexity minus the baseline's, paired over windows (nil for the baseline).
        public var differenceToBaseline: Interval?
        /// The same as a ratio − 1.
        public var relativeDifferenceToBaseline: Interval?
        /// Per domain: mean over seeds, interval over that domain's windows and the seeds.
        public var domainPerplexity: [Interval]
        public var routerParameters: Int
        public var routerFLOPsPerToken: Int
        /// Median over seeds of each seed's median router time per decoded token.
        public var routerMicrosecondsPerToken: Double
        /// Routing statistics: mean over seeds with a Student-t 95 % interval (nan bounds for one seed).
        public var entropy: Interval
        public var loadCV: Interval
        public var maxViolation: Interval
        public var innerBalance: Interval
        public var outerBalance: Interval
        public var crossLayerMI: Interval

        enum CodingKeys: String, CodingKey {
            case label, router, seeds, perplexity, entropy
            case differenceToBaseline = "difference_to_baseline"
            case relativeDifferenceToBaseline = "relative_difference_to_baseline"
            case domainPerplexity = "domain_perplexity"
            case routerParameters = "router_parameters"
            case routerFLOPsPerToken = "router_flops_per_token"
            case routerMicrosecondsPerToken = "router_us_per_token"
            case loadCV = "load_cv"
            case maxViolation = "max_violation"
            case innerBalance = "inner_balance"
            case outerBalance = "outer_balance"
            case crossLayerMI = "cross_layer_mi"
        }
    }

    public var format = "moescope-compare"
    public var version = 1
    public var domains: [Domain]
    public var tokens: Int
    public var baseline: String?
    public var resamples: Int
    public var confidence: Double
    public var rows: [Row]

    /// Builds the comparison. Every evaluation must have the same windows (same tokenizer,
    /// context and token cap) so that windows pair; `baseline` names the group differences are
    /// taken to (ignored if absent).
    public init(
        groups: [ComparisonGroup], domainNames: [String], baseline: String?, resamples: Int = 2000
    ) throws {
        guard let reference = groups.first?.seeds.first?.evaluation else { throw ComparisonError.empty }
        for group in groups {
            for seed in group.seeds
            where seed.evaluation.windows.tokens != reference.windows.tokens
                || seed.evaluation.windowSegments != reference.windowSegments
            {
                throw ComparisonError.unpaired(group.label, seed.name)
            }
        }
        let strata = reference.windowSegments
        let bootstrap = PerplexityBootstrap(strata: strata, resamples: resamples)
        domains = domainNames.enumerated().map { index, name in
            let members = strata.indices.filter { strata[$0] == index }
            return Domain(
                name: name, windows: members.count,
                tokens: members.reduce(0) { $0 + reference.windows.tokens[$1] })
        }
        tokens = reference.tokens
        self.resamples = resamples
        confidence = bootstrap.confidence
        // Per-domain bootstraps: the domain's windows alone.
        let domainBootstraps = domainNames.indices.map {
            index -> (members: [Int], bootstrap: PerplexityBootstrap) in
            let members = strata.indices.filter { strata[$0] == index }
            return (members, PerplexityBootstrap(strata: members.map { _ in 0 }, resamples: resamples))
        }
        func restricted(_ losses: WindowLosses, _ members: [Int]) -> WindowLosses {
            WindowLosses(loss: members.map { losses.loss[$0] }, tokens: members.map { losses.tokens[$0] })
        }
        let baselineGroup = groups.first { $0.label == baseline }
        self.baseline = baselineGroup?.label
        rows = groups.map { group in
            let losses = group.seeds.map(\.evaluation.windows)
            let seeds = group.seeds.map { name, e in
                Seed(
                    seed: name, perplexity: bootstrap.perplexity(e.windows),
                    domainPerplexity: domainNames.indices.map { e.perplexity(segment: $0) },
                    entropy: e.routing.meanEntropy, loadCV: e.routing.meanLoadCV,
                    maxViolation: e.routing.meanMaxViolation,
                    innerBalance: e.routing.innerBalance, outerBalance: e.routing.outerBalance,
                    crossLayerMI: e.routing.meanCrossLayerMutualInformation,
                    routerMicrosecondsPerToken: e.routerNanosecondsPerToken / 1000)
            }
            var difference: Interval?
            var relative: Interval?
            if let baselineGroup, baselineGroup.label != group.label {
                let base = baselineGroup.seeds.map(\.evaluation.windows)
                difference = bootstrap.difference(losses, minus: base)
                relative = bootstrap.ratio(losses, to: base)
            }
            return Row(
                label: group.label, router: group.config.router.rawValue, seeds: seeds,
                perplexity: bootstrap.meanPerplexity(losses), differenceToBaseline: difference,
                relativeDifferenceToBaseline: relative,
                domainPerplexity: domainBootstraps.map { members, b in
                    b.meanPerplexity(losses.map { restricted($0, members) })
                },
                routerParameters: group.seeds[0].evaluation.routerParameters,
                routerFLOPsPerToken: group.config.routerFLOPsPerToken,
                routerMicrosecondsPerToken: median(seeds.map(\.routerMicrosecondsPerToken)),
                entropy: seedInterval(seeds.map(\.entropy)), loadCV: seedInterval(seeds.map(\.loadCV)),
                maxViolation: seedInterval(seeds.map(\.maxViolation)),
                innerBalance: seedInterval(seeds.map(\.innerBalance)),
                outerBalance: seedInterval(seeds.map(\.outerBalance)),
                crossLayerMI: seedInterval(seeds.map(\.crossLayerMI)))
        }
    }

    /// The comparison as Markdown: the main table, per-domain perplexity and every seed.
    public var markdown: String {
        func f(_ v: Double, _ digits: Int) -> String {
            v.isFinite ? String(format: "%.\(digits)f", v) : "–"
        }
        func ci(_ i: Interval, _ digits: Int) -> String {
            i.lower.isFinite
                ? "\(f(i.estimate, digits)) [\(f(i.lower, digits)), \(f(i.upper, digits))]"
                : f(i.estimate, digits)
        }
        func signed(_ i: Interval?) -> String {
            guard let i else { return "baseline" }
            let pct = { (v: Double) in String(format: "%+.1f %%", 100 * v) }
            return "\(pct(i.estimate)) [\(pct(i.lower)), \(pct(i.upper))]\(i.excludes(0) ? "" : " n.s.")"
        }
        var lines: [String] = []
        lines.append(
            "Held-out split: \(tokens) predictions in \(domains.reduce(0) { $0 + $1.windows }) windows over \(domains.count) domains "
                + "(\(domains.map { "\($0.name) \($0.tokens)" }.joined(separator: ", "))); perplexity is token-weighted over all of them. "
                + "Intervals: 95 %, \(resamples) paired bootstrap resamples of windows within domains (and of seeds, over seeds); "
                + "routing statistics: mean over seeds ± Student-t 95 %.")
        lines.append("")
        lines.append(
            "| Router | Seeds | Held-out PPL [95 % CI] | vs \(baseline ?? "baseline") [95 % CI] | Router params | Router FLOPs/token | Router µs/token | Entropy | Load CV | MaxVio | Inner | Outer | Cross-layer MI |"
        )
        lines.append("|---|---:|---|---|---:|---:|---:|---|---|---|---|---|---|")
        for row in rows {
            lines.append(
                "| \(row.label) | \(row.seeds.count) | \(ci(row.perplexity, 2)) | \(signed(row.relativeDifferenceToBaseline)) | \(row.routerParameters) | "
                    + "\(row.routerFLOPsPerToken) | \(f(row.routerMicrosecondsPerToken, 1)) | \(ci(row.entropy, 3)) | \(ci(row.loadCV, 3)) | "
                    + "\(ci(row.maxViolation, 3)) | \(ci(row.innerBalance, 2)) | \(ci(row.outerBalance, 3)) | \(ci(row.crossLayerMI, 3)) |"
            )
        }
        lines.append("")
        lines.append("Per domain (held-out PPL, mean over seeds [95 % CI]):")
        lines.append("")
        lines.append("| Router | " + domains.map(\.name).joined(separator: " | ") + " |")
        lines.append("|---|" + domains.map { _ in "---|" }.joined())
        for row in rows {
            lines.append(
                "| \(row.label) | " + row.domainPerplexity.map { ci($0, 1) }.joined(separator: " | ") + " |"
            )
        }
        lines.append("")
        lines.append("Per seed:")
        lines.append("")
        lines.append(
            "| Router | Seed | Held-out PPL [95 % CI] | Entropy | Inner | Outer | Cross-layer MI | Router µs/token |"
        )
        lines.append("|---|---|---|---:|---:|---:|---:|---:|")
        for row in rows {
            for s in row.seeds {
                lines.append(
                    "| \(row.label) | \(s.seed) | \(ci(s.perplexity, 2)) | \(f(s.entropy, 3)) | \(f(s.innerBalance, 2)) | "
                        + "\(f(s.outerBalance, 3)) | \(f(s.crossLayerMI, 3)) | \(f(s.routerMicrosecondsPerToken, 1)) |"
                )
            }
        }
        return lines.joined(separator: "\n")
    }
}

public enum ComparisonError: Error, CustomStringConvertible {
    case empty
    case unpaired(String, String)

    public var description: String {
        switch self {
        case .empty: "nothing to compare"
        case .unpaired(let label, let seed):
            "\(label) (\(seed)) was evaluated on other windows than the first checkpoint (another tokenizer or context length) — "
                + "compare only checkpoints that share the tokenizer and context"
        }
    }
}
