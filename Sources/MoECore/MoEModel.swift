/// One pre-norm decoder layer: x += Attention(RMSNorm(x)); x += MoE(RMSNorm(x)).
public struct DecoderLayer: Sendable, ParameterDeclaring {
    public var attentionNorm: RMSNorm
    public var attention: GroupedQueryAttention<Linear>
    public var moeNorm: RMSNorm
    public var moe: SparseMoE<Linear>

    init(_ index: Int, config: ModelConfig) {
        let prefix = "model.layers.\(index)"
        attentionNorm = RMSNorm("\(prefix).input_layernorm.weight", size: config.hiddenSize, epsilon: config.normEpsilon)
        attention = GroupedQueryAttention("\(prefix).self_attn", config: config)
        moeNorm = RMSNorm("\(prefix).post_attention_layernorm.weight", size: config.hiddenSize, epsilon: config.normEpsilon)
        moe = SparseMoE(layer: index, config: config)
    }

    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        try attentionNorm.visitParameters(visit)
        try attention.visitParameters(visit)
        try moeNorm.visitParameters(visit)
        try moe.visitParameters(visit)
    }
}

/// What a forward pass returns: next-token logits for each input token and its routing.
public struct ForwardResult: Sendable {
    /// [T × vocab]
    public var logits: Tensor
    public var routing: [RoutingTrace]

    public init(logits: Tensor, routing: [RoutingTrace]) {
        self.logits = logits
        self.routing = routing
    }
}

public enum InferenceError: Error, CustomStringConvertible, Equatable {
    case contextFull(needed: Int, capacity: Int)
    case tokenOutOfRange(token: Int, vocabSize: Int)
    case emptyInput
    /// NaN or ±∞ where the forward should have produced numbers: `location` names the layer
    /// and the tensor ("layer L2, router logits, token 5").
    case nonFinite(location: String, value: Float)

    /// The one input rule, for every model and command: at least one token, and room for
    /// `count` more after the `used` positions of a `capacity`-token context (no limit where a
    /// text is routed a context window at a time).
    public static func check(count: Int, after used: Int = 0, capacity: Int = .max) throws {
        guard count > 0 else { throw emptyInput }
        guard count <= capacity - used else { throw contextFull(needed: used + count, capacity: capacity) }
    }

    public var description: String {
        switch self {
        case .nonFinite(let location, let value):
            return
                "the model produced \(value.isNaN ? "NaN" : value > 0 ? "+inf" : "-inf") at \(location) — its weights hold NaN/inf or overflow there; check or replace the checkpoint"
        case .emptyInput:
            return "the text is empty (it encodes to no tokens) — give at least one character of text"
        case .contextFull(let needed, let capacity):
            return "the text needs \(needed) token positions but the model's context is \(capacity) — shorten the text"
        case .tokenOutOfRange(let token, let vocabSize):
            return "token id \(token) is outside the vocabulary (0..<\(vocabSize)) — was the text encoded with this model's tokenizer?"
        }
    }
}

/// The compact decoder-only MoE transformer of DESIGN.md: embeddings, `numLayers` decoder layers
/// with MoE feed-forward blocks, a final RMSNorm and an LM head (tied to the embeddings by default).
/// Tensor names follow Mixtral's.
public struct MoEModel: Sendable, ParameterDeclaring {
    public let config: ModelConfig
    public var embedding: Parameter  // [vocab × d]
    public var layers: [DecoderLayer]
    public var finalNorm: RMSNorm
    /// The LM head when it is its own weight; nil when tied to the embedding.
    var untiedHead: Linear?
    public var router: any Router
    let rope: RotaryEmbedding
    /// How this copy routes differently from its checkpoint (`applying(_:)`); nil: as trained.
    public internal(set) var routingVariant: RoutingVariant?
    /// Noise on the router's input, for the perturbation probe.
    var routerInputNoise: RouterInputNoise?

    /// The model `config` describes, its parameters declared (named and shaped) but not yet
    /// loaded: `load(from:)` fills them.
    init(declaring config: ModelConfig) throws {
        try config.validate()
        self.config = config
        embedding = Parameter(
            "model.embed_tokens.weight", shape: [config.vocabSize, config.hiddenSize], initializer: .normal(std: config.initStd))
        layers = (0..<config.numLayers).map { DecoderLayer($0, config: config) }
        finalNorm = RMSNorm("model.norm.weight", size: config.hiddenSize, epsilon: config.normEpsilon)
        untiedHead =
            config.tieEmbeddings ? nil : Linear("lm_head.weight", in: config.hiddenSize, out: config.vocabSize, std: config.initStd)
        router = makeRouter(config)
        rope = RotaryEmbedding(headDim: config.headDim, context: config.contextLength, theta: config.ropeTheta)
        numberParameters()
    }

    /// The model with every declared parameter read from `source` (a checkpoint, the trainer's
    /// tensors, or a seeded generator); a missing or mis-shaped tensor throws, naming it.
    public init(config: ModelConfig, from source: inout some WeightSource) throws {
        try self.init(declaring: config)
        try load(from: &source)
    }

    /// A freshly initialised model; the same seed always gives the same weights.
    public init(config: ModelConfig, seed: UInt64) throws {
        var source = RandomWeights(seed: seed)
        try self.init(config: config, from: &source)
    }

    /// The declaration every parameter handler walks, in the order a seed draws the weights:
    /// the embedding, each layer, the final norm, the untied LM head, the router. The tied LM
    /// head is the embedding, stored once.
    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        try visit(&embedding)
        for i in layers.indices { try layers[i].visitParameters(visit) }
        try finalNorm.visitParameters(visit)
        try untiedHead?.visitParameters(visit)
        try router.visitParameters(visit)
    }

    /// y = x Eᵀ with the embedding itself when tied.
    public var lmHead: Linear { untiedHead ?? Linear(embedding) }

    public func makeCache() -> KVCache { KVCache(layers: config.numLayers, capacity: config.contextLength) }

    /// Runs `tokens` at the positions following what `cache` holds, appends them to the cache,
    /// and returns their logits and routing. The full-sequence pass is this with an empty cache;
    /// token-by-token decoding is this with one token at a time.
    /// `allExpertNorms` also runs the experts a token was not routed to, to record every
    /// expert's output norm (E/k times the expert cost; for the analyses only).
    public func forward(
        _ tokens: [Int], cache: inout KVCache, recordGRUState: Bool = true,
        allExpertNorms: Bool = false
    ) throws -> ForwardResult {
        let (logits, routing) = try withUnsafeMutablePointer(to: &cache) { cache in
            try forward(
                [tokens], caches: UnsafeMutableBufferPointer(start: cache, count: 1), recordGRUState: recordGRUState,
                allExpertNorms: allExpertNorms, logitRows: .everyToken, threads: Kernels.threads)
        }
        return ForwardResult(logits: logits, routing: routing.traces(rows: 0..<tokens.count))
    }

    /// Full-sequence forward pass from an empty cache.
    public func forward(_ tokens: [Int], allExpertNorms: Bool = false) throws -> ForwardResult {
        var cache = makeCache()
        return try forward(tokens, cache: &cache, allExpertNorms: allExpertNorms)
    }

    /// Runs independent sequences, each from position 0 (a long text's context windows), as
    /// one batch: every product sees the rows of all of them, so an expert's batch is several
    /// windows deep. Each sequence's routing equals its own forward pass's to rounding (an
    /// expert given fewer than six rows sums them in another order than a larger batch); only
    /// the next-token logits after each sequence's last token are computed (the LM head is the
    /// widest product). Without `lastLogits`, what only the output needs is skipped too: the
    /// last layer's experts (a sixth of the expert work of a 6-layer model) and the LM head;
    /// the last layer's `expertOutputNorms` are then empty and `lastLogits` is [].
    /// Large products split over `threads` cores (1 where the caller runs batches side by side).
    public func forward(
        sequences: [[Int]], recordGRUState: Bool = true, allExpertNorms: Bool = false, lastLogits: Bool = true,
        threads: Int = Kernels.threads
    ) throws -> [(routing: [RoutingTrace], lastLogits: [Float])] {
        try forward(
            batch: sequences, recordGRUState: recordGRUState, allExpertNorms: allExpertNorms, lastLogits: lastLogits,
            threads: threads
        ).sequences
    }

    /// `forward(sequences:)` with the routing left in flat arrays (`BatchRouting`), as a long
    /// text's analysis reads it.
    public func forward(
        batch sequences: [[Int]], recordGRUState: Bool = true, allExpertNorms: Bool = false, lastLogits: Bool = true,
        threads: Int = Kernels.threads
    ) throws -> BatchRouting {
        var caches = sequences.map { _ in makeCache() }
        var (logits, routing) = try caches.withUnsafeMutableBufferPointer { caches in
            try forward(
                sequences, caches: caches, recordGRUState: recordGRUState, allExpertNorms: allExpertNorms,
                logitRows: lastLogits ? .lastOfEachSequence : .none, threads: threads)
        }
        routing.lastLogits = sequences.indices.map { lastLogits ? Array(logits.row($0)) : [] }
        return routing
    }

    /// Which rows get next-token logits; `.none` also skips the last layer's expert mixture,
    /// which only the logits read.
    enum LogitRows { case everyToken, lastOfEachSequence, none }

    /// The forward pass: sequence s runs at the positions following what caches[s] holds and
    /// is appended to it. Every operation but attention is row by row, so it runs on the rows
    /// of all sequences at once; attention runs within each sequence.
    func forward(
        _ sequences: [[Int]], caches: UnsafeMutableBufferPointer<KVCache>, recordGRUState: Bool,
        allExpertNorms: Bool, logitRows: LogitRows, threads: Int
    ) throws -> (logits: Tensor, routing: BatchRouting) {
        for (s, tokens) in sequences.enumerated() { try caches[s].check(tokens, vocabSize: config.vocabSize) }
        let d = config.hiddenSize
        let lengths = sequences.map(\.count)
        let tokens = Array(sequences.joined())
        let count = tokens.count
        var x = Tensor(zeros: [count, d])
        for (t, token) in tokens.enumerated() {
            x.scalars.replaceSubrange(t * d..<(t + 1) * d, with: embedding.value.row(token))
        }
        let positions = sequences.indices.flatMap { s in (0..<lengths[s]).map { caches[s].length + $0 } }
        var routing = BatchRouting(
            tokens: tokens, positions: positions, lengths: lengths, layers: [], lastLogits: sequences.map { _ in [] })
        routing.layers.reserveCapacity(layers.count)
        var routerState = RouterDepthState()
        // Each layer read in place through its buffer (a copy of one, which `layers[i]` makes,
        // retains every parameter it holds: hundreds of reference counts a token).
        layers.withUnsafeBufferPointer { layers in
            for i in layers.indices {
                let attended = layers[i].attention(
                    layers[i].attentionNorm(x), layer: i, caches: caches, lengths: lengths, rope: rope,
                    threads: threads)
                x.add(attended)
                let u = layers[i].moeNorm(x)
                let began = monotonicNanoseconds()
                let routerInput = routerInputNoise?.applied(to: u, positions: positions, layer: i) ?? u
                // A tensor a layer: the routing record keeps each layer's logits.
                var logits = Tensor(uninitialized: [count, router.expertCount])
                logits.withMutableBase {
                    router.logits(routerInput, tokens: tokens, layer: i, state: &routerState, into: $0, threads: threads)
                }
                let routerTime = Double(monotonicNanoseconds() - began) / Double(max(1, count))
                let table: RoutingTable
                if logitRows == .none && i == layers.count - 1 && !allExpertNorms {
                    table = layers[i].moe.routingTable(logits: logits)
                } else {
                    let moeOut: Tensor
                    (moeOut, table) = layers[i].moe.mix(u, logits: logits, allExpertNorms: allExpertNorms, threads: threads)
                    x.add(moeOut)
                }
                routing.layers.append(
                    .init(logits: logits, table: table, routerNanoseconds: routerTime, gruHidden: recordGRUState ? routerState.hidden : nil)
                )
            }
        }
        for s in caches.indices { caches[s].advance(by: lengths[s]) }
        if logitRows == .none { return (Tensor(zeros: [0, config.vocabSize]), routing) }
        var outputRows = x
        if logitRows == .lastOfEachSequence {
            var last: [Float] = []
            last.reserveCapacity(sequences.count * d)
            var end = 0
            for length in lengths {
                end += length
                last.append(contentsOf: x.row(max(0, end - 1)))
            }
            outputRows = Tensor(shape: [sequences.count, d], scalars: last)
        }
        return (lmHead(finalNorm(outputRows), threads: threads), routing)
    }
}

/// The model's forward pass on a `Tape`, for training: B sequences of T tokens at once, laid
/// out as [B·T × d] rows. The same blocks as `forward(_:cache:)` (a test holds the two equal),
/// each run by its tape method, so the trainer back-propagates through attention, the routers
/// and the sparse dispatch alike.
public struct TapeForward {
    /// Next-token logits, [B·T × vocab].
    public var logits: Variable
    /// Per layer: how the batch was routed.
    public var routing: [TapeRouting]
}

extension MoEModel {
    /// `tokens`: B·T ids, `sequenceLength` (T) per sequence. `leaves` holds the tape variable
    /// of every parameter in the order `visitParameters` walks them (`leaves(on:)` makes them
    /// from the model's own values), each block reading its own at its `declarationIndex`; the
    /// model supplies only its structure (config, router kind, RoPE tables), so the trainer can
    /// keep its parameters wherever it likes.
    public func forward(batch tokens: [Int], sequenceLength: Int, on tape: Tape, leaves: [Variable]) -> TapeForward {
        let parameter: (Parameter) -> Variable = { leaves[$0.declarationIndex] }
        precondition(tokens.count % sequenceLength == 0 && sequenceLength <= config.contextLength)
        precondition(leaves.count == declaredParameters.count, "one leaf per declared parameter, in walk order (leaves(on:))")
        var x = tape.gatherRows(parameter(embedding), tokens)
        var routerState: Variable?
        var routing: [TapeRouting] = []
        for (i, layer) in layers.enumerated() {
            let h = layer.attentionNorm(x, on: tape, parameter: parameter)
            x = tape.add(x, layer.attention(h, sequenceLength: sequenceLength, rope: rope, on: tape, parameter: parameter))
            let u = layer.moeNorm(x, on: tape, parameter: parameter)
            let logits = router.logits(u, tokens: tokens, layer: i, state: &routerState, on: tape, parameter: parameter)
            let (moeOut, layerRouting) = layer.moe(u, logits: logits, on: tape, parameter: parameter)
            routing.append(layerRouting)
            x = tape.add(x, moeOut)
        }
        let normed = finalNorm(x, on: tape, parameter: parameter)
        return TapeForward(logits: tape.linear(normed, parameter(lmHead.weight)), routing: routing)
    }
}
