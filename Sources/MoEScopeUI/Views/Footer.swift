/// The last line: the message of the moment, the text field while editing, else the keys.
enum Footer {
    static func draw(_ context: ViewContext, in rect: Rect) -> CellGrid {
        var grid = CellGrid(rect)
        let state = context.state
        let width = rect.width
        if let editor = state.editor {
            let hint = TextLayout.firstFitting([" Enter run · Esc cancel · ^U ^W ^A ^E", " Enter run · Esc cancel", ""], width: width / 3)
            let label = state.editorPurpose == .jump ? "Go to token (or d + document): " : "Text: "
            let room = width - label.count - hint.count
            let (shown, column) = editor.window(width: room)
            grid.put(label, x: 0, y: 0, style: CellStyle(bold: true))
            grid.put(shown, x: label.count, y: 0)
            let under = label.count + column
            let character = under < label.count + shown.count ? grid[under, 0].character : " "
            grid.set(character, x: under, y: 0, style: CellStyle(reverse: true))
            grid.put(hint, x: width - hint.count, y: 0, style: CellStyle(dim: true))
        } else if let message = state.message {
            grid.put(" " + message, x: 0, y: 0, style: CellStyle(bold: true))
        } else {
            grid.put(
                " " + KeyBindings.footer(width: width - 1, ownModel: state.isOwnModel, recording: state.recordedWindow != nil), x: 0, y: 0,
                style: CellStyle(dim: true))
        }
        return grid
    }
}
