import MoECore

/// A key press, as the explorer understands it (the backend translates ncurses codes).
public enum Key: Equatable, Sendable {
    case left, right, up, down, home, end, tab, backTab, enter, escape, backspace, resize
    case character(Character)
}

/// The explorer's views, cycled with Tab.
public enum ExplorerView: CaseIterable, Sendable {
    case dashboard, crossLayer, expertNorms, expertSimilarity

    public var title: String {
        switch self {
        case .dashboard: "Routing"
        case .crossLayer: "Cross-layer dependence"
        case .expertNorms: "Gate vs expert norm"
        case .expertSimilarity: "Expert similarity"
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
    public private(set) var view: ExplorerView = .dashboard
    public private(set) var playing = false
    public private(set) var showingHelp = false
    /// Text being typed after `e`; nil when not editing.
    public private(set) var editBuffer: String?
    /// Tokens still to generate after `g`, one per tick.
    public private(set) var pendingGeneration = 0
    /// A one-line message for the status bar (errors, notes).
    public private(set) var message: String?
    public private(set) var quitRequested = false
    let loader: SessionLoader
    /// Tokens generated per `g`.
    public static let generationLength = 16

    public init(loader: @escaping SessionLoader, router: RouterKind?, text: String) throws {
        self.loader = loader
        session = try loader(router, nil, text)
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

    /// Whether ticks should keep coming quickly (streaming or generating).
    public var isAnimating: Bool { playing || pendingGeneration > 0 }

    public mutating func handle(_ key: Key) {
        if editBuffer != nil { return handleEditing(key) }
        if showingHelp {
            if key == .character("q") { quitRequested = true }
            if key != .resize { showingHelp = false }
            return
        }
        message = nil
        do {
            switch key {
            case .right: try move(to: cursor + 1)
            case .left: try move(to: cursor - 1)
            case .home: try move(to: 0)
            case .end: try move(to: tokenCount - 1)
            case .up: layer = max(0, layer - 1)
            case .down: layer = min(numLayers - 1, layer + 1)
            case .tab: view = ExplorerView.allCases[(ExplorerView.allCases.firstIndex(of: view)! + 1) % ExplorerView.allCases.count]
            case .backTab: view = ExplorerView.allCases[(ExplorerView.allCases.firstIndex(of: view)! + ExplorerView.allCases.count - 1) % ExplorerView.allCases.count]
            case .character(" "):
                if cursor == tokenCount - 1 && !playing { try move(to: 0) }
                playing.toggle()
            case .character("q"), .character("\u{03}"): quitRequested = true
            case .character("?"), .character("h"): showingHelp = true
            case .character("e"): editBuffer = ""; playing = false
            case .character("g"):
                pendingGeneration = Self.generationLength
                playing = false
            case .character("r"): try switchRouter(to: RouterKind.allCases[(session.router?.number ?? 0) % RouterKind.allCases.count])
            case .character("R"): try switchRouter(to: RouterKind.allCases[((session.router?.number ?? 1) + RouterKind.allCases.count - 2) % RouterKind.allCases.count])
            case let .character(c) where c.wholeNumberValue.map({ (1...RouterKind.allCases.count).contains($0) }) == true:
                try switchRouter(to: RouterKind.allCases[c.wholeNumberValue! - 1])
            default: break
            }
        } catch {
            message = "\(error)"
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
                if cursor + 1 < tokenCount { try move(to: cursor + 1) } else { playing = false }
            }
        } catch {
            message = "\(error)"; playing = false; pendingGeneration = 0
        }
    }

    mutating func move(to index: Int) throws {
        let target = max(0, min(tokenCount - 1, index))
        try session.decode(through: target)
        cursor = target
    }

    /// Re-runs the same tokens through `router`'s checkpoint, keeping the cursor on the same token.
    public mutating func switchRouter(to router: RouterKind) throws {
        guard session.router != nil else {
            message = "this model routes with its own \(session.model.routerName) router — 1–7 switch moescope's trained models"
            return
        }
        guard router != session.router else { return }
        var next = try loader(router, session.tokens, nil)
        try next.decode(through: cursor)
        session = next
        message = next.isRandomInit ? "no trained \(router.rawValue) checkpoint: random weights, routing is noise" : nil
    }

    private mutating func handleEditing(_ key: Key) {
        guard var buffer = editBuffer else { return }
        switch key {
        case .escape: editBuffer = nil; return
        case .enter:
            editBuffer = nil
            let tokens = session.tokenizer.encode(buffer)
            guard !tokens.isEmpty else { message = "the text is empty — type at least one character"; return }
            do {
                session = session.restarted(with: tokens)
                cursor = 0
                try session.decode(through: 0)
                if session.tokens.count == session.capacity {
                    message = "the text was cut to the model's context of \(session.capacity) tokens"
                }
            } catch { message = "\(error)" }
            return
        case .backspace: if !buffer.isEmpty { buffer.removeLast() }
        case let .character(c) where !c.isNewline: buffer.append(c)
        default: break
        }
        editBuffer = buffer
    }
}
