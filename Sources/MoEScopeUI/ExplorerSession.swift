import MoEAnalysis
import MoECore

/// One model running over one text, token by token: the KV cache grows as the cursor moves
/// right, so each step costs one incremental decode. Everything the views read about the
/// model's behaviour comes from `traces`.
public struct ExplorerSession {
    public let model: any RoutingModel
    public let tokenizer: any TextTokenizer
    /// Where the weights came from (shown in the status line).
    public let label: String
    public let isRandomInit: Bool
    /// The text's token ids (generation appends to it).
    public private(set) var tokens: [Int]
    /// Routing of tokens[0 ..< traces.count], decoded so far.
    public private(set) var traces: [RoutingTrace] = []
    /// Decoded tokens whose routing has a NaN or infinite probability at some layer (the
    /// explorer warns; a sound model has none).
    public private(set) var nonFiniteTokens = 0
    private var decoder: any RoutingDecoder
    private var lastLogits: [Float] = []
    private var sampler = SeededGenerator(seed: 2024)
    /// Cosine similarity of the experts' weights, per layer (fixed for a model); nil when the
    /// model's experts are too large to read whole.
    public let expertSimilarity: ExpertSimilarity?
    /// Its mean over expert pairs, per layer (E² per layer: computed once, not per frame).
    public let expertSimilarityMeans: [Double]

    public init(model: any RoutingModel, tokenizer: any TextTokenizer, label: String, isRandomInit: Bool, tokens: [Int]) {
        self.init(
            model: model, tokenizer: tokenizer, label: label, isRandomInit: isRandomInit, tokens: tokens,
            expertSimilarity: ExpertSimilarity(model: model))
    }

    private init(
        model: any RoutingModel, tokenizer: any TextTokenizer, label: String, isRandomInit: Bool, tokens: [Int],
        expertSimilarity: ExpertSimilarity?
    ) {
        self.model = model
        self.tokenizer = tokenizer
        self.label = label
        self.isRandomInit = isRandomInit
        self.tokens = Array(tokens.prefix(model.contextLength))
        decoder = model.makeDecoder()
        self.expertSimilarity = expertSimilarity
        expertSimilarityMeans = expertSimilarity?.meanByLayer ?? []
        runsEveryExpert = model.numExperts * model.routedLayerCount <= Self.everyExpertBudget && model.isSmallEnoughToReadWhole
    }

    /// The same model on another text, from position 0: nothing is reloaded or recomputed but
    /// the decoding.
    public func restarted(with tokens: [Int]) -> ExplorerSession {
        ExplorerSession(
            model: model, tokenizer: tokenizer, label: label, isRandomInit: isRandomInit, tokens: tokens,
            expertSimilarity: expertSimilarity)
    }

    /// Whether each step also runs every expert, for the gate-vs-norm view: E/k times the expert
    /// work, so only where the weights are small enough to read whole and there are at most
    /// `everyExpertBudget` expert–layer pairs (a 256-expert, 58-layer model runs 14,848 experts
    /// a token that way, ~80 ms a keypress even at a tiny width).
    /// Decided once: `weightBytes` walks every parameter of a moescope model.
    public let runsEveryExpert: Bool
    public static let everyExpertBudget = 4096

    /// moescope's router kind; nil for a Hugging Face model, whose router is its own.
    public var router: RouterKind? { model.routerKind }
    public var capacity: Int { model.contextLength }

    /// Decodes tokens up to and including `index`. A jump runs the missing stretch as one pass
    /// (equal to token-by-token decoding; the tests hold the two equal).
    public mutating func decode(through index: Int) throws {
        let target = min(index, tokens.count - 1)
        guard target >= traces.count else { return }
        let chunk = Array(tokens[traces.count...target])
        let result = try decoder.feed(chunk, allExpertNorms: runsEveryExpert)
        traces += result.routing
        nonFiniteTokens +=
            result.routing.filter { trace in
                trace.layers.contains { layer in layer.probabilities.contains { !$0.isFinite } }
            }.count
        lastLogits = result.lastLogits
    }

    /// Appends one sampled next token (temperature 0.8) after the whole text. Returns false when
    /// the context is full.
    public mutating func generateNext() throws -> Bool {
        guard tokens.count < capacity else { return false }
        try decode(through: tokens.count - 1)
        var probabilities = lastLogits.map { $0 / 0.8 }
        probabilities.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: $0.count) }
        let draw = sampler.nextUniform()
        var total: Float = 0
        var chosen = probabilities.count - 1
        for (id, p) in probabilities.enumerated() {
            total += p
            if draw < total {
                chosen = id
                break
            }
        }
        tokens.append(chosen)
        try decode(through: tokens.count - 1)
        return true
    }

    public func text(of index: Int) -> String { tokenizer.displayText(of: tokens[index]) }
}
