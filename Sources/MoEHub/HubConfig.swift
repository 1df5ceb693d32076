import Foundation
import MoECore

/// A Hugging Face model folder that moescope cannot open, said in one line that names the file
/// or config field at fault and what would fix it.
public enum HubError: Error, CustomStringConvertible, Equatable {
    case notAModelFolder(path: String, detail: String)
    case unsupportedArchitecture(path: String, modelType: String)
    case missingField(path: String, field: String)
    case badField(path: String, field: String, detail: String)
    case missingWeight(path: String, tensor: String)
    case wrongShape(path: String, tensor: String, expected: [Int], found: [Int])
    /// A tensor no block of the model config.json describes reads.
    case unexpectedWeight(path: String, tensor: String)
    case tooLarge(path: String, neededBytes: Int, availableBytes: Int)
    case unsupportedTokenizer(path: String, detail: String)

    public var description: String {
        switch self {
        case .notAModelFolder(let path, let detail):
            return "\(path) is not a Hugging Face model folder: \(detail) — point --model at a folder with config.json and *.safetensors"
        case .unsupportedArchitecture(let path, let modelType):
            return "\(path)/config.json: model_type \"\(modelType)\" is not supported — moescope opens \(HubArchitecture.supportedList)"
        case .missingField(let path, let field):
            return "\(path)/config.json lacks the field \"\(field)\" — add it or re-export the config with transformers"
        case .badField(let path, let field, let detail):
            return "\(path)/config.json: field \"\(field)\" \(detail)"
        case .missingWeight(let path, let tensor):
            return "\(path): no tensor \"\(tensor)\", which config.json implies — \(Self.mismatch)"
        case .wrongShape(let path, let tensor, let expected, let found):
            return "\(path): tensor \"\(tensor)\" has shape \(found), config.json implies \(expected) — \(Self.mismatch)"
        case .unexpectedWeight(let path, let tensor):
            return "\(path): tensor \"\(tensor)\" is no weight of the model config.json describes — \(Self.mismatch)"
        case .tooLarge(let path, let needed, let available):
            return
                "\(path): the weights take \(Self.gigabytes(needed)) and this machine has \(Self.gigabytes(available)) of memory — use a smaller model or a larger machine"
        case .unsupportedTokenizer(let path, let detail):
            return
                "\(path)/tokenizer.json: \(detail) — moescope reads BPE tokenizers, byte-level (GPT-2, Qwen, OLMoE, DeepSeek) or SentencePiece-style (Mixtral, Llama 2)"
        }
    }

    static let mismatch = "the weights do not match config.json; use the config.json saved with these weights"

    static func gigabytes(_ bytes: Int) -> String { String(format: "%.1f GB", Double(bytes) / 1e9) }
}

/// The model families moescope reads, each routed exactly as transformers routes it.
public enum HubArchitecture: String, Sendable, CaseIterable {
    case mixtral
    case qwen2MoE = "qwen2_moe"
    case qwen3MoE = "qwen3_moe"
    case olmoe
    case deepseekV2 = "deepseek_v2"
    case deepseekV3 = "deepseek_v3"

    static var supportedList: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// Where a family puts RMSNorm on the attention's queries and keys, if anywhere.
public enum QueryKeyNorm: Sendable, Equatable {
    case none
    /// Qwen3-MoE: over each head's `head_dim` values.
    case perHead
    /// OLMoE: over the whole projection (all heads together), before the heads are split.
    case wholeProjection
}

/// DeepSeek's multi-head latent attention: keys and values come from a shared low-rank latent
/// (`kv_lora_rank`), every head's query and key split into a part without position and a
/// rotary part, the rotary key shared by all heads.
public struct LatentAttention: Sendable, Equatable {
    /// Low rank of the query (V3, V2 full models); nil: a full-rank q_proj (V2-Lite).
    public var queryRank: Int?
    public var latentRank: Int
    public var noPositionDim: Int
    public var rotaryDim: Int
    public var valueDim: Int
    /// Rotary dimensions in interleaved pairs (x0, x1), (x2, x3)…, as DeepSeek lays them out.
    public var interleaved: Bool
    public var queryKeyDim: Int { noPositionDim + rotaryDim }
}

/// Rotary embedding parameters: the default (θ only) or YaRN's extension of the context.
public struct RotaryParameters: Sendable, Equatable {
    public var theta: Double
    public var yarn: Yarn?

    /// YaRN (Peng et al. 2023) as transformers computes it: each frequency blends its
    /// interpolated (÷ factor) and original values by a linear ramp over the pair index between
    /// the correction dimensions of `betaFast` and `betaSlow` rotations, and cos/sin are
    /// multiplied by the attention factor.
    public struct Yarn: Sendable, Equatable {
        public var factor: Double
        public var originalContext: Int
        public var betaFast: Double, betaSlow: Double
        public var attentionFactor: Double
        public var truncate: Bool
        /// DeepSeek's `mscale_all_dim` (0: none); its softmax scale is multiplied by mscale².
        public var mscaleAllDim: Double
    }

    static func mscale(_ factor: Double, _ m: Double = 1) -> Double { factor <= 1 ? 1 : 0.1 * m * log(factor) + 1 }

    /// Frequencies of the `dim / 2` rotary pairs.
    public func inverseFrequencies(dim: Int) -> [Double] {
        let original = (0..<dim / 2).map { pow(theta, -2 * Double($0) / Double(dim)) }
        guard let yarn else { return original }
        func correctionDim(_ rotations: Double) -> Double {
            Double(dim) * log(Double(yarn.originalContext) / (rotations * 2 * .pi)) / (2 * log(theta))
        }
        var low = correctionDim(yarn.betaFast)
        var high = correctionDim(yarn.betaSlow)
        if yarn.truncate {
            low = low.rounded(.down)
            high = high.rounded(.up)
        }
        low = max(low, 0)
        high = min(high, Double(dim - 1))
        if low == high { high += 0.001 }
        return original.enumerated().map { i, frequency in
            let ramp = min(max((Double(i) - low) / (high - low), 0), 1)
            let keep = 1 - ramp  // weight of the original (extrapolated) frequency
            return frequency / yarn.factor * (1 - keep) + frequency * keep
        }
    }

    /// cos/sin multiplier.
    public var tableScale: Double { yarn?.attentionFactor ?? 1 }
    /// Extra factor on DeepSeek's attention softmax scale.
    public var softmaxScale: Double { yarn.map { Self.mscale($0.factor, $0.mscaleAllDim) * Self.mscale($0.factor, $0.mscaleAllDim) } ?? 1 }
}

/// What moescope needs from a Hugging Face config.json, with each family's defaults applied
/// as transformers applies them.
public struct HubConfig: Sendable, Equatable {
    public var architecture: HubArchitecture
    public var vocabSize: Int
    public var hiddenSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var rope: RotaryParameters
    public var normEpsilon: Float
    /// `max_position_embeddings`: the longest sequence it runs.
    public var contextLength: Int
    public var tieEmbeddings: Bool
    /// q, k and v projections have biases (Qwen2-MoE; `attention_bias` elsewhere).
    public var attentionBias: Bool
    public var queryKeyNorm: QueryKeyNorm
    /// OLMoE's `clip_qkv`: q, k and v clamped to ±clip after projection.
    public var clipQKV: Float?

    /// DeepSeek's latent attention; nil for the standard grouped-query attention.
    public var latentAttention: LatentAttention?
    public var routing: RoutingRule

    public var numExperts: Int
    public var topK: Int
    /// Hidden width of each routed expert.
    public var expertHiddenSize: Int
    /// Shared expert width (0: none): Qwen2-MoE's, gated by sigmoid(x·w); DeepSeek's, ungated.
    public var sharedExpertHiddenSize: Int
    /// Layers that run a dense SwiGLU MLP instead of experts, and its width.
    public var denseLayers: Set<Int>
    public var denseHiddenSize: Int
    /// DeepSeek-V3's multi-token-prediction modules (`num_nextn_predict_layers`), stored as the
    /// layers after the last; moescope predicts one token and does not read them.
    public var multiTokenPredictionLayers: Int

    public var moeLayers: [Int] { (0..<numLayers).filter { !denseLayers.contains($0) } }

    /// Reads `path/config.json`.
    public init(folder path: String) throws {
        let file = "\(path)/config.json"
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw HubError.notAModelFolder(
                path: path,
                detail: isDirectory.boolValue || !FileManager.default.fileExists(atPath: path) ? "no such folder" : "it is a file")
        }
        guard FileManager.default.fileExists(atPath: file) else { throw HubError.notAModelFolder(path: path, detail: "no config.json") }
        let data = try RegularFile.read(file, what: "model config", limit: 16 << 20)
        let object = try ConfigFields.parseObject(data) { HubError.notAModelFolder(path: path, detail: "config.json \($0)") }
        try self.init(json: object, path: path)
    }

    public init(json: JSONObject, path: String) throws {
        let fields = Fields(json: json, path: path)
        let modelType: String = try fields.required("model_type")
        guard let architecture = HubArchitecture(rawValue: modelType) else {
            throw HubError.unsupportedArchitecture(path: path, modelType: modelType)
        }
        self.architecture = architecture
        vocabSize = try fields.positive("vocab_size", limit: SizeLimits.vocabulary)
        hiddenSize = try fields.positive("hidden_size", limit: SizeLimits.width)
        numLayers = try fields.positive("num_hidden_layers", limit: SizeLimits.layers)
        numHeads = try fields.positive("num_attention_heads", limit: SizeLimits.heads)
        numKeyValueHeads = try fields.optionalPositive("num_key_value_heads", limit: SizeLimits.heads) ?? numHeads
        guard numHeads % numKeyValueHeads == 0 else {
            throw HubError.badField(
                path: path, field: "num_key_value_heads", detail: "(\(numKeyValueHeads)) must divide num_attention_heads (\(numHeads))")
        }
        headDim = try fields.optionalPositive("head_dim", limit: SizeLimits.width) ?? hiddenSize / numHeads
        normEpsilon = Float(try fields.fields.optionalDouble("rms_norm_eps", in: 0...1) ?? 1e-6)
        tieEmbeddings = try fields.optional("tie_word_embeddings") ?? false
        contextLength = try fields.positive("max_position_embeddings", limit: SizeLimits.context)
        try Self.checkImplemented(fields, architecture: architecture, layers: numLayers, context: contextLength)

        // RoPE: transformers 5 nests it in rope_parameters, earlier versions used rope_theta/rope_scaling.
        let parameters = try fields.fields.optionalObject("rope_parameters")
        let scaling = try fields.fields.optionalObject("rope_scaling")
        func ropeType(_ object: JSONObject?) -> String? { object.flatMap { $0["rope_type"]?.stringValue ?? $0["type"]?.stringValue } }
        if parameters != nil, let scalingType = ropeType(scaling), scalingType != (ropeType(parameters) ?? "default") {
            throw HubError.badField(
                path: path, field: "rope_scaling",
                detail: "says \"\(scalingType)\" but rope_parameters says \"\(ropeType(parameters) ?? "default")\" — keep one of the two")
        }
        let ropeField = parameters != nil ? "rope_parameters" : "rope_scaling"
        let ropeObject = parameters ?? scaling
        let rope = ropeObject.map { fields.fields.nested(ropeField, $0) }
        let theta =
            try rope?.optionalDouble("rope_theta", in: 1...1e12) ?? fields.fields.optionalDouble("rope_theta", in: 1...1e12) ?? 10_000
        switch try rope?.optionalString("rope_type") ?? rope?.optionalString("type") {
        case nil, "default":
            self.rope = RotaryParameters(theta: theta, yarn: nil)
        case "yarn":
            let rope = rope!
            guard let factor = try rope.optionalDouble("factor", in: 1...1e6) else {
                throw HubError.missingField(path: path, field: "\(ropeField).factor")
            }
            guard let original = try rope.optionalInt("original_max_position_embeddings", in: 1...SizeLimits.context) else {
                throw HubError.missingField(path: path, field: "\(ropeField).original_max_position_embeddings")
            }
            let m = try rope.optionalDouble("mscale", in: -1e3...1e3) ?? 0
            let mAll = try rope.optionalDouble("mscale_all_dim", in: -1e3...1e3) ?? 0
            let attention =
                try rope.optionalDouble("attention_factor", in: 1e-6...1e6)
                ?? (m != 0 && mAll != 0
                    ? RotaryParameters.mscale(factor, m) / RotaryParameters.mscale(factor, mAll) : RotaryParameters.mscale(factor))
            self.rope = RotaryParameters(
                theta: theta,
                yarn: .init(
                    factor: factor, originalContext: original, betaFast: try rope.optionalDouble("beta_fast", in: 1e-6...1e6) ?? 32,
                    betaSlow: try rope.optionalDouble("beta_slow", in: 1e-6...1e6) ?? 1,
                    attentionFactor: attention, truncate: try rope.optionalBool("truncate") ?? true, mscaleAllDim: mAll))
        case let other?:
            throw HubError.badField(
                path: path, field: "\(ropeField).rope_type", detail: "is \"\(other)\"; default and yarn rotary embeddings are supported")
        }

        latentAttention = nil
        switch architecture {
        case .mixtral:
            numExperts = try fields.positive("num_local_experts", limit: SizeLimits.experts)
            expertHiddenSize = try fields.positive("intermediate_size")
            routing = .softmaxTopK(normalize: true)
        case .qwen2MoE, .qwen3MoE:
            numExperts =
                try fields.optionalPositive("num_experts", limit: SizeLimits.experts)
                ?? fields.positive("num_local_experts", limit: SizeLimits.experts)
            expertHiddenSize = try fields.positive("moe_intermediate_size")
            routing = .softmaxTopK(normalize: try fields.optional("norm_topk_prob") ?? false)
        case .olmoe:
            numExperts =
                try fields.optionalPositive("num_experts", limit: SizeLimits.experts)
                ?? fields.positive("num_local_experts", limit: SizeLimits.experts)
            expertHiddenSize = try fields.positive("intermediate_size")
            routing = .softmaxTopK(normalize: try fields.optional("norm_topk_prob") ?? false)
        case .deepseekV2, .deepseekV3:
            numExperts =
                try fields.optionalPositive("n_routed_experts", limit: SizeLimits.experts)
                ?? fields.positive("num_local_experts", limit: SizeLimits.experts)
            expertHiddenSize = try fields.positive("moe_intermediate_size")
            let groups = try fields.optionalPositive("n_group", limit: SizeLimits.experts) ?? 1
            let topGroups = try fields.optionalPositive("topk_group", limit: SizeLimits.experts) ?? groups
            guard numExperts % groups == 0 else {
                throw HubError.badField(path: path, field: "n_group", detail: "(\(groups)) must divide the \(numExperts) routed experts")
            }
            guard topGroups <= groups else {
                throw HubError.badField(path: path, field: "topk_group", detail: "(\(topGroups)) exceeds n_group (\(groups))")
            }
            let scale = Float(try fields.optional("routed_scaling_factor") as Double? ?? 1)
            if architecture == .deepseekV3 {
                guard numExperts / groups >= 2 else {
                    throw HubError.badField(
                        path: path, field: "n_group", detail: "leaves fewer than 2 experts per group, which V3's group score needs")
                }
                routing = .deepseekV3(
                    groups: groups, topGroups: topGroups, normalize: try fields.optional("norm_topk_prob") ?? false, scale: scale)
            } else {
                let method: String = try fields.optional("topk_method") ?? "greedy"
                guard method == "greedy" || method == "group_limited_greedy" else {
                    throw HubError.badField(
                        path: path, field: "topk_method", detail: "is \"\(method)\"; greedy and group_limited_greedy are supported")
                }
                routing = .deepseekV2(groupLimited: method == "group_limited_greedy", groups: groups, topGroups: topGroups, scale: scale)
            }
            latentAttention = LatentAttention(
                queryRank: try fields.optionalPositive("q_lora_rank"), latentRank: try fields.positive("kv_lora_rank"),
                noPositionDim: try fields.positive("qk_nope_head_dim"), rotaryDim: try fields.positive("qk_rope_head_dim"),
                valueDim: try fields.positive("v_head_dim"),
                interleaved: architecture == .deepseekV2 ? true : (try fields.optional("rope_interleave") ?? true))
            headDim = latentAttention!.rotaryDim  // the rotary table covers the rotary part only
        }
        topK = try fields.positive("num_experts_per_tok", limit: SizeLimits.experts)
        guard topK <= numExperts else {
            throw HubError.badField(
                path: path, field: "num_experts_per_tok", detail: "(\(topK)) exceeds the number of experts (\(numExperts))")
        }
        attentionBias = architecture == .qwen2MoE ? true : (try fields.optional("attention_bias") ?? false)
        queryKeyNorm = architecture == .qwen3MoE ? .perHead : architecture == .olmoe ? .wholeProjection : .none
        clipQKV = try fields.fields.optionalDouble("clip_qkv").map { clip in
            guard clip > 0 else {
                throw HubError.badField(path: path, field: "clip_qkv", detail: "must be positive (or null for no clipping), is \(clip)")
            }
            return Float(clip)
        }
        switch architecture {
        case .qwen2MoE: sharedExpertHiddenSize = try fields.optional("shared_expert_intermediate_size") ?? 0
        case .deepseekV2, .deepseekV3:
            sharedExpertHiddenSize = (try fields.fields.optionalInt("n_shared_experts", in: 0...SizeLimits.experts) ?? 0) * expertHiddenSize
        default: sharedExpertHiddenSize = 0
        }

        guard headDim % 2 == 0 else {
            throw HubError.badField(
                path: path, field: latentAttention == nil ? "head_dim" : "qk_rope_head_dim",
                detail: "must be even for rotary embeddings, is \(headDim)")
        }
        // Qwen's dense layers: those in mlp_only_layers, or off the decoder_sparse_step grid.
        denseHiddenSize = try fields.optional("intermediate_size") ?? 0
        var dense = Set<Int>()
        if architecture == .qwen2MoE || architecture == .qwen3MoE {
            let step: Int = try fields.optional("decoder_sparse_step") ?? 1
            guard step >= 1 else {
                throw HubError.badField(path: path, field: "decoder_sparse_step", detail: "must be at least 1, is \(step)")
            }
            let only: [Int] = try fields.optional("mlp_only_layers") ?? []
            for layer in 0..<numLayers where only.contains(layer) || (layer + 1) % step != 0 { dense.insert(layer) }
        }
        if latentAttention != nil {  // DeepSeek: the first layers are dense
            let first: Int = try fields.optional("first_k_dense_replace") ?? 0
            for layer in 0..<min(first, numLayers) { dense.insert(layer) }
        }
        denseLayers = dense
        multiTokenPredictionLayers =
            architecture == .deepseekV3 ? try fields.fields.optionalInt("num_nextn_predict_layers", in: 0...SizeLimits.layers) ?? 0 : 0
        if !dense.isEmpty && denseHiddenSize <= 0 { throw HubError.missingField(path: path, field: "intermediate_size") }
    }
}

extension HubConfig {
    /// Fields that would make transformers run another model than the one moescope builds are
    /// refused rather than ignored: an expert activation other than SiLU, and sliding-window
    /// attention (moescope attends to the whole context) whose window is shorter than the
    /// context. The sliding layers follow each family's transformers configuration.
    static func checkImplemented(_ fields: Fields, architecture: HubArchitecture, layers: Int, context: Int) throws {
        let activation: String = try fields.optional("hidden_act") ?? "silu"
        guard activation == "silu" || activation == "swish" else {
            throw HubError.badField(
                path: fields.path, field: "hidden_act",
                detail: "is \"\(activation)\"; moescope's experts and MLPs use SiLU (\"silu\") — use a model with hidden_act silu")
        }
        let window: Int? = try fields.optional("sliding_window")
        let useSliding: Bool = try fields.optional("use_sliding_window") ?? false
        let layerTypes = try fields.fields.optionalStringArray("layer_types")
        let sliding: (field: String, window: Int)?
        switch architecture {
        case .mixtral: sliding = window.map { ("sliding_window", $0) }
        case .qwen3MoE: sliding = useSliding ? ("use_sliding_window", window ?? 4096) : nil
        case .qwen2MoE:
            // transformers' Qwen2-MoE: every other layer below max_window_layers, unless layer_types says.
            let maxWindowLayers: Int = try fields.optional("max_window_layers") ?? 28
            let types =
                layerTypes
                ?? (0..<layers).map { i in
                    useSliding && (i + 1) % 2 == 1 && i < maxWindowLayers ? "sliding_attention" : "full_attention"
                }
            sliding = types.contains("sliding_attention") ? (layerTypes == nil ? "use_sliding_window" : "layer_types", window ?? 4096) : nil
        default: sliding = nil
        }
        if let sliding, sliding.window < context {
            throw HubError.badField(
                path: fields.path, field: sliding.field,
                detail:
                    "asks for sliding-window attention over \(sliding.window) tokens, shorter than the \(context)-token context; moescope attends to the whole context — use a model without sliding-window attention"
            )
        }
    }
}

/// Typed reads of config.json fields, each failure naming the field (see `ConfigFields`).
struct Fields {
    let fields: ConfigFields
    let path: String

    init(json: JSONObject, path: String) {
        self.path = path
        fields = ConfigFields(
            object: json, invalid: { HubError.badField(path: path, field: $0, detail: $1) },
            missing: { HubError.missingField(path: path, field: $0) })
    }

    // One reader per type, picked by the type the caller asks for; the bounds are config.json's
    // (a count or size up to the context, a layer list within the layer limit).
    func optional(_ name: String) throws -> Int? { try fields.optionalInt(name, in: 0...SizeLimits.context) }
    func optional(_ name: String) throws -> Double? { try fields.optionalDouble(name) }
    func optional(_ name: String) throws -> Bool? { try fields.optionalBool(name) }
    func optional(_ name: String) throws -> String? { try fields.optionalString(name) }
    func optional(_ name: String) throws -> [Int]? { try fields.optionalIntArray(name, in: 0...SizeLimits.layers) }

    func required(_ name: String) throws -> String {
        guard let value: String = try optional(name) else { throw HubError.missingField(path: path, field: name) }
        return value
    }

    func optionalPositive(_ name: String, limit: Int = SizeLimits.width) throws -> Int? {
        guard let value = try fields.optionalInt(name, in: Int.min...Int.max) else { return nil }
        guard value > 0 else { throw HubError.badField(path: path, field: name, detail: "must be positive, is \(value)") }
        guard value <= limit else { throw HubError.badField(path: path, field: name, detail: "is \(value), above the limit of \(limit)") }
        return value
    }

    func positive(_ name: String, limit: Int = SizeLimits.width) throws -> Int {
        guard let value = try optionalPositive(name, limit: limit) else { throw HubError.missingField(path: path, field: name) }
        return value
    }
}
