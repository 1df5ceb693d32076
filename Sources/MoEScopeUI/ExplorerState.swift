import Foundation
import MoECore

/// The explorer's views, cycled with Tab.
public enum ExplorerView: CaseIterable, Sendable {
    case dashboard, crossLayer, expertNorms, expertSimilarity, coActivation, expert

    public var title: String {
        switch self {
        case .dashboard: "Routing"
        case .expert: "Expert"
        case .crossLayer: "Cross-layer dependence"
        case .expertNorms: "Gate vs expert norm"
        case .expertSimilarity: "Expert similarity"
        case .coActivation: "Co-activation"
        }
    }
}

/// Loads the model trained with a router (the executable knows where checkpoints live), for
/// given tokens or a text to encode. A Hugging Face model has no moescope router (nil) and is
/// loaded the same whatever router is asked for.
public typealias SessionLoader = (RouterKind?, [Int]?, String?) throws -> ExplorerSession

/// Everything the TUI shows and every key's effect, with no terminal in sight: tests drive it
/// with `handle(_:)` and read the rendered `CellGrid`.
public struct ExplorerState {
    public private(set) var session: ExplorerSession
    public private(set) var cursor = 0
    public private(set) var layer = 0
    /// The expert cursor: the expert the Expert view describes and the axes highlight.
    public private(set) var expert = 0
    public private(set) var expertZoom: ExpertZoom = .fit
    public private(set) var expertOrder: ExpertOrder = .id
    public private(set) var view: ExplorerView = .dashboard
    public private(set) var playing = false
    public private(set) var showingHelp = false
    /// The text field after `e` (or `j`); nil when not editing.
    public private(set) var editor: LineEditor?
    public private(set) var editorPurpose: EditorPurpose = .text
    public enum EditorPurpose: Sendable { case text, jump }
    /// Tokens still to generate after `g`, one per tick.
    public private(set) var pendingGeneration = 0
    /// A one-line message for the status bar (errors, notes).
    public private(set) var message: String?
    public private(set) var quitRequested = false
    /// Whether the A/B view is open (`c`): over whichever view was showing, which it returns to.
    public private(set) var isComparing = false
    /// Side B of the A/B view, while that view is open (or was, and the tokens still match).
    public private(set) var ab: ABState?
    public private(set) var lens: FragilityLens
    let loader: SessionLoader
    /// Tokens generated per `g`.
    public static let generationLength = 16
    /// Tokens of a recorded trace held at once: the session keeps the routing of every token of
    /// its window (at DeepSeek-V3's shape, 58 layers × 256 experts, about 120 KB a token), so a
    /// trace of any length is shown through a window this long — a few screens of tokens —
    /// and memory stays the same whatever the trace's length.
    public static let recordingWindow = 256

    /// The recording and the stretch of it on show; nil for a model that runs.
    public var recordedWindow: RecordedRoutingModel? { session.model as? RecordedRoutingModel }

    /// The tokens the load, history and expert panels count: "tokens 1–N" up to the cursor; in
    /// a recorded trace, numbered in the whole trace from the window's first token.
    public var countedTokens: String {
        let first = (recordedWindow?.window.lowerBound ?? 0) + 1
        return "tokens \(first)–\(first + cursor)"
    }

    /// Where the cursor is in the whole recorded trace.
    public var recordedPosition: (token: Int, tokens: Int, document: Int, documents: Int, domain: String)? {
        guard let recorded = recordedWindow else { return nil }
        let trace = recorded.trace
        let token = recorded.window.lowerBound + cursor
        let document = trace.document(of: token)
        return (token, trace.tokenCount, document, trace.documentCount, trace.domains[document])
    }
    public init(loader: @escaping SessionLoader, router: RouterKind?, text: String) throws {
        self.loader = loader
        session = try loader(router, nil, text)
        lens = FragilityLens(experts: session.model.numExperts)
        try session.decode(through: 0)
        if session.isRandomInit, let router { message = "no trained \(router.rawValue) checkpoint: random weights, routing is noise" }
    }

    public var tokenCount: Int { session.tokens.count }
    public var numLayers: Int { session.model.routedLayerCount }
    public var numExperts: Int { session.model.numExperts }
    /// "L3": the model's own index of routed layer `i` (they differ where dense layers are skipped).
    public func layerName(_ i: Int) -> String { "L\(session.model.routedLayers[i])" }
    public var currentTrace: RoutingTrace { session.traces[cursor] }
    public var currentRouting: LayerRouting { currentTrace.layers[layer] }
    public var palette = Palette(mode: .full256)
    /// The text being typed, while editing.
    public var editBuffer: String? { editor?.text }
    /// Whether this is one of moescope's own models (router keys apply).
    public var isOwnModel: Bool { session.router != nil }

    /// Whether ticks should keep coming quickly (streaming or generating).
    public var isAnimating: Bool { playing || pendingGeneration > 0 }

    public mutating func handle(_ key: Key) {
        if editor != nil { return handleEditing(key) }
        if showingHelp {
            // Any key closes the help; the quit keys also quit, as the table binds them.
            if KeyBindings.action(for: key) == .quit { quitRequested = true }
            if key != .resize { showingHelp = false }
            return
        }
        if case .paste = key {
            // A paste outside the text field opens it, so nothing pasted is taken as keys.
            startEditing()
            return handleEditing(key)
        }
        guard let action = KeyBindings.action(for: key) else { return }
        message = nil
        do { try perform(action) } catch { message = "\(error)" }
        followSideB()
    }

    /// In the A/B view, side B follows side A: the same tokens, decoded as far as the cursor.
    mutating func followSideB() {
        guard isComparing else { return }
        do {
            if ab == nil {
                ab = try ABState(a: session, choice: nil, cursor: cursor, loader: loader)
            } else {
                var side = ab!
                try side.follow(session, cursor: cursor, loader: loader)
                ab = side
            }
        } catch {
            ab = nil
            message = "\(error)"
        }
    }

    /// This state with side B's session in place of side A's: every view draws side B this way.
    public var sideB: ExplorerState? {
        guard let ab else { return nil }
        var copy = self
        copy.session = ab.session
        return copy
    }

    mutating func perform(_ action: Action) throws {
        let experts = numExperts
        let page = session.model.expertGroupSize.map { $0 < experts ? $0 : 8 } ?? 8
        if let recorded = recordedWindow {
            // A recorded trace: moves are in the whole trace, and cross windows.
            let window = recorded.window
            let here = window.lowerBound + cursor
            switch action {
            case .nextToken: return try showRecorded(token: here + 1)
            case .previousToken: return try showRecorded(token: here - 1)
            case .firstToken: return try showRecorded(token: 0)
            case .lastToken: return try showRecorded(token: recorded.trace.tokenCount - 1)
            case .nextWindow:
                guard window.upperBound < recorded.trace.tokenCount else {
                    message = "the last window of the trace: it ends at token \(recorded.trace.tokenCount)"
                    return
                }
                return try showRecorded(token: window.upperBound, windowStart: window.upperBound)
            case .previousWindow:
                let start = max(0, window.lowerBound - Self.recordingWindow)
                return try showRecorded(token: start, windowStart: start)
            case .jump:
                editor = LineEditor("")
                editorPurpose = .jump
                playing = false
                return
            default: break
            }
        }
        switch action {
        case .nextToken: try move(to: cursor + 1)
        case .previousToken: try move(to: cursor - 1)
        case .firstToken: try move(to: 0)
        case .lastToken: try move(to: tokenCount - 1)
        case .nextWindow, .previousWindow, .jump:
            message = "PgUp, PgDn and j page through a recorded trace (moescope --trace FILE); this text is shown whole"
        case .previousLayer: layer = max(0, layer - 1)
        case .nextLayer: layer = min(numLayers - 1, layer + 1)
        case .nextView:
            isComparing = false
            view = ExplorerView.allCases[(ExplorerView.allCases.firstIndex(of: view)! + 1) % ExplorerView.allCases.count]
        case .previousView:
            isComparing = false
            let all = ExplorerView.allCases
            view = all[(all.firstIndex(of: view)! + all.count - 1) % all.count]
        case .togglePlay:
            if cursor == tokenCount - 1 && !playing { try move(to: 0) }
            playing.toggle()
        case .quit: quitRequested = true
        case .help: showingHelp = true
        case .edit: startEditing()
        case .generate:
            guard session.model.recording == nil else {
                message = "A recorded trace replays its own tokens: it cannot generate"
                return
            }
            pendingGeneration = Self.generationLength
            playing = false
        case .nextRouter: try switchRouter(to: RouterKind.allCases[(session.router?.number ?? 0) % RouterKind.allCases.count])
        case .previousRouter:
            let count = RouterKind.allCases.count
            try switchRouter(to: RouterKind.allCases[((session.router?.number ?? 1) + count - 2) % count])
        case .router(let number): try switchRouter(to: RouterKind.allCases[number - 1])
        case .previousExpert, .nextExpert, .previousExpertPage, .nextExpertPage:
            // The cursor moves along the axis as it is shown (by load, by probability or by id).
            let order = ExpertOrdering.order(self)
            let position = order.firstIndex(of: expert) ?? 0
            let step = action == .previousExpert ? -1 : action == .nextExpert ? 1 : action == .previousExpertPage ? -page : page
            expert = order[max(0, min(experts - 1, position + step))]
        case .zoomIn: expertZoom = ExpertZoom(rawValue: min(ExpertZoom.allCases.count - 1, expertZoom.rawValue + 1))!
        case .zoomOut: expertZoom = ExpertZoom(rawValue: max(0, expertZoom.rawValue - 1))!
        case .abView: isComparing.toggle()
        case .nextSideB, .previousSideB:
            guard isComparing else {
                message = "b and B choose side B of the A/B view — press c to open it"
                return
            }
            followSideB()
            guard var side = ab else { return }
            try side.cycle(by: action == .nextSideB ? 1 : -1, a: session, cursor: cursor, loader: loader)
            ab = side
        case .toggleFragility:
            lens.isOn.toggle()
            message =
                lens.isOn ? "fragility lens on: ! near-tie (selection margin < \(lens.thresholdText)), ? the expert it would let in" : nil
        case .lowerNearTie, .raiseNearTie:
            lens.threshold = max(1e-6, min(0.5, lens.threshold * (action == .raiseNearTie ? 2 : 0.5)))
            message = "near-tie threshold \(lens.thresholdText) (selection margin)"
        case .cycleOrder:
            expertOrder = ExpertOrder.allCases[(ExpertOrder.allCases.firstIndex(of: expertOrder)! + 1) % ExpertOrder.allCases.count]
            message = "experts ordered \(expertOrder.name)"
        }
    }

    /// Advances streaming or generation by one token; called by the run loop's timer.
    public mutating func tick() {
        do {
            if pendingGeneration > 0 {
                pendingGeneration -= 1
                if try session.generateNext() {
                    try move(to: tokenCount - 1)
                } else {
                    pendingGeneration = 0
                    message = "the context is full (\(session.capacity) tokens) — press e for a new text"
                }
            } else if playing {
                if let position = recordedPosition {
                    if position.token + 1 < position.tokens { try showRecorded(token: position.token + 1) } else { playing = false }
                } else if cursor + 1 < tokenCount {
                    try move(to: cursor + 1)
                } else {
                    playing = false
                }
            }
        } catch {
            message = "\(error)"
            playing = false
            pendingGeneration = 0
        }
        followSideB()
    }

    /// Puts the cursor on token `token` of the whole recorded trace: within the window on show
    /// it only moves; outside it (or with `windowStart`), the window is replaced by the one
    /// starting at `windowStart` — by default one that centres the token — and decoded from the
    /// recording up to the cursor. Nothing outside the window is kept.
    mutating func showRecorded(token: Int, windowStart: Int? = nil) throws {
        guard let recorded = recordedWindow else { return }
        let trace = recorded.trace
        let target = max(0, min(trace.tokenCount - 1, token))
        if windowStart == nil, recorded.window.contains(target) { return try move(to: target - recorded.window.lowerBound) }
        let w = Self.recordingWindow
        let start = max(0, min(windowStart ?? (target - w / 2), trace.tokenCount - w))
        let window = RecordedRoutingModel(trace: trace, window: start..<start + w)
        session = ExplorerSession(
            model: window, tokenizer: session.tokenizer, label: session.label, isRandomInit: false, tokens: window.tokens)
        cursor = 0
        try move(to: target - window.window.lowerBound)
    }

    /// `j`'s answer: "1234" is token 1234 (as the status line counts, from 1); "d3" the start of document 3.
    mutating func jump(to answer: String) throws {
        guard let recorded = recordedWindow else { return }
        let trace = recorded.trace
        let text = answer.trimmingCharacters(in: .whitespaces).lowercased().replacingOccurrences(of: ",", with: "")
        if text.hasPrefix("d"), let document = Int(text.dropFirst()) {
            guard (1...trace.documentCount).contains(document) else {
                message = "document \(document)? The trace holds documents 1–\(trace.documentCount)"
                return
            }
            return try showRecorded(token: trace.documentOffsets[document - 1])
        }
        guard let token = Int(text), (1...trace.tokenCount).contains(token) else {
            message = "'\(answer)': give a token number 1–\(trace.tokenCount), or d and a document number 1–\(trace.documentCount)"
            return
        }
        try showRecorded(token: token - 1)
    }

    mutating func move(to index: Int) throws {
        let target = max(0, min(tokenCount - 1, index))
        try session.decode(through: target)
        cursor = target
    }

    /// Re-runs the same tokens through `router`'s checkpoint, keeping the cursor on the same token.
    public mutating func switchRouter(to router: RouterKind) throws {
        if session.model.recording != nil {
            message = "A recorded trace has one router, the one that recorded it"
            return
        }
        guard session.router != nil else {
            // Short enough for an 80-column footer; the status line names the router.
            message = "This model has its own router; \(KeyBindings.routerDigits), r and R switch only moescope's own models"
            return
        }
        guard router != session.router else { return }
        // The model being left frees its packed copies first, so the two models' weights are
        // not held with both their copies at once (a failed switch rebuilds them on use).
        session.model.releaseInferenceCopies()
        var next = try loader(router, session.tokens, nil)
        try next.decode(through: cursor)
        session = next
        message = next.isRandomInit ? "no trained \(router.rawValue) checkpoint: random weights, routing is noise" : nil
    }

    /// Opens the text field on the current text, cursor at its end.
    mutating func startEditing() {
        guard session.model.recording == nil else {
            message = "A recorded trace replays its own tokens: it takes no new text"
            return
        }
        editor = LineEditor(session.tokenizer.decode(session.tokens))
        editorPurpose = .text
        playing = false
        message = nil
    }

    private mutating func handleEditing(_ key: Key) {
        guard var field = editor else { return }
        switch key {
        case .escape, .control("c"):
            editor = nil
            return  // Ctrl-C abandons the line, as in readline
        case .enter where editorPurpose == .jump:
            editor = nil
            do { try jump(to: field.text) } catch { message = "\(error)" }
            return
        case .enter:
            editor = nil
            let tokens = session.tokenizer.encode(field.text)
            do { try InferenceError.check(count: tokens.count) } catch {
                message = "\(error)"
                return
            }
            do {
                session = session.restarted(with: tokens)
                cursor = 0
                try session.decode(through: 0)
                if session.tokens.count == session.capacity {
                    message = "the text was cut to the model's context of \(session.capacity) tokens"
                }
            } catch { message = "\(error)" }
            followSideB()
            return
        default: field.handle(key)
        }
        editor = field
    }
}

/// The display order of the expert axis for a state.
enum ExpertOrdering {
    static func order(_ state: ExplorerState, load: [Int]? = nil) -> [Int] {
        let ids = Array(0..<state.numExperts)
        switch state.expertOrder {
        case .id: return ids
        case .load:
            let counts = load ?? LoadSoFar.counts(state, layer: state.layer)
            return ids.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
        case .probability:
            let p = state.currentRouting.probabilities
            func key(_ e: Int) -> Float { p[e].isFinite ? p[e] : -.infinity }
            return ids.sorted { key($0) != key($1) ? key($0) > key($1) : $0 < $1 }
        }
    }
}

/// Routed slots per expert over tokens 1…cursor.
enum LoadSoFar {
    static func counts(_ state: ExplorerState, layer: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: state.numExperts)
        for trace in state.session.traces[0...state.cursor] {
            for e in trace.layers[layer].experts where e >= 0 && e < counts.count { counts[e] += 1 }
        }
        return counts
    }
}
