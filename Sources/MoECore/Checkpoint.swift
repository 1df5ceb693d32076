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

    public static func load(from directory: String) throws -> Checkpoint {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw CheckpointError.unreadable(path: directory, reason: "no such directory")
        }
        guard isDirectory.boolValue else {
            throw CheckpointError.unreadable(path: directory, reason: "it is a file, not a checkpoint directory (config.json, model.safetensors, tokenizer.json)")
        }
        let config = try ModelConfig.load(path: "\(directory)/\(configFile)")
        let tokenizer = try Tokenizer.load(path: "\(directory)/\(tokenizerFile)")
        guard tokenizer.vocabSize <= config.vocabSize else {
            throw CheckpointError.badConfig(path: "\(directory)/\(configFile)",
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
        try SafeTensorsFile.write(model.namedParameters, dtype: dtype, metadata: info,
                                  to: "\(directory)/\(Self.weightsFile)")
    }
}
