import ArgumentParser
import Foundation
import MoEAnalysis
import MoECore
import MoEHub

/// `moescope bench --model PATH`: a Hugging Face checkpoint's decode and prefill speed against
/// the memory-bandwidth limit, on one thread and on all.
extension BenchCommand {
    func benchModel(path: String) throws {
        var table = BenchTable(printsRows: !json) {
            $0.name.padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: " %10.3f %@ %@", $0.value, $0.unit, $0.note)
        }
        var model = try HubModel(folder: path)
        let (promptLength, steps) = (promptTokens, decodeTokens)
        guard promptLength + steps * repeats <= model.config.contextLength else {
            throw ValidationError(
                "--prompt-tokens + --decode-tokens × --repeats (\(promptLength + steps * repeats)) exceeds the model's context of \(model.config.contextLength)"
            )
        }
        warmPageCache(folder: path)
        var generator = SeededGenerator(seed: 7)
        let tokens = (0..<(promptLength + steps * repeats)).map { _ in Int(generator.next() % UInt64(model.config.vocabSize)) }
        let bytesPerToken = Double(model.weightBytesPerToken)
        table.record("weights", Double(model.weightBytes) / 1e6, "MB", model.config.architecture.rawValue)
        table.record(
            "weight bytes read per decoded token", bytesPerToken / 1e6, "MB",
            "attention + router + top-\(model.config.topK) experts + LM head")

        var peakResident = 0
        func sampleResident() {
            let resident = MachineLimits.residentMemory()
            peakResident = max(peakResident, resident.anonymous + resident.file)
        }
        table.record("load average at start", loadAverage(), "", "runnable processes, 1-minute average (the machine is shared)")
        for threads in Set([1, Kernels.threads]).sorted() {
            model.threads = threads
            let label = "\(threads) thread\(threads == 1 ? "" : "s")"
            // Prefill: the prompt in one pass; decode: then one token at a time on the KV cache,
            // routing traces recorded for every token (what the explorer does per keypress).
            // Each run is paired with a read-bandwidth measurement taken just before it, and its
            // decode compared with that run's limit: on a shared machine the load changes from
            // one second to the next, and a limit measured minutes away says little.
            var prefill: [Double] = []
            var decode: [Double] = []
            var bandwidths: [Double] = []
            var pairedRatios: [Double] = []
            // The same plain read over the LM head's mapped bytes: the page cache the weights
            // are read from, rather than a buffer written just before it is read.
            let head = model.lmHeadWeights
            var weightReads: [Double] = []
            var weightPairedRatios: [Double] = []
            _ = try model.forward(Array(tokens.prefix(4)))  // warm-up
            progress("\(label): matrix-vector kernel against a plain read")
            var kernelRate = MachineLimits.matrixVectorBandwidth(dtype: model.weightDType, threads: threads)
            let started = monotonicNanoseconds()
            for repeat_ in 0..<repeats {
                let perRun = Double(monotonicNanoseconds() - started) / 1e9 / Double(max(1, repeat_))
                progress(
                    "\(label): run \(repeat_ + 1)/\(repeats)"
                        + (decode.isEmpty
                            ? ""
                            : String(format: ", %.1f ms/token so far, ETA %.0f s", median(decode), perRun * Double(repeats - repeat_))))
                let bandwidth = MachineLimits.readBandwidth(threads: threads, repeats: 3)
                bandwidths.append(bandwidth)
                let weightRead = MachineLimits.readBandwidth(of: head.base, bytes: head.byteCount, threads: threads, repeats: 3)
                weightReads.append(weightRead)
                var cache = model.makeCache()
                var began = monotonicNanoseconds()
                _ = try model.forward(Array(tokens.prefix(promptLength)), appendingTo: &cache)
                prefill.append(Double(monotonicNanoseconds() - began) / 1e9)
                sampleResident()
                var run: [Double] = []
                for step in 0..<steps {
                    began = monotonicNanoseconds()
                    _ = try model.forward([tokens[promptLength + repeat_ * steps + step]], appendingTo: &cache)
                    run.append(Double(monotonicNanoseconds() - began) / 1e6)
                    sampleResident()
                }
                decode += run
                pairedRatios.append(median(run) / (bytesPerToken / bandwidth * 1e3))
                weightPairedRatios.append(median(run) / (bytesPerToken / weightRead * 1e3))
            }
            progress("\(label): matrix-vector kernel against a plain read")
            kernelRate = max(kernelRate, MachineLimits.matrixVectorBandwidth(dtype: model.weightDType, threads: threads))
            let bestBandwidth = max(bandwidths.max() ?? 0, MachineLimits.readBandwidth(threads: threads))
            // The same kernel on a matrix that stays in cache: how fast its arithmetic alone runs.
            let cachedRate = MachineLimits.matrixVectorBandwidth(dtype: model.weightDType, threads: threads, megabytes: 1, repeats: 50)
            progress(nil)
            let perToken = median(decode)
            let limit = bytesPerToken / bestBandwidth * 1e3
            table.record("read bandwidth (\(label))", bestBandwidth / 1e9, "GB/s", "best pass over 512 MB, before each run and after all")
            table.record("read bandwidth, median of runs (\(label))", median(bandwidths) / 1e9, "GB/s", "measured just before each run")
            table.record(
                "matrix-vector kernel read rate (\(label))", kernelRate / 1e9, "GB/s",
                "\(model.weightDType.rawValue) weights, 512 MB, 1 input row: "
                    + String(format: "%.0f %% of the best plain read", kernelRate / bestBandwidth * 100))
            table.record(
                "matrix-vector kernel in cache (\(label))", cachedRate / 1e9, "GB/s",
                "1 MB of \(model.weightDType.rawValue) weights: "
                    + String(format: "%.1fx the memory's read rate", cachedRate / bestBandwidth))
            table.record(
                "decode ms/token (\(label))", perToken, "ms",
                "median of \(decode.count) steps after a \(promptLength)-token prompt, KV cache, traces on")
            table.record("bandwidth limit ms/token (\(label))", limit, "ms", "bytes per token / best read bandwidth")
            table.record(
                "decode % of bandwidth limit (\(label))", limit / perToken * 100, "%",
                String(format: "%.2fx the limit at the best bandwidth", perToken / limit))
            table.record(
                "decode / bandwidth limit, paired (\(label))", median(pairedRatios), "x",
                "median over runs of (run's median ms/token) / (limit at the bandwidth measured just before it)")
            table.record(
                "read bandwidth of the mapped weights, median of runs (\(label))", median(weightReads) / 1e9, "GB/s",
                "the same plain read over the LM head's \(head.byteCount >> 20) MB in the page cache, just before each run")
            table.record(
                "decode / weight-read limit, paired (\(label))", median(weightPairedRatios), "x",
                "as above, the limit at the read of the mapped weights measured just before each run")
            table.record("prefill tokens/s (\(label))", Double(promptLength) / median(prefill), "tok/s", "\(promptLength)-token prompt")
        }
        table.record("load average at the end", loadAverage(), "", "")
        let memory = MachineLimits.residentMemory()
        table.record("peak RSS", Double(peakResident) / 1e6, "MB", "largest RssAnon + RssFile after a prefill or decode step")
        table.record(
            "resident weights (mapped file pages)", Double(memory.file) / 1e6, "MB",
            "RssFile at the end: the weights touched, and ~20 MB of the program's own code")
        table.record("resident other memory", Double(memory.anonymous) / 1e6, "MB", "RssAnon at the end: KV cache, activations, buffers")
        if json { try table.printJSON() }
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
