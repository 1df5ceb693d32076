/// What the terminal can show, chosen once at start-up: 256 colours, the basic 8/16, or none
/// (`NO_COLOR`, or a terminal without colour), where values become glyph ramps.
public enum ColorMode: Sendable, Equatable {
    case full256, basic, monochrome
}

/// Every colour decision of the views, per mode, in one place.
public struct Palette: Sendable {
    public let mode: ColorMode
    /// The terminal cannot show UTF-8 (LANG=C): the renderer swaps every glyph for ASCII.
    public var asciiOnly: Bool
    public init(mode: ColorMode, asciiOnly: Bool = false) {
        self.mode = mode
        self.asciiOnly = asciiOnly
    }

    /// Density glyphs for monochrome heatmaps, light to dark.
    public static let ramp = Array(" .:-=+*#%@")
    /// Vertical bar heights in eighths, for one-column histograms.
    public static let columnBars = Array(" ▁▂▃▄▅▆▇█")
    /// A perceptual dark-violet → teal → yellow ramp (viridis-like) in xterm-256 indices.
    static let heat256: [TerminalColor] = [233, 53, 54, 55, 61, 67, 31, 37, 36, 35, 71, 107, 149, 185, 221, 226]
    /// The same idea in the basic colours: black, blue, cyan, green, yellow, bright white.
    static let heatBasic: [TerminalColor] = [0, 4, 6, 2, 3, 15]
    /// Distinct colours for expert ids (token strip, legends).
    static let expert256: [TerminalColor] = [203, 214, 227, 83, 87, 75, 141, 213, 167, 180, 150, 116]
    static let expertBasic: [TerminalColor] = [1, 3, 2, 6, 4, 5, 9, 11, 10, 14, 12, 13]

    /// The index of `value` in [0, 1] on a ramp of `count` steps; non-finite values give 0
    /// (callers check `isFinite` first and show them as `nonFinite`).
    static func level(_ value: Double, count: Int) -> Int {
        guard value.isFinite else { return 0 }
        return min(count - 1, max(0, Int((min(1, max(0, value)) * Double(count)).rounded(.down))))
    }

    /// Style of a heat cell for `value` in [0, 1]; NaN and ±∞ get the warning style.
    public func heat(_ value: Double) -> CellStyle {
        guard value.isFinite else { return nonFinite }
        switch mode {
        case .full256:
            let index = Self.level(value, count: Self.heat256.count)
            return CellStyle(foreground: index >= 11 ? 16 : 255, background: Self.heat256[index])
        case .basic:
            let index = Self.level(value, count: Self.heatBasic.count)
            return CellStyle(foreground: index >= 3 ? 0 : 7, background: Self.heatBasic[index])
        case .monochrome:
            return .plain
        }
    }

    /// How a NaN or infinite value is drawn: white on red, or reversed without colour.
    public var nonFinite: CellStyle {
        switch mode {
        case .full256: CellStyle(foreground: 231, background: 160, bold: true)
        case .basic: CellStyle(foreground: 7, background: 1, bold: true)
        case .monochrome: CellStyle(bold: true, reverse: true)
        }
    }

    /// The glyph a heat cell shows in monochrome (colour modes use the background instead);
    /// '!' for a non-finite value in every mode.
    public func heatGlyph(_ value: Double) -> Character {
        guard value.isFinite else { return "!" }
        return mode == .monochrome ? Self.ramp[Self.level(value, count: Self.ramp.count)] : " "
    }

    public func expert(_ id: Int) -> CellStyle {
        switch mode {
        case .full256: CellStyle(foreground: Self.expert256[id % Self.expert256.count])
        case .basic: CellStyle(foreground: Self.expertBasic[id % Self.expertBasic.count])
        case .monochrome: .plain
        }
    }

    /// A horizontal bar of `fraction` of `width` cells, in eighths (empty for a non-finite value).
    public static func bar(_ fraction: Double, width: Int) -> String {
        guard fraction.isFinite, width > 0 else { return "" }
        let eighths = Int((max(0, min(1, fraction)) * Double(width * 8)).rounded())
        let partial = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"]
        return String(repeating: "█", count: eighths / 8) + partial[eighths % 8]
    }

    /// The glyph of row `row` (0 = bottom) of a vertical bar `fraction` of `rows` rows high.
    public static func columnBar(_ fraction: Double, row: Int, rows: Int) -> Character {
        guard fraction.isFinite, rows > 0 else { return " " }
        let eighths = Int((max(0, min(1, fraction)) * Double(rows * 8)).rounded()) - row * 8
        return columnBars[max(0, min(8, eighths))]
    }
}
