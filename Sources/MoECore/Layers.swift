#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// RMSNorm: y = x / √(mean(x²) + ε) ⊙ g.
public struct RMSNorm: Sendable {
    public var gain: Tensor
    public let epsilon: Float

    public init(_ name: String, size: Int, epsilon: Float, from source: inout some WeightSource) throws {
        self.init(gain: try source.tensor(name, shape: [size], initializer: .constant(1)), epsilon: epsilon)
    }

    public init(gain: Tensor, epsilon: Float) { self.gain = gain; self.epsilon = epsilon }

    /// Normalises every run of `gain.count` values: each row, or, with a gain narrower than
    /// the row, each head of it (Qwen3-MoE's per-head q/k norm).
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var y = Tensor(uninitialized: x.shape)
        x.scalars.withUnsafeBufferPointer { xp in
            gain.scalars.withUnsafeBufferPointer { gp in
                y.scalars.withUnsafeMutableBufferPointer { yp in
                    Kernels.rmsNorm(xp.baseAddress!, gain: gp.baseAddress!, yp.baseAddress!,
                                    rows: x.count / gain.count, cols: gain.count, eps: epsilon)
                }
            }
        }
        return y
    }
}

/// Rotary position embedding (RoPE), in the "rotate half" layout of Llama and Mixtral:
/// dimension i pairs with i + D/2, rotated by angle pos · θ^(−2i/D).
public struct RotaryEmbedding: Sendable {
    let cosines: [Float]   // [context × D/2]
    let sines: [Float]
    let halfDim: Int

    public init(headDim: Int, context: Int, theta: Float) {
        self.init(inverseFrequencies: (0..<headDim / 2).map { pow(Double(theta), -2 * Double($0) / Double(headDim)) }, context: context)
    }

    /// Tables for given per-pair frequencies (YaRN and other scaled RoPEs compute their own),
    /// with cos and sin multiplied by `scale` (YaRN's attention factor).
    public init(inverseFrequencies: [Double], context: Int, scale: Double = 1) {
        halfDim = inverseFrequencies.count
        var c = [Float](), s = [Float]()
        c.reserveCapacity(context * halfDim); s.reserveCapacity(context * halfDim)
        for position in 0..<context {
            for frequency in inverseFrequencies {
                let angle = Double(position) * frequency
                c.append(Float(cos(angle) * scale)); s.append(Float(sin(angle) * scale))
            }
        }
        cosines = c; sines = s
    }

    /// Rotates `x` (one head's rotary part, 2 × halfDim values laid out in interleaved pairs
    /// (x0, x1), (x2, x3)…, as DeepSeek stores them) in place for `position`: pair i turns by
    /// the same angle as dimension i of the rotate-half layout.
    public func applyInterleaved(_ x: UnsafeMutablePointer<Float>, position: Int) {
        let base = position * halfDim
        for i in 0..<halfDim {
            let a = x[2 * i], b = x[2 * i + 1]
            let c = cosines[base + i], s = sines[base + i]
            x[2 * i] = a * c - b * s
            x[2 * i + 1] = b * c + a * s
        }
    }

    /// Rotates every head of row `x` (numHeads × headDim values) in place for `position`;
    /// `inverse` rotates by the opposite angle (the transpose, used by the backward pass).
    public func apply(_ x: UnsafeMutablePointer<Float>, numHeads: Int, position: Int, inverse: Bool = false) {
        let base = position * halfDim
        for h in 0..<numHeads {
            let head = x + h * 2 * halfDim
            for i in 0..<halfDim {
                let a = head[i], b = head[i + halfDim]
                let c = cosines[base + i], s = inverse ? -sines[base + i] : sines[base + i]
                head[i] = a * c - b * s
                head[i + halfDim] = b * c + a * s
            }
        }
    }
}

/// Keys and values of every past position, per layer, so each new token attends without
/// recomputing the prefix.
public struct KVCache: Sendable {
    public private(set) var length = 0
    public let capacity: Int
    var keys: [[Float]]     // per layer, [capacity × d]
    var values: [[Float]]

    public init(config: ModelConfig) {
        capacity = config.contextLength
        let empty = [Float](repeating: 0, count: config.contextLength * config.hiddenSize)
        keys = Array(repeating: empty, count: config.numLayers)
        values = keys
    }

    public var remaining: Int { capacity - length }
    public mutating func reset() { length = 0 }
    mutating func advance(by count: Int) { length += count }
}

/// Causal multi-head self-attention with RoPE and a KV cache.
public struct CausalSelfAttention: Sendable {
    public var query, key, value, output: Linear
    let numHeads: Int
    let headDim: Int

    public init(_ prefix: String, config: ModelConfig, from source: inout some WeightSource) throws {
        let d = config.hiddenSize, std = config.initStd
        query = try Linear("\(prefix).q_proj.weight", in: d, out: d, std: std, from: &source)
        key = try Linear("\(prefix).k_proj.weight", in: d, out: d, std: std, from: &source)
        value = try Linear("\(prefix).v_proj.weight", in: d, out: d, std: std, from: &source)
        // Scaled by depth (GPT-2) so the residual stream does not grow with the layer count.
        output = try Linear("\(prefix).o_proj.weight", in: d, out: d,
                            std: std / (2 * Float(config.numLayers)).squareRoot(), from: &source)
        numHeads = config.numHeads
        headDim = config.headDim
    }

    /// x: [T × d] for positions cache.length ..< cache.length + T of `layer`. Appends this
    /// chunk's keys and values to the cache (the caller advances its length once per pass).
    func callAsFunction(_ x: Tensor, layer: Int, cache: inout KVCache, rope: RotaryEmbedding) -> Tensor {
        let count = x.rows, d = x.cols, start = cache.length
        var q = query(x), k = key(x)
        let v = value(x)
        q.scalars.withUnsafeMutableBufferPointer { qp in
            k.scalars.withUnsafeMutableBufferPointer { kp in
                for t in 0..<count {
                    rope.apply(qp.baseAddress! + t * d, numHeads: numHeads, position: start + t)
                    rope.apply(kp.baseAddress! + t * d, numHeads: numHeads, position: start + t)
                }
            }
        }
        cache.keys[layer].replaceSubrange(start * d ..< (start + count) * d, with: k.scalars)
        cache.values[layer].replaceSubrange(start * d ..< (start + count) * d, with: v.scalars)

        var attended = Tensor(uninitialized: [count, d])
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: count * (start + count))
        defer { scores.deallocate() }
        q.scalars.withUnsafeBufferPointer { qp in
            cache.keys[layer].withUnsafeBufferPointer { kp in
                cache.values[layer].withUnsafeBufferPointer { vp in
                    attended.scalars.withUnsafeMutableBufferPointer { op in
                        for h in 0..<numHeads {
                            let offset = h * headDim
                            Kernels.causalAttention(count: count, offset: start, queries: .init(qp.baseAddress! + offset, leadingDimension: d),
                                                    keys: .init(kp.baseAddress! + offset, leadingDimension: d),
                                                    values: .init(vp.baseAddress! + offset, leadingDimension: d),
                                                    dims: headDim, valueDims: headDim, scale: 1 / Float(headDim).squareRoot(),
                                                    scores: scores, into: op.baseAddress! + offset, ldo: d)
                        }
                    }
                }
            }
        }
        return output(attended)
    }
}

/// One expert: a SwiGLU feed-forward network, y = W2 (SiLU(W1 u) ⊙ W3 u) (Mixtral's names).
public struct SwiGLUExpert: Sendable {
    public var gate: Linear   // w1 [h × d]
    public var up: Linear     // w3 [h × d]
    public var down: Linear   // w2 [d × h]

    public init(_ prefix: String, config: ModelConfig, from source: inout some WeightSource) throws {
        let d = config.hiddenSize, h = config.expertHiddenSize, std = config.initStd
        gate = try Linear("\(prefix).w1.weight", in: d, out: h, std: std, from: &source)
        down = try Linear("\(prefix).w2.weight", in: h, out: d, std: std / (2 * Float(config.numLayers)).squareRoot(), from: &source)
        up = try Linear("\(prefix).w3.weight", in: d, out: h, std: std, from: &source)
    }

    public func callAsFunction(_ u: Tensor) -> Tensor {
        down(Kernels.swiglu(gate: gate(u), up: up(u)))
    }
}

/// Top-k of one probability row: indices by descending probability, ties to the lower index.
public func topK(_ probabilities: ArraySlice<Float>, k: Int) -> [Int] {
    let base = probabilities.startIndex
    var chosen: [Int] = []
    chosen.reserveCapacity(k)
    for _ in 0..<k {
        var best = -1
        for e in 0..<probabilities.count where !chosen.contains(e) {
            if best < 0 || probabilities[base + e] > probabilities[base + best] { best = e }
        }
        chosen.append(best)
    }
    return chosen
}

/// The sparse feed-forward block: route, then send each token to its k experts (dropless:
/// every expert takes all the tokens routed to it, as one batched product).
public struct MoEBlock: Sendable {
    public var experts: [SwiGLUExpert]
    var topK: Int
    /// Mixture weights renormalised over the k (Mixtral); off, they are the raw probabilities.
    var renormalises = true

    public init(layer: Int, config: ModelConfig, from source: inout some WeightSource) throws {
        experts = try (0..<config.numExperts).map {
            try SwiGLUExpert("model.layers.\(layer).block_sparse_moe.experts.\($0)", config: config, from: &source)
        }
        topK = config.topK
    }

    /// u: normed input [T × d]; logits: router output [T × E]. Returns the block output and how
    /// each token was routed (without router-specific fields, which the caller fills in).
    /// With `allExpertNorms`, every expert also runs on every token to record ‖SwiGLU_e(u)‖.
    func callAsFunction(_ u: Tensor, logits: Tensor, allExpertNorms: Bool = false) -> (Tensor, [LayerRouting]) {
        let count = u.rows, d = u.cols, numExperts = experts.count
        var probabilities = logits
        var routing: [LayerRouting] = []
        routing.reserveCapacity(count)
        var assigned = [[(token: Int, slot: Int)]](repeating: [], count: numExperts)
        probabilities.scalars.withUnsafeMutableBufferPointer { p in
            for t in 0..<count { Kernels.softmax(p.baseAddress! + t * numExperts, count: numExperts) }
        }
        for t in 0..<count {
            let row = probabilities.scalars[t * numExperts ..< (t + 1) * numExperts]
            let chosen = MoECore.topK(row, k: topK)
            let total = renormalises ? chosen.reduce(Float(0)) { $0 + row[row.startIndex + $1] } : 1
            for (slot, e) in chosen.enumerated() { assigned[e].append((t, slot)) }
            routing.append(LayerRouting(
                logits: Array(logits.row(t)), probabilities: Array(row), experts: chosen,
                weights: chosen.map { row[row.startIndex + $0] / total },
                expertOutputNorms: [Float](repeating: 0, count: topK), gruHidden: nil, routerNanoseconds: 0))
        }
        if allExpertNorms {
            for t in 0..<count { routing[t].allExpertOutputNorms = [Float](repeating: 0, count: numExperts) }
            for (e, expert) in experts.enumerated() {
                let y = expert(u)
                y.scalars.withUnsafeBufferPointer { yp in
                    for t in 0..<count {
                        routing[t].allExpertOutputNorms![e] = Kernels.sumOfSquares(yp.baseAddress! + t * d, count: d).squareRoot()
                    }
                }
            }
        }
        var output = Tensor(zeros: [count, d])
        for e in 0..<numExperts where !assigned[e].isEmpty {
            let batch = assigned[e]
            var gathered = [Float]()
            gathered.reserveCapacity(batch.count * d)
            for item in batch { gathered.append(contentsOf: u.row(item.token)) }
            let y = experts[e](Tensor(shape: [batch.count, d], scalars: gathered))
            y.scalars.withUnsafeBufferPointer { yp in
                output.scalars.withUnsafeMutableBufferPointer { op in
                    for (row, item) in batch.enumerated() {
                        let source = yp.baseAddress! + row * d
                        routing[item.token].expertOutputNorms[item.slot] = Kernels.sumOfSquares(source, count: d).squareRoot()
                        Kernels.axpy(routing[item.token].weights[item.slot], source, op.baseAddress! + item.token * d, count: d)
                    }
                }
            }
        }
        return (output, routing)
    }
}
