import Foundation

/// A checkpoint is a directory in the Hugging Face layout: `config.json`, `model.safetensors`
/// and the `tokenizer.json` the model was trained with.
public struct Checkpoint: Sendable {
    public var model: MoEModel
    public var tokenizer: Tokenizer
    public var directory: String?

    public static let configFile = "config.json"
    public static let weightsFile = "model.safetensors"
    public static let tokenizerFile = "tokenizer.json"

    public init(model: MoEModel, tokenizer: Tokenizer, directory: String? = nil) {
        self.model = model
        self.tokenizer = tokenizer
        self.directory = directory
    }

    public static func exists(at directory: String) -> Bool {
        FileManager.default.fileExists(atPath: "\(directory)/\(configFile)")
    }

    /// The checkpoints of one training recipe, one per seed, in seed order: `directory` itself
    /// when it is a checkpoint, and its `seed-N` subfolders that are. The shipped layout is both
    /// at once — `assets/checkpoints/<router>` is seed 1 (what the explorer and every command
    /// open), `assets/checkpoints/<router>/seed-2`, `seed-3` the other seeds — so `compare`
    /// finds every seed without the shipped path moving. `directory` itself is named by the seed
    /// its weights record (`seed` in the safetensors metadata, as `train` writes it), or by its
    /// folder name when they record none; a `seed-N` subfolder with that same seed is left out
    /// (it would count one training run twice).
    public static func seedCheckpoints(in directory: String) -> [(name: String, path: String)] {
        var found: [(seed: UInt64?, name: String, path: String)] = []
        if exists(at: directory) {
            let seed = (try? SafeTensorsFile(path: "\(directory)/\(weightsFile)"))?.metadata["seed"].flatMap { UInt64($0) }
            found.append((seed, seed.map { "seed-\($0)" } ?? URL(fileURLWithPath: directory).lastPathComponent, directory))
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in entries {
            guard name.hasPrefix("seed-"), let seed = UInt64(name.dropFirst(5)), "seed-\(seed)" == name,
                seed != found.first?.seed, exists(at: "\(directory)/\(name)")
            else { continue }
            found.append((seed, name, "\(directory)/\(name)"))
        }
        return found.sorted { ($0.seed ?? 0, $0.name) < ($1.seed ?? 0, $1.name) }.map { ($0.name, $0.path) }
    }

    public static func load(from directory: String) throws -> Checkpoint {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw CheckpointError.unreadable(path: directory, reason: "no such directory")
        }
        guard isDirectory.boolValue else {
            throw CheckpointError.unreadable(
                path: directory, reason: "it is a file, not a checkpoint directory (config.json, model.safetensors, tokenizer.json)")
        }
        let config = try ModelConfig.load(path: "\(directory)/\(configFile)")
        let tokenizer = try Tokenizer.load(path: "\(directory)/\(tokenizerFile)")
        guard tokenizer.vocabSize <= config.vocabSize else {
            throw CheckpointError.badConfig(
                path: "\(directory)/\(configFile)",
                detail: "vocab_size \(config.vocabSize) is smaller than the tokenizer's \(tokenizer.vocabSize) ids")
        }
        var weights = try SafeTensorsFile(path: "\(directory)/\(weightsFile)")
        let model = try MoEModel(config: config, from: &weights)
        return Checkpoint(model: model, tokenizer: tokenizer, directory: directory)
    }

    /// Writes config, tokenizer and weights; each file is replaced atomically.
    public func save(to directory: String, dtype: SafeTensorsDType = .f32, metadata: [String: String] = [:]) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try writeAtomically(try model.config.encoded(), to: "\(directory)/\(Self.configFile)")
        try tokenizer.save(to: "\(directory)/\(Self.tokenizerFile)")
        var info = metadata
        info["format"] = "pt"
        info["router"] = model.config.router.rawValue
        try SafeTensorsFile.write(
            model.namedParameters, dtype: dtype, metadata: info,
            to: "\(directory)/\(Self.weightsFile)")
    }
}
