/// What the explorer, `trace` and `analyze` read of a model: moescope's own `MoEModel`, or a
/// Hugging Face checkpoint opened by MoEHub. One protocol, so every view and analysis works on
/// both without knowing which it has.
public protocol RoutingModel: Sendable {
    /// The router as the status line names it ("GRU (RMoE)", "qwen3_moe softmax top-8").
    var routerName: String { get }
    /// moescope's router kind; nil for a model moescope did not build (its router is fixed).
    var routerKind: RouterKind? { get }
    /// The router's equation, one line, for the explorer's router panel.
    var routerEquation: String { get }
    /// All its layers, dense ones included.
    var layerCount: Int { get }
    /// Indices of the layers that route, in order (a dense layer routes nothing and has no row
    /// in the views); trace layer i is model layer `routedLayers[i]`.
    var routedLayers: [Int] { get }
    var numExperts: Int { get }
    var topK: Int { get }
    /// Groups the experts are ranked in before the top-k (DeepSeek's `n_group`); 1 for none.
    var expertGroups: Int { get }
    var vocabSize: Int { get }
    /// Longest token sequence it runs.
    var contextLength: Int { get }
    /// Bytes of all its weights as stored.
    var weightBytes: Int { get }
    /// A decoder at position 0.
    func makeDecoder() -> any RoutingDecoder
    /// Frees what the model built for speed beside its weights, rebuilt when next needed. Only
    /// while nothing runs the model: lookups read those copies without a lock (`BuiltOnce`).
    func releaseInferenceCopies()
    /// Routes independent sequences, each from position 0 (a long text's context windows):
    /// each one's routing, without the GRU router's state, and its next-token logits after its
    /// last token. A model may run them as one batch; by default each goes through a decoder.
    /// `threads`: cores its products may split over (1 where batches already run side by side).
    /// Without `lastLogits` a model may skip what only its output needs (moescope's own: the last
    /// layer's experts and the LM head), leaving `lastLogits` and that layer's
    /// `expertOutputNorms` empty; the routing is the same.
    func route(sequences: [[Int]], allExpertNorms: Bool, lastLogits: Bool, threads: Int) throws -> [(
        routing: [RoutingTrace], lastLogits: [Float]
    )]
    /// The same routing in flat arrays, one table a layer (`BatchRouting`: what a long text's
    /// analysis reads, with no array a token); by default gathered from `route(sequences:…)`.
    func routeBatch(sequences: [[Int]], allExpertNorms: Bool, lastLogits: Bool, threads: Int) throws -> BatchRouting
    /// The experts' (gate, up, down) weights at one routed layer, as Floats, for the weight
    /// similarity analysis; nil where reading them all would be too costly.
    func expertWeights(routedLayer: Int) -> [(gate: Tensor, up: Tensor, down: Tensor)]?
    /// The variants of its routing this model can run (`applying(_:)` gives each).
    var routingVariants: [RoutingVariant] { get }
    /// The same model routing by `variant` (the same weights, shared); nil where it does not apply.
    func applying(_ variant: RoutingVariant) -> (any RoutingModel)?
    /// The routing file it replays, when it is a recording rather than a model that runs: it
    /// cannot take new text or generate, and has only what the file holds.
    var recording: RoutingTraceFile? { get }
}

extension RoutingModel {
    /// Frees what the model built for speed beside its weights (moescope's packed copies),
    /// rebuilt when next needed; nothing for a model that keeps none.
    public func releaseInferenceCopies() {}
    public var routedLayerCount: Int { routedLayers.count }
    public var expertGroups: Int { 1 }
    public var recording: RoutingTraceFile? { nil }
    /// Experts per group where the model groups them; nil otherwise.
    public var expertGroupSize: Int? {
        expertGroups > 1 && numExperts % expertGroups == 0 ? numExperts / expertGroups : nil
    }
    /// The router as exports name it: moescope's `--router` value, else `routerName`.
    public var routerID: String { routerKind?.rawValue ?? routerName }

    /// Whether every expert can be read and run for every token without stalling the
    /// explorer: the weight-similarity view and the all-experts norms of the "Closer Look" view
    /// need that, and a multi-gigabyte model would take seconds a keypress.
    public var isSmallEnoughToReadWhole: Bool { weightBytes <= 2_000_000_000 }

    public var routingVariants: [RoutingVariant] { [] }
    public func applying(_ variant: RoutingVariant) -> (any RoutingModel)? { nil }

    public func route(sequences: [[Int]], allExpertNorms: Bool, lastLogits: Bool, threads: Int) throws -> [(
        routing: [RoutingTrace], lastLogits: [Float]
    )] {
        try sequences.map { sequence in
            var decoder = makeDecoder()
            var (routing, lastLogits) = try decoder.feed(sequence, allExpertNorms: allExpertNorms)
            for t in routing.indices { for l in routing[t].layers.indices { routing[t].layers[l].gruHidden = nil } }
            return (routing, lastLogits)
        }
    }

    public func routeBatch(sequences: [[Int]], allExpertNorms: Bool, lastLogits: Bool, threads: Int) throws -> BatchRouting {
        BatchRouting(sequences: try route(sequences: sequences, allExpertNorms: allExpertNorms, lastLogits: lastLogits, threads: threads))
    }
}

/// Runs a model forward through a growing token sequence.
public protocol RoutingDecoder {
    /// Runs `tokens` at the positions after those already fed: their routing, and the
    /// next-token logits after the last one. `allExpertNorms` also records every expert's
    /// output norm (the "Closer Look" view), at E/k times the expert cost.
    mutating func feed(_ tokens: [Int], allExpertNorms: Bool) throws -> (routing: [RoutingTrace], lastLogits: [Float])
}

/// A model that decodes incrementally on a cache of its own kind: it gets its
/// `RoutingDecoder` for free.
public protocol CachedRoutingModel: RoutingModel {
    associatedtype Cache
    func makeCache() -> Cache
    /// Runs `tokens` at the positions after those `cache` holds and appends them to it.
    func forward(_ tokens: [Int], appendingTo cache: inout Cache, allExpertNorms: Bool) throws -> ForwardResult
}

extension CachedRoutingModel {
    public func makeDecoder() -> any RoutingDecoder { CachedDecoder(model: self, cache: makeCache()) }
}

/// Incremental decoding on a model's cache: each feed costs only its new tokens.
struct CachedDecoder<Model: CachedRoutingModel>: RoutingDecoder {
    let model: Model
    var cache: Model.Cache

    mutating func feed(_ tokens: [Int], allExpertNorms: Bool) throws -> (routing: [RoutingTrace], lastLogits: [Float]) {
        let result = try model.forward(tokens, appendingTo: &cache, allExpertNorms: allExpertNorms)
        return (result.routing, Array(result.logits.row(result.logits.rows - 1)))
    }
}

extension MoEModel: CachedRoutingModel {
    public var routerName: String { config.router.displayName + (routingVariant.map { " · \($0)" } ?? "") }
    public var routerKind: RouterKind? { config.router }
    public var routerEquation: String { config.router.equation }
    public var layerCount: Int { config.numLayers }
    public var routedLayers: [Int] { Array(0..<config.numLayers) }
    public var numExperts: Int { config.numExperts }
    public var topK: Int { layers.first?.moe.topK ?? config.topK }
    public var vocabSize: Int { config.vocabSize }
    public var contextLength: Int { config.contextLength }
    public var weightBytes: Int { parameterCount * MemoryLayout<Float>.size }

    public func forward(_ tokens: [Int], appendingTo cache: inout KVCache, allExpertNorms: Bool) throws -> ForwardResult {
        try forward(tokens, cache: &cache, allExpertNorms: allExpertNorms)
    }

    /// Every parameter's packed copies (`Parameter.releasePackedCopies`), which this model and
    /// all its copies share.
    public func releaseInferenceCopies() {
        router.releaseDecodeWeights()
        var model = self
        model.visitParameters { $0.releasePackedCopies() }
    }

    /// The sequences as one batch (`forward(sequences:)`).
    public func route(sequences: [[Int]], allExpertNorms: Bool, lastLogits: Bool, threads: Int) throws -> [(
        routing: [RoutingTrace], lastLogits: [Float]
    )] {
        try forward(sequences: sequences, recordGRUState: false, allExpertNorms: allExpertNorms, lastLogits: lastLogits, threads: threads)
    }

    /// The batch's flat routing (`forward(batch:)`), no trace built.
    public func routeBatch(sequences: [[Int]], allExpertNorms: Bool, lastLogits: Bool, threads: Int) throws -> BatchRouting {
        try forward(batch: sequences, recordGRUState: false, allExpertNorms: allExpertNorms, lastLogits: lastLogits, threads: threads)
    }

    public func expertWeights(routedLayer: Int) -> [(gate: Tensor, up: Tensor, down: Tensor)]? {
        layers[routedLayer].moe.experts.map { ($0.gate.weight.value, $0.up.weight.value, $0.down.weight.value) }
    }

    /// The rule variants (renormalisation, top-(k+1)) and the perturbations; the Hash router
    /// has no weights or input to perturb, and picks its k by hashing.
    public var routingVariants: [RoutingVariant] {
        guard routingVariant == nil, config.router != .hash else { return [] }
        return (config.topK < config.numExperts ? [.renormalisationFlipped, .topKPlusOne] : [.renormalisationFlipped])
            + RoutingVariant.perturbations
    }

    public func applying(_ variant: RoutingVariant) -> (any RoutingModel)? {
        guard routingVariants.contains(variant) else { return nil }
        var model = self
        model.routingVariant = variant
        switch variant {
        case .withoutSelectionBias: return nil
        case .renormalisationFlipped:
            for i in model.layers.indices {
                guard case .softmaxTopK(let normalize) = model.layers[i].moe.rule else { return nil }
                model.layers[i].moe.rule = .softmaxTopK(normalize: !normalize)
            }
        case .topKPlusOne: for i in model.layers.indices { model.layers[i].moe.topK += 1 }
        case .routerWeightsRounded(let precision):
            model.router.visitParameters { $0.value = precision.round($0.value) }
        case .routerInputNoise(let relative): model.routerInputNoise = RouterInputNoise(relative: relative)
        }
        return model
    }
}
