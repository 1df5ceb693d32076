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
            Build with -c release; figures from a debug build are meaningless. Training is measured on one core and on all of them \
            (MOESCOPE_THREADS=N sets how many); everything else runs on one.

            With --model, a Hugging Face model folder is measured instead: decode and prefill speed against the memory-bandwidth \
            limit, on one thread and on all.
            """)

    @Option(help: "Repetitions per measurement (the median is reported).") var repeats = 5
    @OptionGroup var assets: AssetOptions
    @Flag(help: "Print the results as JSON.") var json = false
    @Option(help: "Tokens of the synthetic routing trace (× 58 layers × top-8 of 256) analysed by the analyze --trace row; 0 skips it.")
    var traceTokens = 1_000_000
    @Option(help: ArgumentHelp("Keep the synthetic trace at PATH (for `moescope --trace PATH`) instead of deleting it.", valueName: "path"))
    var keepTrace: String?
    @Flag(help: "Run only the routing-trace rows.") var traceOnly = false
    @Flag(help: "Run only the decode and router rows.") var decodeOnly = false
    @OptionGroup var hub: HubModelOption
    @Option(help: "With --model: prompt length for the prefill timing.") var promptTokens = 32
    @Option(help: "With --model: tokens decoded one at a time after each prompt.") var decodeTokens = 16
    @Flag(help: "Measure only how fast one and two cores read a 1 GB buffer, several ways, beside the BF16 decode kernel on it.")
    var readProbe = false

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

    /// Ten times the default: the synthetic trace is written to disk whole.
    static let maxTraceTokens = 10_000_000

    func validate() throws {
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1, got \(repeats)") }
        guard promptTokens >= 1 else { throw ValidationError("--prompt-tokens must be at least 1, got \(promptTokens)") }
        guard decodeTokens >= 1 else { throw ValidationError("--decode-tokens must be at least 1, got \(decodeTokens)") }
        if let keepTrace { try OutputPath.check(keepTrace, option: "--keep-trace") }
        guard (0...Self.maxTraceTokens).contains(traceTokens) else {
            throw ValidationError("--trace-tokens must be between 0 and \(Self.maxTraceTokens), got \(traceTokens)")
        }
    }

    /// The measurements in the order the table lists them; each records its own rows.
    func run() throws {
        if readProbe { return readProbeTable() }
        if let folder = hub.folder { return try benchModel(path: folder) }
        // Names are padded in Swift: Foundation on Linux ignores the width of `%-34@`.
        var table = BenchTable(printsRows: !json) {
            let name = $0.name.count < 34 ? $0.name + String(repeating: " ", count: 34 - $0.name.count) : $0.name
            return "\(name) \(String(format: "%10.3f", $0.value)) \($0.unit) \($0.note)"
        }
        if traceOnly {
            try measureRecordedTrace(into: &table)
        } else if decodeOnly {
            try measureDecode(ShippedModels(locator: assets.locate()), into: &table)
        } else {
            let shipped = try ShippedModels(locator: assets.locate())
            try measureDecode(shipped, into: &table)
            try measureExplorer(shipped, into: &table)
            try measureLargestShape(shipped, into: &table)
            try measureRecordedTrace(into: &table)
            try measureTraining(shipped, into: &table)
            try measureTrainingForward(shipped, into: &table)
            try measureAnalyze(shipped, into: &table)
            measureProducts(into: &table)
        }
        if json { try table.printJSON() }
    }
}

/// The rows of one bench run: each printed on stderr as it is measured (unless the run prints
/// JSON), all kept for the JSON report.
struct BenchTable {
    let printsRows: Bool
    /// One row as printed.
    let line: (BenchCommand.Result) -> String
    private(set) var results: [BenchCommand.Result] = []

    init(printsRows: Bool, line: @escaping (BenchCommand.Result) -> String) {
        self.printsRows = printsRows
        self.line = line
    }

    mutating func record(_ name: String, _ value: Double, _ unit: String, _ note: String = "") {
        let result = BenchCommand.Result(name: name, value: value, unit: unit, note: note)
        results.append(result)
        if printsRows { printError(line(result)) }
    }

    func printJSON() throws {
        let encoder = JSONEncoder.output([.prettyPrinted, .sortedKeys])
        print(String(decoding: try encoder.encode(BenchCommand.Report(results: results)), as: UTF8.self))
    }
}

/// What the measurements of moescope's own model share: the shipped checkpoints, their
/// tokenizer, and a text with its first 128 tokens.
struct ShippedModels {
    let locator: AssetLocator
    let tokenizer: Tokenizer
    let text = String(repeating: "The router sends every token to two of eight experts. def f(x): return x * 2\n", count: 8)
    let ids: [Int]

    init(locator: AssetLocator) throws {
        self.locator = locator
        tokenizer = try Tokenizer.load(path: locator.tokenizerPath)
        ids = Array(tokenizer.encode(text).prefix(128))
    }

    /// The shipped checkpoint of `router` (a seeded random init where there is none), loaded
    /// when asked for, one at a time as the explorer loads them, so peak memory is the explorer's.
    func model(_ router: RouterKind) throws -> MoEModel {
        try locator.shippedModel(for: router, seed: 1, quiet: true).checkpoint.model
    }
}

extension BenchCommand {
    /// Decode one token at a time on the KV cache with routing traces on (what the explorer
    /// does per keypress): for every router, milliseconds per token and the router's own time
    /// per token over all layers.
    func measureDecode(_ shipped: ShippedModels, into table: inout BenchTable) throws {
        let ids = shipped.ids
        for router in RouterKind.allCases {
            let model = try shipped.model(router)
            var perToken: [Double] = []
            var routerTimes: [Double] = []
            for _ in 0..<repeats {
                var cache = model.makeCache()
                let began = monotonicNanoseconds()
                for id in ids {
                    let step = try model.forward([id], cache: &cache)
                    routerTimes.append(step.routing[0].layers.reduce(0) { $0 + $1.routerNanoseconds })
                }
                perToken.append(Double(monotonicNanoseconds() - began) / Double(ids.count))
            }
            table.record(
                "decode ms/token (\(router.rawValue), traces on)", median(perToken) / 1e6, "ms", "\(ids.count) tokens, KV cache")
            table.record("router µs/token (\(router.rawValue))", median(routerTimes) / 1e3, "µs", "all \(model.config.numLayers) layers")
        }
    }

    /// The explorer on the shipped model: a frame of each view rendered into the cell grid at
    /// 200 × 60, a keypress (decode one token + render), and the peak memory once a user has
    /// tried every router.
    func measureExplorer(_ shipped: ShippedModels, into table: inout BenchTable) throws {
        let loader: SessionLoader = { router, tokens, text in
            let router = router ?? .gru
            return ExplorerSession(
                model: try shipped.model(router), tokenizer: shipped.tokenizer, label: router.rawValue, isRandomInit: false,
                tokens: tokens ?? shipped.tokenizer.encode(text ?? ""))
        }
        var state = try ExplorerState(loader: loader, router: .gru, text: shipped.text)
        state.handle(.end)
        for _ in ExplorerView.allCases {
            var frames: [Double] = []
            for _ in 0..<(20 * repeats) {
                let began = monotonicNanoseconds()
                _ = ExplorerRenderer.render(state, width: 200, height: 60)
                frames.append(Double(monotonicNanoseconds() - began) / 1e6)
            }
            table.record("TUI frame 200×60 (\(state.view.title))", median(frames), "ms", "cell grid, \(state.tokenCount) tokens")
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
        table.record("keypress → frame (step one token)", median(keyTimes), "ms", "decode + render")
        for router in RouterKind.allCases { try state.switchRouter(to: router) }  // a user trying every router
        table.record("peak RSS (explorer, every router visited)", peakResidentMegabytes(), "MB", "VmHWM before training runs")
    }

    /// The explorer at DeepSeek-V3's routing shape (256 experts, top-8, 61 layers; random
    /// weights at a small width, so the figures are the explorer's, not a 671B model's decode):
    /// a frame of each view at 200 × 60, and a keypress (decode one token + render) on the
    /// dashboard and on the Expert view, 120 tokens in.
    func measureLargestShape(_ shipped: ShippedModels, into table: inout BenchTable) throws {
        var config = ModelConfig()
        config.hiddenSize = 32
        config.numHeads = 2
        config.expertHiddenSize = 16
        config.routerHiddenSize = 16
        config.numExperts = 256
        config.topK = 8
        config.numLayers = 61
        config.router = .linear
        let model = try MoEModel(config: config, seed: 7)
        let tokenizer = shipped.tokenizer
        let ids = Array(tokenizer.encode(shipped.text).prefix(200))
        let loader: SessionLoader = { _, tokens, _ in
            ExplorerSession(model: model, tokenizer: tokenizer, label: "256e/61L", isRandomInit: true, tokens: tokens ?? ids)
        }
        var state = try ExplorerState(loader: loader, router: .linear, text: shipped.text)
        for _ in 0..<120 { state.handle(.right) }
        let shape = "256 experts, 61 layers, \(state.cursor + 1) tokens decoded"
        for _ in ExplorerView.allCases {
            var frames: [Double] = []
            for _ in 0..<(4 * repeats) {
                let began = monotonicNanoseconds()
                _ = ExplorerRenderer.render(state, width: 200, height: 60)
                frames.append(Double(monotonicNanoseconds() - began) / 1e6)
            }
            table.record("TUI frame 200×60 256e/61L (\(state.view.title))", median(frames), "ms", shape)
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
            table.record("keypress → frame 256e/61L (\(view.title))", median(keyTimes), "ms", "→ and ↓ alternately: decode + render")
        }
    }

    /// Removes the synthetic traces of earlier runs killed with SIGKILL, which no handler sees:
    /// `moescope-bench-PID.safetensors`, and the stream writer's temporary of it
    /// (`.moescope-bench-PID.safetensors.PID.tmp`), whose run is no longer running.
    static func removeAbandonedTraces(in folder: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
            let bare = name.hasPrefix(".") ? name.dropFirst() : Substring(name)
            guard bare.hasPrefix("moescope-bench-"), bare.contains(".safetensors"),
                let pid = Int32(bare.dropFirst("moescope-bench-".count).prefix(while: \.isNumber)), pid != getpid()
            else { continue }
            if kill(pid, 0) == 0 || errno == EPERM { continue }  // that run is still going
            try? FileManager.default.removeItem(atPath: "\(folder)/\(name)")
        }
    }

    /// `analyze --trace` on a synthetic trace of DeepSeek-V3's routed shape (58 layers, top-8 of
    /// 256): opening it, and the streaming analysis in token-layers per second and in GB/s of
    /// expert ids read (against the memory bandwidth that bounds it).
    func measureRecordedTrace(into table: inout BenchTable) throws {
        guard traceTokens > 0 else { return }
        let temporaryFolder = URL(fileURLWithPath: NSTemporaryDirectory()).path
        if keepTrace == nil { Self.removeAbandonedTraces(in: temporaryFolder) }
        let path = keepTrace ?? temporaryFolder + "/moescope-bench-\(getpid()).safetensors"
        // The trace is gigabytes: a ^C while it is measured must not leave it in the temporary folder.
        if keepTrace == nil { InterruptCleanup.register(path) }
        defer { if keepTrace == nil { InterruptCleanup.unregister(path) } }
        let began = monotonicNanoseconds()
        try SyntheticRoutingTrace.write(to: path, tokens: traceTokens, layers: 58, experts: 256, topK: 8)
        let written = Double(monotonicNanoseconds() - began) / 1e9
        defer { if keepTrace == nil { try? FileManager.default.removeItem(atPath: path) } }
        var opens: [Double] = []
        var rates: [Double] = []
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
        let shape = "\(traceTokens) tokens × 58 layers × top-8 of 256 (written in \(String(format: "%.1f", written)) s)"
        table.record("open routing trace", median(opens), "ms", shape)
        table.record("analyze --trace", median(rates) / 1e6, "M tok-layer/s", "≥ 5 wanted; one core")
        table.record(
            "analyze --trace ids read", median(rates) * 8 * 4 / 1e9, "GB/s", "expert ids (I32); memory bandwidth ~18 GB/s per core")
    }

    /// Training: forward + backward + AdamW on batch 16 × 128 random tokens, Linear and GRU,
    /// on one core and on all of them, after a warm-up step.
    func measureTraining(_ shipped: ShippedModels, into table: inout BenchTable) throws {
        var options = TrainingOptions()
        options.steps = repeats + 1
        var generator = SeededGenerator(seed: 3)
        let vocabulary = shipped.tokenizer.vocabSize
        let stream = TokenStream(tokens: (0..<50_000).map { _ in Int(generator.next() % UInt64(vocabulary)) })
        for router in [RouterKind.linear, .gru] {
            for threads in Set([1, Kernels.threads]).sorted() {
                var config = ModelConfig()
                config.router = router
                config.vocabSize = vocabulary
                var trainer = try Trainer(config: config, options: options, data: stream)
                trainer.threads = threads
                try trainer.trainStep()  // warm-up
                var times: [Double] = []
                while !trainer.isFinished {
                    let began = monotonicNanoseconds()
                    try trainer.trainStep()
                    times.append(Double(monotonicNanoseconds() - began) / 1e9)
                }
                let label = "\(threads) thread\(threads == 1 ? "" : "s")"
                table.record(
                    "training tokens/s (\(router.rawValue), \(label))", Double(trainer.tokensPerStep) / median(times), "tok/s",
                    "batch 16×128")
            }
        }
    }

    /// Training's forward alone (the tape's, as a training step runs it before its loss and
    /// backward pass) on the shipped GRU model: batches of 16 × 128 held-out tokens, two
    /// shards of 8 sequences side by side on every core, logits for every token — the
    /// throughput issue 13 sets `analyze` against.
    func measureTrainingForward(_ shipped: ShippedModels, into table: inout BenchTable) throws {
        let corpus = try Corpus.load(path: shipped.locator.corpusPath)
        var heldOut: [Int] = []
        for document in corpus.documents(in: .heldout) where heldOut.count < 16_384 { heldOut += shipped.tokenizer.encode(document.text) }
        let model = try shipped.model(.gru)
        let (shards, shard) = (2, 8 * 128)
        let batches = min(heldOut.count, 16_384) / (shards * shard)
        let threads = min(shards, Kernels.threads)
        var times: [Double] = []
        for _ in 0..<max(1, repeats / 2) {
            let began = monotonicNanoseconds()
            for batch in 0..<batches {
                Kernels.parallelFor(shards, threads: threads) { s in
                    let tape = Tape(threads: 1)
                    let first = (batch * shards + s) * shard
                    _ = model.forward(
                        batch: Array(heldOut[first..<first + shard]), sequenceLength: 128, on: tape, leaves: model.leaves(on: tape))
                }
            }
            times.append(Double(monotonicNanoseconds() - began) / 1e9)
        }
        table.record(
            "training forward tokens/s (gru, \(threads) thread\(threads == 1 ? "" : "s"))",
            Double(batches * shards * shard) / median(times), "tok/s", "tape forward only, batch 16×128 held-out tokens")
    }

    /// `analyze` on a long text: 16,384 held-out tokens routed and summarised as `analyze` does
    /// it past its first 8,192 tokens (the every-expert norm sample), GRU router, on every core.
    func measureAnalyze(_ shipped: ShippedModels, into table: inout BenchTable) throws {
        let corpus = try Corpus.load(path: shipped.locator.corpusPath)
        var heldOut: [Int] = []
        for document in corpus.documents(in: .heldout) where heldOut.count < 16_384 { heldOut += shipped.tokenizer.encode(document.text) }
        heldOut = Array(heldOut.prefix(16_384))
        let analyzed = try shipped.model(.gru)
        var analyzeTimes: [Double] = []
        for _ in 0..<max(1, repeats / 2) {
            var accumulated = AnalysisReport.Accumulator(model: analyzed, expectedTokens: heldOut.count)
            var normTokens = WindowedRouting.normSampleTokens
            let began = monotonicNanoseconds()
            try WindowedRouting.route(heldOut, analyzed, normTokens: &normTokens) { accumulated.add($0, domain: "held-out") }
            analyzeTimes.append(Double(monotonicNanoseconds() - began) / 1e9)
        }
        table.record(
            "analyze tokens/s (gru, \(Kernels.threads) thread\(Kernels.threads == 1 ? "" : "s"))",
            Double(heldOut.count) / median(analyzeTimes),
            "tok/s", "\(heldOut.count) held-out tokens, routed and summarised")
    }

    /// The products a training step runs (m, k, n, Aᵀ?, Bᵀ?), at the size of one batch shard
    /// (16×128 tokens / 2 shards = 1024 rows; an expert sees about 1024·2/8 = 256) and with
    /// operands in the layout the tape reads them (W is [out × in]; weight gradients read dy
    /// transposed in place). Each shard runs its products on one core, so they are timed on one.
    static let trainingProducts: [(m: Int, k: Int, n: Int, transposeA: Bool, transposeB: Bool, label: String)] = [
        (1024, 128, 128, false, true, "attention proj x·Wᵀ 1024×128·(128×128)ᵀ"),
        (256, 128, 256, false, true, "expert up x·Wᵀ 256×128·(256×128)ᵀ"),
        (256, 256, 128, false, true, "expert down x·Wᵀ 256×256·(128×256)ᵀ"),
        (1024, 128, 1024, false, true, "LM head x·Wᵀ 1024×128·(1024×128)ᵀ"),
        (1024, 1024, 128, false, false, "LM head input grad dy·W 1024×1024·1024×128"),
        (1024, 1024, 128, true, false, "LM head weight grad dyᵀ·x (1024×1024)ᵀ·1024×128"),
        (128, 1024, 128, true, false, "proj weight grad dyᵀ·x (1024×128)ᵀ·1024×128"),
        (256, 256, 128, true, false, "expert weight grad dyᵀ·x (256×256)ᵀ·256×128"),
    ]

    /// GEMM at the training shapes, against this core's FMA peak.
    func measureProducts(into table: inout BenchTable) {
        // The peak is re-measured before every shape and the best reading kept: on a shared
        // machine one short FMA loop can land in a slow moment and overstate every ratio.
        var bestPeak = measurePeak()
        var rates: [(String, Double)] = []
        for product in Self.trainingProducts {
            let rate = measureGEMM(m: product.m, k: product.k, n: product.n, transposeA: product.transposeA, transposeB: product.transposeB)
            rates.append((product.label, rate))
            bestPeak = max(bestPeak, measurePeak())
        }
        table.record("FP32 peak (FMA loop, 1 core)", bestPeak, "GFLOP/s", "best of \(Self.trainingProducts.count + 1) measurements")
        for (label, gflops) in rates {
            table.record("GEMM \(label)", gflops, "GFLOP/s", String(format: "%.0f%% of 1-core peak", gflops / bestPeak * 100))
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
            for _ in 0..<inner {
                Tensor.product(a, transposed: transposeA, b, transposed: transposeB, into: &c, accumulate: false, threads: 1)
            }
            times.append(Double(monotonicNanoseconds() - began) / Double(inner))
        }
        return 2 * Double(m * k * n) / median(Array(times.dropFirst()))
    }

    /// Peak FP32 rate of one core at the machine's own vector width (see `MachineLimits.fmaPeak`).
    func measurePeak() -> Double { MachineLimits.fmaPeak(repeats: repeats) }

    func peakResidentMegabytes() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
            let kb = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
        else { return 0 }
        return kb / 1024
    }
}
