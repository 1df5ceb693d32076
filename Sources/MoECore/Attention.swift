/// Keys and values of every past position, per layer, so each new token attends without
/// recomputing the prefix. Each layer's rows are appended as positions run, in the layout its
/// attention reads (grouped-query: the key/value heads; latent: every head's expanded key and
/// value).
public struct KVCache: Sendable {
    public private(set) var length = 0
    /// Longest sequence the cache takes (the model's context length).
    public let capacity: Int
    var keys: [[Float]]
    var values: [[Float]]

    public init(layers: Int, capacity: Int) {
        self.capacity = capacity
        keys = Array(repeating: [], count: layers)
        values = keys
    }

    /// What every model checks before a pass: the input rule (some tokens, room for them in
    /// the cache) and every token inside the vocabulary.
    public func check(_ tokens: [Int], vocabSize: Int) throws {
        try InferenceError.check(count: tokens.count, after: length, capacity: capacity)
        if let bad = tokens.first(where: { $0 < 0 || $0 >= vocabSize }) {
            throw InferenceError.tokenOutOfRange(token: bad, vocabSize: vocabSize)
        }
    }

    mutating func append(layer: Int, keys newKeys: ArraySlice<Float>, values newValues: ArraySlice<Float>) {
        keys[layer] += newKeys
        values[layer] += newValues
    }

    /// Counts the rows every layer appended in a pass (once per pass, after the last layer).
    public mutating func advance(by count: Int) { length += count }

    /// Where one head's key and value lie in a cached row of `layer`: head h reads key/value
    /// head ⌊h / group⌋, whose key starts at `keyStride` times that and whose value at
    /// `valueStride` times that plus `valueOffset`; a row holds H / group such heads.
    struct HeadLayout {
        var dims, valueDims, keyStride, valueStride: Int
        var valueOffset = 0
        var group = 1
    }

    /// Causal attention of `count` new query rows ([count × H·dims], appended to `layer`
    /// already but not yet counted in `length`) over every row `layer` holds, one head at a
    /// time; writes [count × H·valueDims] to `output`. Grouped-query and latent attention both
    /// attend through this, differing only in `layout`.
    func attend(
        _ queries: UnsafePointer<Float>, count: Int, layer: Int, heads: Int, layout: HeadLayout, scale: Float,
        into output: UnsafeMutablePointer<Float>
    ) {
        let keyValueHeads = heads / layout.group
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: count * (length + count))
        defer { scores.deallocate() }
        keys[layer].withUnsafeBufferPointer { kp in
            values[layer].withUnsafeBufferPointer { vp in
                for head in 0..<heads {
                    let source = head / layout.group
                    let q = Kernels.Operand(queries + head * layout.dims, leadingDimension: heads * layout.dims)
                    let k = Kernels.Operand(
                        kp.baseAddress! + source * layout.keyStride, leadingDimension: keyValueHeads * layout.keyStride)
                    let v = Kernels.Operand(
                        vp.baseAddress! + source * layout.valueStride + layout.valueOffset,
                        leadingDimension: keyValueHeads * layout.valueStride)
                    let o = output + head * layout.valueDims
                    // A decoded token's few rows take the few-row kernel (scores summed pairwise).
                    if count < Kernels.microRows {
                        Kernels.fewRowAttention(
                            count: count, offset: length, queries: q, keys: k, values: v, dims: layout.dims,
                            valueDims: layout.valueDims, scale: scale, scores: scores, into: o, ldo: heads * layout.valueDims)
                    } else {
                        Kernels.causalAttention(
                            count: count, offset: length, queries: q, keys: k, values: v, dims: layout.dims,
                            valueDims: layout.valueDims, scale: scale, scores: scores, into: o, ldo: heads * layout.valueDims)
                    }
                }
            }
        }
    }
}

/// Causal self-attention over a KV cache: grouped-query attention (moescope's own models are
/// its case of as many key/value heads as query heads) or DeepSeek's latent attention.
public protocol Attention: Sendable {
    /// h: the normed rows [T × d] of one or more sequences one after another (`lengths`);
    /// sequence s's rows are positions caches[s].length ..< caches[s].length + lengths[s].
    /// The projections run on all rows at once, attention within each sequence. Appends each
    /// sequence's keys and values to `layer` of its cache (the caller advances the lengths once
    /// per pass) and returns the output projection of the attended rows.
    func callAsFunction(
        _ h: Tensor, layer: Int, caches: UnsafeMutableBufferPointer<KVCache>, lengths: [Int],
        rope: RotaryEmbedding, threads: Int
    ) -> Tensor
}

/// Grouped-query attention (Ainslie et al. 2023) with RoPE: query head i reads key/value head
/// ⌊i / (H / H_kv)⌋; softmax(q kᵀ / √D) v per head, causal. Optional per-head or whole-row q/k
/// RMSNorm (Qwen3-MoE, OLMoE) and clipping of q, k and v (OLMoE's `clip_qkv`).
public struct GroupedQueryAttention<P: Projection>: Attention {
    public var query, key, value, output: P
    public var queryNorm, keyNorm: RMSNorm?
    public var clip: Float?
    public let heads, keyValueHeads, headDim: Int

    public init(
        query: P, key: P, value: P, output: P, heads: Int, keyValueHeads: Int, headDim: Int,
        queryNorm: RMSNorm? = nil, keyNorm: RMSNorm? = nil, clip: Float? = nil
    ) {
        (self.query, self.key, self.value, self.output) = (query, key, value, output)
        (self.heads, self.keyValueHeads, self.headDim) = (heads, keyValueHeads, headDim)
        (self.queryNorm, self.keyNorm, self.clip) = (queryNorm, keyNorm, clip)
    }

    public func callAsFunction(
        _ h: Tensor, layer: Int, caches: UnsafeMutableBufferPointer<KVCache>, lengths: [Int],
        rope: RotaryEmbedding, threads: Int
    ) -> Tensor {
        let projected = P.apply([(query, h), (key, h), (value, h)], threads: threads)
        var q = projected[0]
        var k = projected[1]
        var v = projected[2]
        if let queryNorm, let keyNorm { (q, k) = (queryNorm(q), keyNorm(k)) }
        if let clip {
            for i in q.scalars.indices { q.scalars[i] = min(max(q.scalars[i], -clip), clip) }
            for i in k.scalars.indices { k.scalars[i] = min(max(k.scalars[i], -clip), clip) }
            for i in v.scalars.indices { v.scalars[i] = min(max(v.scalars[i], -clip), clip) }
        }
        let (qWidth, kvWidth, group) = (heads * headDim, keyValueHeads * headDim, heads / keyValueHeads)
        var attended = Tensor(uninitialized: [h.rows, qWidth])
        var first = 0
        for (s, count) in lengths.enumerated() {
            let start = caches[s].length
            q.scalars.withUnsafeMutableBufferPointer { qp in
                k.scalars.withUnsafeMutableBufferPointer { kp in
                    for t in 0..<count {
                        rope.apply(qp.baseAddress! + (first + t) * qWidth, numHeads: heads, position: start + t)
                        rope.apply(kp.baseAddress! + (first + t) * kvWidth, numHeads: keyValueHeads, position: start + t)
                    }
                }
            }
            let rows = first * kvWidth..<(first + count) * kvWidth
            caches[s].append(layer: layer, keys: k.scalars[rows], values: v.scalars[rows])
            q.scalars.withUnsafeBufferPointer { qp in
                attended.scalars.withUnsafeMutableBufferPointer { ap in
                    caches[s].attend(
                        qp.baseAddress! + first * qWidth, count: count, layer: layer, heads: heads,
                        layout: .init(dims: headDim, valueDims: headDim, keyStride: headDim, valueStride: headDim, group: group),
                        scale: 1 / Float(headDim).squareRoot(), into: ap.baseAddress! + first * qWidth)
                }
            }
            first += count
        }
        return P.apply([(output, attended)], threads: threads)[0]
    }
}

extension GroupedQueryAttention: ParameterDeclaring where P == Linear {
    /// moescope's own attention, H heads of D = d/H, every head its own keys and values.
    /// The output projection starts scaled by depth (GPT-2), so the residual stream does not
    /// grow with the layer count.
    public init(_ prefix: String, config: ModelConfig) {
        let d = config.hiddenSize
        let std = config.initStd
        self.init(
            query: Linear("\(prefix).q_proj.weight", in: d, out: d, std: std),
            key: Linear("\(prefix).k_proj.weight", in: d, out: d, std: std),
            value: Linear("\(prefix).v_proj.weight", in: d, out: d, std: std),
            output: Linear("\(prefix).o_proj.weight", in: d, out: d, std: std / (2 * Float(config.numLayers)).squareRoot()),
            heads: config.numHeads, keyValueHeads: config.numHeads, headDim: config.headDim)
    }

    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        for keyPath in [\Self.query, \.key, \.value, \.output] { try self[keyPath: keyPath].visitParameters(visit) }
    }

    /// The same attention on the tape, for training: h [B·T × d], B sequences of T tokens from
    /// position 0. `parameter` gives the tape variable of a declared weight.
    public func callAsFunction(
        _ h: Variable, sequenceLength: Int, rope: RotaryEmbedding, on tape: Tape,
        parameter: (Parameter) -> Variable
    ) -> Variable {
        precondition(keyValueHeads == heads && queryNorm == nil && clip == nil, "the tape runs moescope's own attention")
        let q = tape.rope(tape.linear(h, parameter(query.weight)), rope, numHeads: heads, sequenceLength: sequenceLength)
        let k = tape.rope(tape.linear(h, parameter(key.weight)), rope, numHeads: heads, sequenceLength: sequenceLength)
        let v = tape.linear(h, parameter(value.weight))
        let attended = tape.causalAttention(q: q, k: k, v: v, numHeads: heads, sequenceLength: sequenceLength)
        return tape.linear(attended, parameter(output.weight))
    }
}

/// DeepSeek's multi-head latent attention (MLA, DeepSeek-V2): queries full-rank (V2-Lite) or
/// through a low-rank bottleneck; keys and values expanded per head from one shared latent
/// c = norm(W_dkv x), plus one rotary key shared by every head:
///     k_h = [W_uk,h c | RoPE(W_kr x)],   v_h = W_uv,h c,   q_h = [q_h^nope | RoPE(q_h^rope)].
/// The cache holds the expanded keys and values (the simple layout, not the absorbed one).
public struct MultiHeadLatentAttention<P: Projection>: Attention {
    public enum Query: Sendable {
        case full(P)
        case lowRank(down: P, norm: RMSNorm, up: P)
    }
    public let query: Query
    /// kv_a_proj_with_mqa: the latent and the shared rotary key.
    public let latentDown: P
    public let latentNorm: RMSNorm
    /// kv_b_proj: per head, the key without position and the value.
    public let latentUp: P
    public let output: P
    public let heads, noPositionDim, rotaryDim, valueDim, latentRank: Int
    /// Rotary pairs stored interleaved (x0, x1), (x2, x3)… rather than in halves.
    public let interleaved: Bool
    /// The softmax scale (YaRN's correction included).
    public let scale: Float

    public init(
        query: Query, latentDown: P, latentNorm: RMSNorm, latentUp: P, output: P, heads: Int, noPositionDim: Int,
        rotaryDim: Int, valueDim: Int, latentRank: Int, interleaved: Bool, scale: Float
    ) {
        (self.query, self.latentDown, self.latentNorm, self.latentUp, self.output) = (query, latentDown, latentNorm, latentUp, output)
        (self.heads, self.noPositionDim, self.rotaryDim, self.valueDim, self.latentRank) = (
            heads, noPositionDim, rotaryDim, valueDim, latentRank
        )
        (self.interleaved, self.scale) = (interleaved, scale)
    }

    public func callAsFunction(
        _ h: Tensor, layer: Int, caches: UnsafeMutableBufferPointer<KVCache>, lengths: [Int],
        rope: RotaryEmbedding, threads: Int
    ) -> Tensor {
        let t = h.rows
        let (nope, rot, vDim, rank) = (noPositionDim, rotaryDim, valueDim, latentRank)
        let qk = nope + rot
        var queries: Tensor
        let compressed: Tensor  // [T × (rank + rot)]
        switch query {
        case .full(let projection):
            let projected = P.apply([(projection, h), (latentDown, h)], threads: threads)
            (queries, compressed) = (projected[0], projected[1])
        case .lowRank(let down, let norm, let up):
            let projected = P.apply([(down, h), (latentDown, h)], threads: threads)
            (queries, compressed) = (P.apply([(up, norm(projected[0]))], threads: threads)[0], projected[1])
        }
        var latentRows = Tensor(uninitialized: [t, rank])
        var sharedKey = Tensor(uninitialized: [t, rot])
        for r in 0..<t {
            latentRows.scalars.replaceSubrange(
                r * rank..<(r + 1) * rank, with: compressed.scalars[r * (rank + rot)..<r * (rank + rot) + rank])
            sharedKey.scalars.replaceSubrange(
                r * rot..<(r + 1) * rot, with: compressed.scalars[r * (rank + rot) + rank..<(r + 1) * (rank + rot)])
        }
        let expanded = P.apply([(latentUp, latentNorm(latentRows))], threads: threads)[0]  // [T × H·(nope + v)]
        func rotate(_ p: UnsafeMutablePointer<Float>, _ position: Int) {
            if interleaved { rope.applyInterleaved(p, position: position) } else { rope.apply(p, numHeads: 1, position: position) }
        }
        var attended = Tensor(uninitialized: [t, heads * vDim])
        var first = 0
        for (s, count) in lengths.enumerated() {
            let start = caches[s].length
            queries.scalars.withUnsafeMutableBufferPointer { qp in
                for r in first..<first + count {
                    for head in 0..<heads { rotate(qp.baseAddress! + r * heads * qk + head * qk + nope, start + r - first) }
                }
            }
            sharedKey.scalars.withUnsafeMutableBufferPointer { kp in
                for r in first..<first + count { rotate(kp.baseAddress! + r * rot, start + r - first) }
            }
            // Keys per head: [k without position | the shared rotary key].
            var keys = [Float](repeating: 0, count: count * heads * qk)
            for r in 0..<count {
                for head in 0..<heads {
                    let base = r * heads * qk + head * qk
                    let source = (first + r) * heads * (nope + vDim) + head * (nope + vDim)
                    keys.replaceSubrange(base..<base + nope, with: expanded.scalars[source..<source + nope])
                    keys.replaceSubrange(base + nope..<base + qk, with: sharedKey.scalars[(first + r) * rot..<(first + r + 1) * rot])
                }
            }
            // Values are read per head from the expanded rows.
            let valueRows = first * heads * (nope + vDim)..<(first + count) * heads * (nope + vDim)
            caches[s].append(layer: layer, keys: keys[...], values: expanded.scalars[valueRows])
            queries.scalars.withUnsafeBufferPointer { qp in
                attended.scalars.withUnsafeMutableBufferPointer { ap in
                    caches[s].attend(
                        qp.baseAddress! + first * heads * qk, count: count, layer: layer, heads: heads,
                        layout: .init(dims: qk, valueDims: vDim, keyStride: qk, valueStride: nope + vDim, valueOffset: nope),
                        scale: scale, into: ap.baseAddress! + first * heads * vDim)
                }
            }
            first += count
        }
        return P.apply([(output, attended)], threads: threads)[0]
    }
}
