import Foundation
import MoECore
import Synchronization

/// A Hugging Face MoE checkpoint (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2/V3) run for
/// inference with its weights memory-mapped. The forward pass follows each family's
/// transformers code: RMSNorm before attention and MLP, RoPE, grouped-query or latent
/// attention, and routing by the family's `RoutingRule`.
public struct HubModel: Sendable {
    public internal(set) var config: HubConfig
    public let path: String
    let embedding: MappedTensor
    var layers: [HubLayer<MappedLinear>]
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
    /// RoPE's cos/sin for the positions run so far, shared by copies of the model.
    let rotaryTables: RotaryTables

    /// Opens `folder`. Fails, before any weight is read, if the weights are larger than
    /// `memoryLimit` (default: the machine's physical memory), rather than letting the
    /// kernel's OOM killer end the process mid-run.
    public init(folder: String, memoryLimit: Int = Int(ProcessInfo.processInfo.physicalMemory)) throws {
        let config = try HubConfig(folder: folder)
        let weights = try HubWeights(folder: folder)
        guard weights.totalBytes <= memoryLimit else {
            throw HubError.tooLarge(path: folder, neededBytes: weights.totalBytes, availableBytes: memoryLimit)
        }
        try self.init(config: config, reading: HubWeightReader(weights))
    }

    /// Reads every weight `config` declares (`HubDeclaration`), in declaration order, and
    /// refuses tensors nothing declared.
    init(config: HubConfig, reading reader: HubWeightReader) throws {
        self.config = config
        rotaryTables = RotaryTables(config: config)
        path = reader.weights.path
        weightBytes = reader.weights.totalBytes
        let declaration = HubDeclaration(config: config, layout: HubCheckpointLayout(config: config, names: reader.weights.contains))
        let read = try declaration.mapWeights(reader.tensor, reader.linear, parameter: reader.parameter)
        (embedding, layers, finalNorm) = (read.embedding, read.layers, read.finalNorm)
        lmHead = read.lmHead ?? MappedLinear(weight: read.embedding, bias: nil)
        try reader.checkNothingElse(config: config)
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
        let rope = rotaryTables.covering(offset + t)
        var perLayer: [[LayerRouting]] = []
        withUnsafeMutablePointer(to: &cache) { cache in
            let caches = UnsafeMutableBufferPointer(start: cache, count: 1)
            for (i, layer) in layers.enumerated() {
                x.add(layer.attention(layer.inputNorm(x), layer: i, caches: caches, lengths: [t], rope: rope, threads: threads))
                let u = layer.postNorm(x)
                switch layer.feedForward {
                case .dense(let mlp): x.add(mlp(u, threads: threads))
                case .sparse(let router, let moe):
                    let began = monotonicNanoseconds()
                    let routerInput = routerInputNoise?.applied(to: u, positions: Array(offset..<offset + t), layer: i) ?? u
                    // The product on the router's weight in place: `Linear` would keep a packed
                    // copy of every layer's router beside it (hundreds of MB for DeepSeek-V3).
                    var logits = Tensor(uninitialized: [t, config.numExperts])
                    Tensor.product(
                        routerInput, transposed: false, router.value, transposed: true, into: &logits, accumulate: false, threads: 1)
                    let routerNanoseconds = Double(monotonicNanoseconds() - began) / Double(t)
                    var (y, routing) = moe(u, logits: logits, allExpertNorms: allExpertNorms, threads: threads)
                    for r in routing.indices { routing[r].routerNanoseconds = routerNanoseconds }
                    perLayer.append(routing)
                    x.add(y)
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
}

/// One decoder layer of a Hugging Face model: x += attention(norm(x)); x += feed-forward(norm(x)).
/// Declared with `DeclaredLinear`s (HubDeclaration.swift), run with `MappedLinear`s.
struct HubLayer<P: Projection>: Sendable {
    enum AttentionKind: Sendable {
        case groupedQuery(GroupedQueryAttention<P>)
        case latent(MultiHeadLatentAttention<P>)
    }
    enum FeedForward: Sendable {
        case dense(SwiGLU<P>)
        /// The layer's linear router [E × d] and its experts.
        case sparse(router: Parameter, SparseMoE<P>)
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
    var moe: SparseMoE<P>? {
        guard case .sparse(_, let moe) = feedForward else { return nil }
        return moe
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
        case .routerWeightsRounded(let precision): model.forEachMoE { router, _ in router.value = precision.round(router.value) }
        case .routerInputNoise(let relative): model.routerInputNoise = RouterInputNoise(relative: relative)
        }
        return model
    }

    private mutating func forEachMoE(_ change: (inout Parameter, inout SparseMoE<MappedLinear>) -> Void) {
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

/// RoPE tables that grow with the positions a model has run, doubling up to the context: built
/// per forward, a decoded token recomputed cos and sin for every position before it (work that
/// grew with the text). A position's entries do not depend on the table's length.
final class RotaryTables: Sendable {
    let inverseFrequencies: [Double]
    let scale: Double
    let context: Int
    private let built = Mutex<RotaryEmbedding?>(nil)

    init(config: HubConfig) {
        inverseFrequencies = config.rope.inverseFrequencies(dim: config.headDim)
        scale = config.rope.tableScale
        context = config.contextLength
    }

    /// A table that holds positions 0..<count.
    func covering(_ count: Int) -> RotaryEmbedding {
        built.withLock { table in
            if let table, table.positions >= count { return table }
            let grown = RotaryEmbedding(
                inverseFrequencies: inverseFrequencies, context: max(count, min(context, 2 * (table?.positions ?? 32))), scale: scale)
            table = grown
            return grown
        }
    }
}
