import ArgumentParser
import Foundation
import MoECore
import MoEHub

/// Finds the shipped assets (tokenizer, corpus, checkpoints): `--assets`, then
/// `$MOESCOPE_ASSETS`, then `./assets`, then an `assets/` folder above the executable
/// (so `.build/release/moescope` works from anywhere).
struct AssetLocator {
    let root: String

    init(explicit: String?) throws {
        let environment = ProcessInfo.processInfo.environment["MOESCOPE_ASSETS"]
        var candidates = [explicit, environment].compactMap { $0 }
        if candidates.isEmpty {
            candidates.append(FileManager.default.currentDirectoryPath + "/assets")
            var folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            for _ in 0..<5 {
                candidates.append(folder.appendingPathComponent("assets").path)
                folder = folder.deletingLastPathComponent()
            }
        }
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: "\($0)/tokenizer.json") }) else {
            throw CLIError("no moescope assets found (looked in \(candidates.first ?? "./assets")) — run from the repository root or pass --assets DIR")
        }
        root = found
    }

    func checkpointDirectory(for router: RouterKind) -> String { "\(root)/checkpoints/\(router.rawValue)" }
    var tokenizerPath: String { "\(root)/tokenizer.json" }
}

/// A one-line error for the user; ArgumentParser prints it after "Error:" and exits non-zero.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(name: .customLong("router"), help: "Router whose checkpoint to load: \(RouterKind.allCases.map(\.rawValue).joined(separator: ", ")) (default: gru).")
    var chosenRouter: RouterKind?

    var router: RouterKind {
        get { chosenRouter ?? .gru }
        set { chosenRouter = newValue }
    }

    @Option(help: ArgumentHelp("Checkpoint directory (config.json, model.safetensors, tokenizer.json); overrides --router.", valueName: "dir"))
    var checkpoint: String?

    @Option(help: ArgumentHelp("Assets directory (default: ./assets or the one beside the executable).", valueName: "dir"))
    var assets: String?

    @Option(help: "Seed of the random-init model used when no trained checkpoint exists.", transform: parseSeed)
    var seed: UInt64 = 1

    @Option(name: .customLong("model"), help: ArgumentHelp(
        "A Hugging Face model folder (config.json, *.safetensors, tokenizer.json) to open instead: \(HubArchitecture.allCases.map(\.rawValue).joined(separator: ", ")).",
        valueName: "path"))
    var hubModel: String?

    struct Loaded {
        var checkpoint: Checkpoint
        /// True when no trained checkpoint was found and the model is a seeded random init.
        var isRandomInit: Bool
    }

    func validate() throws {
        if hubModel != nil, chosenRouter != nil || checkpoint != nil {
            throw ValidationError("--model opens a Hugging Face model with its own router — drop --\(checkpoint != nil ? "checkpoint" : "router")")
        }
    }

    /// A model to route text through, with its tokenizer: the `--model` Hugging Face folder,
    /// or moescope's own checkpoint as `load` finds it.
    struct Opened {
        var model: any RoutingModel
        var tokenizer: any TextTokenizer
        /// Where the weights came from, for headers and the status line.
        var source: String
        var isRandomInit: Bool
    }

    func open(quiet: Bool = false) throws -> Opened {
        if let hubModel {
            let model = try HubModel(folder: hubModel)
            let tokenizer = try HubTokenizer(file: "\(hubModel)/tokenizer.json")
            return Opened(model: model, tokenizer: tokenizer, source: hubModel, isRandomInit: false)
        }
        let loaded = try load(quiet: quiet)
        return Opened(model: loaded.checkpoint.model, tokenizer: loaded.checkpoint.tokenizer,
                      source: loaded.isRandomInit ? "random init (seed \(seed))" : loaded.checkpoint.directory ?? "checkpoint",
                      isRandomInit: loaded.isRandomInit)
    }

    /// `quiet` leaves the random-init note to the caller (the explorer shows it on screen).
    func load(quiet: Bool = false) throws -> Loaded {
        if let checkpoint {
            return Loaded(checkpoint: try Checkpoint.load(from: checkpoint), isRandomInit: false)
        }
        return try AssetLocator(explicit: assets).shippedModel(for: router, seed: seed, quiet: quiet)
    }
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
        if !quiet { printError("note: no trained \(router.rawValue) checkpoint in \(directory); using a random-init model (seed \(seed)) — its routing is noise") }
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

/// Text from `--text` or `--file` (`-` reads standard input), checked to be non-empty UTF-8.
struct TextInput: ParsableArguments {
    @Option(help: "Text to run through the model.")
    var text: String?

    @Option(help: ArgumentHelp("Read the text from a UTF-8 file ('-' for standard input).", valueName: "path"))
    var file: String?

    /// The longest text read (1 GiB): far beyond any context, within any machine's memory.
    static let maximumBytes = 1 << 30

    func read() throws -> String {
        let value: String
        switch (text, file) {
        case let (text?, nil):
            value = text
        case let (nil, path?):
            var data = Data()
            if path == "-" {
                // Read in pieces, so an endless input (/dev/zero) is refused, not held.
                while case let piece = FileHandle.standardInput.readData(ofLength: 1 << 20), !piece.isEmpty {
                    data.append(piece)
                    guard data.count <= Self.maximumBytes else {
                        throw CLIError("standard input holds more than \(Self.maximumBytes) bytes — pass a shorter text")
                    }
                }
            } else {
                data = try RegularFile.read(path, what: "text file", limit: Self.maximumBytes,
                                            remedy: "pass a regular UTF-8 text file, or '-' to read standard input")
            }
            guard let decoded = String(validating: data, as: UTF8.self) else {
                throw CLIError("\(path == "-" ? "standard input" : path) is not valid UTF-8 text — convert it (e.g. iconv -t UTF-8)")
            }
            value = decoded
        case (nil, nil):
            throw CLIError("no text given — pass --text \"...\" or --file PATH")
        case (_?, _?):
            throw CLIError("--text and --file both given — pass one")
        }
        guard !value.isEmpty else { throw CLIError("the text is empty — give at least one character") }
        return value
    }
}
