/// How one token was routed at one layer: everything the TUI, the analyses and the exports read.
public struct LayerRouting: Sendable, Equatable {
    /// Router output before the softmax, one per expert (Hash: 0 on its set, −∞ elsewhere).
    public var logits: [Float]
    /// softmax(logits) over all experts.
    public var probabilities: [Float]
    /// The k chosen experts, highest probability first (ties: lower id first).
    public var experts: [Int]
    /// Their renormalised mixture weights (sum to 1).
    public var weights: [Float]
    /// ‖SwiGLU_e(u)‖ for each chosen expert, before weighting.
    public var expertOutputNorms: [Float]
    /// ‖SwiGLU_e(u)‖ for every expert e, chosen or not — only when the forward pass was asked
    /// for it (the "Closer Look" analysis; it runs all E experts instead of k).
    public var allExpertOutputNorms: [Float]?
    /// GRU router only: the hidden state h_i after this layer (p values).
    public var gruHidden: [Float]?
    /// Wall time the router took for this token (amortised when tokens ran as a batch).
    public var routerNanoseconds: Double
    /// The selection margin measured on the scores the routing rule actually ranked, recorded by
    /// rules that choose by something other than `probabilities` (DeepSeek-V3's biased sigmoid
    /// scores, group-limited routing); `selectionMargin` prefers it. nil: the rule ranks the
    /// probabilities themselves.
    public var rankedScoreMargin: Double?

    public var topExpert: Int { experts[0] }

    public init(
        logits: [Float], probabilities: [Float], experts: [Int], weights: [Float],
        expertOutputNorms: [Float], gruHidden: [Float]?, routerNanoseconds: Double
    ) {
        self.logits = logits
        self.probabilities = probabilities
        self.experts = experts
        self.weights = weights
        self.expertOutputNorms = expertOutputNorms
        self.gruHidden = gruHidden
        self.routerNanoseconds = routerNanoseconds
        self.allExpertOutputNorms = nil
        self.rankedScoreMargin = nil
    }
}

/// The routing of one token through every layer.
public struct RoutingTrace: Sendable, Equatable {
    public var token: Int
    public var position: Int
    public var layers: [LayerRouting]

    public init(token: Int, position: Int, layers: [LayerRouting]) {
        self.token = token
        self.position = position
        self.layers = layers
    }
}

extension LayerRouting: Encodable {
    enum CodingKeys: String, CodingKey {
        case logits, probabilities, experts, weights
        case expertOutputNorms = "expert_output_norms"
        case gruHidden = "gru_hidden"
        case routerNanoseconds = "router_ns"
        case allExpertOutputNorms = "all_expert_output_norms"
        case selectionMargin = "selection_margin"
    }

    /// Non-finite logits (the Hash router's −∞) are written as JSON null.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(logits.map { $0.isFinite ? $0 : nil }, forKey: .logits)
        try c.encode(probabilities, forKey: .probabilities)
        try c.encode(experts, forKey: .experts)
        try c.encode(weights, forKey: .weights)
        try c.encode(expertOutputNorms, forKey: .expertOutputNorms)
        try c.encodeIfPresent(gruHidden, forKey: .gruHidden)
        try c.encodeIfPresent(allExpertOutputNorms, forKey: .allExpertOutputNorms)
        try c.encode(routerNanoseconds, forKey: .routerNanoseconds)
        try c.encodeIfPresent(selectionMargin.flatMap { $0.isFinite ? $0 : nil }, forKey: .selectionMargin)
    }
}

extension RoutingTrace: Encodable {}
