import ArgumentParser
import Foundation
import MoEAnalysis
import MoECore
import MoETraining

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract:
            "Measure every router's checkpoints on the whole held-out split, with bootstrap intervals, as Markdown or JSON.",
        discussion: """
            Every held-out document of every domain is scored, each domain's token stream cut into windows of the model's context; \
            perplexity is token-weighted over all of them, and given per domain. A router may have several checkpoints, one per \
            training seed: DIR/<router> is a checkpoint, a folder of seed-N checkpoints, or both \
            (the shipped layout: the checkpoint is seed 1, its seed-N subfolders the other seeds). Intervals are 95 % paired \
            bootstrap intervals: windows are resampled within their domain, the same resample for every router, so the difference \
            to Linear is paired; over seeds the seeds are resampled too. Routing statistics are means over seeds with a Student-t \
            interval.

            Columns: held-out perplexity; its relative difference to Linear; router parameters; router FLOPs per token (2 per \
            multiply-add of its products, all layers); median router time per decoded token (all layers; use a release build); \
            mean routing entropy (nats, full softmax); load CV and MaxVio (mean over layers); Inner Balance = median top-1/top-2 \
            score and Outer Balance = median top-k score sum (RMoE); cross-layer MI = mean mutual information (nats) between the \
            top-1 experts of every pair of layers.
            """)

    @Option(parsing: .upToNextOption, help: "Routers to compare (default: all with a checkpoint).")
    var routers: [RouterKind] = RouterKind.allCases
    @Option(help: "Held-out predictions to score per domain (default: all of them).")
    var maxTokensPerDomain: Int?
    @OptionGroup var assets: AssetOptions
    @Option(
        help: ArgumentHelp(
            "Read checkpoints from DIR/<router> (a checkpoint and/or seed-N checkpoints) instead of the assets.",
            valueName: "dir"))
    var checkpoints: String?
    @Option(
        name: .customLong("run"),
        help: ArgumentHelp(
            "An extra row, LABEL=DIR (DIR a checkpoint and/or a folder of seed-N checkpoints), e.g. an ablation; repeatable.",
            valueName: "label=dir"))
    var runs: [String] = []
    @Option(help: "Bootstrap resamples.") var resamples = 2000
    @Flag(help: "Print the comparison as JSON (format moescope-compare).") var json = false
    @Option(help: ArgumentHelp("Also write the JSON to FILE (the Markdown is still printed).", valueName: "file")) var jsonFile: String?
    @Option(help: ArgumentHelp("Also write the comparison as bar charts with their 95 % intervals, DIR/comparison.svg.", valueName: "dir"))
    var figures: String?

    func validate() throws {
        if let maxTokensPerDomain, maxTokensPerDomain < 1 {
            throw ValidationError("--max-tokens-per-domain must be at least 1, got \(maxTokensPerDomain)")
        }
        guard (1...100_000).contains(resamples) else {
            throw ValidationError("--resamples must be between 1 and 100000, got \(resamples)")
        }
        if let jsonFile { try OutputPath.check(jsonFile, option: "--json-file") }
        if let figures { try OutputPath.checkFolder(figures, option: "--figures") }
        if let checkpoints { try OutputPath.checkInputFolder(checkpoints, option: "--checkpoints", holds: "<router>/ checkpoints") }
        for item in runs where !item.contains("=") || item.hasPrefix("=") || item.hasSuffix("=") {
            throw ValidationError(
                "--run \(item) must be LABEL=DIR, e.g. \"GRU no recurrence=runs/retrain/ablations/gru-no-recurrence\""
            )
        }
    }

    func run() throws {
        let locator = try assets.locate()
        let corpus = try Corpus.load(path: locator.corpusPath)
        let domains = corpus.domains
        let heldOut = corpus.documents(in: .heldout)
        var planned: [(label: String, folder: String)] = routers.map { router in
            (
                router.displayName,
                checkpoints.map { "\($0)/\(router.rawValue)" } ?? locator.checkpointDirectory(for: router)
            )
        }
        for item in runs {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            // A row the user asked for by name is not skipped like a router without a shipped checkpoint.
            guard !Checkpoint.seedCheckpoints(in: parts[1]).isEmpty else {
                throw CLIError(
                    "--run \(item): \(parts[1]) holds no checkpoint (config.json, model.safetensors, tokenizer.json) nor seed-N checkpoints — check the path"
                )
            }
            planned.append((parts[0], parts[1]))
        }
        var segmentsByTokenizer: [String: [[Int]]] = [:]
        var groups: [ComparisonGroup] = []
        for (label, folder) in planned {
            let found = Checkpoint.seedCheckpoints(in: folder)
            guard !found.isEmpty else {
                printError(
                    "note: no checkpoint for \(label) in \(folder) (nor seed-N checkpoints in it) — skipped")
                continue
            }
            var seeds: [(name: String, evaluation: Evaluation)] = []
            var config: ModelConfig?
            for (name, path) in found {
                let checkpoint = try Checkpoint.load(from: path)
                config = checkpoint.model.config
                let key = String(
                    decoding: try Data(
                        contentsOf: URL(fileURLWithPath: "\(path)/\(Checkpoint.tokenizerFile)")), as: UTF8.self)
                let segments =
                    segmentsByTokenizer[key]
                    ?? domains.map { domain in
                        TokenStream(
                            documents: heldOut.filter { $0.domain == domain }, tokenizer: checkpoint.tokenizer
                        ).tokens
                    }
                segmentsByTokenizer[key] = segments
                let total = segments.reduce(0) {
                    $0 + min(maxTokensPerDomain ?? Int.max, max(0, $1.count - 1))
                }
                var progress = ProgressLine("compare \(label) \(name): tokens", total: total, unit: "tok")
                let evaluation = try Evaluation.run(
                    checkpoint.model, segments: segments, maxTokensPerSegment: maxTokensPerDomain
                ) { done, _ in
                    progress.update(done)
                }
                progress.finish()
                seeds.append((name, evaluation))
            }
            groups.append(ComparisonGroup(label: label, config: config!, seeds: seeds))
        }
        guard !groups.isEmpty else {
            throw CLIError(
                "no router checkpoints found — train them with `moescope train --router R --out DIR` and pass --checkpoints"
            )
        }
        let comparison: RouterComparison
        do {
            comparison = try RouterComparison(
                groups: groups, domainNames: domains, baseline: RouterKind.linear.displayName,
                resamples: resamples)
        } catch let error as ComparisonError { throw CLIError("\(error)") }
        if let figures {
            try writeFigure(
                comparison, to: figures,
                caption: "moescope compare · checkpoints \(checkpoints ?? "\(locator.root)/checkpoints") · "
                    + "text: held-out corpus split, \(comparison.domains.count) domains · \(comparison.tokens) tokens per checkpoint")
        }
        let encoder = JSONEncoder.output([.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        if let jsonFile {
            try writeAtomically(encoder.encode(comparison), to: jsonFile)
        }
        if json {
            print(String(decoding: try encoder.encode(comparison), as: UTF8.self))
        } else {
            print(comparison.markdown)
        }
    }

    /// The table's columns as bar panels, perplexity and the routing statistics with their
    /// intervals as error bars (none where a router has one seed).
    private func writeFigure(_ comparison: RouterComparison, to directory: String, caption: String) throws {
        func metric(_ name: String, _ unit: String, _ value: (RouterComparison.Row) -> Interval) -> ComparisonFigure.Metric {
            let intervals = comparison.rows.map(value)
            return .init(
                name: name, unit: unit, values: intervals.map(\.estimate),
                intervals: intervals.map { $0.lower.isFinite && $0.upper.isFinite ? $0.lower...$0.upper : nil })
        }
        func plain(_ v: Double) -> Interval { Interval(estimate: v, lower: .nan, upper: .nan) }
        let figure = ComparisonFigure(
            routers: comparison.rows.map(\.label),
            metrics: [
                metric("held-out perplexity", "perplexity", \.perplexity),
                metric("router time per token", "µs", { plain($0.routerMicrosecondsPerToken) }),
                metric("router FLOPs per token", "FLOPs", { plain(Double($0.routerFLOPsPerToken)) }),
                metric("routing entropy", "nats", \.entropy),
                metric("load CV", "CV", \.loadCV),
                metric("cross-layer MI (top-1)", "nats", \.crossLayerMI),
            ], caption: caption)
        try writeFigures(into: directory, by: "compare") { try figure.write(to: directory) }
    }
}
