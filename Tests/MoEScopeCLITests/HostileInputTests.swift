import Foundation
import FuzzSupport
import MoECore
import MoETraining
import Testing

/// Every hostile input of issue 13, given to the real `moescope` binary as a user would, under
/// an address-space limit (`ulimit -v`, so an allocation bomb fails the test instead of the
/// machine) and a time limit (so a hang fails it too). Each must end with a non-zero exit and
/// one line on standard error that names the problem; the cases that have a right answer
/// check it.
@Suite(.serialized) final class HostileInputTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .path
    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("moescope").path
    }
    /// The address-space limit every run gets (KiB): far below this machine's memory, far
    /// above what moescope needs for the shipped model.
    static let memoryLimitKiB = 4_000_000

    let scratch: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-hostile-\(UUID())").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    /// Each test's folder goes with it (swift-testing makes one instance a test).
    deinit { try? FileManager.default.removeItem(atPath: scratch) }

    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
        var seconds: Double
        var timedOut: Bool
        /// Ended by a signal (a trap, an abort on a failed allocation, the kill at the time limit).
        var signaled: Bool
    }

    /// Runs the binary under `ulimit -v`; kills it after `seconds`.
    func run(_ arguments: [String], seconds: Double = 60, through wrapper: String? = nil) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        let command = wrapper ?? "exec \"$0\" \"$@\""
        process.arguments = ["-c", "ulimit -v \(Self.memoryLimitKiB); " + command, Self.binary] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: scratch)
        var environment = ProcessInfo.processInfo.environment
        environment["MOESCOPE_ASSETS"] = "\(Self.root)/assets"
        process.environment = environment
        let out = "\(scratch)/.stdout"
        let err = "\(scratch)/.stderr"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: out)
        process.standardError = FileHandle(forWritingAtPath: err)
        process.standardInput = FileHandle.nullDevice
        let began = monotonicNanoseconds()
        try process.run()
        var timedOut = false
        while process.isRunning {
            if secondsSince(began) > seconds {
                timedOut = true
                process.terminate()
                kill(process.processIdentifier, SIGKILL)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.waitUntilExit()
        return Outcome(
            status: process.terminationStatus,
            stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "",
            seconds: secondsSince(began), timedOut: timedOut, signaled: process.terminationReason == .uncaughtSignal)
    }

    /// Expects a refusal: non-zero exit (not a signal), within the time limit, and exactly one
    /// "Error:" line on stderr (notes aside) containing every one of `phrases`.
    @discardableResult
    func expectRefused(
        _ arguments: [String], _ phrases: [String], absent: [String] = [], seconds: Double = 60,
        through wrapper: String? = nil, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> String {
        let outcome = try run(arguments, seconds: seconds, through: wrapper)
        let label = arguments.joined(separator: " ")
        #expect(!outcome.timedOut, "\(label): still running after \(seconds) s", sourceLocation: sourceLocation)
        #expect(
            outcome.status != 0 && !outcome.signaled, "\(label): exit status \(outcome.status)\(outcome.signaled ? " (signal)" : "")",
            sourceLocation: sourceLocation)
        let lines = outcome.stderr.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("note:") && !$0.hasPrefix("tokenising") }
        #expect(
            lines.count == 1 && lines[0].hasPrefix("Error: "), "\(label): stderr is not one error line: \(outcome.stderr)",
            sourceLocation: sourceLocation)
        let line = lines.first ?? ""
        for phrase in phrases {
            #expect(line.contains(phrase), "\(label): \"\(line)\" lacks \"\(phrase)\"", sourceLocation: sourceLocation)
        }
        for phrase in absent { #expect(!line.contains(phrase), "\(label): \"\(line)\" says \"\(phrase)\"", sourceLocation: sourceLocation) }
        return line
    }

    // MARK: Fixtures

    /// A copy of the shipped GRU checkpoint (its three files only, not the other seeds' subfolders).
    func checkpoint(_ name: String) throws -> String {
        let folder = "\(scratch)/\(name)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            try FileManager.default.copyItem(atPath: "\(Self.root)/assets/checkpoints/gru/\(file)", toPath: "\(folder)/\(file)")
        }
        return folder
    }

    /// A copy of a Hugging Face fixture folder.
    func hubModel(_ family: String, _ name: String) throws -> String {
        let folder = "\(scratch)/\(name)"
        try FileManager.default.copyItem(atPath: "\(Self.root)/Tests/Fixtures/hf/\(family)", toPath: folder)
        return folder
    }

    /// Rewrites a safetensors file's header text (and, with `lengthDelta`, its length field).
    func rewriteHeader(_ path: String, lengthDelta: Int = 0, _ edit: (String) -> String) throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let length = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = String(decoding: bytes[8..<8 + length], as: UTF8.self)
        let newHeader = Array(edit(header).utf8)
        let declared = UInt64(newHeader.count + lengthDelta)
        let out = withUnsafeBytes(of: declared.littleEndian) { Array($0) } + newHeader + bytes[(8 + length)...]
        try Data(out).write(to: URL(fileURLWithPath: path))
    }

    /// Rewrites a JSON file through Foundation (for field-level changes).
    func editJSON(_ path: String, _ edit: (inout [String: Any]) -> Void) throws {
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        edit(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    }

    func setConfigText(_ folder: String, field: String, to literal: String) throws {
        let path = "\(folder)/config.json"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let pattern = try NSRegularExpression(pattern: "\"\(field)\"\\s*:\\s*[^,}\\n]+")
        let range = NSRange(text.startIndex..., in: text)
        try pattern.stringByReplacingMatches(in: text, range: range, withTemplate: "\"\(field)\": \(literal)")
            .write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// A training state beside nothing else: `step` and the default run's options and config.
    func trainingState(_ folder: String, step: String, shape: String? = nil) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var config = ModelConfig()
        config.router = .gru
        config.vocabSize = try Tokenizer.load(path: "\(Self.root)/assets/tokenizer.json").vocabSize
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let metadata = [
            "format": "moescope-training-state", "step": step, "adam_updates": "0",
            "options": String(decoding: try encoder.encode(TrainingOptions()), as: UTF8.self),
            "config": String(decoding: try config.encoded(), as: UTF8.self),
        ]
        let path = "\(folder)/training-state.safetensors"
        try SafeTensorsFile.write(["param/model.norm.weight": Tensor(repeating: 1, shape: [128])], metadata: metadata, to: path)
        if let shape { try rewriteHeader(path) { $0.replacingOccurrences(of: "\"shape\":[128]", with: "\"shape\":\(shape)") } }
    }

    func mkfifo(_ path: String) { _ = Glibc.mkfifo(path, 0o600) }

    // MARK: Random damage

    /// A sample of the fuzz cases (see FuzzTests) run through the binary itself, under the
    /// memory limit: each loads and traces, or fails with one error line — never a signal
    /// (trap, failed allocation), never past the time limit.
    @Test func randomDamageThroughTheBinary() throws {
        let folder = try checkpoint("fuzz")
        let weights = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(folder)/model.safetensors")))
        let config = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(folder)/config.json")))
        var g = SeededGenerator(seed: 113)
        var refused = 0
        for case_ in 0..<24 {
            let damagesWeights = case_ % 2 == 0
            try Data(damagesWeights ? Mutator.mutateSafeTensors(weights, using: &g) : weights).write(
                to: URL(fileURLWithPath: "\(folder)/model.safetensors"))
            try Data(damagesWeights ? config : Mutator.mutate(config, using: &g)).write(to: URL(fileURLWithPath: "\(folder)/config.json"))
            let outcome = try run(["trace", "--checkpoint", folder, "--text", "hi"], seconds: 60)
            #expect(!outcome.timedOut && !outcome.signaled, "case \(case_): status \(outcome.status), \(outcome.stderr)")
            if outcome.status != 0 {
                refused += 1
                let lines = outcome.stderr.split(separator: "\n")
                #expect(lines.count == 1 && lines[0].hasPrefix("Error: "), "case \(case_): \(outcome.stderr)")
            }
        }
        #expect(refused > 0)
    }

    // MARK: Crashes

    @Test func shapesWhoseSizeOverflowsAreRefused() throws {
        let own = try checkpoint("overflow")
        try rewriteHeader("\(own)/model.safetensors") {
            $0.replacingOccurrences(of: "\"shape\":[128]", with: "\"shape\":[4294967296,4294967296]")
        }
        try expectRefused(["trace", "--checkpoint", own, "--text", "hi"], ["model.safetensors", "overflows"])

        let hub = try hubModel("olmoe", "overflow-hub")
        try rewriteHeader("\(hub)/model.safetensors") { header in
            let range = header.range(of: #""shape":\[[0-9,]+\]"#, options: .regularExpression)!
            return header.replacingCharacters(in: range, with: "\"shape\":[4611686018427387904]")
        }
        try expectRefused(["trace", "--model", hub, "--text", "hi"], ["model.safetensors", "overflows"], absent: ["moescope train"])

        let run = "\(scratch)/overflow-state"
        try trainingState(run, step: "3", shape: "[4294967296,4294967296]")
        try expectRefused(["train", "--out", run, "--resume"], ["training-state.safetensors", "overflows"])
    }

    @Test func hugeConfigSizesAreBudgetedBeforeAllocation() throws {
        for (field, value, phrase) in [
            ("max_position_embeddings", "1000000000", "available"), ("max_position_embeddings", "10000000", "available"),
            ("num_local_experts", "9223372036854775807", "above the limit"), ("vocab_size", "4000000", "available"),
        ] {
            let own = try checkpoint("huge-\(field)-\(value)")
            try setConfigText(own, field: field, to: value)
            let line = try expectRefused(["trace", "--checkpoint", own, "--text", "hi"], ["config.json", phrase], seconds: 20)
            if phrase == "available" { #expect(line.contains("needs"), "\(line)") }
            // train takes the vocabulary from the tokenizer, so only the other sizes reach it.
            if field != "vocab_size" {
                try expectRefused(
                    ["train", "--config", "\(own)/config.json", "--out", "\(scratch)/never-\(field)-\(value)", "--steps", "1"], [phrase],
                    seconds: 20)
            }
        }
        // Scales past any model's: an epsilon of 1e18 trained a model that predicts uniformly.
        for (field, value) in [("rms_norm_eps", "1e18"), ("initializer_range", "2.5"), ("rope_theta", "1e18")] {
            let own = try checkpoint("scale-\(field)")
            try setConfigText(own, field: field, to: value)
            try expectRefused(
                ["train", "--config", "\(own)/config.json", "--out", "\(scratch)/never-\(field)", "--steps", "1"],
                ["\(field) must be", "at most"],
                seconds: 20)
        }
    }

    @Test func resumeChecksTheStateBeforeTraining() throws {
        for (step, phrase) in [("-5", "step -5 is outside"), ("5000", "step 5000 is outside"), ("x", "step counter is missing")] {
            let run = "\(scratch)/state-\(step)"
            try trainingState(run, step: step)
            try expectRefused(["train", "--out", run, "--resume"], [phrase], seconds: 20)
        }
    }

    @Test func nonFiniteWeightsAreNamedNotPrinted() throws {
        let own = try checkpoint("nan")
        // One NaN in layer 2's query projection: everything from layer 2 on is NaN.
        let path = "\(own)/model.safetensors"
        let file = try SafeTensorsFile(path: path)
        let entry = file.entries["model.layers.2.self_attn.q_proj.weight"]!
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let start = bytes.count - file.entries.values.map(\.byteRange.upperBound).max()! + entry.byteRange.lowerBound
        let nan: [UInt8] = entry.dtype == .f32 ? [0x00, 0x00, 0xC0, 0x7F] : [0x00, 0x7E]
        bytes.replaceSubrange(start..<start + nan.count, with: nan)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        for format in ["--json", "--csv"] {
            try expectRefused(["trace", "--checkpoint", own, "--text", "The quick brown fox", format], ["NaN", "layer L2"])
        }
        try expectRefused(["analyze", "--checkpoint", own, "--text", "The quick brown fox", "--json"], ["NaN", "layer L2"])
    }

    // MARK: Hangs

    @Test func fifosAreRefusedWithoutBlocking() throws {
        let own = try checkpoint("fifo")
        try FileManager.default.removeItem(atPath: "\(own)/model.safetensors")
        mkfifo("\(own)/model.safetensors")
        try expectRefused(["trace", "--checkpoint", own, "--text", "hi"], ["model.safetensors", "FIFO"], seconds: 15)

        let hub = try hubModel("qwen2_moe", "fifo-hub")
        try FileManager.default.removeItem(atPath: "\(hub)/model-00002-of-00004.safetensors")
        mkfifo("\(hub)/model-00002-of-00004.safetensors")
        try expectRefused(["trace", "--model", hub, "--text", "hi"], ["model-00002-of-00004.safetensors", "FIFO"], seconds: 15)

        mkfifo("\(scratch)/text.fifo")
        try expectRefused(["trace", "--file", "\(scratch)/text.fifo"], ["text.fifo", "FIFO"], seconds: 15)
        try expectRefused(["trace", "--file", "/dev/null"], ["/dev/null", "device"], seconds: 15)
    }

    // MARK: Accepted silently before

    @Test func damagedHeadersAreRefused() throws {
        let cases: [(String, Int, (String) -> String, String)] = [
            // Writers pad the header with spaces (8-byte alignment): a length a few bytes short
            // still holds valid JSON, and every tensor would be read shifted.
            ("short-length", -3, { $0 + "     " }, "3 bytes after the last tensor"),
            (
                "overlap", 0,
                { header in  // two norms of the same size sharing one byte range
                    var object = try! JSONSerialization.jsonObject(with: Data(header.utf8)) as! [String: Any]
                    var second = object["model.layers.0.post_attention_layernorm.weight"] as! [String: Any]
                    second["data_offsets"] = (object["model.layers.0.input_layernorm.weight"] as! [String: Any])["data_offsets"]
                    object["model.layers.0.post_attention_layernorm.weight"] = second
                    return String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
                }, "overlaps the tensor before it"
            ),
            ("fraction", 0, { $0.replacingOccurrences(of: "\"data_offsets\":[0,", with: "\"data_offsets\":[0.5,") }, "the number 0.5"),
            (
                "duplicate", 0,
                { h in
                    let first = h.range(
                        of: #""[^"]+":\{"data_offsets":\[[0-9]+,[0-9]+\],"dtype":"[A-Z0-9]+","shape":\[[0-9,]*\]\},"#,
                        options: .regularExpression)!
                    return "{" + h[first] + h.dropFirst()
                }, "duplicate key"
            ),
            (
                "trailing-comma", 0,
                { h in
                    let end = h.range(of: "}", options: .backwards)!
                    return h.replacingCharacters(in: end, with: ",}")
                }, "trailing comma"
            ),
        ]
        for (name, delta, edit, phrase) in cases {
            let own = try checkpoint("header-\(name)")
            try rewriteHeader("\(own)/model.safetensors", lengthDelta: delta, edit)
            try expectRefused(["trace", "--checkpoint", own, "--text", "hi"], ["model.safetensors", phrase])
        }
    }

    @Test func weightMapPathsStayInsideTheFolder() throws {
        let hub = try hubModel("qwen2_moe", "escape")
        try editJSON("\(hub)/model.safetensors.index.json") { index in
            var map = index["weight_map"] as! [String: String]
            map[map.keys.sorted()[0]] = "../../../../etc/passwd"
            index["weight_map"] = map
        }
        try expectRefused(["trace", "--model", hub, "--text", "hi"], ["../../../../etc/passwd", "inside the model folder"])
    }

    @Test func hubConfigValuesThatWereIgnored() throws {
        let olmoe = try hubModel("olmoe", "clip")
        try editJSON("\(olmoe)/config.json") { $0["clip_qkv"] = -1 }
        try expectRefused(["trace", "--model", olmoe, "--text", "hi"], ["clip_qkv", "positive"])

        let v3 = try hubModel("deepseek_v3", "rope")
        try editJSON("\(v3)/config.json") { config in
            if config["rope_parameters"] == nil { config["rope_parameters"] = ["rope_type": "default", "rope_theta": 10000] }
            config["rope_scaling"] = ["type": "linear", "factor": 2]
        }
        try expectRefused(["trace", "--model", v3, "--text", "hi"], ["rope_scaling", "linear"])

        let mixtral = try hubModel("qwen2_moe", "vocab")
        try editJSON("\(mixtral)/tokenizer.json") { json in
            var model = json["model"] as! [String: Any]
            var vocab = model["vocab"] as! [String: Int]
            vocab["ÿ"] = nil  // byte 0xFF's stand-in character
            model["vocab"] = vocab
            model["merges"] = []
            json["model"] = model
        }
        try expectRefused(["trace", "--model", mixtral, "--text", "hi"], ["tokenizer.json", "byte 0xFF"])

        // Fields transformers acts on that moescope does not implement: another activation in
        // the experts, sliding-window attention over fewer tokens than the context.
        let refusedFields: [(family: String, edit: [String: Any], phrases: [String])] = [
            ("mixtral", ["hidden_act": "gelu"], ["hidden_act", "gelu", "SiLU"]),
            ("deepseek_v2", ["hidden_act": "relu"], ["hidden_act", "relu"]),
            ("mixtral", ["sliding_window": 2], ["sliding_window", "2 tokens"]),
            ("qwen3_moe", ["use_sliding_window": true, "sliding_window": 2], ["use_sliding_window", "2 tokens"]),
            // Without layer_types, transformers slides every other layer below max_window_layers.
            (
                "qwen2_moe", ["use_sliding_window": true, "sliding_window": 2, "max_window_layers": 28, "layer_types": NSNull()],
                ["use_sliding_window", "2 tokens"]
            ),
            ("qwen2_moe", ["layer_types": ["sliding_attention", "full_attention"], "sliding_window": 2], ["layer_types", "2 tokens"]),
            ("qwen2_moe", ["use_sliding_window": "yes"], ["use_sliding_window", "true or false"]),
        ]
        for (index, item) in refusedFields.enumerated() {
            let folder = try hubModel(item.family, "unimplemented-\(index)")
            try editJSON("\(folder)/config.json") { config in for (key, value) in item.edit { config[key] = value is NSNull ? nil : value }
            }
            try expectRefused(["trace", "--model", folder, "--text", "hi"], ["config.json"] + item.phrases)
        }
        // A tokenizer with ids the embedding lacks is refused when opened, not at the first such token.
        let foreign = try hubModel("olmoe", "foreign-tokenizer")
        try editJSON("\(foreign)/tokenizer.json") { json in
            var model = json["model"] as! [String: Any]
            var vocab = model["vocab"] as! [String: Int]
            vocab["zzzz"] = 100_000
            model["vocab"] = vocab
            json["model"] = model
        }
        try expectRefused(["trace", "--model", foreign, "--text", "hi"], ["tokenizer.json has ids up to 100000", "vocab_size is 320"])

        // A window no shorter than the context, or one no layer uses, changes nothing and loads.
        for (index, edit) in [["sliding_window": 128], ["use_sliding_window": true, "sliding_window": 2, "max_window_layers": 0]]
            .enumerated()
        {
            let folder = try hubModel(index == 0 ? "mixtral" : "qwen2_moe", "harmless-window-\(index)")
            try editJSON("\(folder)/config.json") { config in for (key, value) in edit { config[key] = value } }
            let outcome = try run(["trace", "--model", folder, "--text", "hi"])
            #expect(outcome.status == 0, "\(edit): \(outcome.stderr)")
        }
    }

    @Test func trainingOptionsAndStatesThatWereAccepted() throws {
        try expectRefused(["train", "--out", "\(scratch)/z", "--z-loss", "nan"], ["--z-loss must be", "nan"], seconds: 20)
        try expectRefused(["train", "--out", "\(scratch)/z", "--learning-rate", "inf"], ["--learning-rate must be"], seconds: 20)
    }

    @Test func explorerRefusesATextLongerThanTheContext() throws {
        let long = "\(scratch)/long.txt"
        try String(repeating: "The router sends every token to two of eight experts. ", count: 60).write(
            toFile: long, atomically: true, encoding: .utf8)
        // A pseudo-terminal for the explorer (it refuses a pipe); the error reaches the
        // transcript, the terminal state is never touched because loading fails first.
        let outcome = try run(["--file", long], seconds: 30, through: "exec script -qec \"$0 --file \(long)\" /dev/null")
        #expect(!outcome.timedOut)
        #expect(outcome.status != 0 && outcome.status < 128)
        #expect(outcome.stdout.contains("token positions but the model's context is 256"), "\(outcome.stdout)")
    }

    // MARK: Data lost

    @Test func finishedCheckpointsAreNotOverwritten() throws {
        let own = try checkpoint("finished")
        let stale = "\(own)/.model.safetensors.999999.tmp"
        _ = FileManager.default.createFile(atPath: stale, contents: Data(count: 64))
        let before = try Data(contentsOf: URL(fileURLWithPath: "\(own)/model.safetensors"))
        let outcome = try run(["train", "--out", own, "--steps", "1"], seconds: 20)
        #expect(outcome.status != 0)
        #expect(outcome.stderr.contains("already holds a trained checkpoint") && outcome.stderr.contains("--force"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("removed 1 temporary file"), "\(outcome.stderr)")
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(own)/model.safetensors")) == before)

        _ = FileManager.default.createFile(atPath: "\(scratch)/plain-file", contents: Data("x".utf8))
        try expectRefused(["train", "--out", "\(scratch)/plain-file"], ["is a file"], seconds: 20)
        try expectRefused(
            ["train", "--out", "\(scratch)/plain-file/run"], ["plain-file is a file, not a folder"], absent: ["NSCocoaErrorDomain"],
            seconds: 20)
    }

    /// A temporary file that a killed trace writer left (its PID gone) is removed by the next
    /// write to the same file. (That a SIGINT or SIGTERM mid-write removes the temporary itself
    /// is checked by hand, README: Foundation's Process starts children with both signals
    /// blocked, so a test cannot deliver them.)
    @Test func staleTraceTemporariesAreRemoved() throws {
        let stale = "\(scratch)/.routing.safetensors.999999.tmp"
        _ = FileManager.default.createFile(atPath: stale, contents: Data(count: 64))
        let outcome = try run(["trace", "--text", "hi", "--out", "\(scratch)/routing.safetensors"])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(!FileManager.default.fileExists(atPath: stale))
    }

    /// A text's control characters are printed escaped: an ESC sequence in a --file would
    /// otherwise act on the terminal that shows the table.
    @Test func controlCharactersInTheTextDoNotReachTheTerminal() throws {
        let outcome = try run(["trace", "--text", "a\u{1b}[31mb\u{7f}\u{85}c"])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(!outcome.stdout.unicodeScalars.contains { $0 != "\n" && $0.properties.generalCategory == .control }, "\(outcome.stdout)")
        #expect(outcome.stdout.contains("\\x1b") && outcome.stdout.contains("\\x7f"), "\(outcome.stdout)")
    }

    // MARK: Unclear messages

    @Test func negativeNumbersAreParsedAndRefusedByTheirBounds() throws {
        try expectRefused(["train", "--steps", "-5"], ["--steps must be at least 1, got -5"])
        try expectRefused(["train", "--batch-size", "-2"], ["--batch-size must be between 1 and 4096, got -2"])
        try expectRefused(["trace", "--seed", "-1", "--text", "hi"], ["--seed", "-1"])
        try expectRefused(["bench", "--repeats", "-1"], ["--repeats must be at least 1, got -1"])
        try expectRefused(["bench", "--trace-only", "--trace-tokens", "-1"], ["--trace-tokens must be between 0 and", "got -1"])
        try expectRefused(["analyze", "--max-tokens", "-3"], ["--max-tokens must be at least 1, got -3"])
        try expectRefused(["analyze", "--layer", "-1", "--text", "hi"], ["--layer -1"])
        try expectRefused(["trace", "--router", "quantum", "--text", "hi"], ["quantum", "linear", "mlp-hadamard", "gru"])
        try expectRefused(["--trace", "routing.safetensors", "--start", "0"], ["--start counts tokens from 1", "got 0"])
    }

    /// Paths the user names are used as named: an --assets folder without assets is not
    /// replaced by $MOESCOPE_ASSETS, a --run row whose folder holds no checkpoint is not skipped,
    /// and a file to write is checked before the work (a directory, a device that renaming
    /// would replace, a missing folder) instead of failing after it with a Foundation dump.
    @Test func pathsTheUserNamesAreCheckedBeforeTheWork() throws {
        _ = FileManager.default.createFile(atPath: "\(scratch)/plain", contents: Data("x".utf8))
        try expectRefused(["trace", "--assets", "\(scratch)/absent", "--text", "hi"], ["--assets", "absent", "no tokenizer.json"])
        try expectRefused(
            ["compare", "--routers", "linear", "--resamples", "10", "--run", "extra=\(scratch)/absent"],
            ["--run extra=", "holds no checkpoint"],
            seconds: 20)
        for (arguments, phrases) in [
            (["compare", "--routers", "linear", "--json-file", scratch], ["--json-file", "is a directory"]),
            (["compare", "--routers", "linear", "--json-file", "/dev/null"], ["--json-file /dev/null", "not a regular file"]),
            (["trace", "--text", "hi", "--out", "\(scratch)/absent/trace.safetensors"], ["--out", "absent", "does not exist"]),
            (["bench", "--trace-only", "--trace-tokens", "10", "--keep-trace", scratch], ["--keep-trace", "is a directory"]),
            (["tokenizer", "--output", "/dev/null"], ["--output /dev/null", "not a regular file"]),
            (["tokenizer", "--corpus", "\(scratch)/absent.jsonl", "--output", "\(scratch)/t.json"], ["absent.jsonl", "pass --corpus"]),
            (["compare", "--checkpoints", "\(scratch)/absent"], ["--checkpoints", "absent is not a folder"]),
            (["analyze", "--text", "hi", "--figures", "\(scratch)/plain"], ["--figures", "is a file, not a folder"]),
            (
                ["analyze", "--text", "hi", "--figures", "\(scratch)/plain/figures"],
                ["cannot create --figures", "plain is a file, not a folder"]
            ),
            (["compare", "--checkpoints", "\(scratch)/plain"], ["--checkpoints", "plain is not a folder"]),
        ] {
            try expectRefused(arguments, phrases, absent: ["NSCocoaErrorDomain"], seconds: 20)
        }
        #expect(FileManager.default.fileExists(atPath: "/dev/null"))
    }

    /// A write that fails part-way (a full disk; here a file-size limit, which the command
    /// must survive rather than die of SIGXFSZ) is one line naming the file and the system's
    /// reason, and the file it would have replaced is still whole.
    @Test func aFailedWriteKeepsWhatWasWritten() throws {
        let text = String(repeating: "the routing of a longer text ", count: 10)
        let first = try run(["trace", "--text", text, "--out", "t.safetensors"])
        #expect(first.status == 0, "\(first.stderr)")
        func contents(_ name: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: "\(scratch)/\(name)")) }
        let trace = try contents("t.safetensors")
        let tokenizer = try contents("t.tokenizer.json")
        // `ulimit -f` counts 512-byte blocks in dash and 1 KiB ones in bash: 16 of either lets
        // the tokenizer copy through and stops the trace.
        let blocks = 16
        #expect(tokenizer.count < blocks * 512 && trace.count > blocks * 1024, "\(tokenizer.count) \(trace.count)")
        let limited = "ulimit -f \(blocks); TMPDIR=\"$PWD\" exec \"$0\" \"$@\""
        try expectRefused(
            ["trace", "--text", text, "--out", "t.safetensors"], ["cannot write t.safetensors", "File too large"],
            absent: ["NSCocoaErrorDomain"], through: limited)
        try expectRefused(
            ["bench", "--trace-only", "--trace-tokens", "20000", "--repeats", "1"], ["cannot write", "moescope-bench", "File too large"],
            absent: ["NSCocoaErrorDomain"], through: limited)
        #expect(try contents("t.safetensors") == trace)
        #expect(try contents("t.tokenizer.json") == tokenizer)
        let left = try FileManager.default.contentsOfDirectory(atPath: scratch).filter {
            $0.hasSuffix(".tmp") || $0.contains("moescope-bench")
        }
        #expect(left.isEmpty, "\(left)")
    }

    /// A bench run killed with SIGKILL leaves its synthetic trace in the temporary folder; the
    /// next run removes it (its process is gone) and removes its own.
    @Test func benchRemovesTheTraceAKilledRunLeft() throws {
        // Killed while the stream writer wrote its temporary, and killed after it was renamed.
        for stale in [".moescope-bench-999999999.safetensors.999999999.tmp", "moescope-bench-999999998.safetensors"] {
            _ = FileManager.default.createFile(atPath: "\(scratch)/\(stale)", contents: Data(count: 1024))
        }
        let outcome = try run(
            ["bench", "--trace-only", "--trace-tokens", "10", "--repeats", "1"], seconds: 60,
            through: "TMPDIR=\"$PWD\" exec \"$0\" \"$@\"")
        #expect(outcome.status == 0, "\(outcome.stderr)")
        let left = try FileManager.default.contentsOfDirectory(atPath: scratch).filter { $0.contains("moescope-bench") }
        #expect(left.isEmpty, "\(left)")
    }

    /// `tokenizer`'s defaults are the assets folder's corpus and tokenizer, not paths relative to
    /// the current folder (the scratch folder here); the folder is found by its corpus, since
    /// the tokenizer is what the command makes.
    @Test func tokenizerDefaultsLiveInTheAssetsFolder() throws {
        let assets = "\(scratch)/assets-copy"
        try FileManager.default.createDirectory(atPath: "\(assets)/corpus", withIntermediateDirectories: true)
        let line =
            #"{"domain": "english", "source": "test", "license": "test", "text": "the quick brown fox jumps over the lazy dog, the end", "split": "train"}"#
        try (line + "\n").write(toFile: "\(assets)/corpus/corpus.jsonl", atomically: true, encoding: .utf8)
        let outcome = try run(["tokenizer", "--assets", assets, "--vocab-size", "260"], seconds: 30)
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(outcome.stdout.contains("wrote \(assets)/tokenizer.json: 260 ids"), "\(outcome.stdout)")
        let written = try Tokenizer.load(path: "\(assets)/tokenizer.json")
        #expect(written.vocabSize == 260)
        #expect(!FileManager.default.fileExists(atPath: "\(scratch)/assets/tokenizer.json"))
        // Another corpus never replaces the assets folder's tokenizer by default.
        try expectRefused(["tokenizer", "--corpus", "\(assets)/corpus/corpus.jsonl"], ["--corpus given without --output"])
    }

    @Test func configMessagesNameWhatIsWrong() throws {
        for (literal, phrase) in [
            ("128.5", "must be a whole number, is 128.5"), ("18446744073709551616", "18446744073709551616"),
            ("\"quantum\"", ""),
        ] {
            let own = try checkpoint("config-\(literal.count)")
            try setConfigText(own, field: literal == "\"quantum\"" ? "router_type" : "hidden_size", to: literal)
            let line = try expectRefused(["trace", "--checkpoint", own, "--text", "hi"], ["config.json"])
            if literal == "\"quantum\"" {
                #expect(line.contains("\"quantum\" is not one of linear, mlp"), "\(line)")
            } else {
                #expect(line.contains("hidden_size") && line.contains(phrase), "\(line)")
            }
        }
        let array = try checkpoint("config-array")
        try "[1, 2]".write(toFile: "\(array)/config.json", atomically: true, encoding: .utf8)
        try expectRefused(["trace", "--checkpoint", array, "--text", "hi"], ["holds an array, not a JSON object"])

        try expectRefused(["trace", "--checkpoint", "\(scratch)/absent", "--text", "hi"], ["absent", "no such directory"])
        let directory = try checkpoint("config-dir")
        try FileManager.default.removeItem(atPath: "\(directory)/config.json")
        try FileManager.default.createDirectory(atPath: "\(directory)/config.json", withIntermediateDirectories: false)
        try expectRefused(["trace", "--checkpoint", directory, "--text", "hi"], ["config.json", "it is a directory"])
        let weightsDirectory = try checkpoint("weights-dir")
        try FileManager.default.removeItem(atPath: "\(weightsDirectory)/model.safetensors")
        try FileManager.default.createDirectory(atPath: "\(weightsDirectory)/model.safetensors", withIntermediateDirectories: false)
        try expectRefused(["trace", "--checkpoint", weightsDirectory, "--text", "hi"], ["model.safetensors", "it is a directory"])

        let hub = try hubModel("mixtral", "truncated-hub")
        let weights = "\(hub)/model.safetensors"
        let data = try Data(contentsOf: URL(fileURLWithPath: weights))
        try data.prefix(data.count - 100).write(to: URL(fileURLWithPath: weights))
        try expectRefused(["trace", "--model", hub, "--text", "hi"], ["truncated"], absent: ["moescope train", "retrain"])
    }
}
