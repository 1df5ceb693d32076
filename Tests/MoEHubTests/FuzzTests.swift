import Foundation
import FuzzSupport
import MoEAnalysis
import Testing

@testable import MoECore
@testable import MoEHub

/// Seeded random mutations of the real files moescope reads — safetensors headers (the
/// committed Hugging Face fixtures and a moescope checkpoint), config.json (moescope's and
/// Hugging Face's) and tokenizer.json (both kinds). Every case must either load or fail with a
/// one-line error of moescope's own types; a trap, a hang or an allocation failure ends the
/// test process, which fails the suite. Same seed, same cases.
@Suite(.serialized) final class FuzzTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .path
    static let fixtures = "\(root)/Tests/Fixtures/hf"
    let scratch: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-fuzz-\(UUID())").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    /// Each test's folder goes with it (swift-testing makes one instance a test).
    deinit { try? FileManager.default.removeItem(atPath: scratch) }

    /// The error's text, asserted to be one of moescope's and one line.
    static func expectOneLine(_ error: Error, _ label: String) {
        let text = "\(error)"
        #expect(
            error is CheckpointError || error is HubError || error is FileError || error is InferenceError || error is TraceDataError,
            "\(label): \(type(of: error)) is not a moescope error: \(text)")
        #expect(!text.isEmpty && !text.contains("\n"), "\(label): not one line: \(text)")
    }

    func write(_ bytes: [UInt8], _ name: String) -> String {
        let path = "\(scratch)/\(name)"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    @Test(.timeLimit(.minutes(3))) func safeTensorsHeaders() throws {
        var sources = try FileManager.default.contentsOfDirectory(atPath: Self.fixtures).flatMap { family in
            try FileManager.default.contentsOfDirectory(atPath: "\(Self.fixtures)/\(family)")
                .filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix("reference") }.map { "\(Self.fixtures)/\(family)/\($0)" }
        }
        sources.append("\(Self.root)/assets/checkpoints/gru/model.safetensors")
        // The moescope checkpoint is 10 MB: its header is fuzzed with the data cut to what
        // the first tensors need, so each case writes little.
        var g = SeededGenerator(seed: 13)
        var loaded = 0
        var refused = 0
        for source in sources.sorted() {
            var original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: source)))
            if original.count > 1 << 20 { original = try Self.shrunk(original) }
            for case_ in 0..<240 {
                let bytes = Mutator.mutateSafeTensors(original, using: &g)
                let path = write(bytes, "case.safetensors")
                do {
                    let file = try SafeTensorsFile(path: path)
                    for (name, entry) in file.entries where entry.byteRange.count <= 1 << 22 { _ = try file.tensor(name) }
                    loaded += 1
                } catch {
                    Self.expectOneLine(error, "\(source) case \(case_)")
                    refused += 1
                }
            }
        }
        #expect(refused > loaded)  // the mutations do reach the checks
    }

    /// A smaller valid file holding the first tensors of a large one, header rewritten.
    static func shrunk(_ file: [UInt8]) throws -> [UInt8] {
        let length = Int(file.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = try JSONSerialization.jsonObject(with: Data(file[8..<8 + length])) as! [String: Any]
        var kept: [String: Any] = [:]
        var end = 0
        for (name, value) in header.sorted(by: { $0.key < $1.key }) where name != "__metadata__" {
            let entry = value as! [String: Any]
            let offsets = entry["data_offsets"] as! [Int]
            guard offsets[1] - offsets[0] <= 1 << 16, kept.count < 12 else { continue }
            kept[name] = ["dtype": entry["dtype"]!, "shape": entry["shape"]!, "data_offsets": [end, end + offsets[1] - offsets[0]]]
            end += offsets[1] - offsets[0]
        }
        let newHeader = [UInt8](try JSONSerialization.data(withJSONObject: kept, options: [.sortedKeys]))
        return withUnsafeBytes(of: UInt64(newHeader.count).littleEndian) { Array($0) } + newHeader + [UInt8](repeating: 0x3C, count: end)
    }

    @Test(.timeLimit(.minutes(3))) func moescopeConfigs() throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(Self.root)/assets/checkpoints/gru/config.json")))
        var g = SeededGenerator(seed: 14)
        var loaded = 0
        for case_ in 0..<700 {
            var bytes = Mutator.mutate(original, using: &g)
            if case_ % 3 == 0 { bytes = Mutator.mutate(bytes, using: &g) }
            let path = write(bytes, "config.json")
            do {
                let config = try ModelConfig.load(path: path)
                #expect(config.inferenceBytes != nil)
                loaded += 1
            } catch {
                Self.expectOneLine(error, "config case \(case_)")
            }
        }
        #expect(loaded > 0 && loaded < 700)
    }

    @Test(.timeLimit(.minutes(3))) func moescopeTokenizers() throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(Self.root)/assets/tokenizer.json")))
        var g = SeededGenerator(seed: 15)
        let sample = "Der Hund schläft 🙂 im Garten, 12345 → ok.\n\tdef f(): return 0"
        for case_ in 0..<400 {
            let path = write(Mutator.mutate(original, using: &g), "tokenizer.json")
            do {
                let tokenizer = try Tokenizer.load(path: path)
                #expect(tokenizer.decode(tokenizer.encode(sample)) == sample, "case \(case_): the loaded tokenizer does not round-trip")
            } catch {
                Self.expectOneLine(error, "tokenizer case \(case_)")
            }
        }
    }

    @Test(.timeLimit(.minutes(3))) func huggingFaceConfigs() throws {
        var g = SeededGenerator(seed: 16)
        var loaded = 0
        var cases = 0
        for family in ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"] {
            let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/\(family)/config.json")))
            let folder = "\(scratch)/\(family)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for case_ in 0..<150 {
                var bytes = Mutator.mutate(original, using: &g)
                if case_ % 4 == 0 { bytes = Mutator.mutate(bytes, using: &g) }
                _ = FileManager.default.createFile(atPath: "\(folder)/config.json", contents: Data(bytes))
                cases += 1
                do {
                    _ = try HubConfig(folder: folder)
                    loaded += 1
                } catch {
                    Self.expectOneLine(error, "\(family) config case \(case_)")
                }
            }
        }
        #expect(loaded > 0 && loaded < cases)
    }

    @Test(.timeLimit(.minutes(3))) func huggingFaceTokenizers() throws {
        var g = SeededGenerator(seed: 17)
        let sample = "The router sends ß and 🙂 to two of eight experts.\n  def f(): return 12345"
        for family in ["mixtral", "qwen2_moe", "olmoe"] {
            let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/\(family)/tokenizer.json")))
            for case_ in 0..<150 {
                let path = write(Mutator.mutate(original, using: &g), "tokenizer.json")
                do {
                    let tokenizer = try HubTokenizer(file: path)
                    let ids = tokenizer.encode(sample)
                    #expect(!ids.isEmpty, "\(family) case \(case_): a loaded tokenizer encoded the text to nothing")
                    _ = tokenizer.decode(ids)
                } catch {
                    Self.expectOneLine(error, "\(family) tokenizer case \(case_)")
                }
            }
        }
    }

    /// Routing traces (the captured fixtures): mutated bytes and header, and mutated
    /// `__metadata__` values (the trace's own fields: counts, layer lists, offsets, paths).
    /// A trace that opens is then read whole — every token's routing and the streamed
    /// analysis — which must succeed or fail with one line.
    @Test(.timeLimit(.minutes(3))) func routingTraces() throws {
        let folder = "\(Self.root)/Tests/Fixtures/traces"
        var g = SeededGenerator(seed: 18)
        var opened = 0
        var refused = 0
        for name in ["deepseek_v3.safetensors", "olmoe_64e.safetensors", "mixtral.safetensors"] {
            let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(name)")))
            for case_ in 0..<160 {
                let bytes = case_ % 2 == 0 ? Mutator.mutateSafeTensors(original, using: &g) : try Self.mutatedMetadata(original, using: &g)
                let path = write(bytes, "trace.safetensors")
                do {
                    let trace = try RoutingTraceFile(path: path)
                    for t in 0..<trace.tokenCount { _ = try trace.routing(token: t) }
                    _ = AnalysisReport(trace: trace, tokenizer: TokenIDsOnly(), accumulated: try AnalysisReport.Accumulator.reading(trace))
                    opened += 1
                } catch {
                    Self.expectOneLine(error, "\(name) case \(case_)")
                    refused += 1
                }
            }
        }
        #expect(opened > 0 && refused > opened)
    }

    /// The file with one `__metadata__` value mutated (or replaced by a hostile one).
    static func mutatedMetadata(_ file: [UInt8], using g: inout SeededGenerator) throws -> [UInt8] {
        let length = Int(file.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        var header = try JSONSerialization.jsonObject(with: Data(file[8..<8 + length])) as! [String: Any]
        var metadata = header["__metadata__"] as! [String: String]
        let keys = metadata.keys.sorted()
        let key = keys[Int(g.next() % UInt64(keys.count))]
        let hostile = ["../../etc/passwd", "/etc/passwd", "[3,2]", "[]", "-1", "99999999999", "[1e400]", "{\"a\":", "", "nan", "[\"x\"]"]
        metadata[key] =
            g.next() % 2 == 0
            ? hostile[Int(g.next() % UInt64(hostile.count))]
            : String(decoding: Mutator.mutate(Array(metadata[key]!.utf8), using: &g), as: UTF8.self)
        header["__metadata__"] = metadata
        var newHeader = [UInt8](try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while (8 + newHeader.count) % 8 != 0 { newHeader.append(0x20) }
        return withUnsafeBytes(of: UInt64(newHeader.count).littleEndian) { Array($0) } + newHeader + Array(file[(8 + length)...])
    }
}
