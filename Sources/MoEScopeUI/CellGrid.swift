/// A terminal colour as the views ask for it: one of the 256 xterm indices. The backend maps it
/// down for 8/16-colour terminals; monochrome rendering never sets one.
public typealias TerminalColor = UInt8

/// How a cell is drawn.
public struct CellStyle: Hashable, Sendable {
    public var foreground: TerminalColor?
    public var background: TerminalColor?
    public var bold = false
    public var reverse = false
    public var dim = false
    public var underline = false

    public init(
        foreground: TerminalColor? = nil, background: TerminalColor? = nil,
        bold: Bool = false, reverse: Bool = false, dim: Bool = false, underline: Bool = false
    ) {
        self.foreground = foreground
        self.background = background
        self.bold = bold
        self.reverse = reverse
        self.dim = dim
        self.underline = underline
    }

    public static let plain = CellStyle()
}

public struct Cell: Hashable, Sendable {
    public var character: Character
    public var style: CellStyle
    public init(_ character: Character = " ", style: CellStyle = .plain) {
        self.character = character
        self.style = style
    }
}

/// The screen as plain data: views draw here, tests read it back, and the terminal backend
/// copies it to ncurses. One cell per column (wide characters are not used by the views).
/// Every write is clipped to the grid, and a view's grid is exactly its `Rect`, so a view
/// cannot draw over its neighbours.
public struct CellGrid: Sendable {
    public let width: Int
    public let height: Int
    public private(set) var cells: [Cell]

    public init(width: Int, height: Int) {
        self.width = max(0, width)
        self.height = max(0, height)
        cells = Array(repeating: Cell(), count: self.width * self.height)
    }

    /// A blank grid the size of `rect` (a view's canvas).
    public init(_ rect: Rect) { self.init(width: rect.width, height: rect.height) }

    public var bounds: Rect { Rect(x: 0, y: 0, width: width, height: height) }

    public subscript(x: Int, y: Int) -> Cell {
        get { cells[y * width + x] }
        set { if x >= 0, y >= 0, x < width, y < height { cells[y * width + x] = newValue } }
    }

    /// Writes `text` from (x, y) in at most `maxWidth` columns (and never past the grid's edge).
    /// Text that does not fit ends in "…", so a cut is always visible. Returns the columns written.
    @discardableResult
    public mutating func put(_ text: String, x: Int, y: Int, style: CellStyle = .plain, maxWidth: Int = .max) -> Int {
        guard y >= 0, y < height, x < width else { return 0 }
        let room = min(maxWidth, width - x)
        guard room > 0 else { return 0 }
        let characters = Array(text)
        let shown: [Character] = characters.count <= room ? characters : characters.prefix(room - 1) + ["…"]
        for (offset, character) in shown.enumerated() where x + offset >= 0 {
            cells[y * width + x + offset] = Cell(character, style: style)
        }
        return shown.count
    }

    /// Sets one cell (clipped).
    public mutating func set(_ character: Character, x: Int, y: Int, style: CellStyle = .plain) {
        self[x, y] = Cell(character, style: style)
    }

    public mutating func fill(_ rect: Rect, with cell: Cell = Cell()) {
        for row in max(0, rect.y)..<min(height, rect.maxY) {
            for column in max(0, rect.x)..<min(width, rect.maxX) { cells[row * width + column] = cell }
        }
    }

    /// Copies `grid` to `origin`, clipped to this grid.
    public mutating func blit(_ grid: CellGrid, at origin: Rect) {
        for row in 0..<min(grid.height, origin.height) where origin.y + row >= 0 && origin.y + row < height {
            for column in 0..<min(grid.width, origin.width) where origin.x + column >= 0 && origin.x + column < width {
                cells[(origin.y + row) * width + origin.x + column] = grid.cells[row * grid.width + column]
            }
        }
    }

    /// Row `y` as text (what a test, or `tmux capture-pane`, would read).
    public func line(_ y: Int) -> String { String(cells[y * width..<(y + 1) * width].map(\.character)) }

    /// The whole grid as text, one line per row.
    public var text: String { (0..<height).map(line).joined(separator: "\n") }

    /// A titled box outline around the whole grid (a panel's frame).
    public mutating func box(title: String, style: CellStyle = CellStyle(dim: true)) {
        box(bounds, title: title, style: style)
    }

    /// A titled box outline around `rect`.
    public mutating func box(_ rect: Rect, title: String, style: CellStyle = CellStyle(dim: true)) {
        let (w, h) = (rect.width, rect.height)
        guard w >= 2, h >= 2 else { return }
        let g = BoxGlyphs.unicode
        put(String(g.topLeft) + String(repeating: g.horizontal, count: w - 2) + String(g.topRight), x: rect.x, y: rect.y, style: style)
        for row in rect.y + 1..<rect.maxY - 1 {
            set(g.vertical, x: rect.x, y: row, style: style)
            set(g.vertical, x: rect.maxX - 1, y: row, style: style)
        }
        put(
            String(g.bottomLeft) + String(repeating: g.horizontal, count: w - 2) + String(g.bottomRight), x: rect.x, y: rect.maxY - 1,
            style: style)
        if w > 6, !title.isEmpty { put(" \(title) ", x: rect.x + 2, y: rect.y, style: CellStyle(bold: true), maxWidth: w - 4) }
    }
}

/// The box-drawing characters panels are framed with (ASCII equivalents are substituted for a
/// non-UTF-8 terminal by `AsciiFallback`).
public struct BoxGlyphs: Sendable {
    public let topLeft: Character, topRight: Character, bottomLeft: Character, bottomRight: Character
    public let horizontal: Character, vertical: Character
    public static let unicode = BoxGlyphs(topLeft: "┌", topRight: "┐", bottomLeft: "└", bottomRight: "┘", horizontal: "─", vertical: "│")
}

/// What a terminal without UTF-8 (LANG=C) shows instead of each non-ASCII character the views
/// draw: borders become +-|, bars #, markers > ^ v, and anything else '?'.
public enum AsciiFallback {
    static let table: [Character: Character] = [
        "┌": "+", "┐": "+", "└": "+", "┘": "+", "─": "-", "│": "|", "┼": "+", "├": "+", "┤": "+",
        "█": "#", "▉": "#", "▊": "#", "▋": "#", "▌": "#", "▍": "|", "▎": "|", "▏": "|",
        "▁": "_", "▂": "_", "▃": "-", "▄": "-", "▅": "=", "▆": "=", "▇": "#",
        "·": ".", "…": "~", "▸": ">", "▲": "^", "▼": "v", "◂": "<", "▶": ">", "❚": "|", "⏎": "~", "⇥": ">",
        "␍": "~", "«": "<", "»": ">", "‖": "|", "×": "x", "←": "<", "→": ">", "↑": "^", "↓": "v", "⇧": "S",
        "–": "-", "—": "-", "≥": ">", "≤": "<", "•": "*", "⚠": "!", "σ": "s", "α": "a", "ρ": "r", "∑": "S",
        "⁺": "+", "ᵀ": "T", "√": "V", "≠": "#", "✓": "=", "✗": "x", "↺": "=",
    ]

    public static func ascii(_ character: Character) -> Character {
        character.isASCII ? character : table[character] ?? "?"
    }

    /// The grid with every non-ASCII character replaced.
    public static func apply(to grid: inout CellGrid) {
        for y in 0..<grid.height {
            for x in 0..<grid.width where !grid[x, y].character.isASCII {
                grid[x, y].character = ascii(grid[x, y].character)
            }
        }
    }
}
