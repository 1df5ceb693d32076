import Foundation

/// Shape of a moescope model. Saved as `config.json` beside the weights, with Mixtral's field
/// names where one exists so the file reads like any Hugging Face config.
public struct ModelConfig: Codable, Sendable, Equatable {
    public var vocabSize = 1024
    public var hiddenSize = 128
    public var numLayers = 6
    public var numHeads = 4
    /// Width of each SwiGLU expert's hidden layer.
    public var expertHiddenSize = 256
    public var numExperts = 8
    public var topK = 2
    public var contextLength = 256
    public var router: RouterKind = .linear
    /// Hidden width of the MLP, Hybrid and MLP-Hadamard routers; key width of the Attention router.
    public var routerHiddenSize = 64
    /// p, the GRU router's state width (the RMoE paper uses 128 with much wider models).
    public var gruHiddenSize = 64
    public var ropeTheta: Float = 10_000
    public var normEpsilon: Float = 1e-5
    public var tieEmbeddings = true
    public var initStd: Float = 0.02

    public init() {}

    public var headDim: Int { hiddenSize / numHeads }

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", numLayers = "num_hidden_layers"
        case numHeads = "num_attention_heads", expertHiddenSize = "intermediate_size"
        case numExperts = "num_local_experts", topK = "num_experts_per_tok"
        case contextLength = "max_position_embeddings", router = "router_type"
        case routerHiddenSize = "router_hidden_size", gruHiddenSize = "gru_hidden_size"
        case ropeTheta = "rope_theta", normEpsilon = "rms_norm_eps", tieEmbeddings = "tie_word_embeddings"
        case initStd = "initializer_range"
    }

    /// A tiny shape for tests: every code path, a fraction of a millisecond per token.
    public static func tiny(router: RouterKind = .linear) -> ModelConfig {
        var c = ModelConfig()
        c.vocabSize = 300; c.hiddenSize = 32; c.numLayers = 3; c.numHeads = 2
        c.expertHiddenSize = 48; c.numExperts = 4; c.topK = 2; c.contextLength = 64
        c.routerHiddenSize = 16; c.gruHiddenSize = 12; c.router = router
        return c
    }

    /// Throws a `CheckpointError.badConfig` naming the first field that cannot work.
    public func validate(path: String = "config") throws {
        func fail(_ detail: String) -> CheckpointError { .badConfig(path: path, detail: detail) }
        for (name, value) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("num_hidden_layers", numLayers),
                              ("num_attention_heads", numHeads), ("intermediate_size", expertHiddenSize),
                              ("num_local_experts", numExperts), ("num_experts_per_tok", topK),
                              ("max_position_embeddings", contextLength), ("router_hidden_size", routerHiddenSize),
                              ("gru_hidden_size", gruHiddenSize)] where value <= 0 {
            throw fail("\(name) must be positive, got \(value)")
        }
        guard hiddenSize % numHeads == 0 else { throw fail("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(numHeads)") }
        guard headDim % 2 == 0 else { throw fail("head dimension \(headDim) must be even for RoPE") }
        guard topK <= numExperts else { throw fail("num_experts_per_tok \(topK) exceeds num_local_experts \(numExperts)") }
        guard vocabSize > 256 else { throw fail("vocab_size \(vocabSize) must exceed the 256 byte tokens") }
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    public static func load(path: String) throws -> ModelConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError.unreadable(path: path, reason: "no such file")
        }
        let config: ModelConfig
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw CheckpointError.badConfig(path: path, detail: "missing field \(key.stringValue)")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw CheckpointError.badConfig(path: path, detail: "field \(context.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type")
        } catch let DecodingError.dataCorrupted(context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw CheckpointError.badConfig(path: path, detail: field.isEmpty ? "not valid JSON" : "field \(field): \(context.debugDescription)")
        }
        try config.validate(path: path)
        return config
    }
}

extension ModelConfig {
    // Decoding tolerates absent optional fields so configs stay readable as fields are added.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numLayers = try c.decode(Int.self, forKey: .numLayers)
        numHeads = try c.decode(Int.self, forKey: .numHeads)
        expertHiddenSize = try c.decode(Int.self, forKey: .expertHiddenSize)
        numExperts = try c.decode(Int.self, forKey: .numExperts)
        topK = try c.decode(Int.self, forKey: .topK)
        contextLength = try c.decode(Int.self, forKey: .contextLength)
        router = try c.decode(RouterKind.self, forKey: .router)
        let defaults = ModelConfig()
        routerHiddenSize = try c.decodeIfPresent(Int.self, forKey: .routerHiddenSize) ?? defaults.routerHiddenSize
        gruHiddenSize = try c.decodeIfPresent(Int.self, forKey: .gruHiddenSize) ?? defaults.gruHiddenSize
        ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? defaults.ropeTheta
        normEpsilon = try c.decodeIfPresent(Float.self, forKey: .normEpsilon) ?? defaults.normEpsilon
        tieEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieEmbeddings) ?? defaults.tieEmbeddings
        initStd = try c.decodeIfPresent(Float.self, forKey: .initStd) ?? defaults.initStd
    }
}
