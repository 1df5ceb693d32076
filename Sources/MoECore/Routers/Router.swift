/// The seven routers moescope can run. Raw values are the names used on the command line and
/// in `config.json`.
public enum RouterKind: String, Codable, CaseIterable, Sendable {
    case linear, mlp, attention, hybrid, hash
    case mlpHadamard = "mlp-hadamard"
    case gru

    public var displayName: String {
        switch self {
        case .linear: "Linear"
        case .mlp: "MLP"
        case .attention: "Attention"
        case .hybrid: "Hybrid"
        case .hash: "Hash"
        case .mlpHadamard: "MLP-Hadamard"
        case .gru: "GRU (RMoE)"
        }
    }

    /// The router's equation, as the help text and README print it.
    public var equation: String {
        switch self {
        case .linear: "logits = W u"
        case .mlp: "logits = W2 GELU(W1 u)"
        case .attention: "logits = (Wq u) Kᵀ / √a, K = learned expert keys"
        case .hybrid: "logits = α·Linear(u) + (1−α)·MLP(u), α = σ(learned scalar)"
        case .hash: "experts = fixed hash(token id, layer); weights 1/k; no parameters"
        case .mlpHadamard: "logits = Wo (GELU(Wa u) ⊙ (Wb u))"
        case .gru: "h_i = GRUCell(P_i u_i, h_{i−1}), logits = G_i h_i (recurrent over depth)"
        }
    }

    /// The 2025 router paper does not publish its formulas: these forms are moescope's reading.
    public var isOurInterpretation: Bool {
        switch self {
        case .mlp, .attention, .hybrid, .mlpHadamard, .hash: true
        case .linear, .gru: false
        }
    }

    /// "1"…"7" select routers in the TUI in this order.
    public var number: Int { Self.allCases.firstIndex(of: self)! + 1 }
}

/// Per-token state a router carries from one layer to the next while a forward pass walks
/// down the stack. Only the GRU router uses it; it starts empty for every token, so no state
/// ever flows along the sequence.
public struct RouterDepthState: Sendable {
    /// GRU hidden state after the most recent layer, [T × p].
    public var hidden: Tensor?
    /// The previous layer's state tensor, kept so the next layer writes into it rather than
    /// allocating one per layer.
    var spare: Tensor?
    public init() {}
}

/// A router maps the normed hidden state entering a layer's MoE block to one logit per
/// expert. The MoE block turns logits into choices the same way for every router
/// (Mixtral convention): p = softmax(logits), take the top k, renormalise their weights.
///
/// Each router writes its equation twice: on a `Tape`, which training back-propagates through,
/// and directly on plain tensors for inference, where a tape would only add the bookkeeping of
/// a graph nobody differentiates. The direct path performs the same operations in the same
/// order (the same products, the same scalar functions), so its logits equal the tape's bit for
/// bit; `RouterTests` holds every router to that, at several shapes.
///
/// A router declares its parameters (`ParameterDeclaring`), per layer, in its initialiser from
/// the config; loading, saving and training walk that declaration.
public protocol Router: Sendable, ParameterDeclaring {
    var kind: RouterKind { get }
    /// The router `config` describes, its parameters declared but not yet loaded.
    init(_ config: ModelConfig)
    /// u: [T × d] for the T tokens `tokens` at layer `layer`; returns logits [T × E].
    /// `state` carries what the router passes to the next layer (the GRU's h; nil at layer 0).
    /// `parameter` yields the tape variable of each parameter it declared.
    func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (Parameter) -> Variable
    ) -> Variable
    /// E: the logits per token.
    var expertCount: Int { get }
    /// Inference, without a tape: logits for u [T × d] into `out` [T × E], threading the depth
    /// state; products split over `threads` cores. Writing into the caller's memory, a decoded
    /// token's router call allocates nothing.
    func logits(
        _ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, into out: UnsafeMutablePointer<Float>, threads: Int)
    /// Frees what the direct path built beside the parameters' own packed copies (the GRU's
    /// gathered decode weights), shared by every copy of this router. Only while nothing runs
    /// the router: lookups read those weights without a lock (`BuiltOnce`).
    func releaseDecodeWeights()
}

extension Router {
    /// Most routers read their parameters' packed copies directly and build nothing more.
    public func releaseDecodeWeights() {}

    /// The router `config` describes, its parameters read from `source`.
    public init(_ config: ModelConfig, from source: inout some WeightSource) throws {
        self.init(config)
        try load(from: &source)
    }

    /// Inference on every core (the direct path).
    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState) -> Tensor {
        logits(u, tokens: tokens, layer: layer, state: &state, threads: Kernels.threads)
    }

    /// The direct path into a new tensor [T × E].
    public func logits(_ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, threads: Int) -> Tensor {
        var out = Tensor(uninitialized: [u.rows, expertCount])
        out.withMutableBase { logits(u, tokens: tokens, layer: layer, state: &state, into: $0, threads: threads) }
        return out
    }

    /// The tape's forward on plain tensors, no gradients asked for: what the direct path is
    /// tested against.
    public func tapeLogits(
        _ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState,
        threads: Int = Kernels.threads
    ) -> Tensor {
        let tape = Tape(threads: threads)
        // Numbered afresh: a model's router carries its places in the whole model's walk.
        var numbered = self
        numbered.numberParameters()
        let leaves = numbered.leaves(on: tape)
        var hidden = state.hidden.map { tape.leaf($0) }
        let out = numbered.logits(tape.leaf(u), tokens: tokens, layer: layer, state: &hidden, on: tape) {
            leaves[$0.declarationIndex]
        }
        state.hidden = hidden.map { tape.value($0) }
        return tape.value(out)
    }
}

/// x Wᵀ for the direct path: the product `Tape.linear` computes, on the same values (a decoded
/// token's few rows read the weight's packed copy, which sums as `gemm` does).
func linear(_ x: Tensor, _ weight: Parameter, threads: Int) -> Tensor { Linear(weight)(x, threads: threads) }

/// x Wᵀ for `rows` rows of x into `out`, as `linear(_:_:threads:)` computes it, for direct
/// paths that keep their intermediates in scratch memory rather than in a tensor apiece.
func linear(_ x: UnsafePointer<Float>, rows: Int, _ weight: Parameter, into out: UnsafeMutablePointer<Float>, threads: Int) {
    let (n, k) = (weight.value.rows, weight.value.cols)
    if rows < Kernels.microRows {
        let packed = weight.rowsPacked
        // A router's products are too small to split (`multiplyRows`); called directly, no
        // array of one job is allocated per call.
        if threads == 1 || rows * packed.paddedCount < Kernels.minimumFloatsToSplit {
            return packed.multiply(x, rows: rows, ldx: k, into: out, ldy: n)
        }
        return Kernels.multiplyRows([.init(weights: packed, input: x, rows: rows, output: out)], threads: threads)
    }
    // Only a product that will read them counts towards keeping the panels.
    let panels = Kernels.readsPrepacked(m: rows, n: n, k: k, threads: threads) ? weight.panelsPackedOnReuse : nil
    weight.value.scalars.withUnsafeBufferPointer { w in
        Kernels.gemm(
            m: rows, n: n, k: k, Kernels.Operand(x, leadingDimension: k),
            Kernels.Operand(w.baseAddress!, leadingDimension: k).transposed, out, ldc: n, threads: threads, prepacked: panels?.packed)
    }
    withExtendedLifetime(panels) {}
}

/// Runs `body` on `count` floats of scratch: on the stack when small (a decoded token's
/// intermediates), so a direct path allocates nothing but the tensors it returns.
func withScratch<Result>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> Result) -> Result {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, count)) { body($0.baseAddress!) }
}

extension Tensor {
    /// `body` on the scalars' base address (for the direct paths' pointer kernels).
    func withBase<Result>(_ body: (UnsafePointer<Float>) -> Result) -> Result {
        scalars.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
    mutating func withMutableBase<Result>(_ body: (UnsafeMutablePointer<Float>) -> Result) -> Result {
        scalars.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
    }
}

/// Name prefix of layer `i`'s router parameters (Mixtral calls the router `gate`).
@Sendable public func routerPrefix(_ layer: Int) -> String { "model.layers.\(layer).block_sparse_moe.gate" }

extension [Parameter] {
    /// One parameter per layer, `name(layer)` of `shape`.
    init(layers: Int, _ name: (Int) -> String, shape: [Int], initializer: Initializer) {
        self = (0..<layers).map { Parameter(name($0), shape: shape, initializer: initializer) }
    }
}

/// The router named in `config`, its parameters declared but not yet loaded.
func makeRouter(_ config: ModelConfig) -> any Router {
    switch config.router {
    case .linear: LinearRouter(config)
    case .mlp: MLPRouter(config)
    case .attention: AttentionRouter(config)
    case .hybrid: HybridRouter(config)
    case .hash: HashRouter(config)
    case .mlpHadamard: MLPHadamardRouter(config)
    case .gru: GRURouter(config)
    }
}

/// The router named in `config`, its parameters read from `source`.
public func makeRouter(_ config: ModelConfig, from source: inout some WeightSource) throws -> any Router {
    var router = makeRouter(config)
    try router.load(from: &source)
    return router
}

extension ModelConfig {
    /// Floating-point operations the router spends per token, all layers together: 2 per
    /// multiply-add of its matrix products (element-wise activations and the softmax, shared by
    /// all routers, are not counted). The cut-recurrence GRU skips W_hh h, which multiplies 0.
    public var routerFLOPsPerToken: Int {
        let d = hiddenSize
        let e = numExperts
        let h = routerHiddenSize
        let p = gruHiddenSize
        let perLayer: Int
        switch router {
        case .linear: perLayer = e * d
        case .mlp: perLayer = h * d + e * h
        case .attention: perLayer = h * d + e * h  // Wq u, then one score per expert key
        case .hybrid: perLayer = e * d + h * d + e * h
        case .hash: perLayer = 0
        case .mlpHadamard: perLayer = 2 * h * d + e * h
        case .gru: perLayer = p * d + 3 * p * p * (gruRecurrence ? 2 : 1) + e * p
        }
        return 2 * perLayer * numLayers
    }
}
