import ArgumentParser
import Foundation
import MoEAnalysis
import MoECore
import MoETraining

struct AnalyzeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "analyze",
        abstract:
            "Routing analyses of one model: entropy, load, balance, cross-layer dependence, specialisation, norms, expert similarity.",
        discussion: """
            By default the held-out split of the corpus is analysed (--corpus-split), the same number of tokens from every domain; \
            --text or --file analyse one text instead. Layers are L0…, experts E0…. --json writes the "moescope-analysis" format \
            described in the README.

            Texts are routed four context windows a batch, one batch per core at a time while the finished ones are summarised, \
            with a progress line; the gate-vs-norm columns run every expert, so they use the first 8,192 tokens, and past those \
            the last layer's experts and the LM head, which no analysis reads, are skipped.

            --trace FILE analyses a recorded routing trace instead of running a model: streamed over the file through the same \
            accumulator, the same report (and JSON) as a model's, with what the trace's data does not allow (entropy, margins and \
            balance without logits or probabilities; expert norms; weight similarity) listed under "not available". Every report \
            ends with the expert-placement view for 4, 8 and 16 devices.
            """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var input: TextInput<AnalyzeCommand>
    @Option(help: "Corpus split to analyse when no text is given: held-out (default) or train.") var corpusSplit = "held-out"
    @Option(help: "Corpus tokens to analyse, shared equally by the domains.") var maxTokens = 8192
    @Option(help: "Layer whose expert-similarity matrix and per-expert tokens are printed (default: the last routed one).") var layer: Int?
    @Flag(help: "Print the report as JSON.") var json = false
    @Option(help: ArgumentHelp("Also write the figures as standalone SVG files into DIR.", valueName: "dir")) var figures: String?
    @Option(
        help: ArgumentHelp("Analyse a recorded routing trace (moescope-routing-trace safetensors) instead of a model.", valueName: "file"))
    var trace: String?

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
        if let figures { try OutputPath.checkFolder(figures, option: "--figures") }
        guard ["held-out", "heldout", "train"].contains(corpusSplit) else {
            throw ValidationError("--corpus-split must be held-out or train, not '\(corpusSplit)'")
        }
        if trace != nil, input.isGiven || model.hub.folder != nil || model.checkpoint != nil {
            throw ValidationError("--trace analyses a recorded trace — drop --text, --file, --model and --checkpoint")
        }
        if input.isGiven && corpusSplit != "held-out" {
            throw ValidationError("--corpus-split and --text/--file both given — pass one")
        }
    }

    func run() throws {
        if let trace { return try analyzeTrace(trace) }
        let opened = try model.open()
        let routed = opened.model.routedLayers
        // --layer names a model layer; the report indexes routed layers.
        let detail =
            try layer.map { layer -> Int in
                guard let position = routed.firstIndex(of: layer) else {
                    throw CLIError(
                        "--layer \(layer) is not a routed layer of this model — pick one of \(routed.map(String.init).joined(separator: ", "))"
                    )
                }
                return position
            } ?? routed.count - 1
        var inputs: [(domain: String, ids: [Int])] = []
        if input.isGiven {
            inputs = [("text", opened.tokenizer.encode(try input.read()))]
        } else {
            let locator = try model.assets.locate()
            let corpus = try Corpus.load(path: locator.corpusPath)
            let perDomain = max(1, maxTokens / max(1, corpus.domains.count))
            for domain in corpus.domains {
                var ids: [Int] = []
                for document in corpus.documents(in: corpusSplit == "train" ? .train : .heldout)
                where document.domain == domain && ids.count < perDomain {
                    ids += opened.tokenizer.encode(document.text)
                }
                inputs.append((domain, Array(ids.prefix(perDomain))))
            }
        }
        let total = inputs.reduce(0) { $0 + $1.ids.count }
        var accumulated = AnalysisReport.Accumulator(model: opened.model, expectedTokens: total)
        var progress = ProgressLine("analyze: tokens", total: total, unit: "tok")
        var done = 0
        var normTokens = 0
        for (domain, ids) in inputs {
            // `route` refuses an empty text (`InferenceError.check`), as every command does.
            try WindowedRouting.route(ids, opened.model, normTokens: &normTokens) { window in
                accumulated.add(window, domain: domain)
                done += window.count
                progress.update(done)
            }
        }
        progress.finish()
        let report = AnalysisReport(
            model: opened.model, tokenizer: opened.tokenizer, checkpoint: opened.source,
            randomInit: opened.isRandomInit, accumulated: accumulated)
        if let figures {
            let described =
                input.file.map { "file \($0)" } ?? (input.text != nil ? "--text" : "\(corpusSplit) corpus split, \(inputs.count) domains")
            try AnalysisFigures(report: report, textDescription: described).writeForCommandLine(to: figures)
        }
        if json {
            let encoder = JSONEncoder.output([.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(AnalysisMarkdown(report: report, detailLayer: detail).text + "\n" + report.paperChecksMarkdown)
        }
    }
}

extension AnalyzeCommand: TakesText {
    static let textHelp = "Text to analyse (instead of the held-out split)."
}

extension AnalyzeCommand {
    /// The same report as a model's, from a recorded trace streamed through the same accumulator.
    func analyzeTrace(_ path: String) throws {
        let recorded = try RecordedTrace(path: path)
        let trace = recorded.file
        let detail =
            try layer.map { layer -> Int in
                guard let position = trace.routedLayers.firstIndex(of: layer) else {
                    throw CLIError(
                        "--layer \(layer) is not a routed layer of this trace — pick one of \(trace.routedLayers.map(String.init).joined(separator: ", "))"
                    )
                }
                return position
            } ?? trace.routedLayerCount - 1
        var progress = ProgressLine("analyze: tokens", total: trace.tokenCount, unit: "tok")
        let began = monotonicNanoseconds()
        let cpuBegan = Self.cpuSeconds()
        let accumulated = try AnalysisReport.Accumulator.reading(trace) { progress.update($0) }
        progress.finish()
        let streamed = secondsSince(began)
        let streamedCPU = Self.cpuSeconds() - cpuBegan
        let report = AnalysisReport(trace: trace, tokenizer: recorded.tokenizer, accumulated: accumulated)
        let total = secondsSince(began)
        let totalCPU = Self.cpuSeconds() - cpuBegan
        if let figures {
            try AnalysisFigures(report: report, textDescription: "recorded trace \(path)").writeForCommandLine(to: figures)
        }
        if json {
            let encoder = JSONEncoder.output([.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(AnalysisMarkdown(report: report, detailLayer: detail).text + "\n" + report.paperChecksMarkdown)
        }
        let tokenLayers = Double(trace.tokenCount * trace.routedLayerCount)
        // CPU time beside wall time: on a shared machine the wall time says more about the others.
        printError(
            String(
                format:
                    "analysed %d tokens × %d layers: streamed in %.2f s, %.2f s of CPU (%.1f M token-layers/s, %.1f M per CPU-second); report in %.2f s more, %.2f s of CPU",
                trace.tokenCount, trace.routedLayerCount, streamed, streamedCPU, tokenLayers / max(streamed, 1e-9) / 1e6,
                tokenLayers / max(streamedCPU, 1e-9) / 1e6, total - streamed, totalCPU - streamedCPU))
    }

    /// User + system CPU time of this process so far, all threads.
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// The report as Markdown tables.
struct AnalysisMarkdown {
    let report: AnalysisReport
    let detailLayer: Int

    var text: String {
        var out: [String] = []
        func f(_ v: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", v) }
        let experts = (0..<report.numExperts).map { "E\($0)" }
        out.append(
            "# Routing analysis · \(report.router) · \(report.checkpoint)\(report.randomInit ? " (random init: routing is noise)" : "")")
        if let source = report.recordedBy { out.append("\nRecorded routing: \(source)") }
        out.append(
            "\n\(report.tokens) tokens · top-\(report.topK) of \(report.numExperts) experts · entropies in nats (ln \(report.numExperts) = \(f(log(Double(report.numExperts)))) is uniform)\n"
        )

        out.append("## Routing entropy, load and balance per layer\n")
        out.append("| Layer | Entropy mean | p10 | median | p90 | Load CV | MaxVio | Usage entropy | Inner | Outer |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for l in report.layers {
            let h = [l.entropy?.mean, l.entropy?.p10, l.entropy?.median, l.entropy?.p90].map { $0.map { f($0, 3) } ?? "—" }
            let balance = l.entropy == nil ? ["—", "—"] : [f(l.innerBalance), f(l.outerBalance, 3)]
            out.append(
                "| L\(l.layer) | " + h.joined(separator: " | ")
                    + " | \(f(l.loadCV, 3)) | \(f(l.maxViolation, 3)) | \(f(l.usageEntropy, 3)) | " + balance.joined(separator: " | ")
                    + " |")
        }

        out.append("\n## Expert utilisation (share of routed slots, %)\n")
        out.append("| Layer | " + experts.joined(separator: " | ") + " |")
        out.append("|---|" + String(repeating: "---:|", count: report.numExperts))
        for l in report.layers { out.append("| L\(l.layer) | " + l.expertShares.map { f($0 * 100, 1) }.joined(separator: " | ") + " |") }

        out.append("\n## Cross-layer dependence: mutual information of top-1 choices (nats)\n")
        let n = report.crossLayerMutualInformation.count
        out.append("| | " + report.layers.map { "L\($0.layer)" }.joined(separator: " | ") + " |")
        out.append("|---|" + String(repeating: "---:|", count: n))
        for (i, row) in report.crossLayerMutualInformation.enumerated() {
            out.append("| L\(report.layers[i].layer) | " + row.map { f($0, 3) }.joined(separator: " | ") + " |")
        }

        if report.domains.count > 1 {
            out.append("\n## Domain specialisation: most over-represented expert per layer (lift = domain share / overall share)\n")
            out.append("| Domain | " + report.layers.map { "L\($0.layer)" }.joined(separator: " | ") + " |")
            out.append("|---|" + String(repeating: "---|", count: report.layers.count))
            for d in report.domains {
                out.append("| \(d.domain) | " + d.mostSpecific.map { "E\($0.expert) ×\(f($0.lift))" }.joined(separator: " | ") + " |")
            }
            out.append("\n### Domain × expert shares at L\(report.layers[detailLayer].layer) (%)\n")
            out.append("| Domain | " + experts.joined(separator: " | ") + " |")
            out.append("|---|" + String(repeating: "---:|", count: report.numExperts))
            for d in report.domains {
                out.append("| \(d.domain) | " + d.sharesByLayer[detailLayer].map { f($0 * 100, 1) }.joined(separator: " | ") + " |")
            }
        }

        out.append("\n## Vocabulary: tokens each expert receives most often at L\(report.layers[detailLayer].layer)\n")
        out.append("| Expert | Tokens (count) |")
        out.append("|---|---|")
        for (e, tokens) in report.layers[detailLayer].topTokens.enumerated() {
            let list = tokens.map { "`\(Self.escaped($0.text))` (\($0.count))" }.joined(separator: ", ")
            out.append("| E\(e) | \(list.isEmpty ? "—" : list) |")
        }

        out.append("\n## Do routers pick large-norm experts? (Closer Look into MoE)\n")
        out.append(
            "Spearman ρ between gate score and ‖expert output‖ over all experts (mean over tokens), and how often the top-1 gate is the largest-norm expert (chance = 1/\(report.numExperts) = \(f(1 / Double(report.numExperts), 3))).\n"
        )
        out.append(
            "Expert similarity, mean over expert pairs: RMoE's form (each expert's normalised mean gate row, up row and down column, concatenated) and Closer Look's (each flattened matrix on its own).\n"
        )
        out.append("| Layer | ρ(gate, norm) | top-1 gate = top-1 norm | Expert similarity (RMoE) | gate (Closer Look) | up | down |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for l in report.layers {
            let cells = [l.meanExpertSimilarity, l.meanGateSimilarity, l.meanUpSimilarity, l.meanDownSimilarity].map {
                $0.map { f($0, 3) } ?? "—"
            }
            out.append(
                "| L\(l.layer) | \(f(l.gateNormRankCorrelation, 3)) | \(f(l.topOneNormAgreement, 3)) | " + cells.joined(separator: " | ")
                    + " |")
        }

        out.append("\n## Expert weight similarity at L\(report.layers[detailLayer].layer) (RMoE's form; cosine; 1 = identical experts)\n")
        out.append("| | " + experts.joined(separator: " | ") + " |")
        out.append("|---|" + String(repeating: "---:|", count: report.numExperts))
        for (e, row) in (report.layers[detailLayer].expertSimilarity ?? []).enumerated() {
            out.append("| E\(e) | " + row.map { f($0) }.joined(separator: " | ") + " |")
        }

        out.append("\n## Expert placement for expert-parallel serving\n")
        out.append(
            "Balancedness = mean device load / max device load (1 = even), contiguous placement (E/G experts per device in id order) vs a greedy re-placement (heaviest expert first onto the least-loaded device with a free slot); gain = contiguous max / greedy max.\n"
        )
        out.append("| Devices | Contiguous balancedness (mean) | worst layer | Greedy balancedness (mean) | Gain (mean) |")
        out.append("|---:|---:|---|---:|---:|")
        for p in report.placement {
            let worst = p.layers.min { $0.contiguousBalancedness < $1.contiguousBalancedness }!
            out.append(
                "| \(p.devices) | \(f(p.meanContiguousBalancedness, 3)) | L\(worst.layer): \(f(worst.contiguousBalancedness, 3)) | \(f(p.meanGreedyBalancedness, 3)) | ×\(f(p.meanGain, 3)) |"
            )
        }
        if let p = report.placement.first(where: { $0.devices == 8 }) ?? report.placement.first {
            let row = p.layers[detailLayer]
            out.append(
                "\nSlots per device at L\(row.layer), \(p.devices) devices, contiguous: "
                    + row.deviceLoads.map(String.init).joined(separator: " · "))
        }
        if !report.notAvailable.isEmpty {
            out.append("\n## Not available from this data\n")
            for line in report.notAvailable { out.append("- \(line)") }
        }
        return out.joined(separator: "\n")
    }

    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "\n", with: "\\n").replacingOccurrences(of: "\t", with: "\\t")
            .replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "`", with: "ˋ")
    }
}
