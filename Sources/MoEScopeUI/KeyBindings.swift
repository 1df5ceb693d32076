import MoECore

/// A key press, as the explorer understands it (the backend translates ncurses codes and
/// bracketed-paste sequences).
public enum Key: Equatable, Sendable {
    case left, right, up, down, home, end, pageUp, pageDown, tab, backTab, enter, escape, backspace, delete, resize
    case character(Character)
    /// Text the terminal delivered as one bracketed paste (newlines and escapes included).
    case paste(String)

    /// Ctrl + a letter, as terminals send it.
    public static func control(_ letter: Character) -> Key {
        .character(Character(Unicode.Scalar(letter.asciiValue! & 0x1F)))
    }
}

/// What a key does outside text editing.
public enum Action: Equatable, Sendable {
    case previousToken, nextToken, firstToken, lastToken, previousLayer, nextLayer, togglePlay
    case router(Int)
    case nextRouter, previousRouter
    case edit, generate, nextView, previousView
    case previousExpert, nextExpert, previousExpertPage, nextExpertPage, zoomIn, zoomOut, cycleOrder
    case abView, nextSideB, previousSideB, toggleFragility, lowerNearTie, raiseNearTie
    case previousWindow, nextWindow, jump
    case help, quit
}

/// One row of the key table: the keys, how the footer and help name them, and what they do.
public struct KeyBinding: Sendable {
    public let keys: [(key: Key, action: Action)]
    /// The keys as the help overlay and `--help` write them ("← →").
    public let label: String
    /// The keys in the footer ("←/→").
    public let footerLabel: String
    /// The footer's one or two words; nil keeps the binding out of the footer.
    public let footer: String?
    /// Lower comes first, and stays longest when the footer must drop entries.
    public let footerPriority: Int
    public let help: String
    /// Only for moescope's own models (they switch between its trained routers).
    public let ownModelsOnly: Bool
    /// Only for recorded traces (they are read a window at a time).
    public let recordingsOnly: Bool

    init(
        _ keys: [(Key, Action)], label: String, footerLabel: String? = nil, footer: String?, priority: Int = 9,
        help: String, ownModelsOnly: Bool = false, recordingsOnly: Bool = false
    ) {
        self.keys = keys.map { (key: $0.0, action: $0.1) }
        self.label = label
        self.footerLabel = footerLabel ?? label
        self.footer = footer
        footerPriority = priority
        self.help = help
        self.ownModelsOnly = ownModelsOnly
        self.recordingsOnly = recordingsOnly
    }
}

/// Every key of the explorer, in one table: `ExplorerState` dispatches through it, and the
/// footer, the help overlay and `moescope explore --help` are written from it.
public enum KeyBindings {
    static let routers = RouterKind.allCases
    /// "1–7": the router digits as one range.
    public static let routerDigits = "1–\(routers.count)"

    public static let table: [KeyBinding] = [
        KeyBinding(
            [(.left, .previousToken), (.right, .nextToken)], label: "←  →", footerLabel: "←/→", footer: "token", priority: 0,
            help: "previous / next token (the model decodes as you go)"),
        KeyBinding(
            [(.up, .previousLayer), (.down, .nextLayer)], label: "↑  ↓", footerLabel: "↑/↓", footer: "layer", priority: 0,
            help: "previous / next layer (the layer axis scrolls to keep it in view)"),
        KeyBinding(
            [(.character("["), .previousExpert), (.character("]"), .nextExpert)], label: "[  ]", footerLabel: "[/]",
            footer: "expert", priority: 1, help: "previous / next expert on the expert axis (the expert cursor)"),
        KeyBinding(
            [(.character("{"), .previousExpertPage), (.character("}"), .nextExpertPage)], label: "{  }", footerLabel: "{/}",
            footer: nil, help: "expert cursor back / forward by a group (or 8 experts)"),
        KeyBinding(
            [(.character("-"), .zoomOut), (.character("+"), .zoomIn), (.character("="), .zoomIn)], label: "-  +",
            footerLabel: "-/+", footer: "zoom", priority: 4,
            help: "zoom the expert axis: fit every expert · one column each · numbers (panning with the cursor)"),
        KeyBinding(
            [(.character("o"), .cycleOrder)], label: "o", footer: "order", priority: 5,
            help: "order experts by id · by load · by the current token's probability"),
        KeyBinding(
            [(.home, .firstToken), (.end, .lastToken)], label: "Home  End", footerLabel: "Home/End", footer: nil,
            help: "first / last token"),
        KeyBinding(
            [(.pageUp, .previousWindow), (.pageDown, .nextWindow)], label: "PgUp PgDn", footerLabel: "PgUp/PgDn", footer: "page",
            priority: 1,
            help: "recorded trace: previous / next \(ExplorerState.recordingWindow) tokens (← → Home End also cross windows)",
            recordingsOnly: true),
        KeyBinding(
            [(.character("j"), .jump)], label: "j", footer: "jump", priority: 2,
            help: "recorded trace: jump to a token (its number) or a document (d and its number, e.g. d3)", recordingsOnly: true),
        KeyBinding(
            [(.character(" "), .togglePlay)], label: "space", footer: "play", priority: 6,
            help: "play / pause streaming through the text"),
        KeyBinding(
            routers.map { (.character(Character(String($0.number))), .router($0.number)) }, label: "1 … \(routers.count)",
            footerLabel: "\(routerDigits)/r", footer: "router", priority: 3,
            help: "switch router: " + routers.map { "\($0.number) \($0.displayName)" }.joined(separator: ", "),
            ownModelsOnly: true),
        KeyBinding(
            [(.character("r"), .nextRouter), (.character("R"), .previousRouter)], label: "r  R", footer: nil,
            help: "next / previous router (same text, cursor stays on the token)", ownModelsOnly: true),
        KeyBinding(
            [(.character("c"), .abView), (.character("b"), .nextSideB), (.character("B"), .previousSideB)], label: "c  b B",
            footerLabel: "c", footer: "A/B", priority: 2,
            help:
                "A/B view: two routings of the same tokens and their agreement (c again: back); b / B: side B's router, rule variant or perturbation"
        ),
        KeyBinding(
            [(.character("f"), .toggleFragility), (.character("<"), .lowerNearTie), (.character(">"), .raiseNearTie)], label: "f  < >",
            footerLabel: "f", footer: "fragile", priority: 6,
            help: "fragility lens: shade by the selection margin, ! near-tie, ? runner-up; < / > halve / double the near-tie threshold"),
        KeyBinding(
            [(.character("e"), .edit)], label: "e", footer: "edit", priority: 5,
            help: "edit the text (readline keys, paste; Enter runs it, Esc cancels)"),
        KeyBinding(
            [(.character("g"), .generate)], label: "g", footer: "generate", priority: 7,
            help: "generate the next \(ExplorerState.generationLength) tokens"),
        KeyBinding(
            [(.tab, .nextView), (.backTab, .previousView)], label: "Tab ⇧Tab", footerLabel: "Tab", footer: "view", priority: 1,
            help: "next / previous view: " + ExplorerView.allCases.map(\.title).joined(separator: " · ")),
        KeyBinding(
            [(.character("?"), .help), (.character("h"), .help)], label: "?  h", footerLabel: "?", footer: "help", priority: 0,
            help: "this help (any key closes it; q quits)"),
        KeyBinding([(.character("q"), .quit), (.control("c"), .quit)], label: "q", footer: "quit", priority: 0, help: "quit"),
    ]

    /// The action bound to `key`, if any.
    public static func action(for key: Key) -> Action? {
        for binding in table { for entry in binding.keys where entry.key == key { return entry.action } }
        return nil
    }

    /// The bindings that apply to a session (router keys only for moescope's own models, paging
    /// only for recorded traces).
    public static func applicable(ownModel: Bool, recording: Bool = false) -> [KeyBinding] {
        table.filter { (ownModel || !$0.ownModelsOnly) && (recording || !$0.recordingsOnly) }
    }

    /// The help overlay's lines.
    public static func helpLines(ownModel: Bool, recording: Bool = false) -> [String] {
        let width = max(12, (table.map(\.label.count).max() ?? 8) + 2)
        return table.filter { recording || !$0.recordingsOnly }.map { binding in
            let note = binding.ownModelsOnly && !ownModel ? "(moescope's own models only: this one has its own router) " : ""
            return binding.label.padding(toLength: width, withPad: " ", startingAt: 0) + note + binding.help
        }
    }

    /// The footer: as many bindings as fit in `width`, most important first, in table order;
    /// when even the essentials do not fit, their keys alone.
    public static func footer(width: Int, ownModel: Bool, recording: Bool = false) -> String {
        let entries = applicable(ownModel: ownModel, recording: recording).filter { $0.footer != nil }
        for limit in stride(from: 9, through: 0, by: -1) {
            let shown = entries.filter { $0.footerPriority <= limit }.map { "\($0.footerLabel) \($0.footer!)" }
            let line = shown.joined(separator: "  ")
            if line.count <= width { return line }
        }
        let keysOnly = entries.filter { $0.footerPriority == 0 }.map(\.footerLabel).joined(separator: " ")
        return keysOnly.count <= width ? keysOnly : ""
    }

    /// `moescope explore --help`'s key list.
    public static var commandHelp: String {
        "Keys: " + table.map { "\($0.label.replacingOccurrences(of: "  ", with: " ")) \($0.help)" }.joined(separator: "; ") + "."
    }
}
