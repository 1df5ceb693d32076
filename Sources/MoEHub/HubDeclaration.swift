import MoECore

/// How a checkpoint names what its config leaves open, seen from its tensor names before any
/// block is declared: the MoE block's name, how the experts are stored, and whether the LM head
/// is a weight of its own.
struct HubCheckpointLayout: Equatable {
    enum Experts: Equatable {
        /// Mixtral's original files: `experts.e.w1` (gate), `w3` (up), `w2` (down).
        case mixtral
        /// transformers 5: one `experts.gate_up_proj` [E × 2h × d] and `experts.down_proj` [E × d × h].
        case fused
        /// `experts.e.gate_proj`, `up_proj`, `down_proj`.
        case separate
    }
    /// Mixtral's original files say `block_sparse_moe`; transformers 5 and the other families `mlp`.
    var moeBlock = "mlp"
    var experts = Experts.separate
    var untiedHead: Bool

    init(config: HubConfig, names contains: (String) -> Bool) {
        untiedHead = !config.tieEmbeddings || contains("lm_head.weight")
        guard let layer = config.moeLayers.first else { return }
        let p = "model.layers.\(layer)"
        moeBlock = ["mlp", "block_sparse_moe"].first { contains("\(p).\($0).gate.weight") } ?? "mlp"
        if contains("\(p).\(moeBlock).experts.0.w1.weight") {
            experts = .mixtral
        } else if contains("\(p).\(moeBlock).experts.gate_up_proj") {
            experts = .fused
        }
    }
}

/// Every weight of a Hugging Face model, declared once by its checkpoint name and the shape
/// config.json implies; `HubModel` is read by walking it (`HubWeightReader`), and the same walk
/// lists the names (`tensors`).
struct HubDeclaration {
    let config: HubConfig
    let layout: HubCheckpointLayout
    let embedding: DeclaredTensor
    let finalNorm: RMSNorm
    /// nil: tied to the embedding.
    let lmHead: DeclaredLinear?

    init(config c: HubConfig, layout: HubCheckpointLayout) {
        (config, self.layout) = (c, layout)
        embedding = DeclaredTensor("model.embed_tokens.weight", shape: [c.vocabSize, c.hiddenSize])
        finalNorm = RMSNorm(reading: "model.norm.weight", size: c.hiddenSize, epsilon: c.normEpsilon)
        lmHead = layout.untiedHead ? DeclaredLinear("lm_head", in: c.hiddenSize, out: c.vocabSize) : nil
    }

    /// The model's weights in reading order — the embedding, each layer, the final norm, the
    /// untied LM head — the embedding through `tensor`, every projection through `projection`
    /// and every Float parameter through `parameter`. Each layer is declared as the walk reaches it.
    func mapWeights<Embedding, Q: Projection>(
        _ tensor: (DeclaredTensor) throws -> Embedding, _ projection: (DeclaredLinear) throws -> Q,
        parameter: (inout Parameter) throws -> Void
    ) rethrows -> (embedding: Embedding, layers: [HubLayer<Q>], finalNorm: RMSNorm, lmHead: Q?) {
        let embedding = try tensor(self.embedding)
        let layers = try (0..<config.numLayers).map {
            try HubLayer(declaring: $0, config: config, layout: layout).mapWeights(projection, parameter: parameter)
        }
        var finalNorm = self.finalNorm
        try finalNorm.visitParameters(parameter)
        return (embedding, layers, finalNorm, try lmHead.map(projection))
    }

    /// Every tensor, in reading order (the same walk, recording).
    var tensors: [DeclaredTensor] {
        var all: [DeclaredTensor] = []
        _ = mapWeights(
            { all.append($0) },
            { (linear: DeclaredLinear) in
                all += linear.tensors
                return linear
            },
            parameter: { all.append(DeclaredTensor($0.name, shape: $0.shape)) })
        return all
    }
}

extension HubLayer where P == DeclaredLinear {
    /// Layer `index` of the family `config` describes, each weight named as its checkpoint names it.
    init(declaring index: Int, config c: HubConfig, layout: HubCheckpointLayout) {
        let p = "model.layers.\(index)"
        let d = c.hiddenSize
        inputNorm = RMSNorm(reading: "\(p).input_layernorm.weight", size: d, epsilon: c.normEpsilon)
        postNorm = RMSNorm(reading: "\(p).post_attention_layernorm.weight", size: d, epsilon: c.normEpsilon)
        attentionKind =
            c.latentAttention.map { .latent(MultiHeadLatentAttention(declaring: "\(p).self_attn", config: c, latent: $0)) }
            ?? .groupedQuery(GroupedQueryAttention(declaring: "\(p).self_attn", config: c))
        if c.denseLayers.contains(index) {
            feedForward = .dense(SwiGLU(declaring: "\(p).mlp", hidden: c.denseHiddenSize, width: d))
            return
        }
        let block = "\(p).\(layout.moeBlock)"
        let (e, h) = (c.numExperts, c.expertHiddenSize)
        let experts: [SwiGLU<DeclaredLinear>]
        switch layout.experts {
        case .mixtral:
            experts = (0..<e).map { i in
                let x = "\(block).experts.\(i)"
                return SwiGLU(
                    gate: DeclaredLinear("\(x).w1", in: d, out: h), up: DeclaredLinear("\(x).w3", in: d, out: h),
                    down: DeclaredLinear("\(x).w2", in: h, out: d))
            }
        case .fused:
            let gateUp = "\(block).experts.gate_up_proj"
            let down = "\(block).experts.down_proj"
            experts = (0..<e).map { i in
                SwiGLU(
                    gate: DeclaredLinear(weight: DeclaredTensor(gateUp, shape: [e, 2 * h, d], part: .init(index: i, rows: 0..<h))),
                    up: DeclaredLinear(weight: DeclaredTensor(gateUp, shape: [e, 2 * h, d], part: .init(index: i, rows: h..<2 * h))),
                    down: DeclaredLinear(weight: DeclaredTensor(down, shape: [e, d, h], part: .init(index: i))))
            }
        case .separate:
            experts = (0..<e).map { SwiGLU(declaring: "\(block).experts.\($0)", hidden: h, width: d) }
        }
        var moe = SparseMoE(experts: experts, topK: c.topK, rule: c.routing)
        if c.architecture == .deepseekV3 {
            moe.selectionBias = Parameter(reading: "\(block).gate.e_score_correction_bias", shape: [e])
        }
        if c.sharedExpertHiddenSize > 0 {
            // Qwen2-MoE: one shared_expert, gated by σ(u·w); DeepSeek: shared_experts, always on.
            let gated = c.architecture == .qwen2MoE
            moe.shared = SwiGLU(
                declaring: gated ? "\(block).shared_expert" : "\(block).shared_experts", hidden: c.sharedExpertHiddenSize, width: d)
            if gated { moe.sharedGate = Parameter(reading: "\(block).shared_expert_gate.weight", shape: [1, d]) }
        }
        feedForward = .sparse(router: Parameter(reading: "\(block).gate.weight", shape: [e, d]), moe)
    }
}

extension RMSNorm {
    /// The gain `name` [size], read from the checkpoint.
    init(reading name: String, size: Int, epsilon: Float) { self.init(gain: Parameter(reading: name, shape: [size]), epsilon: epsilon) }
}

extension SwiGLU where P == DeclaredLinear {
    /// `prefix`.gate_proj, up_proj and down_proj: a dense layer's MLP, a shared or a routed expert.
    init(declaring prefix: String, hidden: Int, width: Int) {
        self.init(
            gate: DeclaredLinear("\(prefix).gate_proj", in: width, out: hidden),
            up: DeclaredLinear("\(prefix).up_proj", in: width, out: hidden),
            down: DeclaredLinear("\(prefix).down_proj", in: hidden, out: width))
    }
}

extension GroupedQueryAttention where P == DeclaredLinear {
    /// q/k/v/o_proj (with biases where the family has them: Qwen2-MoE, `attention_bias`), and
    /// Qwen3-MoE's per-head or OLMoE's whole-projection q/k norms.
    init(declaring prefix: String, config c: HubConfig) {
        let (d, qWidth, kvWidth) = (c.hiddenSize, c.numHeads * c.headDim, c.numKeyValueHeads * c.headDim)
        func norm(_ name: String, _ size: Int) -> RMSNorm {
            RMSNorm(reading: "\(prefix).\(name).weight", size: size, epsilon: c.normEpsilon)
        }
        let (queryNorm, keyNorm): (RMSNorm?, RMSNorm?)
        switch c.queryKeyNorm {
        case .none: (queryNorm, keyNorm) = (nil, nil)
        case .perHead: (queryNorm, keyNorm) = (norm("q_norm", c.headDim), norm("k_norm", c.headDim))
        case .wholeProjection: (queryNorm, keyNorm) = (norm("q_norm", qWidth), norm("k_norm", kvWidth))
        }
        self.init(
            query: DeclaredLinear("\(prefix).q_proj", in: d, out: qWidth, bias: c.attentionBias),
            key: DeclaredLinear("\(prefix).k_proj", in: d, out: kvWidth, bias: c.attentionBias),
            value: DeclaredLinear("\(prefix).v_proj", in: d, out: kvWidth, bias: c.attentionBias),
            output: DeclaredLinear("\(prefix).o_proj", in: qWidth, out: d),
            heads: c.numHeads, keyValueHeads: c.numKeyValueHeads, headDim: c.headDim, queryNorm: queryNorm, keyNorm: keyNorm,
            clip: c.clipQKV)
    }
}

extension MultiHeadLatentAttention where P == DeclaredLinear {
    /// DeepSeek's q_proj (V2-Lite) or q_a_proj, q_a_layernorm, q_b_proj; kv_a_proj_with_mqa,
    /// kv_a_layernorm, kv_b_proj; o_proj.
    init(declaring prefix: String, config c: HubConfig, latent mla: LatentAttention) {
        let (d, heads) = (c.hiddenSize, c.numHeads)
        let queryWidth = heads * mla.queryKeyDim
        // transformers builds MLA's two norms with RMSNorm's default ε (1e-6), not rms_norm_eps.
        let query: Query =
            mla.queryRank.map { rank in
                .lowRank(
                    down: DeclaredLinear("\(prefix).q_a_proj", in: d, out: rank, bias: c.attentionBias),
                    norm: RMSNorm(reading: "\(prefix).q_a_layernorm.weight", size: rank, epsilon: 1e-6),
                    up: DeclaredLinear("\(prefix).q_b_proj", in: rank, out: queryWidth))
            } ?? .full(DeclaredLinear("\(prefix).q_proj", in: d, out: queryWidth))
        self.init(
            query: query,
            latentDown: DeclaredLinear("\(prefix).kv_a_proj_with_mqa", in: d, out: mla.latentRank + mla.rotaryDim, bias: c.attentionBias),
            latentNorm: RMSNorm(reading: "\(prefix).kv_a_layernorm.weight", size: mla.latentRank, epsilon: 1e-6),
            latentUp: DeclaredLinear("\(prefix).kv_b_proj", in: mla.latentRank, out: heads * (mla.noPositionDim + mla.valueDim)),
            output: DeclaredLinear("\(prefix).o_proj", in: heads * mla.valueDim, out: d, bias: c.attentionBias),
            heads: heads, noPositionDim: mla.noPositionDim, rotaryDim: mla.rotaryDim, valueDim: mla.valueDim,
            latentRank: mla.latentRank, interleaved: mla.interleaved,
            scale: Float(c.rope.softmaxScale / Double(mla.queryKeyDim).squareRoot()))
    }
}

extension HubLayer {
    /// The same layer with every projection through `projection` and every Float parameter
    /// through `parameter`, in declaration order: the input norm, the attention, the
    /// post-attention norm, then the MLP, or the router and the experts.
    func mapWeights<Q: Projection>(_ projection: (P) throws -> Q, parameter: (inout Parameter) throws -> Void) rethrows -> HubLayer<Q> {
        var (inputNorm, postNorm) = (self.inputNorm, self.postNorm)
        try inputNorm.visitParameters(parameter)
        let attention: HubLayer<Q>.AttentionKind
        switch attentionKind {
        case .groupedQuery(let block): attention = .groupedQuery(try block.mapWeights(projection, parameter: parameter))
        case .latent(let block): attention = .latent(try block.mapWeights(projection, parameter: parameter))
        }
        try postNorm.visitParameters(parameter)
        let feedForward: HubLayer<Q>.FeedForward
        switch self.feedForward {
        case .dense(let mlp): feedForward = .dense(try mlp.mapWeights(projection))
        case .sparse(var router, let moe):
            try parameter(&router)
            feedForward = .sparse(router: router, try moe.mapWeights(projection, parameter: parameter))
        }
        return HubLayer<Q>(inputNorm: inputNorm, postNorm: postNorm, attentionKind: attention, feedForward: feedForward)
    }
}
