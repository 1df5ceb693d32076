import Foundation
import MoECore

/// A Hugging Face MoE checkpoint (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2/V3) run for
/// inference with its weights memory-mapped. The forward pass follows each family's
/// transformers code: RMSNorm before attention and MLP, RoPE, grouped-query or latent
/// attention, and routing by the family's `RoutingRule`.
public struct HubModel: Sendable {
    public internal(set) var config: HubConfig
    public let path: String
    let embedding: MappedTensor
    var layers: [HubLayer]
    let finalNorm: RMSNorm
    let lmHead: MappedLinear
    /// Bytes of all the weights (what mapping them whole would take).
    public let weightBytes: Int
    /// How this copy routes differently from the checkpoint (`applying(_:)`); nil: as released.
    public internal(set) var routingVariant: RoutingVariant?
    /// Noise on the router's input, for the perturbation probe.
    var routerInputNoise: RouterInputNoise?
    /// Cores a forward pass splits its products over (the rows of every layer's weights);
    /// results are bit-identical for any value.
    public var threads = Kernels.threads

    /// Opens `folder`. Fails, before any weight is read, if the weights are larger than
    /// `memoryLimit` (default: the machine's physical memory), rather than letting the
    /// kernel's OOM killer end the process mid-run.
    public init(folder: String, memoryLimit: Int = Int(ProcessInfo.processInfo.physicalMemory)) throws {
        config = try HubConfig(folder: folder)
        path = folder
        let weights = try HubWeights(folder: folder)
        weightBytes = weights.totalBytes
        guard weights.totalBytes <= memoryLimit else {
            throw HubError.tooLarge(path: folder, neededBytes: weights.totalBytes, availableBytes: memoryLimit)
        }
        let (d, c) = (config.hiddenSize, config)
        embedding = try weights.tensor("model.embed_tokens.weight", shape: [c.vocabSize, d])
        finalNorm = RMSNorm(gain: try weights.tensor("model.norm.weight", shape: [d]).decoded(), epsilon: c.normEpsilon)
        let head =
            c.tieEmbeddings && !weights.contains("lm_head.weight")
            ? embedding : try weights.tensor("lm_head.weight", shape: [c.vocabSize, d])
        lmHead = MappedLinear(weight: head, bias: nil)
        layers = try (0..<c.numLayers).map { try HubLayer(index: $0, config: c, weights: weights) }
    }

    public func makeCache() -> KVCache { KVCache(layers: layers.count, capacity: config.contextLength) }

    /// Runs `tokens` from position 0. `allExpertNorms` runs every expert on every token to
    /// record all their output norms (the "Closer Look" analysis), E/k times the expert cost.
    /// Logits per position and the routing of every token at every MoE layer
    /// (`config.moeLayers`; dense layers route nothing).
    public func forward(_ tokens: [Int], allExpertNorms: Bool = false) throws -> ForwardResult {
        var cache = makeCache()
        return try forward(tokens, appendingTo: &cache, allExpertNorms: allExpertNorms)
    }

    /// Runs `tokens` at the positions after those `cache` holds, and appends them to it; a
    /// token at a time gives what one full pass gives (a test holds them equal).
    public func forward(_ tokens: [Int], appendingTo cache: inout KVCache, allExpertNorms: Bool = false) throws -> ForwardResult {
        try cache.check(tokens, vocabSize: config.vocabSize)
        let offset = cache.length
        let d = config.hiddenSize
        let t = tokens.count
        var x = Tensor(uninitialized: [t, d])
        x.scalars.withUnsafeMutableBufferPointer { xp in
            for (i, token) in tokens.enumerated() { embedding.decodeRows(token..<token + 1, into: xp.baseAddress! + i * d) }
        }
        let rope = RotaryEmbedding(
            inverseFrequencies: config.rope.inverseFrequencies(dim: config.headDim), context: offset + t,
            scale: config.rope.tableScale)
        var perLayer: [[LayerRouting]] = []
        withUnsafeMutablePointer(to: &cache) { cache in
            let caches = UnsafeMutableBufferPointer(start: cache, count: 1)
            for (i, layer) in layers.enumerated() {
                add(layer.attention(layer.inputNorm(x), layer: i, caches: caches, lengths: [t], rope: rope, threads: threads), into: &x)
                let u = layer.postNorm(x)
                switch layer.feedForward {
                case .dense(let mlp): add(mlp(u, threads: threads), into: &x)
                case .sparse(let router, let moe):
                    let began = monotonicNanoseconds()
                    var logits = Tensor(uninitialized: [t, config.numExperts])
                    let routerInput = routerInputNoise?.applied(to: u, start: offset, layer: i) ?? u
                    Tensor.product(routerInput, transposed: false, router, transposed: true, into: &logits, accumulate: false, threads: 1)
                    let routerNanoseconds = Double(monotonicNanoseconds() - began) / Double(t)
                    var (y, routing) = moe(u, logits: logits, allExpertNorms: allExpertNorms, threads: threads)
                    for r in routing.indices { routing[r].routerNanoseconds = routerNanoseconds }
                    perLayer.append(routing)
                    add(y, into: &x)
                }
            }
        }
        cache.advance(by: t)
        let normed = finalNorm(x)
        let routing = tokens.enumerated().map { i, token in
            RoutingTrace(token: token, position: offset + i, layers: perLayer.map { $0[i] })
        }
        return ForwardResult(logits: lmHead(normed, threads: threads), routing: routing)
    }

    private func add(_ delta: Tensor, into x: inout Tensor) {
        delta.scalars.withUnsafeBufferPointer { dp in
            x.scalars.withUnsafeMutableBufferPointer { xp in Kernels.axpy(1, dp.baseAddress!, xp.baseAddress!, count: xp.count) }
        }
    }
}

/// One decoder layer of a Hugging Face model: x += attention(norm(x)); x += feed-forward(norm(x)).
struct HubLayer: Sendable {
    enum AttentionKind: Sendable {
        case groupedQuery(GroupedQueryAttention<MappedLinear>)
        case latent(MultiHeadLatentAttention<MappedLinear>)
    }
    enum FeedForward: Sendable {
        case dense(SwiGLU<MappedLinear>)
        /// The layer's linear router [E × d] and its experts.
        case sparse(router: Tensor, SparseMoE<MappedLinear>)
    }

    let inputNorm: RMSNorm, postNorm: RMSNorm
    let attentionKind: AttentionKind
    var feedForward: FeedForward

    var attention: any Attention {
        switch attentionKind {
        case .groupedQuery(let attention): attention
        case .latent(let attention): attention
        }
    }

    /// The experts of an MoE layer; nil for a dense one.
    var moe: SparseMoE<MappedLinear>? {
        guard case .sparse(_, let moe) = feedForward else { return nil }
        return moe
    }

    init(index: Int, config c: HubConfig, weights: HubWeights) throws {
        let p = "model.layers.\(index)"
        let d = c.hiddenSize
        let (qWidth, kvWidth) = (c.numHeads * c.headDim, c.numKeyValueHeads * c.headDim)
        func linear(_ name: String, _ out: Int, _ input: Int, bias: Bool = false) throws -> MappedLinear {
            MappedLinear(
                weight: try weights.tensor("\(name).weight", shape: [out, input]),
                bias: bias ? try weights.tensor("\(name).bias", shape: [out]).decoded() : nil)
        }
        func norm(_ name: String, _ size: Int, epsilon: Float = c.normEpsilon) throws -> RMSNorm {
            RMSNorm(gain: try weights.tensor("\(name).weight", shape: [size]).decoded(), epsilon: epsilon, name: "\(name).weight")
        }
        inputNorm = try norm("\(p).input_layernorm", d)
        postNorm = try norm("\(p).post_attention_layernorm", d)
        let a = "\(p).self_attn"
        let heads = c.numHeads
        if let mla = c.latentAttention {
            let queryWidth = heads * mla.queryKeyDim
            // transformers builds MLA's two norms with RMSNorm's default ε (1e-6), not rms_norm_eps.
            let query: MultiHeadLatentAttention<MappedLinear>.Query =
                try mla.queryRank.map { rank in
                    .lowRank(
                        down: try linear("\(a).q_a_proj", rank, d, bias: c.attentionBias),
                        norm: try norm("\(a).q_a_layernorm", rank, epsilon: 1e-6),
                        up: try linear("\(a).q_b_proj", queryWidth, rank))
                } ?? .full(try linear("\(a).q_proj", queryWidth, d))
            attentionKind = .latent(
                MultiHeadLatentAttention(
                    query: query,
                    latentDown: try linear("\(a).kv_a_proj_with_mqa", mla.latentRank + mla.rotaryDim, d, bias: c.attentionBias),
                    latentNorm: try norm("\(a).kv_a_layernorm", mla.latentRank, epsilon: 1e-6),
                    latentUp: try linear("\(a).kv_b_proj", heads * (mla.noPositionDim + mla.valueDim), mla.latentRank),
                    output: try linear("\(a).o_proj", d, heads * mla.valueDim, bias: c.attentionBias),
                    heads: heads, noPositionDim: mla.noPositionDim, rotaryDim: mla.rotaryDim, valueDim: mla.valueDim,
                    latentRank: mla.latentRank, interleaved: mla.interleaved,
                    scale: Float(c.rope.softmaxScale / Double(mla.queryKeyDim).squareRoot())))
        } else {
            let (queryNorm, keyNorm): (RMSNorm?, RMSNorm?)
            switch c.queryKeyNorm {
            case .none: (queryNorm, keyNorm) = (nil, nil)
            case .perHead: (queryNorm, keyNorm) = (try norm("\(a).q_norm", c.headDim), try norm("\(a).k_norm", c.headDim))
            case .wholeProjection: (queryNorm, keyNorm) = (try norm("\(a).q_norm", qWidth), try norm("\(a).k_norm", kvWidth))
            }
            attentionKind = .groupedQuery(
                GroupedQueryAttention(
                    query: try linear("\(a).q_proj", qWidth, d, bias: c.attentionBias),
                    key: try linear("\(a).k_proj", kvWidth, d, bias: c.attentionBias),
                    value: try linear("\(a).v_proj", kvWidth, d, bias: c.attentionBias), output: try linear("\(a).o_proj", d, qWidth),
                    heads: heads, keyValueHeads: c.numKeyValueHeads, headDim: c.headDim, queryNorm: queryNorm, keyNorm: keyNorm,
                    clip: c.clipQKV))
        }
        func mlp(_ x: String, _ h: Int) throws -> SwiGLU<MappedLinear> {
            SwiGLU(gate: try linear("\(x).gate_proj", h, d), up: try linear("\(x).up_proj", h, d), down: try linear("\(x).down_proj", d, h))
        }
        if c.denseLayers.contains(index) {
            feedForward = .dense(try mlp("\(p).mlp", c.denseHiddenSize))
            return
        }
        // Mixtral checkpoints say block_sparse_moe; transformers 5 and the other families say mlp.
        let block = ["\(p).mlp", "\(p).block_sparse_moe"].first { weights.contains("\($0).gate.weight") } ?? "\(p).mlp"
        let (e, h) = (c.numExperts, c.expertHiddenSize)
        let router = try weights.tensor("\(block).gate.weight", shape: [e, d]).decoded()
        let bias = c.architecture == .deepseekV3 ? try weights.tensor("\(block).gate.e_score_correction_bias", shape: [e]).decoded() : nil
        let experts: [SwiGLU<MappedLinear>]
        if weights.contains("\(block).experts.0.w1.weight") {  // Mixtral: w1 gate, w3 up, w2 down
            experts = try (0..<e).map { i in
                let x = "\(block).experts.\(i)"
                return SwiGLU(gate: try linear("\(x).w1", h, d), up: try linear("\(x).w3", h, d), down: try linear("\(x).w2", d, h))
            }
        } else if weights.contains("\(block).experts.gate_up_proj") {  // fused [E × 2h × d] and [E × d × h]
            let gateUp = try weights.tensor("\(block).experts.gate_up_proj", shape: [e, 2 * h, d])
            let down = try weights.tensor("\(block).experts.down_proj", shape: [e, d, h])
            experts = (0..<e).map { i in
                let both = gateUp.slice(i)
                return SwiGLU(
                    gate: MappedLinear(weight: both.rowSlice(0..<h), bias: nil),
                    up: MappedLinear(weight: both.rowSlice(h..<2 * h), bias: nil),
                    down: MappedLinear(weight: down.slice(i), bias: nil))
            }
        } else {  // gate_proj / up_proj / down_proj per expert
            experts = try (0..<e).map { try mlp("\(block).experts.\($0)", h) }
        }
        var shared: SwiGLU<MappedLinear>?
        var sharedGate: Tensor?
        if c.sharedExpertHiddenSize > 0 {
            // Qwen2-MoE: one gated shared_expert; DeepSeek: shared_experts, always on.
            let gated = c.architecture == .qwen2MoE
            shared = try mlp(gated ? "\(block).shared_expert" : "\(block).shared_experts", c.sharedExpertHiddenSize)
            sharedGate = gated ? try weights.tensor("\(block).shared_expert_gate.weight", shape: [1, d]).decoded() : nil
        }
        feedForward = .sparse(
            router: router,
            SparseMoE(
                experts: experts, topK: c.topK, rule: c.routing, selectionBias: bias,
                shared: shared, sharedGate: sharedGate))
    }
}

extension HubModel: CachedRoutingModel {
    public var routerName: String {
        let scoring: String
        switch config.routing {
        case .softmaxTopK: scoring = "softmax"
        case .deepseekV2(let groupLimited, _, _, _): scoring = groupLimited ? "softmax group-limited" : "softmax"
        case .deepseekV3: scoring = "sigmoid+bias group-limited"
        }
        return "\(config.architecture.rawValue) \(scoring) top-\(config.topK)" + (routingVariant.map { " · \($0)" } ?? "")
    }

    /// The rule variants its family has (selection bias off for DeepSeek-V3, renormalisation
    /// flipped where the rule has the switch, top-(k+1)) and the perturbations.
    public var routingVariants: [RoutingVariant] {
        guard routingVariant == nil else { return [] }
        var variants: [RoutingVariant] = []
        switch config.routing {
        case .softmaxTopK: variants.append(.renormalisationFlipped)
        case .deepseekV2: break
        case .deepseekV3: variants += [.withoutSelectionBias, .renormalisationFlipped]
        }
        if config.topK < eligibleExperts { variants.append(.topKPlusOne) }
        return variants + RoutingVariant.perturbations
    }

    /// Experts a token can be routed to (the group limit leaves only the best groups' experts).
    private var eligibleExperts: Int {
        switch config.routing {
        case .softmaxTopK: config.numExperts
        case .deepseekV2(let groupLimited, let groups, let topGroups, _):
            groupLimited ? config.numExperts / groups * topGroups : config.numExperts
        case .deepseekV3(let groups, let topGroups, _, _): config.numExperts / groups * topGroups
        }
    }

    /// The same weights (shared, not copied; only a rounded router is new) routing by `variant`.
    public func applying(_ variant: RoutingVariant) -> (any RoutingModel)? {
        guard routingVariants.contains(variant) else { return nil }
        var model = self
        model.routingVariant = variant
        switch variant {
        case .withoutSelectionBias: model.forEachMoE { _, moe in moe.selectionBias = nil }
        case .renormalisationFlipped:
            switch config.routing {
            case .softmaxTopK(let normalize): model.config.routing = .softmaxTopK(normalize: !normalize)
            case .deepseekV3(let groups, let topGroups, let normalize, let scale):
                model.config.routing = .deepseekV3(groups: groups, topGroups: topGroups, normalize: !normalize, scale: scale)
            case .deepseekV2: return nil
            }
            model.forEachMoE { [rule = model.config.routing] _, moe in moe.rule = rule }
        case .topKPlusOne:
            model.config.topK += 1
            model.forEachMoE { _, moe in moe.topK += 1 }
        case .routerWeightsRounded(let precision): model.forEachMoE { router, _ in router = precision.round(router) }
        case .routerInputNoise(let relative): model.routerInputNoise = RouterInputNoise(relative: relative)
        }
        return model
    }

    private mutating func forEachMoE(_ change: (inout Tensor, inout SparseMoE<MappedLinear>) -> Void) {
        for i in layers.indices {
            guard case .sparse(var router, var moe) = layers[i].feedForward else { continue }
            change(&router, &moe)
            layers[i].feedForward = .sparse(router: router, moe)
        }
    }
    public var routerKind: RouterKind? { nil }
    public var layerCount: Int { config.numLayers }
    public var routedLayers: [Int] { config.moeLayers }
    /// DeepSeek's expert groups (consecutive runs of experts the routing ranks as a whole).
    public var expertGroups: Int {
        switch config.routing {
        case .softmaxTopK: 1
        case .deepseekV2(let groupLimited, let groups, _, _): groupLimited ? groups : 1
        case .deepseekV3(let groups, _, _, _): groups
        }
    }

    public var routerEquation: String {
        switch config.routing {
        case .softmaxTopK(let normalize):
            return "p = softmax(x·Gᵀ); top-\(config.topK) of p; weights p\(normalize ? " renormalised over the k" : "")"
        case .deepseekV2(let groupLimited, let groups, let topGroups, let scale):
            return
                "p = softmax(x·Gᵀ); top-\(config.topK)\(groupLimited ? " within the best \(topGroups) of \(groups) groups" : ""); weights p × \(scale)"
        case .deepseekV3(let groups, let topGroups, let normalize, let scale):
            return
                "s = σ(x·Gᵀ); top-\(config.topK) of s + b within the best \(topGroups) of \(groups) groups; weights s\(normalize ? " renormalised" : "") × \(scale)"
        }
    }
    public var numExperts: Int { config.numExperts }
    public var topK: Int { config.topK }
    public var vocabSize: Int { config.vocabSize }
    public var contextLength: Int { config.contextLength }

    /// Decoded only for models small enough to read whole; a larger model's similarity view
    /// says so instead.
    public func expertWeights(routedLayer: Int) -> [(gate: Tensor, up: Tensor, down: Tensor)]? {
        guard isSmallEnoughToReadWhole, let moe = layers[config.moeLayers[routedLayer]].moe else { return nil }
        return moe.experts.map { ($0.gate.weight.decoded(), $0.up.weight.decoded(), $0.down.weight.decoded()) }
    }
}
