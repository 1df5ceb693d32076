/// A tensor of a Hugging Face checkpoint as a block declares it, before anything is read: its
/// checkpoint name and the shape the config implies. `part` is one expert's share of a fused
/// [E × …] expert tensor (transformers 5 stores a layer's experts as one `gate_up_proj` and one
/// `down_proj`), so every expert still declares the tensor it reads.
public struct DeclaredTensor: Sendable, Hashable {
    public struct Part: Sendable, Hashable {
        /// The expert: entry `index` of the first dimension.
        public var index: Int
        /// Rows of the expert's matrix (the gate or the up half of `gate_up_proj`); nil: all.
        public var rows: Range<Int>?

        public init(index: Int, rows: Range<Int>? = nil) { (self.index, self.rows) = (index, rows) }
    }

    public let name: String
    /// The whole stored tensor's shape (for a part, that of the fused tensor).
    public let shape: [Int]
    public let part: Part?

    public init(_ name: String, shape: [Int], part: Part? = nil) { (self.name, self.shape, self.part) = (name, shape, part) }

    /// The shape of what the block gets: the part's, or the whole tensor's.
    public var partShape: [Int] {
        guard let part else { return shape }
        let inner = Array(shape.dropFirst())
        return part.rows.map { [$0.count] + inner.dropFirst() } ?? inner
    }
}

/// A linear layer as a Hugging Face block declares it: its weight (and bias) by checkpoint name
/// and shape. Reading the checkpoint turns it into the `MappedLinear` the block runs, whose
/// weight stays in the mapped file; a block of `DeclaredLinear`s is the block's declaration,
/// walked by `mapWeights` (the same walk loads it and lists its names).
public struct DeclaredLinear: Projection {
    public let weight: DeclaredTensor
    public let bias: DeclaredTensor?

    public init(weight: DeclaredTensor, bias: DeclaredTensor? = nil) { (self.weight, self.bias) = (weight, bias) }

    /// `name`.weight [out × in], and `name`.bias [out] when `bias`.
    public init(_ name: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = false) {
        self.init(
            weight: DeclaredTensor("\(name).weight", shape: [outFeatures, inFeatures]),
            bias: bias ? DeclaredTensor("\(name).bias", shape: [outFeatures]) : nil)
    }

    public var inFeatures: Int { weight.partShape[1] }
    public var outFeatures: Int { weight.partShape[0] }

    /// The tensors it declares: the weight, then the bias.
    public var tensors: [DeclaredTensor] { [weight] + (bias.map { [$0] } ?? []) }

    /// A declaration holds no weights: blocks run only once read (`mapWeights`), which the
    /// model types ensure (a `HubModel` holds `MappedLinear`s).
    public static func apply(_ products: [(projection: DeclaredLinear, input: Tensor)], threads: Int) -> [Tensor] {
        preconditionFailure("\(products.first?.projection.weight.name ?? "a declared layer") is declared, not read")
    }
}

// Each block's weights in declaration order, through two functions: every projection becomes
// `projection(p)` and every Float parameter (norm gains, routers, biases) passes through
// `parameter`. Reading a checkpoint is this walk with functions that read; listing the names is
// this walk with functions that record them.

extension SwiGLU {
    /// Gate, up, down.
    public func mapWeights<Q: Projection>(_ projection: (P) throws -> Q) rethrows -> SwiGLU<Q> {
        SwiGLU<Q>(gate: try projection(gate), up: try projection(up), down: try projection(down))
    }
}

extension GroupedQueryAttention {
    /// q, k, v, o, then the q and k norms.
    public func mapWeights<Q: Projection>(_ projection: (P) throws -> Q, parameter: (inout Parameter) throws -> Void) rethrows
        -> GroupedQueryAttention<Q>
    {
        let (q, k, v, o) = (try projection(query), try projection(key), try projection(value), try projection(output))
        var (queryNorm, keyNorm) = (self.queryNorm, self.keyNorm)
        try queryNorm?.visitParameters(parameter)
        try keyNorm?.visitParameters(parameter)
        return GroupedQueryAttention<Q>(
            query: q, key: k, value: v, output: o, heads: heads, keyValueHeads: keyValueHeads, headDim: headDim,
            queryNorm: queryNorm, keyNorm: keyNorm, clip: clip)
    }
}

extension MultiHeadLatentAttention {
    /// The query (full, or down, norm, up), the latent's down projection, norm and up
    /// projection, then the output.
    public func mapWeights<Q: Projection>(_ projection: (P) throws -> Q, parameter: (inout Parameter) throws -> Void) rethrows
        -> MultiHeadLatentAttention<Q>
    {
        let query: MultiHeadLatentAttention<Q>.Query
        switch self.query {
        case .full(let full): query = .full(try projection(full))
        case .lowRank(let down, var norm, let up):
            let down = try projection(down)
            try norm.visitParameters(parameter)
            query = .lowRank(down: down, norm: norm, up: try projection(up))
        }
        let latentDown = try projection(self.latentDown)
        var latentNorm = self.latentNorm
        try latentNorm.visitParameters(parameter)
        return MultiHeadLatentAttention<Q>(
            query: query, latentDown: latentDown, latentNorm: latentNorm, latentUp: try projection(latentUp),
            output: try projection(output), heads: heads, noPositionDim: noPositionDim, rotaryDim: rotaryDim,
            valueDim: valueDim, latentRank: latentRank, interleaved: interleaved, scale: scale)
    }
}

extension SparseMoE {
    /// The selection bias, each expert, the shared expert and its gate.
    public func mapWeights<Q: Projection>(_ projection: (P) throws -> Q, parameter: (inout Parameter) throws -> Void) rethrows
        -> SparseMoE<Q>
    {
        var moe = SparseMoE<Q>(experts: [], topK: topK, rule: rule)
        if var bias = selectionBias {
            try parameter(&bias)
            moe.selectionBias = bias
        }
        moe.experts = try experts.map { try $0.mapWeights(projection) }
        moe.shared = try shared?.mapWeights(projection)
        if var gate = sharedGate {
            try parameter(&gate)
            moe.sharedGate = gate
        }
        return moe
    }
}
