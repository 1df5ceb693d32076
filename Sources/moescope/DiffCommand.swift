import ArgumentParser
import Foundation
import MoEAnalysis
import MoECore
import MoETraining

/// `moescope diff`: two routings of the same tokens — two of moescope's routers, or one model
/// against itself under a changed rule or a perturbation — and how far they agree, per layer and
/// per domain.
struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Agreement of two routings of the same text: top-1 agreement, Jaccard of the top-k sets, Jensen–Shannon divergence.",
        discussion: """
            Side A and side B route the same tokens. --routers A,B compares two of moescope's routers' checkpoints; --variant V \
            compares one model (--router, --checkpoint or --model) with itself routed by V: \(RoutingVariant.argumentForms).

            --probe adds the perturbation probe: how many top-k sets change, per layer, when the router's weights are rounded to \
            F16 / BF16 or its input gets 1 % / 10 % Gaussian noise.

            A decision is a near-tie when its selection margin (the k-th minus the (k+1)-th probability) is below --near-tie \
            (default: a tenth of 1/E); "near-tie" disagreements are those where either side's decision is one. --json writes the \
            "moescope-diff" format.
            """)

    @OptionGroup var model: ModelOptions
    @Option(help: ArgumentHelp("Two of moescope's routers, A,B (e.g. linear,gru).", valueName: "a,b")) var routers: String?
    @Option(help: ArgumentHelp("Side B is side A routed by this variant: \(RoutingVariant.argumentForms).", valueName: "variant"))
    var variant: String?
    @OptionGroup var input: TextInput<DiffCommand>
    @Option(help: "Corpus split to compare on when no text is given: held-out (default) or train.") var corpusSplit = "held-out"
    @Option(help: "Corpus tokens to compare on, shared equally by the domains.") var maxTokens = 4096
    @Option(help: "Selection margin below which a decision counts as a near-tie (default 0.1/E).") var nearTie: Double?
    @Flag(help: "Also run the perturbation probe (F16 / BF16 router weights, 1 % / 10 % input noise) on side A.") var probe = false
    @Flag(help: "Print the report as JSON.") var json = false
    @Flag(help: "Print one CSV row per scope (all, each domain) and layer.") var csv = false

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv are exclusive — pick one") }
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
        guard ["held-out", "heldout", "train"].contains(corpusSplit) else {
            throw ValidationError("--corpus-split must be held-out or train, not '\(corpusSplit)'")
        }
        if input.isGiven && corpusSplit != "held-out" {
            throw ValidationError("--corpus-split and --text/--file both given — pass one")
        }
        if let nearTie, !(nearTie.isFinite && nearTie >= 0 && nearTie <= 1) {
            throw ValidationError("--near-tie must be a probability margin in [0, 1], got \(nearTie)")
        }
        switch (routers, variant) {
        case (nil, nil): throw ValidationError("pass --routers A,B (two of moescope's routers) or --variant V (a model against itself)")
        case (_?, _?): throw ValidationError("--routers and --variant both given — pass one")
        case (let pair?, nil):
            let names = pair.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard names.count == 2 else { throw ValidationError("--routers takes two routers, A,B — got '\(pair)'") }
            for name in names where RouterKind(rawValue: name) == nil {
                throw ValidationError(
                    "--routers: unknown router '\(name)' — pick from \(RouterKind.argumentList)")
            }
            if model.hub.folder != nil || model.checkpoint != nil || model.chosenRouter != nil {
                throw ValidationError("--routers loads both checkpoints itself — drop --model/--checkpoint/--router, or use --variant")
            }
        case (nil, let name?):
            guard RoutingVariant(argument: name) != nil else {
                throw ValidationError("--variant '\(name)' is not one of \(RoutingVariant.argumentForms)")
            }
        }
    }

    struct Side {
        var model: any RoutingModel
        var name: String
    }

    func run() throws {
        let opened: ModelOptions.Opened
        let a: Side
        let b: Side
        if let routers {
            let kinds = routers.split(separator: ",").map { RouterKind(rawValue: $0.trimmingCharacters(in: .whitespaces))! }
            var options = model
            options.router = kinds[0]
            opened = try options.open()
            options.router = kinds[1]
            let other = try options.open()
            a = Side(model: opened.model, name: kinds[0].rawValue)
            b = Side(model: other.model, name: kinds[1].rawValue)
            guard other.model.numExperts == a.model.numExperts, other.model.routedLayers == a.model.routedLayers else {
                throw CLIError(
                    "the \(kinds[0].rawValue) and \(kinds[1].rawValue) checkpoints have different shapes — diff needs the same experts and layers"
                )
            }
        } else {
            opened = try model.open()
            let chosen = RoutingVariant(argument: variant!)!
            guard let changed = opened.model.applying(chosen) else {
                let offered = opened.model.routingVariants.map(\.argument)
                throw CLIError(
                    "--variant \(chosen.argument) does not apply to \(opened.model.routerName) — it takes \(offered.isEmpty ? "none" : offered.joined(separator: ", "))"
                )
            }
            a = Side(model: opened.model, name: opened.model.routerName)
            b = Side(model: changed, name: changed.routerName)
        }
        let threshold = nearTie ?? RoutingAgreement.defaultNearTie(experts: a.model.numExperts)
        let inputs = try self.inputs(tokenizer: opened.tokenizer)
        let probes = probe ? RoutingVariant.perturbations.filter { a.model.routingVariants.contains($0) } : []
        var progress = ProgressLine(
            "diff: tokens", total: inputs.reduce(0) { $0 + $1.ids.count } * (2 + probes.count), unit: "tok")
        var done = 0
        var report = DiffReport(
            a: a.name, b: b.name, nearTie: threshold, routedLayers: a.model.routedLayers, numExperts: a.model.numExperts,
            topK: a.model.topK)
        var all = AgreementAccumulator(layers: a.model.routedLayerCount, nearTie: threshold)
        var probeSums = probes.map { _ in AgreementAccumulator(layers: a.model.routedLayerCount, nearTie: threshold) }
        for (domain, ids) in inputs {
            var perDomain = AgreementAccumulator(layers: a.model.routedLayerCount, nearTie: threshold)
            for window in stride(from: 0, to: ids.count, by: a.model.contextLength) {
                let chunk = Array(ids[window..<min(ids.count, window + a.model.contextLength)])
                let models = [a.model, b.model] + probes.map { a.model.applying($0)! }
                let routed = try Self.route(chunk, models)
                perDomain.add(routed[0], routed[1])
                all.add(routed[0], routed[1])
                for i in probes.indices { probeSums[i].add(routed[0], routed[2 + i]) }
                done += chunk.count * models.count
                progress.update(done)
            }
            report.domains.append(.init(domain: domain, tokens: ids.count, layers: perDomain.layers(routedLayers: a.model.routedLayers)))
        }
        progress.finish()
        report.tokens = inputs.reduce(0) { $0 + $1.ids.count }
        report.layers = all.layers(routedLayers: a.model.routedLayers)
        report.probe = zip(probes, probeSums).map { variant, sums in
            .init(variant: variant.argument, description: variant.description, layers: sums.layers(routedLayers: a.model.routedLayers))
        }
        if json {
            let encoder = JSONEncoder.output([.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else if csv {
            print(report.csv, terminator: "")
        } else {
            print(report.markdown, terminator: "")
        }
    }

    /// The token ids to compare on, per domain ("text" for --text/--file).
    func inputs(tokenizer: any TextTokenizer) throws -> [(domain: String, ids: [Int])] {
        if input.isGiven {
            let ids = tokenizer.encode(try input.read())
            try InferenceError.check(count: ids.count)  // any length: it is compared a window at a time
            return [("text", ids)]
        }
        let locator = try model.assets.locate()
        let corpus = try Corpus.load(path: locator.corpusPath)
        let perDomain = max(1, maxTokens / max(1, corpus.domains.count))
        return corpus.domains.map { domain in
            var ids: [Int] = []
            for document in corpus.documents(in: corpusSplit == "train" ? .train : .heldout)
            where document.domain == domain && ids.count < perDomain {
                ids += tokenizer.encode(document.text)
            }
            return (domain, Array(ids.prefix(perDomain)))
        }.filter { !$0.ids.isEmpty }
    }

    /// One window through every model, side by side on the cores; stops at the first NaN or ±∞.
    static func route(_ ids: [Int], _ models: [any RoutingModel]) throws -> [[RoutingTrace]] {
        var results = [Result<(routing: [RoutingTrace], lastLogits: [Float]), Error>?](repeating: nil, count: models.count)
        results.withUnsafeMutableBufferPointer { slots in
            Kernels.parallelFor(models.count, threads: max(1, Kernels.threads)) { index in
                var decoder = models[index].makeDecoder()
                slots[index] = Result { try decoder.feed(ids, allExpertNorms: false) }
            }
        }
        return try zip(models, results).map { model, result in
            let (routing, logits) = try result!.get()
            if let problem = InferenceError.firstNonFinite(in: routing, routedLayers: model.routedLayers, outputLogits: logits) {
                throw problem
            }
            return routing
        }
    }
}

extension DiffCommand: TakesText {
    static let textHelp = "Text to compare on (instead of the held-out split)."
}

/// What `moescope diff` reports ("moescope-diff" in JSON).
struct DiffReport: Encodable {
    var format = "moescope-diff"
    var version = 1
    var a: String
    var b: String
    var nearTie: Double
    var routedLayers: [Int]
    var numExperts: Int
    var topK: Int
    var tokens = 0
    /// Over every token.
    var layers: [LayerAgreement] = []
    var domains: [Domain] = []
    /// Side A against A perturbed (only with --probe).
    var probe: [Probe] = []

    struct Domain: Encodable {
        var domain: String
        var tokens: Int
        var layers: [LayerAgreement]
    }

    struct Probe: Encodable {
        var variant: String
        var description: String
        var layers: [LayerAgreement]
    }

    enum CodingKeys: String, CodingKey {
        case format, version, a, b
        case nearTie = "near_tie_threshold"
        case routedLayers = "routed_layers"
        case numExperts = "num_experts"
        case topK = "top_k"
        case tokens, layers, domains, probe
    }

    static func percent(_ x: Double) -> String { x.isFinite ? String(format: "%.1f", x * 100) : "nan" }

    /// Sums over layers: top-1, Jaccard and JS averaged, counts added.
    static func overall(_ layers: [LayerAgreement]) -> (top1: Double, jaccard: Double, js: Double, disagreements: Int, nearTies: Int) {
        let n = Double(max(1, layers.count))
        return (
            layers.map(\.top1Agreement).reduce(0, +) / n, layers.map(\.jaccard).reduce(0, +) / n,
            layers.map(\.jensenShannon).reduce(0, +) / n, layers.map(\.disagreements).reduce(0, +),
            layers.map(\.nearTieDisagreements).reduce(0, +)
        )
    }

    var markdown: String {
        var out = ["# Routing diff · A \(a) · B \(b)", ""]
        out.append(
            "\(tokens) tokens · top-\(topK) of \(numExperts) experts · near-tie: selection margin < \(String(format: "%.4g", nearTie)) · JS in nats (≤ ln 2 = 0.693)"
        )
        out += [
            "", "## Per layer", "",
            "| Layer | Top-1 agree % | Jaccard | JS | Top-k sets differ | of which near-ties | Fragile A % | Fragile B % |",
        ]
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for l in layers {
            let share =
                l.disagreements == 0
                ? "–" : "\(l.nearTieDisagreements) (\(Self.percent(Double(l.nearTieDisagreements) / Double(l.disagreements))) %)"
            out.append(
                "| L\(l.layer) | \(Self.percent(l.top1Agreement)) | \(String(format: "%.3f", l.jaccard)) | \(String(format: "%.4f", l.jensenShannon)) | \(l.disagreements) | \(share) | \(Self.percent(l.fragileShareA)) | \(Self.percent(l.fragileShareB)) |"
            )
        }
        if let least = layers.min(by: { $0.jaccard < $1.jaccard }) {
            out += ["", "Least agreement: L\(least.layer) (Jaccard \(String(format: "%.3f", least.jaccard)))."]
        }
        out += [
            "", "## Per domain (means over layers)", "",
            "| Domain | Tokens | Top-1 agree % | Jaccard | JS | Sets differ | of which near-ties |",
        ]
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for domain in domains {
            let o = Self.overall(domain.layers)
            out.append(
                "| \(domain.domain) | \(domain.tokens) | \(Self.percent(o.top1)) | \(String(format: "%.3f", o.jaccard)) | \(String(format: "%.4f", o.js)) | \(o.disagreements) | \(o.nearTies) |"
            )
        }
        if !probe.isEmpty {
            out += ["", "## Perturbation probe: side A's top-k sets changed, % of tokens", ""]
            out.append("| Layer | " + probe.map(\.description).joined(separator: " | ") + " |")
            out.append("|---|" + probe.map { _ in "---:|" }.joined())
            for (i, layer) in routedLayers.enumerated() {
                out.append(
                    "| L\(layer) | "
                        + probe.map { p in Self.percent(Double(p.layers[i].disagreements) / Double(max(1, p.layers[i].tokens))) }
                        .joined(separator: " | ") + " |")
            }
        }
        return out.joined(separator: "\n") + "\n"
    }

    var csv: String {
        var rows = [
            "scope,layer,tokens,top1_agreement,jaccard,js_divergence,disagreements,near_tie_disagreements,fragile_share_a,fragile_share_b"
        ]
        func add(_ scope: String, _ layers: [LayerAgreement]) {
            for l in layers {
                rows.append(
                    "\(scope),\(l.layer),\(l.tokens),\(l.top1Agreement),\(l.jaccard),\(l.jensenShannon),\(l.disagreements),\(l.nearTieDisagreements),\(l.fragileShareA),\(l.fragileShareB)"
                )
            }
        }
        add("all", layers)
        for domain in domains { add("domain:\(domain.domain)", domain.layers) }
        for p in probe { add("probe:\(p.variant)", p.layers) }
        return rows.joined(separator: "\n") + "\n"
    }
}
