import Foundation
import MoECore
import Testing

@testable import MoEAnalysis

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// A stand-in model with a real model's shape (up to 256 experts × 61 layers) whose routing is
/// drawn from a seeded generator: the analyses and figures see exactly what a real model gives them.
struct SyntheticModel: RoutingModel {
    var numExperts: Int
    var topK: Int
    var routedLayers: [Int]
    /// Whether it offers expert weights (the similarity analysis) and every expert's output norm
    /// (gate vs norm); the 256 × 58 test case goes without, to keep the debug-build test fast.
    var hasWeights = true
    var layerCount: Int { (routedLayers.last ?? 0) + 1 }
    var routerName: String { "synthetic softmax top-\(topK)" }
    var routerKind: RouterKind? { nil }
    var routerEquation: String { "random logits" }
    var vocabSize: Int { 40 }
    var contextLength: Int { 64 }
    var weightBytes: Int { 0 }
    func makeDecoder() -> any RoutingDecoder { fatalError("synthetic routing comes from traces(tokens:seed:)") }

    func expertWeights(routedLayer: Int) -> [(gate: Tensor, up: Tensor, down: Tensor)]? {
        guard hasWeights else { return nil }
        var rng = SeededGenerator(seed: UInt64(routedLayer) + 100)
        return (0..<numExperts).map { _ in
            (
                Tensor(randomNormal: [2, 4], std: 1, using: &rng), Tensor(randomNormal: [2, 4], std: 1, using: &rng),
                Tensor(randomNormal: [4, 2], std: 1, using: &rng)
            )
        }
    }

    /// Skewed logits (some experts busier), token-dependent, with all expert norms.
    func traces(tokens: Int, seed: UInt64) -> [RoutingTrace] {
        var rng = SeededGenerator(seed: seed)
        return (0..<tokens).map { t in
            let token = Int(rng.next() % 40)
            let layers = routedLayers.indices.map { i -> LayerRouting in
                let logits = (0..<numExperts).map { e in
                    Float((e * 7 + token * (i + 1)) % numExperts) / Float(numExperts) * 3 + rng.nextUniform() * 2
                }
                let m = logits.max()!
                let exps = logits.map { exp($0 - m) }
                let total = exps.reduce(0, +)
                let p = exps.map { $0 / total }
                let chosen = MoECore.topK(p[...], k: topK)
                var r = LayerRouting(
                    logits: logits, probabilities: p, experts: chosen, weights: chosen.map { _ in 1 / Float(topK) },
                    expertOutputNorms: chosen.map { p[$0] }, gruHidden: nil, routerNanoseconds: 0)
                if hasWeights { r.allExpertOutputNorms = p.map { $0 + Float(rng.nextNormal()) * 0.01 } }
                return r
            }
            return RoutingTrace(token: token, position: t % contextLength, layers: layers)
        }
    }
}

struct CharacterTokenizer: TextTokenizer {
    var vocabSize: Int { 40 }
    func encode(_ text: String) -> [Int] { text.utf8.map { Int($0) % 40 } }
    func bytes(of id: Int) -> [UInt8] { [UInt8(65 + id % 26)] }
}

/// Reads an SVG with Foundation's XMLParser: whether it is well-formed, the classes of its
/// groups, and the x positions and text of the labels inside each `axis x` group.
final class SVGInspector: NSObject, XMLParserDelegate {
    var groupClasses: [String] = []
    var stack: [String] = []
    var rootIsSVG = false
    var images = 0, rects = 0
    var axisXLabels: [[(x: Double, text: String)]] = []
    private var currentText: (x: Double, text: String)?

    static func inspect(_ svg: String) -> (ok: Bool, inspector: SVGInspector, error: String?) {
        let inspector = SVGInspector()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = inspector
        let ok = parser.parse()
        return (ok, inspector, parser.parserError.map { "\($0)" })
    }

    func parser(
        _ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        if stack.isEmpty { rootIsSVG = name == "svg" && attributes["xmlns"] == "http://www.w3.org/2000/svg" }
        let cls = attributes["class"] ?? ""
        if name == "g" {
            groupClasses.append(cls)
            stack.append(cls)
            if cls == "axis x" { axisXLabels.append([]) }
        } else {
            stack.append("")
        }
        if name == "image" { images += 1 }
        if name == "rect" { rects += 1 }
        if name == "text", stack.dropLast().last == "axis x", attributes["class"] != "axis-title" {
            currentText = (Double(attributes["x"] ?? "") ?? .nan, "")
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { currentText?.text += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        stack.removeLast()
        if name == "text", let t = currentText {
            axisXLabels[axisXLabels.count - 1].append(t)
            currentText = nil
        }
    }
}

@Suite struct FigureTests {
    static func report(experts: Int, k: Int, layers: Int, tokensPerDomain: Int = 200, weights: Bool = true) -> AnalysisReport {
        let model = SyntheticModel(numExperts: experts, topK: k, routedLayers: Array((61 - layers)..<61), hasWeights: weights)
        let domains = ["prose", "code", "numbers"].enumerated().map { i, name in
            (domain: name, traces: model.traces(tokens: tokensPerDomain, seed: UInt64(i)))
        }
        return AnalysisReport(
            model: model, tokenizer: CharacterTokenizer(), checkpoint: "synthetic", randomInit: false,
            tracesByDomain: domains)
    }

    /// Moescope's own shape, OLMoE's, and DeepSeek-V3's (256 experts, 58 routed of 61 layers); the
    /// similarity and gate-vs-norm figures at 256 experts come from the short 256 × 4 case.
    @Test(arguments: [(8, 2, 6, true), (64, 8, 16, true), (256, 8, 58, false), (256, 8, 4, true)])
    func everyFigureIsWellFormedWithAxesAndALegend(shape: (experts: Int, k: Int, layers: Int, weights: Bool)) throws {
        let report = Self.report(
            experts: shape.experts, k: shape.k, layers: shape.layers,
            tokensPerDomain: shape.experts > 64 ? 20 : 100, weights: shape.weights)
        let figures = AnalysisFigures(report: report, textDescription: "synthetic routing")
        let files = figures.files
        #expect(
            files.map(\.name) == [
                "load.svg", "cross_layer_mi.svg", "cross_layer_mi_rmoe.svg", "entropy.svg", "selection_margin.svg",
                "repetition.svg", "coactivation.svg", "domain_shares.svg", "domain_lift.svg",
            ]
                + (shape.weights ? ["gate_vs_norm.svg", "expert_similarity.svg", "expert_similarity_by_depth.svg"] : []))
        for (name, svg) in files {
            let (ok, inspector, error) = SVGInspector.inspect(svg)
            #expect(ok, "\(name) is not well-formed XML: \(error ?? "")")
            #expect(inspector.rootIsSVG, "\(name) root")
            #expect(inspector.groupClasses.contains("axis x") && inspector.groupClasses.contains("axis y"), "\(name) axes")
            #expect(inspector.groupClasses.contains("legend"), "\(name) legend")
            #expect(inspector.groupClasses.contains("caption") && svg.contains("synthetic"), "\(name) caption")
            #expect(svg.utf8.count < 4_000_000, "\(name) is \(svg.utf8.count) bytes")
            // Tick labels on every x axis are spaced wider than they are long: none overlap.
            for ticks in inspector.axisXLabels {
                for (a, b) in zip(ticks, ticks.dropFirst()) {
                    let room = (SVGDocument.textWidth(a.text, size: 11) + SVGDocument.textWidth(b.text, size: 11)) / 2
                    #expect(b.x - a.x >= room, "\(name): '\(a.text)' at \(a.x) and '\(b.text)' at \(b.x) overlap")
                }
            }
        }
        // Panels: at most 12 layers drawn, the first and last among them.
        #expect(figures.shownLayers.count == min(shape.layers, AnalysisFigures.maxPanels))
        #expect(figures.shownLayers.first == 0 && figures.shownLayers.last == shape.layers - 1)
        // Big matrices are one embedded image each, small ones rectangles.
        if let similarity = files.first(where: { $0.name == "expert_similarity.svg" }) {
            let images = SVGInspector.inspect(similarity.svg).inspector.images
            #expect(shape.experts >= 256 ? images == figures.shownLayers.count : images == 0)
        }
        if let dir = ProcessInfo.processInfo.environment["MOESCOPE_KEEP_FIGURES"] {  // for looking at them: rsvg-convert
            _ = try figures.write(to: "\(dir)/\(shape.experts)x\(shape.layers)")
        }
    }

    @Test func comparisonChartDrawsIntervalsWhenGiven() {
        let routers = ["Linear", "MLP", "Attention", "Hybrid", "Hash", "MLP-Hadamard", "GRU (RMoE)"]
        let plain = ComparisonFigure(
            routers: routers, metrics: [.init(name: "held-out perplexity", unit: "PPL", values: [45, 49, 47, 44, 40, 49, 48])],
            caption: "c"
        ).svg
        let withIntervals = ComparisonFigure(
            routers: routers,
            metrics: [
                .init(
                    name: "held-out perplexity", unit: "PPL", values: [45, 49, 47, 44, 40, 49, 48],
                    intervals: [44...46, 48...50, nil, 43...45, 39...41, 48...50, 47...49])
            ], caption: "c"
        ).svg
        for svg in [plain, withIntervals] {
            let (ok, inspector, _) = SVGInspector.inspect(svg)
            #expect(ok && inspector.groupClasses.contains("legend") && inspector.groupClasses.contains("axis y"))
            for router in routers { #expect(svg.contains(">\(SVGDocument.escape(router))<")) }
        }
        #expect(!plain.contains(">interval<") && withIntervals.contains(">interval<"))
    }

    @Test func pngIsAValidStoredDeflateStream() {
        #expect(PNGEncoder.crc32(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x414F_A339)
        #expect(PNGEncoder.adler32(Array("Wikipedia".utf8)) == 0x11E6_0398)
        let png = PNGEncoder.rgb(width: 300, height: 300, pixels: [UInt8](repeating: 7, count: 300 * 300 * 3))
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        #expect(Array(png.suffix(8)) == [0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82])  // IEND and its CRC
        // 270 300 bytes of scanlines need five stored blocks of ≤ 65 535: header 2 + 5×5 + data + adler 4.
        #expect(png.count == 8 + 25 + (12 + 2 + 25 + 300 * 901 + 4) + 12)
    }

    @Test func svgEscapesMarkupAndControlCharacters() {
        var svg = SVGDocument(width: 10, height: 10)
        svg.text("a<b & \"c\" \u{1}", x: 0, y: 0)
        #expect(svg.text.contains("a&lt;b &amp; &quot;c&quot; \u{FFFD}"))
        #expect(SVGInspector.inspect(svg.text).ok)
    }

    @Test func palettesEndWhereMatplotlibsDo() {
        #expect(ColourMap.viridis.hex(0) == "#440154" && ColourMap.viridis.hex(1) == "#fde725")
        #expect(ColourMap.cividis.hex(0) == "#00224e" && ColourMap.cividis.hex(1) == "#fee838")
        #expect(ColourMap.viridis.hex(.nan) == "#440154" && ColourMap.viridis.hex(7) == "#fde725")  // clamped
        #expect(ColourMap.viridis.textColour(on: 0) == "#ffffff" && ColourMap.viridis.textColour(on: 1) == "#111111")
    }

    @Test func tickStepsAndNiceTicks() {
        #expect(Chart.niceStep(1) == 1 && Chart.niceStep(3) == 4 && Chart.niceStep(11) == 16)
        #expect(Chart.niceTicks(0, 0.9, count: 5) == [0, 0.25, 0.5, 0.75, 1])
        #expect(Chart.format(12.5) == "12.5" && Chart.format(0.25) == "0.25" && Chart.format(100) == "100")
    }
}

/// The "moescope-analysis" JSON: its keys are the documented ones (README, "Formats"), with the
/// types a script reading it expects.
@Suite struct AnalysisSchemaTests {
    static let topLevel: Set = [
        "format", "version", "router", "checkpoint", "random_init", "tokens", "num_experts", "top_k",
        "layers", "cross_layer_mutual_information", "domains", "paper_checks", "placement", "not_available",
    ]
    static let layer: Set = [
        "layer", "entropy", "selection_margin", "expert_shares", "load_cv", "max_vio", "usage_entropy",
        "inner_balance", "outer_balance", "gate_norm_rank_correlation", "top1_norm_agreement",
        "gate_norm_rank_histogram", "expert_similarity", "mean_expert_similarity", "top_tokens",
        "mean_gate_similarity", "mean_up_similarity", "mean_down_similarity",
    ]
    static let distribution: Set = ["mean", "p10", "p25", "median", "p75", "p90"]
    static let checks: [String: Set<String>] = [
        "mixtral_repetition": ["definition", "random_first_choice", "random_any_overlap", "layers", "domains", "published"],
        "olmoe_coactivation": ["definition", "random_all_pairs", "random_adjacent_pairs", "layers", "published_note"],
        "olmoe_vocabulary_specialisation": [
            "definition", "random_top1", "random_top_k", "frequent_minimum", "uncounted_occurrences", "layers", "published_note",
        ],
        "olmoe_domain_specialisation": ["definition", "domains", "published_note"],
        "rmoe_mutual_information": [
            "definition", "bins", "tokens_used", "per_token", "per_token_mean_all_pairs", "per_token_mean_adjacent",
            "top1_mean_all_pairs", "top1_mean_adjacent", "published_note",
        ],
        "rmoe_balance": ["definition", "layers", "uniform_inner", "uniform_outer", "published_note"],
    ]

    @Test func keysAndTypesAreTheDocumentedOnes() throws {
        let report = FigureTests.report(experts: 8, k: 2, layers: 6)
        let data = try JSONEncoder().encode(report)
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(Set(json.keys) == Self.topLevel)
        #expect(json["format"] as? String == "moescope-analysis" && json["version"] as? Int == 1)
        let layers = try #require(json["layers"] as? [[String: Any]])
        #expect(layers.count == 6 && layers.allSatisfy { Set($0.keys) == Self.layer })
        #expect(layers.map { $0["layer"] as? Int } == [55, 56, 57, 58, 59, 60])  // the model's own layer numbers
        for key in ["entropy", "selection_margin"] {
            #expect(Set(try #require(layers[0][key] as? [String: Any]).keys) == Self.distribution)
        }
        let histogram = try #require(layers[0]["gate_norm_rank_histogram"] as? [[Double]])
        #expect(histogram.count == 8 && histogram.allSatisfy { abs($0.reduce(0, +) - 1) < 1e-9 })

        let checks = try #require(json["paper_checks"] as? [String: [String: Any]])
        #expect(Set(checks.keys) == Set(Self.checks.keys))
        for (name, keys) in Self.checks { #expect(Set(checks[name]!.keys) == keys, "\(name)") }
        let repetition = try #require(checks["mixtral_repetition"]?["layers"] as? [[String: Any]])
        #expect(Set(repetition[0].keys) == ["layer", "first_choice", "any_overlap", "pairs"])
        let published = try #require(checks["mixtral_repetition"]?["published"] as? [String: Any])
        #expect(Set(published.keys) == ["source", "layers", "domains"])
        let coactivation = try #require(checks["olmoe_coactivation"]?["layers"] as? [[String: Any]])
        #expect(
            Set(coactivation[0].keys) == [
                "layer", "mean_strongest_all_pairs", "mean_strongest_adjacent_pairs", "top_all_pairs",
                "top_adjacent_pairs",
            ])
        let vocabulary = try #require(checks["olmoe_vocabulary_specialisation"]?["layers"] as? [[String: Any]])
        #expect(Set(vocabulary[0].keys) == ["layer", "top1", "top_k", "top1_frequent", "distinct_tokens", "frequent_tokens"])
        let perToken = try #require(checks["rmoe_mutual_information"]?["per_token"] as? [[Double]])
        #expect(perToken.count == 6 && perToken.allSatisfy { $0.count == 6 })

        // Every key is named in the README's description of the format (as a whole word).
        let readme = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("../../README.md"), encoding: .utf8)
        let start = try #require(readme.range(of: "**Analysis**"))
        let end = try #require(readme.range(of: "**Bench**"))
        let section = String(readme[start.lowerBound..<end.lowerBound])
        var keys = Self.topLevel.union(Self.layer).union(Self.distribution).union(Self.checks.keys)
        for set in Self.checks.values { keys.formUnion(set) }
        keys.formUnion([
            "first_choice", "any_overlap", "pairs", "mean_strongest_all_pairs", "mean_strongest_adjacent_pairs",
            "top_all_pairs", "top_adjacent_pairs", "top1", "top_k", "top1_frequent", "distinct_tokens", "frequent_tokens",
            "specialisation", "baseline", "first_or_second_choice", "inner", "outer",
        ])
        let undocumented = keys.sorted().filter {
            section.range(of: "(^|[^A-Za-z0-9_])\($0)([^A-Za-z0-9_]|$)", options: .regularExpression) == nil
        }
        #expect(undocumented.isEmpty, "README does not document \(undocumented)")
    }
}
