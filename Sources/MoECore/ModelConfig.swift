import Foundation

/// Shape of a moescope model. Saved as `config.json` beside the weights, with Mixtral's field
/// names where one exists so the file reads like any Hugging Face config.
public struct ModelConfig: Encodable, Sendable, Equatable {
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
    /// False cuts the GRU router's recurrence over depth (h_{i−1} = 0 at every layer), RMoE's
    /// ablation: the same parameters, each layer routing on its own.
    public var gruRecurrence = true
    public var ropeTheta: Float = 10_000
    public var normEpsilon: Float = 1e-5
    public var tieEmbeddings = true
    public var initStd: Float = 0.02

    public init() {}

    public var headDim: Int { hiddenSize / numHeads }

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case numLayers = "num_hidden_layers"
        case numHeads = "num_attention_heads"
        case expertHiddenSize = "intermediate_size"
        case numExperts = "num_local_experts"
        case topK = "num_experts_per_tok"
        case contextLength = "max_position_embeddings"
        case router = "router_type"
        case routerHiddenSize = "router_hidden_size"
        case gruHiddenSize = "gru_hidden_size"
        case gruRecurrence = "gru_recurrence"
        case ropeTheta = "rope_theta"
        case normEpsilon = "rms_norm_eps"
        case tieEmbeddings = "tie_word_embeddings"
        case initStd = "initializer_range"
    }

    /// A tiny shape for tests: every code path, a fraction of a millisecond per token.
    public static func tiny(router: RouterKind = .linear) -> ModelConfig {
        var c = ModelConfig()
        c.vocabSize = 300
        c.hiddenSize = 32
        c.numLayers = 3
        c.numHeads = 2
        c.expertHiddenSize = 48
        c.numExperts = 4
        c.topK = 2
        c.contextLength = 64
        c.routerHiddenSize = 16
        c.gruHiddenSize = 12
        c.router = router
        return c
    }

    /// Throws a `CheckpointError.badConfig` naming the first field that cannot work, and
    /// `CheckpointError.tooLarge` when the model would not fit in memory; nothing has been
    /// allocated from the config yet when it does.
    public func validate(path: String = "config") throws {
        func fail(_ detail: String) -> CheckpointError { .badConfig(path: path, detail: detail) }
        for (name, value, limit) in [
            ("vocab_size", vocabSize, SizeLimits.vocabulary), ("hidden_size", hiddenSize, SizeLimits.width),
            ("num_hidden_layers", numLayers, SizeLimits.layers), ("num_attention_heads", numHeads, SizeLimits.heads),
            ("intermediate_size", expertHiddenSize, SizeLimits.width), ("num_local_experts", numExperts, SizeLimits.experts),
            ("num_experts_per_tok", topK, SizeLimits.experts), ("max_position_embeddings", contextLength, SizeLimits.context),
            ("router_hidden_size", routerHiddenSize, SizeLimits.width), ("gru_hidden_size", gruHiddenSize, SizeLimits.width),
        ] {
            guard value > 0 else { throw fail("\(name) must be positive, got \(value)") }
            guard value <= limit else { throw fail("\(name) is \(value), above the limit of \(limit)") }
        }
        guard hiddenSize % numHeads == 0 else {
            throw fail("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(numHeads)")
        }
        guard headDim % 2 == 0 else { throw fail("head dimension \(headDim) must be even for RoPE") }
        guard topK <= numExperts else { throw fail("num_experts_per_tok \(topK) exceeds num_local_experts \(numExperts)") }
        guard vocabSize > 256 else { throw fail("vocab_size \(vocabSize) must exceed the 256 byte tokens") }
        // The bounds HubConfig puts on the same fields: an epsilon or init scale above 1 swamps
        // the values it is added to or scales (an epsilon of 1e18 trains a model that always
        // predicts the uniform distribution), and a RoPE base past 1e12 is no model's.
        for (name, value, limit) in [
            ("rope_theta", ropeTheta, Float(1e12)), ("rms_norm_eps", normEpsilon, 1), ("initializer_range", initStd, 1),
        ] {
            guard value.isFinite, value > 0, value <= limit else {
                throw fail("\(name) must be a positive finite number of at most \(limit), got \(value)")
            }
        }
        let available = MemoryBudget.availableBytes
        guard let needed = inferenceBytes, needed <= available else {
            throw CheckpointError.tooLarge(path: path, what: "the model", neededBytes: inferenceBytes, availableBytes: available)
        }
    }

    /// Parameters of this shape (nil if the count overflows).
    public var parameterCount: Int? {
        let d = hiddenSize
        let e = numExperts
        let l = numLayers
        let routerParameters: Int?
        switch router {
        case .linear: routerParameters = MemoryBudget.product([l, e, d])
        case .mlp, .mlpHadamard, .hybrid, .attention:
            routerParameters = MemoryBudget.sum([
                MemoryBudget.product([3, l, routerHiddenSize, d]), MemoryBudget.product([2, l, e, routerHiddenSize]),
            ])
        case .hash: routerParameters = 0
        case .gru:
            routerParameters = MemoryBudget.sum([
                MemoryBudget.product([l, gruHiddenSize, d]), MemoryBudget.product([l, e, gruHiddenSize]),
                MemoryBudget.product([6, gruHiddenSize, gruHiddenSize + 1]),
            ])
        }
        return MemoryBudget.sum([
            MemoryBudget.product([tieEmbeddings ? 1 : 2, vocabSize, d]),
            MemoryBudget.product([l, 4, d, d]),
            MemoryBudget.product([l, e, 3, expertHiddenSize, d]),
            MemoryBudget.product([2 * l + 1, d]),
            routerParameters,
        ])
    }

    /// Bytes a loaded model takes before it runs anything: F32 weights (twice while a
    /// checkpoint's are converted), the KV cache of a full context and the RoPE tables.
    public var inferenceBytes: Int? {
        MemoryBudget.sum([
            parameterCount.flatMap { MemoryBudget.product([$0, 8]) },
            MemoryBudget.product([2, numLayers, contextLength, hiddenSize, 4]),
            MemoryBudget.product([contextLength, headDim, 4]),
        ])
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// Reads a config.json: a regular file holding a JSON object with the fields above.
    public static func load(path: String) throws -> ModelConfig {
        let data = try RegularFile.read(path, what: "model config", limit: 16 << 20)
        let config = try ModelConfig(json: data, path: path)
        try config.validate(path: path)
        return config
    }

    /// Parses config.json text; every field that is absent, ill-typed or out of range is named.
    public init(json data: Data, path: String) throws {
        let object = try ConfigFields.parseObject(data) { CheckpointError.badConfig(path: path, detail: "the file \($0)") }
        let fields = ConfigFields(
            object: object, invalid: { CheckpointError.badConfig(path: path, detail: "field \($0) \($1)") },
            missing: { CheckpointError.badConfig(path: path, detail: "missing field \($0)") })
        let defaults = ModelConfig()
        let any = 0...Int.max
        vocabSize = try fields.int("vocab_size", in: any)
        hiddenSize = try fields.int("hidden_size", in: any)
        numLayers = try fields.int("num_hidden_layers", in: any)
        numHeads = try fields.int("num_attention_heads", in: any)
        expertHiddenSize = try fields.int("intermediate_size", in: any)
        numExperts = try fields.int("num_local_experts", in: any)
        topK = try fields.int("num_experts_per_tok", in: any)
        contextLength = try fields.int("max_position_embeddings", in: any)
        guard let routerName = try fields.optionalString("router_type") else {
            throw CheckpointError.badConfig(path: path, detail: "missing field router_type")
        }
        guard let kind = RouterKind(rawValue: routerName) else {
            throw CheckpointError.badConfig(
                path: path,
                detail: "router_type \"\(routerName)\" is not one of \(RouterKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        router = kind
        routerHiddenSize = try fields.optionalInt("router_hidden_size", in: any) ?? defaults.routerHiddenSize
        gruHiddenSize = try fields.optionalInt("gru_hidden_size", in: any) ?? defaults.gruHiddenSize
        gruRecurrence = try fields.optionalBool("gru_recurrence") ?? defaults.gruRecurrence
        ropeTheta = try fields.optionalDouble("rope_theta").map(Float.init) ?? defaults.ropeTheta
        normEpsilon = try fields.optionalDouble("rms_norm_eps").map(Float.init) ?? defaults.normEpsilon
        tieEmbeddings = try fields.optionalBool("tie_word_embeddings") ?? defaults.tieEmbeddings
        initStd = try fields.optionalDouble("initializer_range").map(Float.init) ?? defaults.initStd
    }
}
