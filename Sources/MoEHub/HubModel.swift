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
        let head = c.tieEmbeddings && !weights.contains("lm_head.weight") ? embedding : try weights.tensor("lm_head.weight", shape: [c.vocabSize, d])
        lmHead = MappedLinear(weight: head, bias: nil)
        layers = try (0..<c.numLayers).map { try HubLayer(index: $0, config: c, weights: weights) }
    }

    /// Keys and values of the positions run so far, per layer, so each new token attends to
    /// them without recomputing the prefix.
    public struct Cache: Sendable {
        var keys: [[Float]], values: [[Float]]
        public private(set) var length = 0

        init(layers: Int) { keys = Array(repeating: [], count: layers); values = keys }
        mutating func advance(by count: Int) { length += count }
    }

    public func makeCache() -> Cache { Cache(layers: layers.count) }

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
    public func forward(_ tokens: [Int], appendingTo cache: inout Cache, allExpertNorms: Bool = false) throws -> ForwardResult {
        guard !tokens.isEmpty else { throw InferenceError.emptyInput }
        let offset = cache.length
        guard offset + tokens.count <= config.contextLength else {
            throw InferenceError.contextFull(needed: offset + tokens.count, capacity: config.contextLength)
        }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            throw InferenceError.tokenOutOfRange(token: bad, vocabSize: config.vocabSize)
        }
        let d = config.hiddenSize, t = tokens.count
        var x = Tensor(uninitialized: [t, d])
        x.scalars.withUnsafeMutableBufferPointer { xp in
            for (i, token) in tokens.enumerated() { embedding.decodeRows(token..<token + 1, into: xp.baseAddress! + i * d) }
        }
        let rope = RotaryEmbedding(inverseFrequencies: config.rope.inverseFrequencies(dim: config.headDim), context: offset + t,
                                   scale: config.rope.tableScale)
        var perLayer: [[LayerRouting]] = []
        for (i, layer) in layers.enumerated() {
            x = layer.attentionBlock(x, rope: rope, offset: offset, keys: &cache.keys[i], values: &cache.values[i], config: config,
                                     threads: threads)
            if let routing = layer.feedForwardBlock(
                &x, config: config, allExpertNorms: allExpertNorms, threads: threads, routerNoise: routerInputNoise, layer: i,
                start: offset)
            {
                perLayer.append(routing)
            }
        }
        cache.advance(by: t)
        let normed = finalNorm(x)
        let routing = tokens.enumerated().map { i, token in
            RoutingTrace(token: token, position: offset + i, layers: perLayer.map { $0[i] })
        }
        return ForwardResult(logits: lmHead(normed, threads: threads), routing: routing)
    }
}

/// SwiGLU MLP, down(silu(gate(x)) ⊙ up(x)): a routed expert, a shared expert or a dense layer.
struct HubMLP: Sendable {
    let gate: MappedLinear, up: MappedLinear, down: MappedLinear

    func callAsFunction(_ x: Tensor, threads: Int) -> Tensor {
        let projected = MappedLinear.apply([(gate, x), (up, x)], threads: threads)
        return down(Kernels.swiglu(gate: projected[0], up: projected[1]), threads: threads)
    }
}

/// The router and experts of one MoE layer.
struct HubMoE: Sendable {
    var router: Tensor            // [E × d]
    /// DeepSeek-V3's selection bias, added to the scores only to choose experts.
    var selectionBias: Tensor?
    let experts: [HubMLP]
    let shared: HubMLP?
    let sharedGate: Tensor?       // [1 × d], Qwen2-MoE

    /// One token's routing from its router logits, by the family's rule: the k experts (best
    /// first), their mixture weights, the distribution shown as "probabilities" (for the
    /// sigmoid rule, the scores normalised to sum to 1), the scores the choice ranked, and —
    /// for group-limited rules, whose ranking the probabilities do not show — the selection
    /// margin on those scores (see `rankedScoreMargin`).
    func route(_ logits: [Float], rule: RoutingRule, k: Int)
        -> (experts: [Int], weights: [Float], probabilities: [Float], selection: [Float], margin: Double?)
    {
        let e = logits.count
        func softmaxed() -> [Float] {
            var p = logits
            p.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: e) }
            return p
        }
        /// Each group's score (groups are consecutive runs of e/groups experts) and the `top` best.
        func rankGroups(_ scores: [Float], groups: Int, top: Int, groupScore: ([Float]) -> Float) -> (scores: [Float], kept: Set<Int>) {
            let size = e / groups
            let ranked = (0..<groups).map { g in groupScore(Array(scores[g * size ..< (g + 1) * size])) }
            return (ranked, Set(MoECore.topK(ranked[...], k: top)))
        }
        switch rule {
        case let .softmaxTopK(normalize):
            let p = softmaxed()
            let chosen = MoECore.topK(p[...], k: k)
            var w = chosen.map { p[$0] }
            if normalize { let total = w.reduce(0, +); w = w.map { $0 / total } }
            return (chosen, w, p, p, nil)
        case let .deepseekV2(groupLimited, groups, topGroups, scale):
            let p = softmaxed()
            guard groupLimited else {
                let chosen = MoECore.topK(p[...], k: k)
                return (chosen, chosen.map { p[$0] * scale }, p, p, nil)
            }
            var selection = p
            let ranked = rankGroups(p, groups: groups, top: topGroups) { $0.max()! }
            for i in 0..<e where !ranked.kept.contains(i / (e / groups)) { selection[i] = 0 }
            let chosen = MoECore.topK(selection[...], k: k)
            let margin = Self.rankedScoreMargin(scores: p, chosen: chosen, groupScores: ranked.scores, keptGroups: ranked.kept)
            return (chosen, chosen.map { p[$0] * scale }, p, selection, margin)
        case let .deepseekV3(groups, topGroups, normalize, scale):
            let scores = logits.map(Kernels.sigmoid)
            let biased = zip(scores, selectionBias?.scalars ?? [Float](repeating: 0, count: e)).map(+)
            var selection = biased
            let ranked = rankGroups(biased, groups: groups, top: topGroups) { $0.sorted(by: >).prefix(2).reduce(0, +) }
            for i in 0..<e where !ranked.kept.contains(i / (e / groups)) { selection[i] = -.infinity }
            let chosen = MoECore.topK(selection[...], k: k)
            var w = chosen.map { scores[$0] }
            if normalize { let total = w.reduce(0, +) + 1e-20; w = w.map { $0 / total } }
            let total = scores.reduce(0, +)
            let margin = Self.rankedScoreMargin(scores: biased, chosen: chosen, groupScores: ranked.scores, keptGroups: ranked.kept)
            return (chosen, w.map { $0 * scale }, scores.map { $0 / total }, selection, margin)
        }
    }

    /// The selection margin of a group-limited choice, on the scores it ranked (DeepSeek-V3: the
    /// sigmoid scores plus the selection bias; V2: the softmax probabilities): the smaller of
    ///   expert gap  min_{i chosen} s_i − max_{j unchosen, j in a kept group} s_j,
    ///   group gap   min_{g kept} G_g − max_{h not kept} G_h   (G: the rule's group score),
    /// each left out where it has no second term. Each is the smallest change of the ranked
    /// scores that reorders that stage, so the minimum is where the rule's decision comes
    /// nearest to a tie (a group swap need not change the experts: it is a lower bound). Never
    /// negative for a choice this rule made; nil when nothing could have been chosen instead.
    static func rankedScoreMargin(scores: [Float], chosen: [Int], groupScores: [Float], keptGroups: Set<Int>) -> Double? {
        let size = scores.count / groupScores.count
        let weakestChosen = chosen.map { Double(scores[$0]) }.min() ?? .infinity
        var bestUnchosen = -Double.infinity
        for (i, s) in scores.enumerated() where keptGroups.contains(i / size) && !chosen.contains(i) {
            bestUnchosen = max(bestUnchosen, Double(s))
        }
        let weakestKept = keptGroups.map { Double(groupScores[$0]) }.min() ?? .infinity
        var bestDropped = -Double.infinity
        for (g, s) in groupScores.enumerated() where !keptGroups.contains(g) { bestDropped = max(bestDropped, Double(s)) }
        let margin = min(weakestChosen - bestUnchosen, weakestKept - bestDropped)
        return margin.isFinite ? margin : nil
    }
}

/// DeepSeek's latent attention weights.
struct LatentAttentionWeights: Sendable {
    let query: Query
    /// V2-Lite's full-rank q_proj, or the others' low-rank q_a_proj → norm → q_b_proj.
    enum Query: Sendable {
        case full(MappedLinear)
        case lowRank(down: MappedLinear, norm: RMSNorm, up: MappedLinear)
    }
    let latentDown: MappedLinear               // kv_a_proj_with_mqa: latent and the shared rotary key
    let latentNorm: RMSNorm
    let latentUp: MappedLinear                 // kv_b_proj: per head, the key without position and the value
}

struct HubLayer: Sendable {
    let inputNorm: RMSNorm, postNorm: RMSNorm
    /// Grouped-query attention's projections (nil under latent attention).
    let q: MappedLinear?, k: MappedLinear?, v: MappedLinear?
    let o: MappedLinear
    /// q/k RMSNorm: over each head ([head_dim] gain) or the whole projection.
    let qNorm: RMSNorm?, kNorm: RMSNorm?
    let latent: LatentAttentionWeights?
    var moe: HubMoE?
    let dense: HubMLP?

    init(index: Int, config c: HubConfig, weights: HubWeights) throws {
        let p = "model.layers.\(index)", d = c.hiddenSize
        let (qWidth, kvWidth) = (c.numHeads * c.headDim, c.numKeyValueHeads * c.headDim)
        func linear(_ name: String, _ out: Int, _ input: Int, bias: Bool = false) throws -> MappedLinear {
            MappedLinear(weight: try weights.tensor("\(name).weight", shape: [out, input]),
                         bias: bias ? try weights.tensor("\(name).bias", shape: [out]).decoded() : nil)
        }
        func norm(_ name: String, _ size: Int, epsilon: Float = c.normEpsilon) throws -> RMSNorm {
            RMSNorm(gain: try weights.tensor("\(name).weight", shape: [size]).decoded(), epsilon: epsilon)
        }
        inputNorm = try norm("\(p).input_layernorm", d)
        postNorm = try norm("\(p).post_attention_layernorm", d)
        if let mla = c.latentAttention {
            let a = "\(p).self_attn", heads = c.numHeads
            (q, k, v, qNorm, kNorm) = (nil, nil, nil, nil, nil)
            let queryWidth = heads * mla.queryKeyDim
            // transformers builds MLA's two norms with RMSNorm's default ε (1e-6), not rms_norm_eps.
            let query: LatentAttentionWeights.Query = try mla.queryRank.map { rank in
                .lowRank(down: try linear("\(a).q_a_proj", rank, d, bias: c.attentionBias), norm: try norm("\(a).q_a_layernorm", rank, epsilon: 1e-6),
                         up: try linear("\(a).q_b_proj", queryWidth, rank))
            } ?? .full(try linear("\(a).q_proj", queryWidth, d))
            latent = LatentAttentionWeights(
                query: query,
                latentDown: try linear("\(a).kv_a_proj_with_mqa", mla.latentRank + mla.rotaryDim, d, bias: c.attentionBias),
                latentNorm: try norm("\(a).kv_a_layernorm", mla.latentRank, epsilon: 1e-6),
                latentUp: try linear("\(a).kv_b_proj", heads * (mla.noPositionDim + mla.valueDim), mla.latentRank))
            o = try linear("\(a).o_proj", d, heads * mla.valueDim, bias: c.attentionBias)
        } else {
            latent = nil
            q = try linear("\(p).self_attn.q_proj", qWidth, d, bias: c.attentionBias)
            k = try linear("\(p).self_attn.k_proj", kvWidth, d, bias: c.attentionBias)
            v = try linear("\(p).self_attn.v_proj", kvWidth, d, bias: c.attentionBias)
            o = try linear("\(p).self_attn.o_proj", d, qWidth)
            switch c.queryKeyNorm {
            case .none: (qNorm, kNorm) = (nil, nil)
            case .perHead:
                qNorm = try norm("\(p).self_attn.q_norm", c.headDim)
                kNorm = try norm("\(p).self_attn.k_norm", c.headDim)
            case .wholeProjection:
                qNorm = try norm("\(p).self_attn.q_norm", qWidth)
                kNorm = try norm("\(p).self_attn.k_norm", kvWidth)
            }
        }

        if c.denseLayers.contains(index) {
            let h = c.denseHiddenSize
            dense = HubMLP(gate: try linear("\(p).mlp.gate_proj", h, d), up: try linear("\(p).mlp.up_proj", h, d),
                           down: try linear("\(p).mlp.down_proj", d, h))
            moe = nil
            return
        }
        dense = nil
        // Mixtral checkpoints say block_sparse_moe; transformers 5 and the other families say mlp.
        let block = ["\(p).mlp", "\(p).block_sparse_moe"].first { weights.contains("\($0).gate.weight") } ?? "\(p).mlp"
        let (e, h) = (c.numExperts, c.expertHiddenSize)
        let router = try weights.tensor("\(block).gate.weight", shape: [e, d]).decoded()
        let bias = c.architecture == .deepseekV3 ? try weights.tensor("\(block).gate.e_score_correction_bias", shape: [e]).decoded() : nil
        let experts: [HubMLP]
        if weights.contains("\(block).experts.0.w1.weight") {               // Mixtral: w1 gate, w3 up, w2 down
            experts = try (0..<e).map { i in
                let x = "\(block).experts.\(i)"
                return HubMLP(gate: try linear("\(x).w1", h, d), up: try linear("\(x).w3", h, d), down: try linear("\(x).w2", d, h))
            }
        } else if weights.contains("\(block).experts.gate_up_proj") {        // fused [E × 2h × d] and [E × d × h]
            let gateUp = try weights.tensor("\(block).experts.gate_up_proj", shape: [e, 2 * h, d])
            let down = try weights.tensor("\(block).experts.down_proj", shape: [e, d, h])
            experts = (0..<e).map { i in
                let both = gateUp.slice(i)
                return HubMLP(gate: MappedLinear(weight: both.rowSlice(0..<h), bias: nil),
                              up: MappedLinear(weight: both.rowSlice(h..<2 * h), bias: nil),
                              down: MappedLinear(weight: down.slice(i), bias: nil))
            }
        } else {                                                             // gate_proj / up_proj / down_proj per expert
            experts = try (0..<e).map { i in
                let x = "\(block).experts.\(i)"
                return HubMLP(gate: try linear("\(x).gate_proj", h, d), up: try linear("\(x).up_proj", h, d),
                              down: try linear("\(x).down_proj", d, h))
            }
        }
        var shared: HubMLP?, sharedGate: Tensor?
        if c.sharedExpertHiddenSize > 0 {
            // Qwen2-MoE: one gated shared_expert; DeepSeek: shared_experts, always on.
            let gated = c.architecture == .qwen2MoE
            let s = c.sharedExpertHiddenSize, x = gated ? "\(block).shared_expert" : "\(block).shared_experts"
            shared = HubMLP(gate: try linear("\(x).gate_proj", s, d), up: try linear("\(x).up_proj", s, d), down: try linear("\(x).down_proj", d, s))
            sharedGate = gated ? try weights.tensor("\(block).shared_expert_gate.weight", shape: [1, d]).decoded() : nil
        }
        moe = HubMoE(router: router, selectionBias: bias, experts: experts, shared: shared, sharedGate: sharedGate)
    }

    /// x + o(attention(norm(x))), causal: grouped-query, or DeepSeek's latent attention. The
    /// new rows sit at positions `offset…`; their keys and values are appended to the cache's.
    func attentionBlock(_ x: Tensor, rope: RotaryEmbedding, offset: Int, keys: inout [Float], values: inout [Float],
                        config c: HubConfig, threads: Int) -> Tensor {
        let h = inputNorm(x)
        var out = latent.map {
            latentAttention(h, weights: $0, rope: rope, offset: offset, keyCache: &keys, valueCache: &values, config: c, threads: threads)
        } ?? groupedQueryAttention(h, rope: rope, offset: offset, keyCache: &keys, valueCache: &values, config: c, threads: threads)
        out.scalars.withUnsafeMutableBufferPointer { op in x.scalars.withUnsafeBufferPointer { xp in
            Kernels.axpy(1, xp.baseAddress!, op.baseAddress!, count: op.count)
        } }
        return out
    }

    /// DeepSeek MLA: q (full or low rank), a shared latent expanded to per-head keys (without
    /// position) and values, and a rotary key shared by every head.
    func latentAttention(_ h: Tensor, weights w: LatentAttentionWeights, rope: RotaryEmbedding, offset: Int,
                         keyCache: inout [Float], valueCache: inout [Float], config c: HubConfig, threads: Int) -> Tensor {
        let mla = c.latentAttention!, t = h.rows, heads = c.numHeads
        let (nope, rot, vDim, qk, rank) = (mla.noPositionDim, mla.rotaryDim, mla.valueDim, mla.queryKeyDim, mla.latentRank)
        var queries: Tensor
        let compressed: Tensor                                    // [T × (rank + rot)]
        switch w.query {
        case let .full(projection):
            let projected = MappedLinear.apply([(projection, h), (w.latentDown, h)], threads: threads)
            (queries, compressed) = (projected[0], projected[1])
        case let .lowRank(down, norm, up):
            let projected = MappedLinear.apply([(down, h), (w.latentDown, h)], threads: threads)
            (queries, compressed) = (up(norm(projected[0]), threads: threads), projected[1])
        }
        var latentRows = Tensor(uninitialized: [t, rank]), sharedKey = Tensor(uninitialized: [t, rot])
        for r in 0..<t {
            latentRows.scalars.replaceSubrange(r * rank ..< (r + 1) * rank, with: compressed.scalars[r * (rank + rot) ..< r * (rank + rot) + rank])
            sharedKey.scalars.replaceSubrange(r * rot ..< (r + 1) * rot, with: compressed.scalars[r * (rank + rot) + rank ..< (r + 1) * (rank + rot)])
        }
        let expanded = w.latentUp(w.latentNorm(latentRows), threads: threads)   // [T × H·(nope + v)]
        func rotate(_ p: UnsafeMutablePointer<Float>, _ position: Int) {
            if mla.interleaved { rope.applyInterleaved(p, position: position) } else { rope.apply(p, numHeads: 1, position: position) }
        }
        queries.scalars.withUnsafeMutableBufferPointer { qp in
            for r in 0..<t { for head in 0..<heads { rotate(qp.baseAddress! + r * heads * qk + head * qk + nope, offset + r) } }
        }
        sharedKey.scalars.withUnsafeMutableBufferPointer { kp in for r in 0..<t { rotate(kp.baseAddress! + r * rot, offset + r) } }
        // Keys per head: [k without position | the shared rotary key].
        var keys = Tensor(uninitialized: [t, heads * qk])
        for r in 0..<t {
            for head in 0..<heads {
                let base = r * heads * qk + head * qk, source = r * heads * (nope + vDim) + head * (nope + vDim)
                keys.scalars.replaceSubrange(base ..< base + nope, with: expanded.scalars[source ..< source + nope])
                keys.scalars.replaceSubrange(base + nope ..< base + qk, with: sharedKey.scalars[r * rot ..< (r + 1) * rot])
            }
        }
        keyCache += keys.scalars
        valueCache += expanded.scalars                              // values are read per head from these rows
        var attended = Tensor(uninitialized: [t, heads * vDim])
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: t * (offset + t))
        defer { scores.deallocate() }
        queries.scalars.withUnsafeBufferPointer { qp in keyCache.withUnsafeBufferPointer { kp in valueCache.withUnsafeBufferPointer { vp in
            attended.scalars.withUnsafeMutableBufferPointer { ap in
                for head in 0..<heads {
                    Kernels.causalAttention(count: t, offset: offset, queries: .init(qp.baseAddress! + head * qk, leadingDimension: heads * qk),
                                            keys: .init(kp.baseAddress! + head * qk, leadingDimension: heads * qk),
                                            values: .init(vp.baseAddress! + head * (nope + vDim) + nope, leadingDimension: heads * (nope + vDim)),
                                            dims: qk, valueDims: vDim, scale: Float(c.rope.softmaxScale / Double(qk).squareRoot()),
                                            scores: scores, into: ap.baseAddress! + head * vDim, ldo: heads * vDim)
                }
            }
        } } }
        return o(attended, threads: threads)
    }

    /// Grouped-query attention with the family's q/k norm and clipping.
    func groupedQueryAttention(_ h: Tensor, rope: RotaryEmbedding, offset: Int, keyCache: inout [Float], valueCache: inout [Float],
                               config c: HubConfig, threads: Int) -> Tensor {
        let t = h.rows, hd = c.headDim, heads = c.numHeads, kvHeads = c.numKeyValueHeads
        let projected = MappedLinear.apply([(q!, h), (k!, h), (v!, h)], threads: threads)
        var qv = projected[0], kv = projected[1], vv = projected[2]
        if let qNorm, let kNorm { qv = qNorm(qv); kv = kNorm(kv) }
        if let clip = c.clipQKV {
            for i in qv.scalars.indices { qv.scalars[i] = min(max(qv.scalars[i], -clip), clip) }
            for i in kv.scalars.indices { kv.scalars[i] = min(max(kv.scalars[i], -clip), clip) }
            for i in vv.scalars.indices { vv.scalars[i] = min(max(vv.scalars[i], -clip), clip) }
        }
        qv.scalars.withUnsafeMutableBufferPointer { p in for r in 0..<t { rope.apply(p.baseAddress! + r * heads * hd, numHeads: heads, position: offset + r) } }
        kv.scalars.withUnsafeMutableBufferPointer { p in for r in 0..<t { rope.apply(p.baseAddress! + r * kvHeads * hd, numHeads: kvHeads, position: offset + r) } }
        keyCache += kv.scalars
        valueCache += vv.scalars

        var attended = Tensor(uninitialized: [t, heads * hd])
        let group = heads / kvHeads
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: t * (offset + t))
        defer { scores.deallocate() }
        qv.scalars.withUnsafeBufferPointer { qp in keyCache.withUnsafeBufferPointer { kp in valueCache.withUnsafeBufferPointer { vp in
            attended.scalars.withUnsafeMutableBufferPointer { ap in
                for head in 0..<heads {
                    let kvHead = head / group
                    Kernels.causalAttention(count: t, offset: offset, queries: .init(qp.baseAddress! + head * hd, leadingDimension: heads * hd),
                                            keys: .init(kp.baseAddress! + kvHead * hd, leadingDimension: kvHeads * hd),
                                            values: .init(vp.baseAddress! + kvHead * hd, leadingDimension: kvHeads * hd),
                                            dims: hd, valueDims: hd, scale: 1 / Float(hd).squareRoot(),
                                            scores: scores, into: ap.baseAddress! + head * hd, ldo: heads * hd)
                }
            }
        } } }
        return o(attended, threads: threads)
    }

    /// x += MLP(norm(x)); returns the routing of every token when this is an MoE layer.
    /// `routerNoise` perturbs the router's input only (seeded by `layer` and the positions from `start`).
    func feedForwardBlock(
        _ x: inout Tensor, config c: HubConfig, allExpertNorms: Bool, threads: Int, routerNoise: RouterInputNoise? = nil,
        layer: Int = 0, start: Int = 0
    ) -> [LayerRouting]? {
        let t = x.rows, d = c.hiddenSize
        let u = postNorm(x)
        var y: Tensor
        var routing: [LayerRouting]? = nil
        if let dense {
            y = dense(u, threads: threads)
        } else {
            let moe = moe!, e = c.numExperts
            let began = DispatchTime.now().uptimeNanoseconds
            var logits = Tensor(uninitialized: [t, e])
            let routerInput = routerNoise?.applied(to: u, start: start, layer: layer) ?? u
            Tensor.product(routerInput, transposed: false, moe.router, transposed: true, into: &logits, accumulate: false, threads: 1)
            var choices: [[Int]] = [], weights: [[Float]] = [], probabilities: [[Float]] = [], margins: [Double?] = []
            for r in 0..<t {
                let routed = moe.route(Array(logits.row(r)), rule: c.routing, k: c.topK)
                choices.append(routed.experts); weights.append(routed.weights); probabilities.append(routed.probabilities)
                margins.append(routed.margin)
            }
            let routerNanoseconds = Double(DispatchTime.now().uptimeNanoseconds - began) / Double(t)
            // The chosen experts' tokens, gathered per expert (every token of every expert when
            // all norms are wanted; the routed ones are then read from the same output).
            var assigned: [(expert: Int, slots: [(row: Int, slot: Int)], input: Tensor)] = []
            for expert in 0..<e {
                let slots = (0..<t).flatMap { r in choices[r].indices.filter { choices[r][$0] == expert }.map { (row: r, slot: $0) } }
                guard !slots.isEmpty || allExpertNorms else { continue }
                let rows = allExpertNorms ? Array(0..<t) : slots.map(\.row)
                var input = Tensor(uninitialized: [rows.count, d])
                for (i, r) in rows.enumerated() { input.scalars.replaceSubrange(i * d ..< (i + 1) * d, with: u.row(r)) }
                assigned.append((expert, slots, input))
            }
            // Every chosen expert's (and the shared expert's) gate and up projections in one
            // split over the threads, then every down projection in another.
            let mlps = assigned.map { moe.experts[$0.expert] } + (moe.shared.map { [$0] } ?? [])
            let inputs = assigned.map(\.input) + (moe.shared == nil ? [] : [u])
            let projected = MappedLinear.apply(zip(mlps, inputs).flatMap { [($0.gate, $1), ($0.up, $1)] }, threads: threads)
            let outputs = MappedLinear.apply(mlps.indices.map { i in
                (mlps[i].down, Kernels.swiglu(gate: projected[2 * i], up: projected[2 * i + 1]))
            }, threads: threads)
            y = Tensor(zeros: [t, d])
            var norms = [[Float]](repeating: [Float](repeating: 0, count: c.topK), count: t)
            var allNorms = [[Float]](repeating: [Float](repeating: 0, count: e), count: allExpertNorms ? t : 0)
            for (index, (expert, slots, _)) in assigned.enumerated() {
                y.scalars.withUnsafeMutableBufferPointer { yp in outputs[index].scalars.withUnsafeBufferPointer { op in
                    if allExpertNorms {
                        for r in 0..<t { allNorms[r][expert] = Kernels.sumOfSquares(op.baseAddress! + r * d, count: d).squareRoot() }
                    }
                    for (i, s) in slots.enumerated() {
                        let row = op.baseAddress! + (allExpertNorms ? s.row : i) * d
                        norms[s.row][s.slot] = Kernels.sumOfSquares(row, count: d).squareRoot()
                        Kernels.axpy(weights[s.row][s.slot], row, yp.baseAddress! + s.row * d, count: d)
                    }
                } }
            }
            if moe.shared != nil {
                let out = outputs[assigned.count]
                var gates = Tensor(repeating: 1, shape: [t, 1])   // DeepSeek's shared experts are always on
                if let gate = moe.sharedGate {
                    Tensor.product(u, transposed: false, gate, transposed: true, into: &gates, accumulate: false, threads: 1)
                    gates = gates.mapped(Kernels.sigmoid)
                }
                y.scalars.withUnsafeMutableBufferPointer { yp in out.scalars.withUnsafeBufferPointer { op in
                    for r in 0..<t { Kernels.axpy(gates.scalars[r], op.baseAddress! + r * d, yp.baseAddress! + r * d, count: d) }
                } }
            }
            routing = (0..<t).map { r in
                var layer = LayerRouting(logits: Array(logits.row(r)), probabilities: probabilities[r], experts: choices[r],
                                         weights: weights[r], expertOutputNorms: norms[r], gruHidden: nil, routerNanoseconds: routerNanoseconds)
                if allExpertNorms { layer.allExpertOutputNorms = allNorms[r] }
                layer.rankedScoreMargin = margins[r]
                return layer
            }
        }
        x.scalars.withUnsafeMutableBufferPointer { xp in y.scalars.withUnsafeBufferPointer { yp in
            Kernels.axpy(1, yp.baseAddress!, xp.baseAddress!, count: xp.count)
        } }
        return routing
    }
}

extension HubModel: CachedRoutingModel {
    public var routerName: String {
        let scoring: String
        switch config.routing {
        case .softmaxTopK: scoring = "softmax"
        case let .deepseekV2(groupLimited, _, _, _): scoring = groupLimited ? "softmax group-limited" : "softmax"
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
        case let .deepseekV2(groupLimited, groups, topGroups, _): groupLimited ? config.numExperts / groups * topGroups : config.numExperts
        case let .deepseekV3(groups, topGroups, _, _): config.numExperts / groups * topGroups
        }
    }

    /// The same weights (shared, not copied; only a rounded router is new) routing by `variant`.
    public func applying(_ variant: RoutingVariant) -> (any RoutingModel)? {
        guard routingVariants.contains(variant) else { return nil }
        var model = self
        model.routingVariant = variant
        switch variant {
        case .withoutSelectionBias: model.forEachMoE { $0.selectionBias = nil }
        case .renormalisationFlipped:
            switch config.routing {
            case let .softmaxTopK(normalize): model.config.routing = .softmaxTopK(normalize: !normalize)
            case let .deepseekV3(groups, topGroups, normalize, scale):
                model.config.routing = .deepseekV3(groups: groups, topGroups: topGroups, normalize: !normalize, scale: scale)
            case .deepseekV2: return nil
            }
        case .topKPlusOne: model.config.topK += 1
        case .routerWeightsRounded(let precision): model.forEachMoE { $0.router = precision.round($0.router) }
        case .routerInputNoise(let relative): model.routerInputNoise = RouterInputNoise(relative: relative)
        }
        return model
    }

    private mutating func forEachMoE(_ change: (inout HubMoE) -> Void) {
        for i in layers.indices where layers[i].moe != nil { change(&layers[i].moe!) }
    }
    public var routerKind: RouterKind? { nil }
    public var layerCount: Int { config.numLayers }
    public var routedLayers: [Int] { config.moeLayers }
    /// DeepSeek's expert groups (consecutive runs of experts the routing ranks as a whole).
    public var expertGroups: Int {
        switch config.routing {
        case .softmaxTopK: 1
        case let .deepseekV2(groupLimited, groups, _, _): groupLimited ? groups : 1
        case let .deepseekV3(groups, _, _, _): groups
        }
    }

    public var routerEquation: String {
        switch config.routing {
        case let .softmaxTopK(normalize):
            return "p = softmax(x·Gᵀ); top-\(config.topK) of p; weights p\(normalize ? " renormalised over the k" : "")"
        case let .deepseekV2(groupLimited, groups, topGroups, scale):
            return "p = softmax(x·Gᵀ); top-\(config.topK)\(groupLimited ? " within the best \(topGroups) of \(groups) groups" : ""); weights p × \(scale)"
        case let .deepseekV3(groups, topGroups, normalize, scale):
            return "s = σ(x·Gᵀ); top-\(config.topK) of s + b within the best \(topGroups) of \(groups) groups; weights s\(normalize ? " renormalised" : "") × \(scale)"
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
