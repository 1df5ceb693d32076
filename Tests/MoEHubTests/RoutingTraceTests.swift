import Foundation
import Testing

@testable import MoEAnalysis
@testable import MoECore
@testable import MoEHub

/// The routing-trace format: captured traces of the Hugging Face fixtures replay to what
/// moescope computes on the same model and tokens; written traces read back exactly; the
/// streamed analysis counts what a plain recount of the file counts; hostile traces are refused
/// with one line.
@Suite final class RoutingTraceTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .path
    static let traces = "\(root)/Tests/Fixtures/traces"
    let scratch: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-trace-\(UUID())").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    /// Each test's folder goes with it (swift-testing makes one instance a test).
    deinit { try? FileManager.default.removeItem(atPath: scratch) }

    /// scripts/capture_transformers.py's traces (transformers on CPU, the committed fixtures):
    /// every token's top-k set and weights equal moescope's own forward on the same tokens.
    @Test(arguments: ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "olmoe_64e", "deepseek_v2", "deepseek_v3"])
    func capturedTraceMatchesMoescope(family: String) throws {
        let trace = try RoutingTraceFile(path: "\(Self.traces)/\(family).safetensors")
        let model = try HubModel(folder: "\(Self.root)/Tests/Fixtures/hf/\(family)")
        #expect(family.hasPrefix(trace.family))
        #expect(trace.routedLayers == model.routedLayers)
        #expect(trace.numExperts == model.numExperts && trace.topK == model.topK)
        #expect(trace.scoreKind == .logits)
        #expect(trace.documentCount == 3)
        let tokenizer = try HubTokenizer(file: try #require(trace.tokenizerPath))
        var compared = 0
        var tied = 0
        for d in 0..<trace.documentCount {
            let range = trace.documentOffsets[d]..<trace.documentOffsets[d + 1]
            let ids = range.map(trace.tokenID)
            #expect(tokenizer.decode(ids).contains(d == 1 ? "def f(x)" : "expert"))
            let ours = try model.forward(ids).routing
            for (i, t) in range.enumerated() {
                let recorded = try trace.routing(token: t)
                for l in 0..<trace.routedLayerCount {
                    let mine = ours[i].layers[l]
                    let theirs = recorded.layers[l]
                    let worst = zip(mine.logits, theirs.logits).map { abs($0 - $1) }.max()!
                    #expect(worst <= 1e-4 * max(1, theirs.logits.map(abs).max()!), "\(family) t\(t) L\(l): logits differ by \(worst)")
                    // Near-ties of the selection scores may legitimately go either way.
                    let moe = try #require(model.layers[model.config.moeLayers[l]].moe)
                    let sorted = moe.route(theirs.logits, rule: model.config.routing, k: model.topK).selection.sorted(by: >)
                    if (0..<min(model.topK, model.numExperts - 1)).contains(where: { sorted[$0] - sorted[$0 + 1] < 1e-4 }) {
                        tied += 1
                        continue
                    }
                    #expect(Set(mine.experts) == Set(theirs.experts), "\(family) t\(t) L\(l): \(mine.experts) vs \(theirs.experts)")
                    for (e, w) in zip(theirs.experts, theirs.weights) {
                        let slot = try #require(mine.experts.firstIndex(of: e))
                        #expect(abs(mine.weights[slot] - w) <= 1e-4 * max(1, abs(w)), "\(family) t\(t) L\(l) E\(e): weight")
                    }
                    compared += 1
                }
            }
        }
        #expect(compared > 2 * tied && compared >= trace.tokenCount, "\(compared) compared, \(tied) near-ties")
    }

    /// A trace written by moescope reads back token for token.
    @Test func writtenTraceReadsBack() throws {
        let model = try HubModel(folder: "\(Self.root)/Tests/Fixtures/hf/olmoe_64e")
        let first = try model.forward([5, 9, 13, 200, 17]).routing
        let second = try model.forward([40, 41]).routing
        let path = "\(scratch)/own.safetensors"
        let description = RoutingTraceDescription(
            family: "olmoe", numExperts: 64, topK: 8, routedLayers: model.routedLayers, layerCount: model.layerCount,
            routingRule: "softmax top-8", source: ["engine": "test"])
        try RoutingTraceFile.write(documents: [("code", first), ("prose", second)], description: description, scores: true, to: path)
        let trace = try RoutingTraceFile(path: path)
        #expect(trace.tokenCount == 7 && trace.documentOffsets == [0, 5, 7] && trace.domains == ["code", "prose"])
        for (t, expected) in (first + second).enumerated() {
            let read = try trace.routing(token: t)
            #expect(read.token == expected.token)
            for (a, b) in zip(read.layers, expected.layers) {
                #expect(a.experts == b.experts && a.weights == b.weights)
                // Logits are stored in F16.
                #expect(zip(a.logits, b.logits).allSatisfy { abs($0 - $1) <= 2e-3 * max(1, abs($1)) })
            }
        }
    }

    /// One pipeline: a trace streamed as blocks gives the report that the same routing handed
    /// over as live `RoutingTrace`s (one per token, from `routing(token:)`) gives, number for
    /// number; and its counts equal a plain recount of the file. DeepSeek-V3's routed shape
    /// (58 layers, top-8 of 256) with logits; the same without logits leaves the score analyses
    /// empty and says why.
    @Test(arguments: [true, false]) func streamedReportEqualsLiveReport(withLogits: Bool) throws {
        let path = "\(scratch)/synthetic-\(withLogits).safetensors"
        try SyntheticRoutingTrace.write(
            to: path, tokens: 600, layers: 58, experts: 256, topK: 8, documents: 4, seed: 3, withLogits: withLogits)
        let trace = try RoutingTraceFile(path: path)
        #expect(trace.routedLayers == Array(3..<61) && trace.layerCount == 61)
        var progress: [Int] = []
        let streamed = try AnalysisReport.Accumulator.reading(trace) { progress.append($0) }
        #expect(progress.last == 600 && progress == progress.sorted())
        let report = AnalysisReport(trace: trace, tokenizer: TokenIDsOnly(), accumulated: streamed)

        var live = AnalysisReport.Accumulator(numExperts: 256, topK: 8, layerCount: 58, expectedTokens: 600)
        var load = [[Int]](repeating: [Int](repeating: 0, count: 256), count: 58)
        var pairs = [Int](repeating: 0, count: 256 * 256)
        var tops: [[Int]] = Array(repeating: [], count: 58)
        var entropy = [Double](repeating: 0, count: 58)
        var codeLoad = [Int](repeating: 0, count: 256)
        for d in 0..<trace.documentCount {
            var traces: [RoutingTrace] = []
            for t in trace.documentOffsets[d]..<trace.documentOffsets[d + 1] {
                let routing = try trace.routing(token: t)
                traces.append(routing)
                for (l, layer) in routing.layers.enumerated() {
                    #expect(Set(layer.experts).count == 8)
                    for e in layer.experts { load[l][e] += 1 }
                    if l == 10 { for a in layer.experts { for b in layer.experts where a != b { pairs[a * 256 + b] += 1 } } }
                    if l == 0 && trace.domains[d] == "code" { for e in layer.experts { codeLoad[e] += 1 } }
                    tops[l].append(layer.experts[0])
                    entropy[l] += MoEAnalysis.entropy(layer.probabilities)
                }
            }
            if !withLogits {
                // Without scores, `routing(token:)` makes probabilities up from the weights; the
                // live path would analyse those, so blocks stand in for the traces here.
                live.add(
                    try RoutingBlock(trace: trace, tokens: trace.documentOffsets[d]..<trace.documentOffsets[d + 1]),
                    domain: trace.domains[d])
            } else {
                live.add(traces, domain: trace.domains[d])
            }
        }
        let reference = AnalysisReport(trace: trace, tokenizer: TokenIDsOnly(), accumulated: live)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let a = try JSONSerialization.jsonObject(with: try encoder.encode(report))
        let b = try JSONSerialization.jsonObject(with: try encoder.encode(reference))
        #expect(Self.differences(a, b, tolerance: 1e-6).isEmpty, "\(Self.differences(a, b, tolerance: 1e-6).prefix(5))")

        #expect(report.tokens == 600 && report.layers.count == 58 && report.layers[0].layer == 3)
        for l in [0, 10, 57] {
            #expect(report.layers[l].expertShares == load[l].map { Double($0) / Double(600 * 8) })
        }
        let coActivation = report.paperChecks.olmoeCoActivation.allPairsMatrices[10]
        #expect(
            (0..<256).allSatisfy { i in
                (0..<256).allSatisfy { j in abs(coActivation[i][j] * Double(load[10][i]) - Double(pairs[i * 256 + j])) < 1e-6 }
            })
        let code = try #require(report.domains.first { $0.domain == "code" })
        let codeTotal = Double(codeLoad.reduce(0, +))
        #expect(code.sharesByLayer[0] == codeLoad.map { Double($0) / codeTotal })
        for l in [0, 20, 56] {
            #expect(abs(report.crossLayerMutualInformation[l][l + 1] - mutualInformation(tops[l], tops[l + 1])) < 1e-9)
            #expect(abs(report.crossLayerMutualInformation[l][l] - mutualInformation(tops[l], tops[l])) < 1e-9)
        }
        // The synthetic routing follows the previous layer half the time: information flows.
        #expect(report.crossLayerMutualInformation[0][1] > 0.5)
        #expect(report.placement.map(\.devices) == [4, 8, 16])
        #expect(report.paperChecks.mixtralRepetition.layers[0].pairs == 600 - 4)
        #expect(report.layers[0].topTokens.contains { !$0.isEmpty })
        if withLogits {
            for l in [0, 57] { #expect(abs(try #require(report.layers[l].entropy).mean - entropy[l] / 600) < 1e-4) }
            #expect(report.paperChecks.rmoeMutualInformation.tokensUsed > 0)
            #expect(!report.notAvailable.contains { $0.contains("router_logits") })
        } else {
            #expect(report.layers.allSatisfy { $0.entropy == nil && $0.selectionMargin == nil })
            #expect(report.notAvailable.contains { $0.contains("routing entropy") && $0.contains("no router_logits") })
        }
        // `analyze --trace --figures`: figures of router scores are drawn only when the trace has them,
        // never as a row of zeros.
        let figures = Set(AnalysisFigures(report: report, textDescription: "trace").files.map(\.name))
        let scoreFigures: Set = ["entropy.svg", "selection_margin.svg", "cross_layer_mi_rmoe.svg"]
        #expect(figures.isSuperset(of: ["load.svg", "cross_layer_mi.svg", "coactivation.svg", "repetition.svg"]))
        #expect(withLogits ? figures.isSuperset(of: scoreFigures) : figures.isDisjoint(with: scoreFigures))
    }

    /// Paths at which two decoded JSON values differ (numbers by more than `tolerance`, relative).
    static func differences(_ a: Any, _ b: Any, tolerance: Double, at path: String = "") -> [String] {
        switch (a, b) {
        case (let x as [String: Any], let y as [String: Any]):
            guard Set(x.keys) == Set(y.keys) else { return ["\(path): keys \(x.keys.sorted()) vs \(y.keys.sorted())"] }
            return x.keys.sorted().flatMap { differences(x[$0]!, y[$0]!, tolerance: tolerance, at: "\(path).\($0)") }
        case (let x as [Any], let y as [Any]):
            guard x.count == y.count else { return ["\(path): \(x.count) vs \(y.count) items"] }
            return zip(x, y).enumerated().flatMap { differences($1.0, $1.1, tolerance: tolerance, at: "\(path)[\($0)]") }
        case (let x as NSNumber, let y as NSNumber):
            let (u, v) = (x.doubleValue, y.doubleValue)
            return abs(u - v) <= tolerance * max(1, abs(u), abs(v)) ? [] : ["\(path): \(u) vs \(v)"]
        default:
            return "\(a)" == "\(b)" ? [] : ["\(path): \(a) vs \(b)"]
        }
    }

    /// Placement on a hand-worked load: 8 experts on 4 devices.
    @Test func expertPlacement() throws {
        let load = [10, 9, 1, 1, 1, 1, 1, 0]
        let p = try #require(ExpertPlacement(load: load, devices: 4))
        #expect(p.contiguousLoads == [19, 2, 2, 1])
        #expect(abs(p.contiguousBalancedness - 6.0 / 19.0) < 1e-12)
        // Greedy: 10→d0, 9→d1, the 1s onto d2, d3, d2, d3, then d1 (the lighter with a slot), 0 onto d0.
        #expect(p.greedyLoads == [10, 10, 2, 2])
        #expect(abs(p.gain - 1.9) < 1e-12)
        #expect(p.greedyLoads.reduce(0, +) == 24)
        #expect(Set(0..<4).allSatisfy { g in p.greedyAssignment.filter { $0 == g }.count == 2 })
        #expect(ExpertPlacement(load: load, devices: 3) == nil)
    }

    /// Broken traces: one line naming the file and the rule.
    @Test func hostileTracesAreRefused() throws {
        let good = try Data(contentsOf: URL(fileURLWithPath: "\(Self.traces)/mixtral.safetensors"))
        func withMetadata(_ key: String, _ value: String) throws -> String {
            var bytes = [UInt8](good)
            bytes = try FuzzTests.mutatedMetadataSetting(bytes, key: key, value: value)
            let path = "\(scratch)/bad-\(key).safetensors"
            _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
            return path
        }
        for (key, value, words) in [
            ("tokenizer_path", "../hf/mixtral/tokenizer.json", "without .."), ("tokenizer_path", "/etc/passwd", "relative"),
            ("format", "other", "not \"moescope-routing-trace\""), ("version", "2", "reads version 1"),
            ("num_experts", "0", "num_experts"), ("top_k", "9", "top_k"), ("routed_layers", "[1,0]", "rise strictly"),
            ("routed_layers", "[0]", "topk_ids must be I32 of shape"), ("domains", "[\"a\"]", "one label per document"),
        ] {
            let path = try withMetadata(key, value)
            #expect { try RoutingTraceFile(path: path) } throws: { error in
                let text = "\(error)"
                return text.contains(path) && text.contains(words) && !text.contains("\n")
            }
        }
        // A link out of the folder is refused too.
        let folder = "\(scratch)/linked"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: "\(folder)/tok.json", withDestinationPath: "\(Self.root)/Tests/Fixtures/hf/mixtral/tokenizer.json")
        let linked = "\(folder)/t.safetensors"
        _ = FileManager.default.createFile(
            atPath: linked, contents: Data(try FuzzTests.mutatedMetadataSetting([UInt8](good), key: "tokenizer_path", value: "tok.json")))
        #expect { try RoutingTraceFile(path: linked) } throws: { "\($0)".contains("leads out of the trace's folder") }
        // An expert id out of range is found when read, naming token and layer.
        var bytes = [UInt8](good)
        let trace = try RoutingTraceFile(path: "\(Self.traces)/mixtral.safetensors")
        let (entry, _) = try #require(trace.file.rawBytes("topk_ids"))
        let headerLength = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let at = 8 + headerLength + entry.byteRange.lowerBound + 4 * (5 * 2 * 2 + 2)  // token 5, layer 1, slot 0
        bytes.replaceSubrange(at..<at + 4, with: [0x63, 0, 0, 0])
        let damaged = "\(scratch)/damaged.safetensors"
        _ = FileManager.default.createFile(atPath: damaged, contents: Data(bytes))
        let opened = try RoutingTraceFile(path: damaged)
        #expect { try opened.routing(token: 5) } throws: { "\($0)".contains("token 5, layer L1") }
        #expect { try AnalysisReport.Accumulator.reading(opened) } throws: {
            "\($0)".contains("token 5, layer L1") && "\($0)".contains("expert 99")
        }
    }
}

extension FuzzTests {
    /// The file with `__metadata__[key] = value`, the data untouched.
    static func mutatedMetadataSetting(_ file: [UInt8], key: String, value: String) throws -> [UInt8] {
        let length = Int(file.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        var header = try JSONSerialization.jsonObject(with: Data(file[8..<8 + length])) as! [String: Any]
        var metadata = header["__metadata__"] as! [String: String]
        metadata[key] = value
        header["__metadata__"] = metadata
        var newHeader = [UInt8](try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while (8 + newHeader.count) % 8 != 0 { newHeader.append(0x20) }
        return withUnsafeBytes(of: UInt64(newHeader.count).littleEndian) { Array($0) } + newHeader + Array(file[(8 + length)...])
    }
}
