import ArgumentParser
import Foundation
import MoECore
import MoEHub

/// `--assets`: where the shipped tokenizer, corpus and checkpoints are, for every command that
/// reads them.
struct AssetOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Assets directory: tokenizer, corpus and shipped checkpoints (default: $MOESCOPE_ASSETS, ./assets, or the assets folder beside the executable).",
            valueName: "dir"))
    var assets: String?

    func locate(marker: String = "tokenizer.json") throws -> AssetLocator { try AssetLocator(explicit: assets, marker: marker) }
}

/// `--model`: a Hugging Face model folder, opened in place of moescope's own model.
struct HubModelOption: ParsableArguments {
    @Option(
        name: .customLong("model"),
        help: ArgumentHelp(
            "A Hugging Face model folder (config.json, *.safetensors, tokenizer.json) to use instead of moescope's own: \(HubArchitecture.allCases.map(\.rawValue).joined(separator: ", ")).",
            valueName: "path"))
    var folder: String?
}

extension RouterKind: ExpressibleByArgument {
    /// The routers' names as the command line takes them, for help texts and errors.
    static var argumentList: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// Which model a command routes text through: moescope's own (`--router`, `--checkpoint`,
/// `--seed`) or a Hugging Face folder (`--model`), with the assets it is found in.
struct ModelOptions: ParsableArguments {
    @Option(name: .customLong("router"), help: "Router whose shipped checkpoint to load (default: gru).")
    var chosenRouter: RouterKind?

    var router: RouterKind {
        get { chosenRouter ?? .gru }
        set { chosenRouter = newValue }
    }

    @Option(
        help: ArgumentHelp("Checkpoint directory (config.json, model.safetensors, tokenizer.json); overrides --router.", valueName: "dir"))
    var checkpoint: String?

    @OptionGroup var assets: AssetOptions

    @Option(help: "Seed of the random-init model used when no trained checkpoint exists.", transform: parseSeed)
    var seed: UInt64 = 1

    @OptionGroup var hub: HubModelOption

    struct Loaded {
        var checkpoint: Checkpoint
        /// True when no trained checkpoint was found and the model is a seeded random init.
        var isRandomInit: Bool
    }

    func validate() throws {
        if hub.folder != nil, chosenRouter != nil || checkpoint != nil {
            throw ValidationError(
                "--model opens a Hugging Face model with its own router — drop --\(checkpoint != nil ? "checkpoint" : "router")")
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
        if let folder = hub.folder {
            let model = try HubModel(folder: folder)
            let tokenizer = try HubTokenizer(file: "\(folder)/tokenizer.json")
            // The rule Checkpoint.load applies to moescope's own: every id the tokenizer can
            // give must have a row in the embedding, or a text would fail token by token.
            guard tokenizer.vocabSize <= model.config.vocabSize else {
                throw CLIError(
                    "\(folder)/tokenizer.json has ids up to \(tokenizer.vocabSize - 1), but config.json's vocab_size is \(model.config.vocabSize) — the tokenizer does not belong to this model; use the tokenizer.json saved with it"
                )
            }
            return Opened(model: model, tokenizer: tokenizer, source: folder, isRandomInit: false)
        }
        let loaded = try load(quiet: quiet)
        return Opened(
            model: loaded.checkpoint.model, tokenizer: loaded.checkpoint.tokenizer,
            source: loaded.isRandomInit ? "random init (seed \(seed))" : loaded.checkpoint.directory ?? "checkpoint",
            isRandomInit: loaded.isRandomInit)
    }

    /// `quiet` leaves the random-init note to the caller (the explorer shows it on screen).
    func load(quiet: Bool = false) throws -> Loaded {
        if let checkpoint {
            return Loaded(checkpoint: try Checkpoint.load(from: checkpoint), isRandomInit: false)
        }
        return try assets.locate().shippedModel(for: router, seed: seed, quiet: quiet)
    }
}

/// A command that reads a text from `--text` or `--file`, and what `--text` is for in it.
protocol TakesText {
    /// The help of `--text`: what the text is for and, where there is one, the default.
    static var textHelp: String { get }
}

/// Text from `--text` or `--file` (`-` reads standard input), checked to be non-empty UTF-8.
/// Generic over the command only so that `--text`'s help can say what the text is for there.
struct TextInput<Command: TakesText>: ParsableArguments {
    @Option(help: ArgumentHelp(Command.textHelp))
    var text: String?

    @Option(help: ArgumentHelp("Read the text from a UTF-8 file ('-' for standard input).", valueName: "path"))
    var file: String?

    /// The longest text read (1 GiB): far beyond any context, within any machine's memory.
    static var maximumBytes: Int { 1 << 30 }

    /// Whether either option was given.
    var isGiven: Bool { text != nil || file != nil }

    func validate() throws {
        if text != nil && file != nil { throw ValidationError("--text and --file both given — pass one") }
    }

    func read() throws -> String {
        let value: String
        switch (text, file) {
        case (let text?, nil):
            value = text
        case (nil, let path?):
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
                data = try RegularFile.read(
                    path, what: "text file", limit: Self.maximumBytes,
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
        guard !value.isEmpty else { throw InferenceError.emptyInput }  // the one input rule's message
        return value
    }
}
