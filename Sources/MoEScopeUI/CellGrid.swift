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

    public init(foreground: TerminalColor? = nil, background: TerminalColor? = nil,
                bold: Bool = false, reverse: Bool = false, dim: Bool = false, underline: Bool = false) {
        self.foreground = foreground; self.background = background
        self.bold = bold; self.reverse = reverse; self.dim = dim; self.underline = underline
    }

    public static let plain = CellStyle()
}

public struct Cell: Hashable, Sendable {
    public var character: Character
    public var style: CellStyle
    public init(_ character: Character = " ", style: CellStyle = .plain) { self.character = character; self.style = style }
}

/// The screen as plain data: views draw here, tests read it back, and the terminal backend
/// copies it to ncurses. One cell per column (wide characters are not used by the views).
public struct CellGrid: Sendable {
    public let width: Int
    public let height: Int
    public private(set) var cells: [Cell]

    public init(width: Int, height: Int) {
        self.width = max(0, width); self.height = max(0, height)
        cells = Array(repeating: Cell(), count: self.width * self.height)
    }

    public subscript(x: Int, y: Int) -> Cell {
        get { cells[y * width + x] }
        set { if x >= 0, y >= 0, x < width, y < height { cells[y * width + x] = newValue } }
    }

    /// Writes `text` from (x, y), clipped at `maxWidth` columns and the grid's edge. Returns
    /// the number of columns written.
    @discardableResult
    public mutating func put(_ text: String, x: Int, y: Int, style: CellStyle = .plain, maxWidth: Int = .max) -> Int {
        guard y >= 0, y < height else { return 0 }
        var column = x
        for character in text {
            guard column < width, column - x < maxWidth else { break }
            if column >= 0 { cells[y * width + column] = Cell(character, style: style) }
            column += 1
        }
        return column - x
    }

    public mutating func fill(x: Int, y: Int, width w: Int, height h: Int, with cell: Cell = Cell()) {
        for row in max(0, y) ..< min(height, y + h) { for column in max(0, x) ..< min(width, x + w) { cells[row * width + column] = cell } }
    }

    /// Row `y` as text (what a test, or `tmux capture-pane`, would read).
    public func line(_ y: Int) -> String { String(cells[y * width ..< (y + 1) * width].map(\.character)) }

    /// The whole grid as text, one line per row.
    public var text: String { (0..<height).map(line).joined(separator: "\n") }

    /// A titled box outline.
    public mutating func box(x: Int, y: Int, width w: Int, height h: Int, title: String, style: CellStyle = CellStyle(dim: true)) {
        guard w >= 2, h >= 2 else { return }
        put("┌" + String(repeating: "─", count: w - 2) + "┐", x: x, y: y, style: style)
        for row in y + 1 ..< y + h - 1 { put("│", x: x, y: row, style: style); put("│", x: x + w - 1, y: row, style: style) }
        put("└" + String(repeating: "─", count: w - 2) + "┘", x: x, y: y + h - 1, style: style)
        put(" \(title) ", x: x + 2, y: y, style: CellStyle(bold: true), maxWidth: w - 4)
    }
}
