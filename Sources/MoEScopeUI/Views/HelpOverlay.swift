/// Every key, from the key table, over whatever view is showing (clipped to the screen).
enum HelpOverlay {
    static func draw(_ state: ExplorerState, into grid: inout CellGrid) {
        let lines = KeyBindings.helpLines(ownModel: state.isOwnModel, recording: state.recordedWindow != nil)
        let width = min(grid.width - 2, (lines.map(\.count).max() ?? 40) + 6)
        let height = min(grid.height - 2, lines.count + 4)
        let rect = Rect(x: (grid.width - width) / 2, y: max(1, (grid.height - height) / 2), width: width, height: height)
        var overlay = CellGrid(rect)
        overlay.box(title: "Keys", style: CellStyle(bold: true))
        let rows = height - 4
        for (i, line) in lines.prefix(rows).enumerated() {
            let cut = i == rows - 1 && lines.count > rows
            overlay.put(cut ? "… \(lines.count - rows + 1) more: enlarge the window" : line, x: 3, y: 2 + i, maxWidth: width - 6)
        }
        grid.blit(overlay, at: rect)
    }
}
