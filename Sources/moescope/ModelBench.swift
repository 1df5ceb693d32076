import ArgumentParser
import Foundation
import MoEAnalysis
import MoECore
import MoEHub

/// `moescope bench --model PATH`: a Hugging Face checkpoint's decode and prefill speed against
/// the memory-bandwidth limit, on one thread and on all.
extension BenchCommand {
    /// The measurements in the order the table lists them; each records its own rows.
    func benchModel(path: String) throws {
        var table = BenchTable(printsRows: !json) {
            $0.name.padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: " %10.3f %@ %@", $0.value, $0.unit, $0.note)
        }
        var model = try HubModel(folder: path)
        let tokens = try benchTokens(config: model.config)
        warmPageCache(folder: path)
        recordWeights(of: model, into: &table)
        var peakResident = PeakResident()
        table.record("load average at start", loadAverage(), "", "runnable processes, 1-minute average (the machine is shared)")
        for threads in Set([1, Kernels.threads]).sorted() {
            model.threads = threads
            let runs = try measureRuns(model, tokens: tokens, peakResident: &peakResident)
            recordRuns(runs, of: model, into: &table)
        }
        table.record("load average at the end", loadAverage(), "", "")
        recordMemory(peakResident: peakResident, into: &table)
        if json { try table.printJSON() }
    }

    /// The tokens every thread count runs: a seeded random prompt, then `--decode-tokens` for
    /// each of the `--repeats` runs; refused if they do not fit in the model's context.
    func benchTokens(config: HubConfig) throws -> [Int] {
        let count = promptTokens + decodeTokens * repeats
        guard count <= config.contextLength else {
            throw ValidationError(
                "--prompt-tokens + --decode-tokens × --repeats (\(count)) exceeds the model's context of \(config.contextLength)"
            )
        }
        var generator = SeededGenerator(seed: 7)
        return (0..<count).map { _ in Int(generator.next() % UInt64(config.vocabSize)) }
    }

    /// The weights' size, and how many of their bytes one decoded token reads.
    func recordWeights(of model: HubModel, into table: inout BenchTable) {
        table.record("weights", Double(model.weightBytes) / 1e6, "MB", model.config.architecture.rawValue)
        table.record(
            "weight bytes read per decoded token", Double(model.weightBytesPerToken) / 1e6, "MB",
            "attention + router + top-\(model.config.topK) experts + LM head")
    }

    /// One thread count's measurements (`measureRuns`).
    struct ModelRuns {
        /// "1 thread", "8 threads": how the rows name the thread count.
        let label: String
        /// Seconds per prompt, one per run.
        var prefill: [Double] = []
        /// Milliseconds per decoded token, every step of every run.
        var decode: [Double] = []
        /// Bytes/s of a plain read of a fresh buffer, just before each run.
        var bandwidths: [Double] = []
        /// Bytes/s of the same read over the LM head's mapped weights, just before each run.
        var weightReads: [Double] = []
        /// Each run's median ms/token over the limit at the bandwidth read just before it.
        var pairedRatios: [Double] = []
        /// The same, at the read of the mapped weights.
        var weightPairedRatios: [Double] = []
        /// Bytes/s the matrix-vector kernel streams from memory, best before and after the runs.
        var kernelRate = 0.0
        /// The best plain read, before each run and after all.
        var bestBandwidth = 0.0
        /// Bytes/s the kernel reaches on a matrix that stays in cache.
        var cachedRate = 0.0
    }

    /// `--repeats` runs on `model.threads` threads. Each run is paired with a read-bandwidth
    /// measurement taken just before it, and its decode compared with that run's limit: on a
    /// shared machine the load changes from one second to the next, and a limit measured
    /// minutes away says little.
    func measureRuns(_ model: HubModel, tokens: [Int], peakResident: inout PeakResident) throws -> ModelRuns {
        let threads = model.threads
        var runs = ModelRuns(label: "\(threads) thread\(threads == 1 ? "" : "s")")
        let bytesPerToken = Double(model.weightBytesPerToken)
        // The same plain read over the LM head's mapped bytes: the page cache the weights
        // are read from, rather than a buffer written just before it is read.
        let head = model.lmHeadWeights
        _ = try model.forward(Array(tokens.prefix(4)))  // warm-up
        progress("\(runs.label): matrix-vector kernel against a plain read")
        runs.kernelRate = MachineLimits.matrixVectorBandwidth(dtype: model.weightDType, threads: threads)
        let started = monotonicNanoseconds()
        for repeat_ in 0..<repeats {
            let perRun = secondsSince(started) / Double(max(1, repeat_))
            progress(
                "\(runs.label): run \(repeat_ + 1)/\(repeats)"
                    + (runs.decode.isEmpty
                        ? ""
                        : String(format: ", %.1f ms/token so far, ETA %.0f s", median(runs.decode), perRun * Double(repeats - repeat_))))
            let bandwidth = MachineLimits.readBandwidth(threads: threads, repeats: 3)
            runs.bandwidths.append(bandwidth)
            let weightRead = MachineLimits.readBandwidth(of: head.base, bytes: head.byteCount, threads: threads, repeats: 3)
            runs.weightReads.append(weightRead)
            let firstDecoded = promptTokens + repeat_ * decodeTokens
            let run = try timeRun(
                model, prompt: Array(tokens.prefix(promptTokens)), decoding: tokens[firstDecoded..<firstDecoded + decodeTokens],
                peakResident: &peakResident)
            runs.prefill.append(run.prefill)
            runs.decode += run.decode
            runs.pairedRatios.append(median(run.decode) / (bytesPerToken / bandwidth * 1e3))
            runs.weightPairedRatios.append(median(run.decode) / (bytesPerToken / weightRead * 1e3))
        }
        progress("\(runs.label): matrix-vector kernel against a plain read")
        runs.kernelRate = max(runs.kernelRate, MachineLimits.matrixVectorBandwidth(dtype: model.weightDType, threads: threads))
        runs.bestBandwidth = max(runs.bandwidths.max() ?? 0, MachineLimits.readBandwidth(threads: threads))
        // The same kernel on a matrix that stays in cache: how fast its arithmetic alone runs.
        runs.cachedRate = MachineLimits.matrixVectorBandwidth(dtype: model.weightDType, threads: threads, megabytes: 1, repeats: 50)
        progress(nil)
        return runs
    }

    /// One run on a fresh KV cache. Prefill: the prompt in one pass (seconds); decode: then
    /// one token at a time (milliseconds each), routing traces recorded for every token (what
    /// the explorer does per keypress).
    func timeRun(_ model: HubModel, prompt: [Int], decoding tokens: ArraySlice<Int>, peakResident: inout PeakResident) throws
        -> (prefill: Double, decode: [Double])
    {
        var cache = model.makeCache()
        var began = monotonicNanoseconds()
        _ = try model.forward(prompt, appendingTo: &cache)
        let prefill = secondsSince(began)
        peakResident.sample()
        var decode: [Double] = []
        for token in tokens {
            began = monotonicNanoseconds()
            _ = try model.forward([token], appendingTo: &cache)
            decode.append(Double(monotonicNanoseconds() - began) / 1e6)
            peakResident.sample()
        }
        return (prefill, decode)
    }

    /// One thread count's rows: the read rates, the decode against the bandwidth limit, the prefill.
    func recordRuns(_ runs: ModelRuns, of model: HubModel, into table: inout BenchTable) {
        let label = runs.label
        let bytesPerToken = Double(model.weightBytesPerToken)
        let perToken = median(runs.decode)
        let limit = bytesPerToken / runs.bestBandwidth * 1e3
        table.record("read bandwidth (\(label))", runs.bestBandwidth / 1e9, "GB/s", "best pass over 512 MB, before each run and after all")
        table.record("read bandwidth, median of runs (\(label))", median(runs.bandwidths) / 1e9, "GB/s", "measured just before each run")
        table.record(
            "matrix-vector kernel read rate (\(label))", runs.kernelRate / 1e9, "GB/s",
            "\(model.weightDType.rawValue) weights, 512 MB, 1 input row: "
                + String(format: "%.0f %% of the best plain read", runs.kernelRate / runs.bestBandwidth * 100))
        table.record(
            "matrix-vector kernel in cache (\(label))", runs.cachedRate / 1e9, "GB/s",
            "1 MB of \(model.weightDType.rawValue) weights: "
                + String(format: "%.1fx the memory's read rate", runs.cachedRate / runs.bestBandwidth))
        table.record(
            "decode ms/token (\(label))", perToken, "ms",
            "median of \(runs.decode.count) steps after a \(promptTokens)-token prompt, KV cache, traces on")
        table.record("bandwidth limit ms/token (\(label))", limit, "ms", "bytes per token / best read bandwidth")
        table.record(
            "decode % of bandwidth limit (\(label))", limit / perToken * 100, "%",
            String(format: "%.2fx the limit at the best bandwidth", perToken / limit))
        table.record(
            "decode / bandwidth limit, paired (\(label))", median(runs.pairedRatios), "x",
            "median over runs of (run's median ms/token) / (limit at the bandwidth measured just before it)")
        table.record(
            "read bandwidth of the mapped weights, median of runs (\(label))", median(runs.weightReads) / 1e9, "GB/s",
            "the same plain read over the LM head's \(model.lmHeadWeights.byteCount >> 20) MB in the page cache, just before each run")
        table.record(
            "decode / weight-read limit, paired (\(label))", median(runs.weightPairedRatios), "x",
            "as above, the limit at the read of the mapped weights measured just before each run")
        table.record(
            "prefill tokens/s (\(label))", Double(promptTokens) / median(runs.prefill), "tok/s", "\(promptTokens)-token prompt")
    }

    /// Memory: the peak while decoding, and what is resident at the end.
    func recordMemory(peakResident: PeakResident, into table: inout BenchTable) {
        let memory = MachineLimits.residentMemory()
        table.record("peak RSS", Double(peakResident.bytes) / 1e6, "MB", "largest RssAnon + RssFile after a prefill or decode step")
        table.record(
            "resident weights (mapped file pages)", Double(memory.file) / 1e6, "MB",
            "RssFile at the end: the weights touched, and ~20 MB of the program's own code")
        table.record("resident other memory", Double(memory.anonymous) / 1e6, "MB", "RssAnon at the end: KV cache, activations, buffers")
    }

    /// `bench --read-probe`: `ReadProbe`'s variants, best and median of `--repeats` rounds.
    func readProbeTable() {
        let before = loadAverage()
        let variants = ReadProbe.run(rounds: repeats)
        print(String(format: "load average %.2f at start, %.2f at the end; 1 GiB buffer, %d rounds, GB/s", before, loadAverage(), repeats))
        for variant in variants {
            let sorted = variant.rates.sorted()
            print(
                variant.name.padding(toLength: 44, withPad: " ", startingAt: 0)
                    + String(format: " best %5.1f  median %5.1f  worst %5.1f", sorted.last ?? 0, median(sorted), sorted.first ?? 0))
        }
    }

    /// Reads every weight file once through a small buffer, so the timed runs measure memory,
    /// not the disk, without mapping (and counting as resident) weights the tokens never touch.
    func warmPageCache(folder: String) {
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
        let chunk = 16 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        for (i, name) in files.enumerated() {
            progress("reading weights into the page cache: file \(i + 1)/\(files.count)")
            let fd = open("\(folder)/\(name)", O_RDONLY)
            guard fd >= 0 else { continue }
            while read(fd, buffer, chunk) > 0 {}
            close(fd)
        }
        progress(nil)
    }

    /// The 1-minute load average (runnable processes), 0 where the system does not say.
    func loadAverage() -> Double {
        var load = [0.0, 0.0, 0.0]
        return getloadavg(&load, 3) >= 1 ? load[0] : 0
    }

    /// One status line on stderr, rewritten in place; nil clears it.
    func progress(_ line: String?) {
        guard !json, isatty(STDERR_FILENO) != 0 else { return }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + (line ?? "")).utf8))
    }
}

/// The largest resident memory (anonymous and file pages) seen at any sample.
struct PeakResident {
    private(set) var bytes = 0

    mutating func sample() {
        let resident = MachineLimits.residentMemory()
        bytes = max(bytes, resident.anonymous + resident.file)
    }
}
