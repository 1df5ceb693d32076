import Foundation
import MoECore

/// Finds the shipped assets (tokenizer, corpus, checkpoints): `--assets`, then
/// `$MOESCOPE_ASSETS`, then `./assets`, then an `assets/` folder above the executable
/// (so `.build/release/moescope` works from anywhere).
struct AssetLocator {
    let root: String

    /// `marker` is the file that makes a folder the assets folder: the tokenizer for every
    /// command that reads one, the corpus for the command that makes the tokenizer.
    init(explicit: String?, marker: String = "tokenizer.json") throws {
        let environment = ProcessInfo.processInfo.environment["MOESCOPE_ASSETS"]
        // A folder the user names is the only one looked in: falling back to another would run
        // on assets they did not ask for.
        var candidates = [explicit ?? environment].compactMap { $0 }
        if candidates.isEmpty {
            candidates.append(FileManager.default.currentDirectoryPath + "/assets")
            var folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            for _ in 0..<5 {
                candidates.append(folder.appendingPathComponent("assets").path)
                folder = folder.deletingLastPathComponent()
            }
        }
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: "\($0)/\(marker)") }) else {
            throw CLIError(
                explicit.map {
                    "--assets \($0) holds no moescope assets (no \(marker) in it) — pass the assets folder of a moescope checkout"
                }
                    ?? "no moescope assets found (looked in \(candidates.first ?? "./assets")) — run from the repository root or pass --assets DIR"
            )
        }
        root = found
    }

    func checkpointDirectory(for router: RouterKind) -> String { "\(root)/checkpoints/\(router.rawValue)" }
    var tokenizerPath: String { "\(root)/tokenizer.json" }
    static let corpusFile = "corpus/corpus.jsonl"
    var corpusPath: String { "\(root)/\(Self.corpusFile)" }
}

/// A one-line error for the user; ArgumentParser prints it after "Error:" and exits non-zero.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension AssetLocator {
    /// The shipped checkpoint of `router`, or, when there is none, a random-init model with the
    /// shipped tokenizer (said on stderr unless `quiet`).
    func shippedModel(for router: RouterKind, seed: UInt64, quiet: Bool = false) throws -> ModelOptions.Loaded {
        let directory = checkpointDirectory(for: router)
        if Checkpoint.exists(at: directory) {
            return ModelOptions.Loaded(checkpoint: try Checkpoint.load(from: directory), isRandomInit: false)
        }
        let tokenizer = try Tokenizer.load(path: tokenizerPath)
        var config = ModelConfig()
        config.router = router
        config.vocabSize = tokenizer.vocabSize
        let model = try MoEModel(config: config, seed: seed)
        if !quiet {
            printError(
                "note: no trained \(router.rawValue) checkpoint in \(directory); using a random-init model (seed \(seed)) — its routing is noise"
            )
        }
        return ModelOptions.Loaded(checkpoint: Checkpoint(model: model, tokenizer: tokenizer), isRandomInit: true)
    }
}

extension JSONEncoder {
    /// The encoder of every JSON output: a non-finite number (a statistic of an empty or
    /// constant sample, a measurement that failed) is written as the string "nan", "inf" or
    /// "-inf" instead of failing the whole output.
    static func output(_ formatting: OutputFormatting) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = formatting
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }
}

/// A `--seed` value: a whole number from 0 to 2⁶⁴ − 1, refused with the rule otherwise.
func parseSeed(_ text: String) throws -> UInt64 {
    guard let value = UInt64(text) else { throw CLIError("--seed must be a whole number from 0 to \(UInt64.max), got \(text)") }
    return value
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
