import CNcursesw
import Foundation
import MoECore
import Synchronization

/// The only code that talks to ncurses: copies a `CellGrid` to the screen and turns key codes
/// into `Key`s. Everything else in the UI is plain data.
final class NcursesTerminal {
    let colorMode: ColorMode
    private var pairs: [Int: Int16] = [:]
    private let colors: Int32

    /// The terminal cannot show UTF-8 (a non-UTF-8 locale such as LANG=C): draw in ASCII.
    let asciiOnly: Bool

    /// Starts curses on the terminal `TERM` names; throws (without touching the screen) when
    /// there is none, it is `dumb`, or terminfo does not know it.
    init(noColor: Bool, environment: [String: String]) throws {
        try ExplorerApp.checkTerminal(environment)
        setlocale(LC_ALL, "")
        asciiOnly = String(cString: moescope_codeset()).uppercased().replacingOccurrences(of: "-", with: "") != "UTF8"
        guard moescope_newterm() != nil else {
            throw TerminalError(
                "the terminal type \"\(environment["TERM"] ?? "")\" is not in this system's terminfo database — set TERM to one it knows, e.g. TERM=xterm-256color"
            )
        }
        raw()
        noecho()
        keypad(moescope_stdscr(), true)
        curs_set(0)
        set_escdelay(25)
        if !noColor && has_colors() {
            start_color()
            use_default_colors()
            colors = moescope_colors()
            colorMode = colors >= 256 ? .full256 : colors >= 8 ? .basic : .monochrome
        } else {
            colors = 0
            colorMode = .monochrome
        }
        // Bracketed paste: the terminal wraps pasted text in ESC[200~ … ESC[201~, so a pasted
        // newline or escape is text, never a key.
        moescope_write_raw(Self.bracketedPasteOn)
    }

    /// Leaves the screen as it was. Safe to call more than once.
    func restore() {
        if isendwin() == false {
            moescope_write_raw(Self.bracketedPasteOff)
            endwin()
        }
    }

    static let bracketedPasteOn = "\u{1B}[?2004h", bracketedPasteOff = "\u{1B}[?2004l"

    var size: (width: Int, height: Int) { (Int(moescope_cols()), Int(moescope_lines())) }

    func draw(_ grid: CellGrid) {
        erase()
        var wide: [wchar_t] = []
        for y in 0..<grid.height {
            var x = 0
            while x < grid.width {
                let style = grid[x, y].style
                var end = x
                wide.removeAll(keepingCapacity: true)
                while end < grid.width, grid[end, y].style == style {
                    for scalar in grid[end, y].character.unicodeScalars.prefix(1) { wide.append(wchar_t(bitPattern: scalar.value)) }
                    end += 1
                }
                apply(style)
                wide.append(0)
                _ = wide.withUnsafeBufferPointer { mvaddnwstr(Int32(y), Int32(x), $0.baseAddress!, Int32(wide.count - 1)) }
                x = end
            }
        }
        attr_set(moescope_a_normal(), 0, nil)
        refresh()
    }

    private func apply(_ style: CellStyle) {
        var attributes = moescope_a_normal()
        if style.bold { attributes |= moescope_a_bold() }
        if style.reverse { attributes |= moescope_a_reverse() }
        if style.dim { attributes |= moescope_a_dim() }
        if style.underline { attributes |= moescope_a_underline() }
        var pair: Int16 = 0
        if colorMode != .monochrome, style.foreground != nil || style.background != nil {
            var fg = style.foreground.map(Int32.init) ?? -1
            var bg = style.background.map(Int32.init) ?? -1
            // 8-colour terminals: bright colours become bold normal ones.
            if colors < 16 {
                if fg >= 8 {
                    fg -= 8
                    attributes |= moescope_a_bold()
                }
                if bg >= 8 { bg -= 8 }
            }
            let key = Int(fg + 1) << 16 | Int(bg + 1)
            if let known = pairs[key] {
                pair = known
            } else if pairs.count + 1 < Int(moescope_color_pairs()) && pairs.count < Int(Int16.max) {
                pair = Int16(pairs.count + 1)
                init_pair(pair, Int16(fg), Int16(bg))
                pairs[key] = pair
            }
        }
        attr_set(attributes, pair, nil)
    }

    /// The next key, waiting at most `milliseconds`; nil on timeout.
    func readKey(timeoutMilliseconds milliseconds: Int32) -> Key? {
        timeout(milliseconds)
        var code: wint_t = 0
        let result = get_wch(&code)
        if result == ERR { return nil }
        if result == moescope_key_code_yes() {
            switch Int32(code) {
            case KEY_LEFT: return .left
            case KEY_RIGHT: return .right
            case KEY_UP: return .up
            case KEY_DOWN: return .down
            case KEY_HOME: return .home
            case KEY_END: return .end
            case KEY_PPAGE: return .pageUp
            case KEY_NPAGE: return .pageDown
            case KEY_BTAB: return .backTab
            case KEY_ENTER: return .enter
            case KEY_BACKSPACE: return .backspace
            case KEY_DC: return .delete
            case KEY_RESIZE: return .resize
            default: return nil
            }
        }
        switch code {
        case 27: return readEscapeSequence()
        case 9: return .tab
        case 10, 13: return .enter
        case 8, 127: return .backspace
        default:
            guard let scalar = Unicode.Scalar(UInt32(code)) else { return nil }
            return .character(Character(scalar))
        }
    }

    /// After ESC: a bracketed paste (ESC[200~ text ESC[201~) becomes one `.paste`; a lone ESC is
    /// Escape; any other sequence (an Alt-key, an unknown function key) is dropped whole.
    private func readEscapeSequence() -> Key? {
        func next(_ milliseconds: Int32) -> Character? {
            timeout(milliseconds)
            var code: wint_t = 0
            let result = get_wch(&code)
            guard result != ERR else { return nil }
            if result == moescope_key_code_yes() { return "\u{FFFD}" }
            return Unicode.Scalar(UInt32(code)).map(Character.init) ?? "\u{FFFD}"
        }
        var sequence = ""
        while sequence.count < 8, let c = next(0) {
            sequence.append(c)
            if c.isLetter || c == "~" { break }
        }
        if sequence.isEmpty { return .escape }
        guard sequence == "[200~" else { return nil }
        // The paste body, up to the end marker (or a pause: a terminal that lost the marker).
        var text: [Character] = []
        let end: [Character] = ["\u{1B}", "[", "2", "0", "1", "~"]
        while text.count < 1_000_000, let c = next(200) {
            text.append(c)
            if text.count >= end.count, Array(text.suffix(end.count)) == end {
                text.removeLast(end.count)
                break
            }
        }
        // Terminals send Enter in a paste as CR; keep line breaks as "\n".
        return .paste(String(text).replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n"))
    }
}

/// Why the explorer cannot start on this terminal (one line, for the command to print).
public struct TerminalError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Runs the explorer until `q`, a signal, or an error; the terminal is restored in every case.
public enum ExplorerApp {
    private static let signalReceived = Atomic<Int32>(0)

    public enum Outcome: Equatable { case quit, signal(Int32) }

    /// Throws when `TERM` cannot run a full-screen program: unset, empty, or `dumb`.
    public static func checkTerminal(_ environment: [String: String]) throws {
        let term = environment["TERM"] ?? ""
        if term.isEmpty {
            throw TerminalError(
                "TERM is not set, so the explorer cannot drive this terminal — run it in a terminal emulator, or set TERM (e.g. TERM=xterm-256color); `moescope trace` prints routing without one"
            )
        }
        if term == "dumb" {
            throw TerminalError(
                "TERM=dumb cannot move the cursor, which the explorer needs — run it in a full terminal (e.g. TERM=xterm-256color), or use `moescope trace`"
            )
        }
    }

    public static func run(_ initial: ExplorerState, noColor: Bool, environment: [String: String]) throws -> Outcome {
        for number in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] {
            signal(number) { ExplorerApp.signalReceived.store($0, ordering: .relaxed) }
        }
        var state = initial
        let terminal = try NcursesTerminal(noColor: noColor, environment: environment)
        defer { terminal.restore() }
        state.palette = Palette(mode: terminal.colorMode, asciiOnly: terminal.asciiOnly)
        var lastTick = monotonicNanoseconds()
        var failedReads = 0
        while true {
            let (width, height) = terminal.size
            terminal.draw(ExplorerRenderer.render(state, width: width, height: height))
            let wait: Int32 = state.isAnimating ? 40 : 200
            let asked = monotonicNanoseconds()
            let key = terminal.readKey(timeoutMilliseconds: wait)
            let received = signalReceived.load(ordering: .relaxed)
            if received != 0 { return .signal(received) }
            // A terminal that went away without a SIGHUP (its pty closed) makes every read fail
            // at once; without this the loop would spin on a dead terminal for ever.
            if key == nil && secondsSince(asked) < Double(wait) / 4000 {
                failedReads += 1
                if failedReads > 50 { return .signal(SIGHUP) }
            } else {
                failedReads = 0
            }
            if let key { state.handle(key) }
            if state.quitRequested { return .quit }
            let interval = state.pendingGeneration > 0 ? 0.05 : 0.15
            if state.isAnimating, secondsSince(lastTick) >= interval {
                state.tick()
                lastTick = monotonicNanoseconds()
            }
        }
    }
}
