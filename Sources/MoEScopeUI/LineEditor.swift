/// The text field of edit mode, with readline's keys: Ctrl-A / Ctrl-E start and end of line,
/// Ctrl-U deletes to the start, Ctrl-K to the end, Ctrl-W the word before the cursor,
/// ← → move, Backspace and Delete delete around the cursor. Other control characters are
/// ignored; a bracketed paste is inserted whole, newlines and all.
public struct LineEditor: Sendable, Equatable {
    public private(set) var characters: [Character]
    /// Insertion point, 0...characters.count.
    public private(set) var cursor: Int

    public init(_ text: String = "") {
        characters = Array(text)
        cursor = characters.count
    }

    public var text: String { String(characters) }

    /// Applies one key; returns false for keys editing does not handle (Enter, Esc, …).
    @discardableResult
    public mutating func handle(_ key: Key) -> Bool {
        switch key {
        case .left: cursor = max(0, cursor - 1)
        case .right: cursor = min(characters.count, cursor + 1)
        case .home: cursor = 0
        case .end: cursor = characters.count
        case .backspace:
            if cursor > 0 {
                characters.remove(at: cursor - 1)
                cursor -= 1
            }
        case .delete:
            if cursor < characters.count { characters.remove(at: cursor) }
        case .paste(let text): insert(text)
        case .character(let c):
            guard let scalar = c.unicodeScalars.first, c.unicodeScalars.count > 1 || scalar.value >= 0x20 && scalar.value != 0x7F else {
                return control(c)
            }
            insert(String(c))
        default: return false
        }
        return true
    }

    private mutating func insert(_ text: String) {
        let inserted = Array(text)
        characters.insert(contentsOf: inserted, at: cursor)
        cursor += inserted.count
    }

    private mutating func control(_ c: Character) -> Bool {
        switch c.unicodeScalars.first!.value {
        case 0x01: cursor = 0  // Ctrl-A
        case 0x05: cursor = characters.count  // Ctrl-E
        case 0x02: cursor = max(0, cursor - 1)  // Ctrl-B
        case 0x06: cursor = min(characters.count, cursor + 1)  // Ctrl-F
        case 0x04: if cursor < characters.count { characters.remove(at: cursor) }  // Ctrl-D
        case 0x15:
            characters.removeSubrange(0..<cursor)
            cursor = 0  // Ctrl-U
        case 0x0B: characters.removeSubrange(cursor...)  // Ctrl-K
        case 0x17:  // Ctrl-W: back over spaces, then the word
            var start = cursor
            while start > 0, characters[start - 1].isWhitespace { start -= 1 }
            while start > 0, !characters[start - 1].isWhitespace { start -= 1 }
            characters.removeSubrange(start..<cursor)
            cursor = start
        default: break  // other control characters: ignored
        }
        return true
    }

    /// The text as one line of `width` columns around the cursor: newlines and tabs as visible
    /// symbols, the cursor's column, and whether text is hidden left or right.
    public func window(width: Int) -> (text: String, cursorColumn: Int) {
        guard width > 2 else { return ("", 0) }
        let shown = characters.map { c -> Character in c == "\n" || c == "\r\n" ? "⏎" : c == "\t" ? "⇥" : c }
        let room = width - 1
        var first = max(0, cursor - room + 1)
        if shown.count - first < room { first = max(0, shown.count - room) }
        first = min(first, cursor)
        var slice = Array(shown[first..<min(shown.count, first + room)])
        var column = cursor - first
        if first > 0, !slice.isEmpty { slice[0] = "…" }
        if first + room < shown.count, !slice.isEmpty { slice[slice.count - 1] = "…" }
        column = min(column, width - 1)
        return (String(slice), column)
    }
}
