import ArgumentParser
import Foundation
import MoEAnalysis
import MoECore
import MoEScopeUI
import MoETraining

/// `moescope bench`: medians of repeated runs, in one process, on the default model shape.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure decode latency, router latency, training throughput, GEMM speed, TUI frame time and memory.",
        discussion: """
        Build with -c release; figures from a debug build are meaningless. Training is measured
        on one core and on all of them (MOESCOPE_THREADS=N sets how many); everything else runs
        on one.
        """)

    @Option(help: "Repetitions per measurement (the median is reported).") var repeats = 5
    @Option(help: ArgumentHelp("Assets directory (checkpoints and tokenizer).", valueName: "dir")) var assets: String?
    @Flag(help: "Print the results as JSON.") var json = false
    @Option(help: "Tokens of the synthetic routing trace (× 58 layers × top-8 of 256) analysed by the analyze --trace row; 0 skips it.")
    var traceTokens = 1_000_000
    @Option(help: ArgumentHelp("Keep the synthetic trace at PATH (for `moescope --trace PATH`) instead of deleting it.", valueName: "path"))
    var keepTrace: String?
    @Flag(help: "Run only the routing-trace rows.") var traceOnly = false
    @Option(help: ArgumentHelp("Benchmark this Hugging Face model folder instead: decode, prefill and memory bandwidth.", valueName: "dir"))
    var model: String?
    @Option(help: "With --model: prompt length for the prefill timing.") var promptTokens = 32
    @Option(help: "With --model: tokens decoded one at a time after each prompt.") var decodeTokens = 16

    struct Result: Codable {
        var name: String
        var value: Double
        var unit: String
        var note: String
    }

    struct Report: Codable {
        var format = "moescope-bench"
        var version = 1
        var results: [Result]
    }

    func validate() throws {
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1, got \(repeats)") }
        guard promptTokens >= 1, decodeTokens >= 1 else { throw ValidationError("--prompt-tokens and --decode-tokens must be at least 1") }
    }

    /// `analyze --trace` on a synthetic trace of DeepSeek-V3's routed shape (58 layers, top-8 of
    /// 256): opening it, and the streaming analysis in token-layers per second and in GB/s of
    /// expert ids read (against the memory bandwidth that bounds it).
    func benchRecordedTrace(record: (String, Double, String, String) -> Void) throws {
        guard traceTokens > 0 else { return }
        let path = keepTrace ?? NSTemporaryDirectory() + "/moescope-bench-\(getpid()).safetensors"
        let began = monotonicNanoseconds()
        try SyntheticRoutingTrace.write(to: path, tokens: traceTokens, layers: 58, experts: 256, topK: 8)
        let written = Double(monotonicNanoseconds() - began) / 1e9
        defer { if keepTrace == nil { try? FileManager.default.removeItem(atPath: path) } }
        var opens: [Double] = [], rates: [Double] = []
        var trace: RoutingTraceFile?
        for _ in 0..<max(1, min(repeats, 3)) {
            let start = monotonicNanoseconds()
            trace = try RoutingTraceFile(path: path)
            opens.append(Double(monotonicNanoseconds() - start) / 1e6)
        }
        for _ in 0..<max(1, min(repeats, 3)) {
            let start = monotonicNanoseconds()
            _ = try AnalysisReport.Accumulator.reading(trace!)
            rates.append(Double(traceTokens * 58) / (Double(monotonicNanoseconds() - start) / 1e9))
        }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let shape = "\(traceTokens) tokens × 58 layers × top-8 of 256 (written in \(String(format: "%.1f", written)) s)"
        record("open routing trace", median(opens), "ms", shape)
        record("analyze --trace", median(rates) / 1e6, "M tok-layer/s", "≥ 5 wanted; one core")
        record("analyze --trace ids read", median(rates) * 8 * 4 / 1e9, "GB/s", "expert ids (I32); memory bandwidth ~18 GB/s per core")
    }

    /// The explorer at DeepSeek-V3's routing shape (256 experts, top-8, 61 layers; random
    /// weights at a small width, so the figures are the explorer's, not a 671B model's decode):
    /// a frame of each view at 200 × 60, and a keypress (decode one token + render) on the
    /// dashboard and on the Expert view, 120 tokens in.
    func benchLargestShape(text: String, tokenizer: Tokenizer, record: (String, Double, String, String) -> Void) throws {
        var config = ModelConfig()
        config.hiddenSize = 32; config.numHeads = 2; config.expertHiddenSize = 16; config.routerHiddenSize = 16
        config.numExperts = 256; config.topK = 8; config.numLayers = 61; config.router = .linear
        let model = try MoEModel(config: config, seed: 7)
        let ids = Array(tokenizer.encode(text).prefix(200))
        let loader: SessionLoader = { _, tokens, _ in
            ExplorerSession(model: model, tokenizer: tokenizer, label: "256e/61L", isRandomInit: true, tokens: tokens ?? ids)
        }
        var state = try ExplorerState(loader: loader, router: .linear, text: text)
        for _ in 0..<120 { state.handle(.right) }
        let shape = "256 experts, 61 layers, \(state.cursor + 1) tokens decoded"
        for _ in ExplorerView.allCases {
            var frames: [Double] = []
            for _ in 0..<(4 * repeats) {
                let began = monotonicNanoseconds()
                _ = ExplorerRenderer.render(state, width: 200, height: 60)
                frames.append(Double(monotonicNanoseconds() - began) / 1e6)
            }
            record("TUI frame 200×60 256e/61L (\(state.view.title))", median(frames), "ms", shape)
            state.handle(.tab)
        }
        for view in [ExplorerView.dashboard, .expert] {
            while state.view != view { state.handle(.tab) }
            var keyTimes: [Double] = []
            for step in 0..<(8 * repeats) {
                let began = monotonicNanoseconds()
                state.handle(step % 2 == 0 ? .right : .down)
                _ = ExplorerRenderer.render(state, width: 200, height: 60)
                keyTimes.append(Double(monotonicNanoseconds() - began) / 1e6)
            }
            record("keypress → frame 256e/61L (\(view.title))", median(keyTimes), "ms", "→ and ↓ alternately: decode + render")
        }
    }

    func run() throws {
        if let model { return try benchModel(path: model) }
        var results: [Result] = []
        func record(_ name: String, _ value: Double, _ unit: String, _ note: String = "") {
            results.append(Result(name: name, value: value, unit: unit, note: note))
            if !json { printError(String(format: "%-34@ %10.3f %@ %@", name as NSString, value, unit, note)) }
        }
        if traceOnly {
            try benchRecordedTrace(record: record)
            if json { print(String(decoding: try JSONEncoder.output([.prettyPrinted, .sortedKeys]).encode(Report(results: results)), as: UTF8.self)) }
            return
        }
        let locator = try AssetLocator(explicit: assets)
        let tokenizer = try Tokenizer.load(path: locator.tokenizerPath)
        let text = String(repeating: "The router sends every token to two of eight experts. def f(x): return x * 2\n", count: 8)
        let ids = Array(tokenizer.encode(text).prefix(128))

        // Decode: one token at a time with the KV cache, routing traces on (what the TUI does).
        // Models load one at a time, as the TUI loads them, so peak memory is the TUI's.
        func loadModel(_ router: RouterKind) throws -> MoEModel { try locator.shippedModel(for: router, seed: 1, quiet: true).checkpoint.model }
        for router in RouterKind.allCases {
            let model = try loadModel(router)
            var perToken: [Double] = [], routerTimes: [Double] = []
            for _ in 0..<repeats {
                var cache = model.makeCache()
                let began = monotonicNanoseconds()
                for id in ids {
                    let step = try model.forward([id], cache: &cache)
                    routerTimes.append(step.routing[0].layers.reduce(0) { $0 + $1.routerNanoseconds })
                }
                perToken.append(Double(monotonicNanoseconds() - began) / Double(ids.count))
            }
            if router == .gru || router == .linear {
                record("decode ms/token (\(router.rawValue), traces on)", median(perToken) / 1e6, "ms", "\(ids.count) tokens, KV cache")
            }
            record("router µs/token (\(router.rawValue))", median(routerTimes) / 1e3, "µs", "all \(model.config.numLayers) layers")
        }

        // TUI frame: rendering the dashboard into the cell grid at 200 × 60.
        let loader: SessionLoader = { router, tokens, text in
            let router = router ?? .gru
            return ExplorerSession(model: try loadModel(router), tokenizer: tokenizer, label: router.rawValue, isRandomInit: false,
                                   tokens: tokens ?? tokenizer.encode(text ?? ""))
        }
        var state = try ExplorerState(loader: loader, router: .gru, text: text)
        state.handle(.end)
        for _ in ExplorerView.allCases {
            var frames: [Double] = []
            for _ in 0..<(20 * repeats) {
                let began = monotonicNanoseconds()
                _ = ExplorerRenderer.render(state, width: 200, height: 60)
                frames.append(Double(monotonicNanoseconds() - began) / 1e6)
            }
            record("TUI frame 200×60 (\(state.view.title))", median(frames), "ms", "cell grid, \(state.tokenCount) tokens")
            state.handle(.tab)
        }
        var keyTimes: [Double] = []
        state.handle(.home)
        for _ in 0..<min(60, state.tokenCount - 1) {
            let began = monotonicNanoseconds()
            state.handle(.right)
            _ = ExplorerRenderer.render(state, width: 200, height: 60)
            keyTimes.append(Double(monotonicNanoseconds() - began) / 1e6)
        }
        record("keypress → frame (step one token)", median(keyTimes), "ms", "decode + render")
        for router in RouterKind.allCases { try state.switchRouter(to: router) }   // a user trying every router
        record("peak RSS (explorer, every router visited)", peakResidentMegabytes(), "MB", "VmHWM before training runs")
        try benchLargestShape(text: text, tokenizer: tokenizer, record: record)
        try benchRecordedTrace(record: record)

        // Training: forward + backward + AdamW on batch 16 × 128.
        var options = TrainingOptions()
        options.steps = repeats + 1
        var generator = SeededGenerator(seed: 3)
        let stream = TokenStream(tokens: (0..<50_000).map { _ in Int(generator.next() % UInt64(tokenizer.vocabSize)) })
        for router in [RouterKind.linear, .gru] {
            for threads in Set([1, Kernels.threads]).sorted() {
                var config = ModelConfig(); config.router = router; config.vocabSize = tokenizer.vocabSize
                var trainer = try Trainer(config: config, options: options, data: stream)
                trainer.threads = threads
                try trainer.trainStep()    // warm-up
                var times: [Double] = []
                while !trainer.isFinished {
                    let began = monotonicNanoseconds()
                    try trainer.trainStep()
                    times.append(Double(monotonicNanoseconds() - began) / 1e9)
                }
                let label = "\(threads) thread\(threads == 1 ? "" : "s")"
                record("training tokens/s (\(router.rawValue), \(label))", Double(trainer.tokensPerStep) / median(times), "tok/s", "batch 16×128")
            }
        }

        // analyze on a long text: 16,384 held-out tokens routed and summarised as `analyze`
        // does it past its first 8,192 tokens (the every-expert norm sample), GRU router.
        let corpus = try Corpus.load(path: "\(locator.root)/corpus/corpus.jsonl")
        var heldOut: [Int] = []
        for document in corpus.documents(in: .heldout) where heldOut.count < 16_384 { heldOut += tokenizer.encode(document.text) }
        heldOut = Array(heldOut.prefix(16_384))
        let analyzed = try loadModel(.gru)
        var analyzeTimes: [Double] = []
        for _ in 0..<max(1, repeats / 2) {
            var accumulated = AnalysisReport.Accumulator(model: analyzed, expectedTokens: heldOut.count)
            var normTokens = AnalyzeCommand.normSampleTokens
            let began = monotonicNanoseconds()
            try AnalyzeCommand.route(heldOut, analyzed, normTokens: &normTokens) { accumulated.add($0, domain: "held-out") }
            analyzeTimes.append(Double(monotonicNanoseconds() - began) / 1e9)
        }
        record("analyze tokens/s (gru, \(Kernels.threads) thread\(Kernels.threads == 1 ? "" : "s"))", Double(heldOut.count) / median(analyzeTimes),
               "tok/s", "\(heldOut.count) held-out tokens, routed and summarised")

        // GEMM at the model's training shapes, against this core's FMA peak.
        let peak = measurePeak()
        // (m, k, n, Aᵀ?, Bᵀ?): the products a training step runs, at the size of one batch shard
        // (16×128 tokens / 2 shards = 1024 rows; an expert sees about 1024·2/8 = 256) and with
        // operands in the layout the tape reads them (W is [out × in]; weight gradients read dy
        // transposed in place). Each shard runs its products on one core, so they are timed on one.
        let shapes: [(Int, Int, Int, Bool, Bool, String)] = [
            (1024, 128, 128, false, true, "attention proj x·Wᵀ 1024×128·(128×128)ᵀ"),
            (256, 128, 256, false, true, "expert up x·Wᵀ 256×128·(256×128)ᵀ"),
            (256, 256, 128, false, true, "expert down x·Wᵀ 256×256·(128×256)ᵀ"),
            (1024, 128, 1024, false, true, "LM head x·Wᵀ 1024×128·(1024×128)ᵀ"),
            (1024, 1024, 128, false, false, "LM head input grad dy·W 1024×1024·1024×128"),
            (1024, 1024, 128, true, false, "LM head weight grad dyᵀ·x (1024×1024)ᵀ·1024×128"),
            (128, 1024, 128, true, false, "proj weight grad dyᵀ·x (1024×128)ᵀ·1024×128"),
            (256, 256, 128, true, false, "expert weight grad dyᵀ·x (256×256)ᵀ·256×128"),
        ]
        // The peak is re-measured before every shape and the best reading kept: on a shared
        // machine one short FMA loop can land in a slow moment and overstate every ratio.
        var bestPeak = peak
        var rates: [(String, Double)] = []
        for (m, k, n, ta, tb, label) in shapes {
            rates.append((label, measureGEMM(m: m, k: k, n: n, transposeA: ta, transposeB: tb)))
            bestPeak = max(bestPeak, measurePeak())
        }
        record("FP32 peak (FMA loop, 1 core)", bestPeak, "GFLOP/s", "best of \(shapes.count + 1) measurements")
        for (label, gflops) in rates {
            record("GEMM \(label)", gflops, "GFLOP/s", String(format: "%.0f%% of 1-core peak", gflops / bestPeak * 100))
        }

        if json {
            let encoder = JSONEncoder.output([.prettyPrinted, .sortedKeys])
            print(String(decoding: try encoder.encode(Report(results: results)), as: UTF8.self))
        }
    }

    /// GFLOP/s of C = op(A)·op(B) on the packed kernel, one core, median of several timed runs.
    func measureGEMM(m: Int, k: Int, n: Int, transposeA: Bool, transposeB: Bool) -> Double {
        var generator = SeededGenerator(seed: 1)
        let a = Tensor(randomNormal: transposeA ? [k, m] : [m, k], std: 1, using: &generator)
        let b = Tensor(randomNormal: transposeB ? [n, k] : [k, n], std: 1, using: &generator)
        var c = Tensor(zeros: [m, n])
        var times: [Double] = []
        let inner = max(1, 200_000_000 / (2 * m * k * n))
        for _ in 0..<(repeats + 1) {
            let began = monotonicNanoseconds()
            for _ in 0..<inner { Tensor.product(a, transposed: transposeA, b, transposed: transposeB, into: &c, accumulate: false, threads: 1) }
            times.append(Double(monotonicNanoseconds() - began) / Double(inner))
        }
        return 2 * Double(m * k * n) / median(Array(times.dropFirst()))
    }

    /// Peak FP32 rate of one core at the machine's own vector width (see `MachineLimits.fmaPeak`).
    func measurePeak() -> Double { MachineLimits.fmaPeak(repeats: repeats) }

    func peakResidentMegabytes() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kb = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
        return kb / 1024
    }
}
