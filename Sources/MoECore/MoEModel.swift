#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One pre-norm decoder layer: x += Attention(RMSNorm(x)); x += MoE(RMSNorm(x)).
public struct DecoderLayer: Sendable {
    public var attentionNorm: RMSNorm
    public var attention: CausalSelfAttention
    public var moeNorm: RMSNorm
    public var moe: MoEBlock

    init(_ index: Int, config: ModelConfig, from source: inout some WeightSource) throws {
        let prefix = "model.layers.\(index)"
        attentionNorm = try RMSNorm("\(prefix).input_layernorm.weight", size: config.hiddenSize, epsilon: config.normEpsilon, from: &source)
        attention = try CausalSelfAttention("\(prefix).self_attn", config: config, from: &source)
        moeNorm = try RMSNorm("\(prefix).post_attention_layernorm.weight", size: config.hiddenSize, epsilon: config.normEpsilon, from: &source)
        moe = try MoEBlock(layer: index, config: config, from: &source)
    }
}

/// What a forward pass returns: next-token logits for each input token and its routing.
public struct ForwardResult: Sendable {
    /// [T × vocab]
    public var logits: Tensor
    public var routing: [RoutingTrace]

    public init(logits: Tensor, routing: [RoutingTrace]) { self.logits = logits; self.routing = routing }
}

public enum InferenceError: Error, CustomStringConvertible, Equatable {
    case contextFull(needed: Int, capacity: Int)
    case tokenOutOfRange(token: Int, vocabSize: Int)
    case emptyInput
    /// NaN or ±∞ where the forward should have produced numbers: `location` names the layer
    /// and the tensor ("layer L2, router logits, token 5").
    case nonFinite(location: String, value: Float)

    public var description: String {
        switch self {
        case let .nonFinite(location, value):
            return "the model produced \(value.isNaN ? "NaN" : value > 0 ? "+inf" : "-inf") at \(location) — its weights hold NaN/inf or overflow there; check or replace the checkpoint"
        case .emptyInput:
            return "the text encodes to no tokens — give at least one character of text"
        case let .contextFull(needed, capacity):
            return "the text needs \(needed) token positions but the model's context is \(capacity) — shorten the text"
        case let .tokenOutOfRange(token, vocabSize):
            return "token id \(token) is outside the vocabulary (0..<\(vocabSize)) — was the text encoded with this model's tokenizer?"
        }
    }
}

/// The compact decoder-only MoE transformer of DESIGN.md: embeddings, `numLayers` decoder layers
/// with MoE feed-forward blocks, a final RMSNorm and an LM head (tied to the embeddings by default).
/// Tensor names follow Mixtral's.
public struct MoEModel: Sendable {
    public let config: ModelConfig
    public var embedding: Tensor          // [vocab × d]
    public var layers: [DecoderLayer]
    public var finalNorm: RMSNorm
    public var lmHead: Linear             // the embedding matrix itself when tied
    public var router: any Router
    let rope: RotaryEmbedding
    /// How this copy routes differently from its checkpoint (`applying(_:)`); nil: as trained.
    public internal(set) var routingVariant: RoutingVariant?
    /// Noise on the router's input, for the perturbation probe.
    var routerInputNoise: RouterInputNoise?

    public init(config: ModelConfig, from source: inout some WeightSource) throws {
        try config.validate()
        self.config = config
        embedding = try source.tensor("model.embed_tokens.weight", shape: [config.vocabSize, config.hiddenSize],
                                      initializer: .normal(std: config.initStd))
        layers = try (0..<config.numLayers).map { try DecoderLayer($0, config: config, from: &source) }
        finalNorm = try RMSNorm("model.norm.weight", size: config.hiddenSize, epsilon: config.normEpsilon, from: &source)
        lmHead = config.tieEmbeddings
            ? Linear(weight: embedding)
            : try Linear("lm_head.weight", in: config.hiddenSize, out: config.vocabSize, std: config.initStd, from: &source)
        router = try makeRouter(config, from: &source)
        rope = RotaryEmbedding(headDim: config.headDim, context: config.contextLength, theta: config.ropeTheta)
    }

    /// A freshly initialised model; the same seed always gives the same weights.
    public init(config: ModelConfig, seed: UInt64) throws {
        var source = RandomWeights(seed: seed)
        try self.init(config: config, from: &source)
    }

    /// Every parameter by checkpoint name (the tied LM head is stored once, as the embedding).
    public var namedParameters: [String: Tensor] {
        var all = router.namedParameters
        all["model.embed_tokens.weight"] = embedding
        all["model.norm.weight"] = finalNorm.gain
        if !config.tieEmbeddings { all["lm_head.weight"] = lmHead.weight }
        for (i, layer) in layers.enumerated() {
            let p = "model.layers.\(i)"
            all["\(p).input_layernorm.weight"] = layer.attentionNorm.gain
            all["\(p).post_attention_layernorm.weight"] = layer.moeNorm.gain
            all["\(p).self_attn.q_proj.weight"] = layer.attention.query.weight
            all["\(p).self_attn.k_proj.weight"] = layer.attention.key.weight
            all["\(p).self_attn.v_proj.weight"] = layer.attention.value.weight
            all["\(p).self_attn.o_proj.weight"] = layer.attention.output.weight
            for (e, expert) in layer.moe.experts.enumerated() {
                let x = "\(p).block_sparse_moe.experts.\(e)"
                all["\(x).w1.weight"] = expert.gate.weight
                all["\(x).w2.weight"] = expert.down.weight
                all["\(x).w3.weight"] = expert.up.weight
            }
        }
        return all
    }

    public var parameterCount: Int { namedParameters.values.reduce(0) { $0 + $1.count } }

    public func makeCache() -> KVCache { KVCache(config: config) }

    /// Runs `tokens` at the positions following what `cache` holds, appends them to the cache,
    /// and returns their logits and routing. The full-sequence pass is this with an empty cache;
    /// token-by-token decoding is this with one token at a time.
    /// `allExpertNorms` also runs the experts a token was not routed to, to record every
    /// expert's output norm (E/k times the expert cost; for the analyses only).
    public func forward(_ tokens: [Int], cache: inout KVCache, recordGRUState: Bool = true,
                        allExpertNorms: Bool = false) throws -> ForwardResult {
        guard tokens.count <= cache.remaining else {
            throw InferenceError.contextFull(needed: cache.length + tokens.count, capacity: cache.capacity)
        }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            throw InferenceError.tokenOutOfRange(token: bad, vocabSize: config.vocabSize)
        }
        let d = config.hiddenSize, count = tokens.count, start = cache.length
        var x = Tensor(zeros: [count, d])
        for (t, token) in tokens.enumerated() {
            x.scalars.replaceSubrange(t * d ..< (t + 1) * d, with: embedding.row(token))
        }
        var traces = tokens.enumerated().map { RoutingTrace(token: $0.element, position: start + $0.offset, layers: []) }
        var routerState = RouterDepthState()
        for (i, layer) in layers.enumerated() {
            let attended = layer.attention(layer.attentionNorm(x), layer: i, cache: &cache, rope: rope)
            add(attended, into: &x)
            let u = layer.moeNorm(x)
            let began = monotonicNanoseconds()
            let routerInput = routerInputNoise?.applied(to: u, start: start, layer: i) ?? u
            let logits = router.logits(routerInput, tokens: tokens, layer: i, state: &routerState)
            let routerTime = Double(monotonicNanoseconds() - began) / Double(count)
            let (moeOut, routing) = layer.moe(u, logits: logits, allExpertNorms: allExpertNorms)
            add(moeOut, into: &x)
            for t in 0..<count {
                var entry = routing[t]
                entry.routerNanoseconds = routerTime
                if recordGRUState, let hidden = routerState.hidden { entry.gruHidden = Array(hidden.row(t)) }
                traces[t].layers.append(entry)
            }
        }
        cache.advance(by: count)
        return ForwardResult(logits: lmHead(finalNorm(x)), routing: traces)
    }

    /// Full-sequence forward pass from an empty cache.
    public func forward(_ tokens: [Int], allExpertNorms: Bool = false) throws -> ForwardResult {
        var cache = makeCache()
        return try forward(tokens, cache: &cache, allExpertNorms: allExpertNorms)
    }

    private func add(_ delta: Tensor, into x: inout Tensor) {
        delta.scalars.withUnsafeBufferPointer { dp in
            x.scalars.withUnsafeMutableBufferPointer { xp in
                Kernels.axpy(1, dp.baseAddress!, xp.baseAddress!, count: xp.count)
            }
        }
    }
}

/// Nanoseconds from a monotonic clock.
public func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
