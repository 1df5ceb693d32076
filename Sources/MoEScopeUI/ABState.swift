import MoEAnalysis
import MoECore

/// What side B of the A/B view routes by: another of moescope's routers (its own checkpoint), or
/// side A's model under a changed rule or a perturbation (a Hugging Face model against itself).
public enum ABChoice: Equatable, Sendable {
    case router(RouterKind)
    case variant(RoutingVariant)

    public var name: String {
        switch self {
        case .router(let kind): kind.displayName
        case .variant(let variant): variant.description
        }
    }
}

/// The A/B view's side B: the same tokens through another routing, decoded as far as side A's
/// cursor, so both sides always show the same token. Side A is the explorer's own session.
public struct ABState {
    public private(set) var choice: ABChoice
    public private(set) var session: ExplorerSession
    /// Side A's model when side B was made (a variant of it must follow when side A changes).
    private var sideA: String

    /// What side B can be for side A's session: the other routers of moescope's models, then
    /// the variants side A's model runs.
    public static func choices(for a: ExplorerSession) -> [ABChoice] {
        let routers = a.router.map { current in RouterKind.allCases.filter { $0 != current }.map(ABChoice.router) } ?? []
        return routers + a.model.routingVariants.map(ABChoice.variant)
    }

    /// Side B for `a` routed by `choice` (the first choice when nil, GRU preferred against
    /// Linear as the README shows), decoded through `cursor`.
    init(a: ExplorerSession, choice: ABChoice?, cursor: Int, loader: SessionLoader) throws {
        let all = Self.choices(for: a)
        guard let chosen = choice ?? all.first(where: { $0 == .router(.gru) }) ?? all.first else {
            throw ExplorerMessage(
                a.model.recording != nil
                    ? "A recorded trace holds only the routing it recorded: the A/B view needs a model that runs"
                    : "this model has no second routing to set beside it")
        }
        self.choice = chosen
        sideA = Self.identity(of: a)
        session = try Self.session(for: chosen, a: a, loader: loader)
        try session.decode(through: cursor)
    }

    static func identity(of a: ExplorerSession) -> String { "\(a.label)\u{0}\(a.model.routerName)" }

    static func session(for choice: ABChoice, a: ExplorerSession, loader: SessionLoader) throws -> ExplorerSession {
        switch choice {
        case .router(let kind): return try loader(kind, a.tokens, nil)
        case .variant(let variant):
            guard let model = a.model.applying(variant) else {
                throw ExplorerMessage("\(variant) does not apply to \(a.model.routerName)")
            }
            return ExplorerSession(model: model, tokenizer: a.tokenizer, label: a.label, isRandomInit: a.isRandomInit, tokens: a.tokens)
        }
    }

    /// Keeps side B on side A's tokens (a new text or generated tokens restart it) and decoded
    /// through `cursor`; a new router on side A re-chooses B when B has become the same.
    mutating func follow(_ a: ExplorerSession, cursor: Int, loader: SessionLoader) throws {
        if case .router(let kind) = choice, kind == a.router {
            self = try ABState(a: a, choice: nil, cursor: cursor, loader: loader)
            return
        }
        if session.tokens != a.tokens || sideA != Self.identity(of: a) {
            let all = Self.choices(for: a)
            self = try ABState(a: a, choice: all.contains(choice) ? choice : nil, cursor: cursor, loader: loader)
            return
        }
        try session.decode(through: cursor)
    }

    /// The next (or previous) choice for side B.
    mutating func cycle(by step: Int, a: ExplorerSession, cursor: Int, loader: SessionLoader) throws {
        let all = Self.choices(for: a)
        guard !all.isEmpty else { return }
        let index = all.firstIndex(of: choice) ?? 0
        self = try ABState(a: a, choice: all[(index + step + all.count) % all.count], cursor: cursor, loader: loader)
    }

    /// Per layer, the two sides' agreement over tokens 1…cursor.
    public func agreement(with a: ExplorerSession, through cursor: Int, nearTie: Double) -> [LayerAgreement] {
        var sums = AgreementAccumulator(layers: a.model.routedLayerCount, nearTie: nearTie)
        let n = min(cursor + 1, a.traces.count, session.traces.count)
        sums.add(Array(a.traces[0..<n]), Array(session.traces[0..<n]))
        return sums.layers(routedLayers: a.model.routedLayers)
    }

    /// Whether the two sides' top-k sets differ for token `index` at `layer`; nil before it is decoded.
    public func disagrees(with a: ExplorerSession, token index: Int, layer: Int) -> Bool? {
        guard index < a.traces.count, index < session.traces.count else { return nil }
        return Set(a.traces[index].layers[layer].experts) != Set(session.traces[index].layers[layer].experts)
    }
}

/// The fragility lens: heat cells shaded by the selection margin, near-ties marked.
public struct FragilityLens: Equatable, Sendable {
    public var isOn = false
    /// Margins below this are near-ties.
    public var threshold: Double

    public init(experts: Int) { threshold = RoutingAgreement.defaultNearTie(experts: experts) }

    /// How fragile a decision is, 0 (margin ≥ 4 × threshold) to 1 (a tie); nil when every expert is chosen.
    public func fragility(_ routing: LayerRouting) -> Double? {
        guard let margin = routing.selectionMargin, margin.isFinite else { return nil }
        return max(0, min(1, 1 - margin / (4 * threshold)))
    }

    public func isNearTie(_ routing: LayerRouting) -> Bool { AgreementAccumulator.isNearTie(routing, threshold: threshold) }

    /// The unchosen expert with the highest probability: the one a flip would bring in.
    public static func runnerUp(_ routing: LayerRouting) -> Int? {
        var best: Int?
        for (e, p) in routing.probabilities.enumerated() where !routing.experts.contains(e) && p.isFinite {
            if best == nil || p > routing.probabilities[best!] { best = e }
        }
        return best
    }

    /// Share of decisions at `layer` over `traces` that are near-ties.
    public func fragileShare(_ traces: ArraySlice<RoutingTrace>, layer: Int) -> Double {
        guard !traces.isEmpty else { return 0 }
        return Double(traces.filter { isNearTie($0.layers[layer]) }.count) / Double(traces.count)
    }

    /// "0.0125" / "4e-04": the threshold as the status and legends print it.
    public var thresholdText: String { threshold >= 0.001 ? String(format: "%.4g", threshold) : String(format: "%.0e", threshold) }
}

/// A note for the status line, as an error a key's action can throw.
struct ExplorerMessage: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
