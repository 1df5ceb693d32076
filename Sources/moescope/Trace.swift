import ArgumentParser
import Foundation
import MoECore
import MoEHub

struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print how each token of a text is routed, layer by layer.",
        discussion: """
            Default output is a table: for each token, the top-k experts and weights at every layer. --json writes the full trace \
            (schema in README.md, "Trace format"); --csv writes one row per token, layer and expert, ready for pandas or R.

            --out FILE.safetensors writes the routing-trace file that `moescope --trace` and `analyze --trace` read (README, \
            "Routing from bigger machines"), with the model's tokenizer copied beside it.
            """
    )

    @OptionGroup var model: ModelOptions
    @OptionGroup var input: TextInput<Trace>

    @Flag(help: "Write the full trace as JSON.") var json = false
    @Flag(help: "Write one CSV row per token, layer and expert.") var csv = false
    @Option(help: ArgumentHelp("Write a routing-trace file (safetensors) instead of printing.", valueName: "file.safetensors")) var out:
        String?
    @Option(help: "Domain label of the text, stored in the trace file.") var domain = ""

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv are exclusive — pick one") }
        if let out {
            if json || csv { throw ValidationError("--out writes a trace file; --json and --csv print — pick one") }
            guard out.hasSuffix(".safetensors") else { throw ValidationError("--out must name a .safetensors file, got '\(out)'") }
            try OutputPath.check(out, option: "--out")
            try OutputPath.check(Self.tokenizerCopy(beside: out), option: "--out's tokenizer copy")
        }
    }

    func run() throws {
        let text = try input.read()
        let opened = try model.open()
        let tokens = opened.tokenizer.encode(text)
        var decoder = opened.model.makeDecoder()
        let result = try decoder.feed(tokens, allExpertNorms: false)
        if let problem = InferenceError.firstNonFinite(
            in: result.routing, routedLayers: opened.model.routedLayers, outputLogits: result.lastLogits)
        {
            throw problem
        }
        if let out { return try write(result.routing, opened: opened, to: out) }
        let report = TraceReport(opened: opened, routing: result.routing)
        if json {
            print(try report.json())
        } else if csv {
            print(report.csv(), terminator: "")
        } else {
            print(report.table(), terminator: "")
        }
    }
}

extension Trace {
    /// FILE.tokenizer.json beside FILE.safetensors.
    static func tokenizerCopy(beside out: String) -> String {
        let url = URL(fileURLWithPath: out)
        return url.deletingLastPathComponent().appendingPathComponent(url.deletingPathExtension().lastPathComponent + ".tokenizer.json")
            .path
    }

    /// The routing as a trace file, with full logits, and the tokenizer copied beside it
    /// (FILE.tokenizer.json) so the trace reads as text wherever it is opened.
    func write(_ routing: [RoutingTrace], opened: ModelOptions.Opened, to out: String) throws {
        let model = opened.model
        let tokenizerSource =
            try self.model.hub.folder.map { "\($0)/tokenizer.json" }
            ?? (opened.isRandomInit ? try self.model.assets.locate().tokenizerPath : "\(opened.source)/tokenizer.json")
        let tokenizerTarget = Self.tokenizerCopy(beside: out)
        let tokenizerName = URL(fileURLWithPath: tokenizerTarget).lastPathComponent
        var copied: String?
        if FileManager.default.isReadableFile(atPath: tokenizerSource) {
            // Through a temporary and a rename, like the trace itself: a failed write leaves the
            // previous copy whole, never a truncated one.
            try writeAtomically(
                RegularFile.read(tokenizerSource, what: "tokenizer", limit: 1 << 30, remedy: "check the model folder's tokenizer.json"),
                to: tokenizerTarget)
            copied = tokenizerName
        }
        let family =
            (model as? MoEModel).map { "moescope-\($0.config.router.rawValue)" } ?? (model as? HubModel)?.config.architecture.rawValue
            ?? model.routerName
        let description = RoutingTraceDescription(
            family: family, numExperts: model.numExperts, topK: model.topK, routedLayers: model.routedLayers, layerCount: model.layerCount,
            routingRule: model.routerName,
            source: ["engine": "moescope", "model": opened.isRandomInit ? "random init" : opened.source],
            tokenizerPath: copied)
        try RoutingTraceFile.write(documents: [(domain, routing)], description: description, scores: true, to: out)
        printError(
            "wrote \(out): \(routing.count) tokens × \(model.routedLayerCount) layers × top-\(model.topK) of \(model.numExperts) experts")
    }
}

extension Trace: TakesText {
    static let textHelp = "Text to run through the model."
}

/// The routing of one text, rendered in the three output formats.
struct TraceReport {
    let opened: ModelOptions.Opened
    let routing: [RoutingTrace]

    var model: any RoutingModel { opened.model }

    func tokenText(_ id: Int) -> String { opened.tokenizer.displayText(of: id) }

    /// Control characters made visible for one-line outputs; an escape sequence in the text
    /// (ESC, C1 controls) would otherwise reach the terminal and act there.
    func visible(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case _ where scalar.properties.generalCategory == .control: out += String(format: "\\x%02x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    func table() -> String {
        var out = "router \(model.routerID) · \(opened.isRandomInit ? "random init (untrained)" : opened.source)"
        out += " · \(routing.count) tokens · \(model.routedLayerCount) layers · top-\(model.topK) of \(model.numExperts) experts\n"
        // A cell is "e:.ww" per chosen expert, e.g. "3:.62 5:.38".
        let cellWidth = model.topK * (String(model.numExperts - 1).count + 6) + 1
        out +=
            "pos  token           " + model.routedLayers.map { "L\($0)".padding(toLength: cellWidth, withPad: " ", startingAt: 0) }.joined()
            + "\n"
        for trace in routing {
            let token = "\"" + visible(tokenText(trace.token)) + "\""
            out += String(trace.position).padding(toLength: 5, withPad: " ", startingAt: 0)
            out += token.padding(toLength: 16, withPad: " ", startingAt: 0) + " "
            for layer in trace.layers {
                // "0.62" prints as ".62"; a weight of 1 or more (DeepSeek's routed scaling) keeps its digit.
                let cell = zip(layer.experts, layer.weights).map { expert, weight in
                    let text = String(format: "%.2f", weight)
                    return "\(expert):" + (text.hasPrefix("0.") ? String(text.dropFirst()) : text)
                }.joined(separator: " ")
                out += cell.padding(toLength: cellWidth, withPad: " ", startingAt: 0)
            }
            out += "\n"
        }
        return out
    }

    func csv() -> String {
        var out = "position,token_id,token,layer,expert,logit,probability,rank,weight,output_norm\n"
        for trace in routing {
            let token = "\"" + visible(tokenText(trace.token)).replacingOccurrences(of: "\"", with: "\"\"") + "\""
            for (layerIndex, layer) in zip(model.routedLayers, trace.layers) {
                for e in 0..<model.numExperts {
                    let slot = layer.experts.firstIndex(of: e)
                    let logit = layer.logits[e].isFinite ? "\(layer.logits[e])" : ""
                    out += "\(trace.position),\(trace.token),\(token),\(layerIndex),\(e),\(logit),\(layer.probabilities[e]),"
                    out += slot.map { "\($0 + 1),\(layer.weights[$0]),\(layer.expertOutputNorms[$0])" } ?? ",,"
                    out += "\n"
                }
            }
        }
        return out
    }

    struct JSONTrace: Encodable {
        struct Token: Encodable {
            var position: Int
            var id: Int
            var text: String
            var layers: [LayerRouting]
        }
        var format = "moescope-trace"
        var version = 1
        var router: String
        var checkpoint: String?
        var randomInit: Bool
        /// moescope's config.json for its own models; nil for a Hugging Face model (see its folder).
        var config: ModelConfig?
        /// The model's index of each entry of a token's `layers` (dense layers route nothing).
        var routedLayers: [Int]
        var tokens: [Token]
        enum CodingKeys: String, CodingKey {
            case format, version, router, checkpoint
            case randomInit = "random_init"
            case config
            case routedLayers = "routed_layers"
            case tokens
        }
    }

    func json() throws -> String {
        let document = JSONTrace(
            router: model.routerID, checkpoint: opened.isRandomInit ? nil : opened.source, randomInit: opened.isRandomInit,
            config: (model as? MoEModel)?.config, routedLayers: model.routedLayers,
            tokens: routing.map {
                JSONTrace.Token(position: $0.position, id: $0.token, text: tokenText($0.token), layers: $0.layers)
            })
        let encoder = JSONEncoder.output([.sortedKeys])
        return String(decoding: try encoder.encode(document), as: UTF8.self)
    }
}
