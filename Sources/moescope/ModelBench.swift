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
        for threads in Set([1, Kernels.threads]).sorted() {
            model.threads = threads
            let label = "\(threads) thread\(threads == 1 ? "" : "s")"
            // The read bandwidth before and after the runs, the better kept: on a shared machine
            // one measurement can land in a busy moment.
            progress("measuring read bandwidth on \(label)")
            var bandwidth = MachineLimits.readBandwidth(threads: threads)
            // Prefill: the prompt in one pass; decode: then one token at a time on the KV cache,
            // routing traces recorded for every token (what the explorer does per keypress).
            var prefill: [Double] = []
            var decode: [Double] = []
            _ = try model.forward(Array(tokens.prefix(4)))  // warm-up
            let started = monotonicNanoseconds()
            for repeat_ in 0..<repeats {
                let perRun = Double(monotonicNanoseconds() - started) / 1e9 / Double(max(1, repeat_))
                progress(
                    "\(label): run \(repeat_ + 1)/\(repeats)"
                        + (decode.isEmpty
                            ? ""
                            : String(format: ", %.1f ms/token so far, ETA %.0f s", median(decode), perRun * Double(repeats - repeat_))))
                var cache = model.makeCache()
                var began = monotonicNanoseconds()
                _ = try model.forward(Array(tokens.prefix(promptLength)), appendingTo: &cache)
                prefill.append(Double(monotonicNanoseconds() - began) / 1e9)
                for step in 0..<steps {
                    began = monotonicNanoseconds()
                    _ = try model.forward([tokens[promptLength + repeat_ * steps + step]], appendingTo: &cache)
                    decode.append(Double(monotonicNanoseconds() - began) / 1e6)
                    let resident = MachineLimits.residentMemory()
                    peakResident = max(peakResident, resident.anonymous + resident.file)
                }
            }
            progress("measuring read bandwidth on \(label)")
            bandwidth = max(bandwidth, MachineLimits.readBandwidth(threads: threads))
            progress(nil)
            let perToken = median(decode)
            let limit = bytesPerToken / bandwidth * 1e3
            table.record("read bandwidth (\(label))", bandwidth / 1e9, "GB/s", "best of 2 × 5 passes over 512 MB, before and after")
            table.record(
                "decode ms/token (\(label))", perToken, "ms",
                "median of \(decode.count) steps after a \(promptLength)-token prompt, KV cache, traces on")
            table.record("bandwidth limit ms/token (\(label))", limit, "ms", "bytes per token / read bandwidth")
            table.record(
                "decode % of bandwidth limit (\(label))", limit / perToken * 100, "%",
                String(format: "%.2fx the limit", perToken / limit))
            table.record("prefill tokens/s (\(label))", Double(promptLength) / median(prefill), "tok/s", "\(promptLength)-token prompt")
        }
        let memory = MachineLimits.residentMemory()
        table.record("peak RSS", Double(peakResident) / 1e6, "MB", "largest RssAnon + RssFile after a decode step")
        table.record(
            "resident weights (mapped file pages)", Double(memory.file) / 1e6, "MB",
            "RssFile at the end: the weights touched, and ~20 MB of the program's own code")
        table.record("resident other memory", Double(memory.anonymous) / 1e6, "MB", "RssAnon at the end: KV cache, activations, buffers")
        if json { try table.printJSON() }
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

    /// One status line on stderr, rewritten in place; nil clears it.
    func progress(_ line: String?) {
        guard !json, isatty(STDERR_FILENO) != 0 else { return }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + (line ?? "")).utf8))
    }
}
