import ArgumentParser
import Foundation
import MoEAnalysis
import MoECore
import MoETraining

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Measure every router's checkpoint on the held-out split, as a Markdown table.",
        discussion: """
        Columns: held-out perplexity; router parameters; median router time per decoded token
        (all layers); mean routing entropy (nats, full softmax); load CV and MaxVio (mean over
        layers); Inner Balance = median top-1/top-2 score and Outer Balance = median top-k score
        sum (RMoE); cross-layer MI = mean mutual information (nats) between the top-1 experts
        of every pair of layers. Use a release build for the latency column.
        """)

    @Option(parsing: .upToNextOption, help: "Routers to compare (default: all with a checkpoint).")
    var routers: [RouterKind] = RouterKind.allCases
    @Option(help: "Held-out tokens to evaluate per router.") var maxTokens = 32768
    @Option(help: ArgumentHelp("Assets directory (corpus and checkpoints).", valueName: "dir")) var assets: String?
    @Option(help: ArgumentHelp("Read checkpoints from DIR/<router> instead of the assets.", valueName: "dir")) var checkpoints: String?
    @Option(help: ArgumentHelp("Also write the comparison as a bar chart, DIR/comparison.svg.", valueName: "dir")) var figures: String?

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
    }

    func run() throws {
        let locator = try AssetLocator(explicit: assets)
        let heldOut = try Corpus.load(path: "\(locator.root)/corpus/corpus.jsonl").documents(in: .heldout)
        var rows: [String] = []
        var streams: [String: [Int]] = [:]   // by tokenizer file, in case checkpoints differ
        var measured: [(router: RouterKind, result: Evaluation)] = []
        for router in routers {
            let directory = checkpoints.map { "\($0)/\(router.rawValue)" } ?? locator.checkpointDirectory(for: router)
            guard Checkpoint.exists(at: directory) else {
                printError("note: no \(router.rawValue) checkpoint in \(directory) — skipped (train one with `moescope train --router \(router.rawValue)`)")
                continue
            }
            let checkpoint = try Checkpoint.load(from: directory)
            let key = "\(directory)/\(Checkpoint.tokenizerFile)"
            let stream = streams[key] ?? TokenStream(documents: heldOut, tokenizer: checkpoint.tokenizer).tokens
            streams[key] = stream
            var progress = ProgressLine("compare \(router.rawValue): tokens", total: min(maxTokens, stream.count - 1), unit: "tok")
            let result = try Evaluation.run(checkpoint.model, on: stream, maxTokens: maxTokens) { done, _ in progress.update(done) }
            progress.finish()
            measured.append((router, result))
            let r = result.routing
            rows.append("| \(router.displayName) | \(f(result.perplexity, 2)) | \(result.routerParameters) | "
                        + "\(f(result.routerNanosecondsPerToken / 1000, 1)) | \(f(r.meanEntropy, 3)) | \(f(r.meanLoadCV, 3)) | "
                        + "\(f(r.meanMaxViolation, 3)) | \(f(r.innerBalance, 2)) | \(f(r.outerBalance, 3)) | \(f(r.meanCrossLayerMutualInformation, 3)) |")
        }
        guard !rows.isEmpty else { throw CLIError("no router checkpoints found — train them with `moescope train --router R --out DIR` and pass --checkpoints") }
        print("| Router | Held-out PPL | Router params | Router µs/token | Entropy | Load CV | MaxVio | Inner | Outer | Cross-layer MI |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        rows.forEach { print($0) }
        if let figures {
            let tokens = measured.map(\.result.tokens).max() ?? 0
            try writeFigure(measured, to: figures, caption: "moescope compare · checkpoints \(checkpoints ?? "\(locator.root)/checkpoints") · "
                            + "text: held-out corpus split · \(tokens) tokens per router")
        }
    }

    /// The table's columns as bar panels; `Evaluation` has no intervals yet, so none are drawn.
    private func writeFigure(_ measured: [(router: RouterKind, result: Evaluation)], to directory: String, caption: String) throws {
        func metric(_ name: String, _ unit: String, _ value: (Evaluation) -> Double) -> ComparisonFigure.Metric {
            .init(name: name, unit: unit, values: measured.map { value($0.result) })
        }
        let figure = ComparisonFigure(routers: measured.map(\.router.displayName), metrics: [
            metric("held-out perplexity", "perplexity", \.perplexity),
            metric("router time per token", "µs", { $0.routerNanosecondsPerToken / 1000 }),
            metric("router parameters", "parameters", { Double($0.routerParameters) }),
            metric("routing entropy", "nats", \.routing.meanEntropy),
            metric("load CV", "CV", \.routing.meanLoadCV),
            metric("cross-layer MI (top-1)", "nats", \.routing.meanCrossLayerMutualInformation),
        ], caption: caption)
        do {
            printError("compare: wrote \(try figure.write(to: directory))")
        } catch {
            throw CLIError("cannot write figures to \(directory): \(error.localizedDescription) — pass a folder you can write to")
        }
    }

    private func f(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }
}
