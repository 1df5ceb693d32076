import Foundation

/// A minimal SVG writer: elements are appended as text, every attribute value and text node
/// escaped. Standalone output (XML declaration, `xmlns`, `viewBox`) so a browser or
/// `rsvg-convert` opens the file as it is.
public struct SVGDocument: Sendable {
    public let width: Double
    public let height: Double
    private var body: [String] = []
    /// One font stack for every text, so label-width estimates hold (DejaVu Sans is what Debian renders).
    public static let fontFamily = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"

    public init(width: Double, height: Double) {
        self.width = width.rounded(.up)
        self.height = height.rounded(.up)
    }

    public mutating func open(group attributes: [(String, String)]) { body.append("<g\(Self.attributes(attributes))>") }
    public mutating func close() { body.append("</g>") }

    public mutating func rect(
        x: Double, y: Double, width: Double, height: Double, fill: String,
        stroke: String? = nil, strokeWidth: Double = 1, extra: [(String, String)] = []
    ) {
        var a: [(String, String)] = [("x", n(x)), ("y", n(y)), ("width", n(width)), ("height", n(height)), ("fill", fill)]
        if let stroke { a += [("stroke", stroke), ("stroke-width", n(strokeWidth))] }
        body.append("<rect\(Self.attributes(a + extra))/>")
    }

    public mutating func line(
        x1: Double, y1: Double, x2: Double, y2: Double, stroke: String = "#333",
        width: Double = 1, dash: String? = nil
    ) {
        var a: [(String, String)] = [
            ("x1", n(x1)), ("y1", n(y1)), ("x2", n(x2)), ("y2", n(y2)), ("stroke", stroke), ("stroke-width", n(width)),
        ]
        if let dash { a.append(("stroke-dasharray", dash)) }
        body.append("<line\(Self.attributes(a))/>")
    }

    public mutating func circle(cx: Double, cy: Double, r: Double, fill: String, stroke: String? = nil) {
        var a: [(String, String)] = [("cx", n(cx)), ("cy", n(cy)), ("r", n(r)), ("fill", fill)]
        if let stroke { a.append(("stroke", stroke)) }
        body.append("<circle\(Self.attributes(a))/>")
    }

    public enum Anchor: String, Sendable { case start, middle, end }

    /// `rotate`: degrees about the text's anchor point (−90 for a vertical axis title).
    public mutating func text(
        _ string: String, x: Double, y: Double, size: Double = 12, anchor: Anchor = .start,
        weight: String? = nil, fill: String = "#222", rotate: Double? = nil,
        halo: Bool = false, cls: String? = nil
    ) {
        var a: [(String, String)] = [("x", n(x)), ("y", n(y)), ("font-size", n(size)), ("text-anchor", anchor.rawValue), ("fill", fill)]
        if let cls { a.append(("class", cls)) }
        // A white outline under the glyphs keeps a label legible where it crosses bars or cells.
        if halo { a += [("stroke", "#ffffff"), ("stroke-width", "3"), ("stroke-linejoin", "round"), ("paint-order", "stroke")] }
        if let weight { a.append(("font-weight", weight)) }
        if let rotate { a.append(("transform", "rotate(\(n(rotate)) \(n(x)) \(n(y)))")) }
        body.append("<text\(Self.attributes(a))>\(Self.escape(string))</text>")
    }

    /// A raster image shown at its own pixel size (so no renderer rescales, or smooths, it).
    public mutating func pngImage(_ png: [UInt8], x: Double, y: Double, width: Double, height: Double) {
        let a: [(String, String)] = [
            ("x", n(x)), ("y", n(y)), ("width", n(width)), ("height", n(height)), ("preserveAspectRatio", "none"),
            ("href", "data:image/png;base64," + Data(png).base64EncodedString()),
        ]
        body.append("<image\(Self.attributes(a))/>")
    }

    public mutating func title(_ string: String) { body.append("<title>\(Self.escape(string))</title>") }

    public var text: String {
        """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(n(width))" height="\(n(height))" viewBox="0 0 \(n(width)) \(n(height))" font-family="\(Self.fontFamily)">
        <rect x="0" y="0" width="\(n(width))" height="\(n(height))" fill="#ffffff"/>
        \(body.joined(separator: "\n"))
        </svg>

        """
    }

    /// Estimated width of `string` at `size` px in the font stack (DejaVu Sans averages ≈ 0.6 em).
    public static func textWidth(_ string: String, size: Double) -> Double { Double(string.count) * size * 0.6 }

    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            // Characters XML 1.0 forbids (C0 controls other than tab/newline/return) become U+FFFD.
            case _ where ch.value < 0x20 && ch != "\t" && ch != "\n" && ch != "\r": out += "\u{FFFD}"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    private static func attributes(_ list: [(String, String)]) -> String {
        list.map { " \($0.0)=\"\(escape($0.1))\"" }.joined()
    }

    private func n(_ v: Double) -> String { Self.number(v) }

    /// Coordinates to 0.01 px: enough for any screen, short files.
    static func number(_ v: Double) -> String {
        guard v.isFinite else { return "0" }
        let r = (v * 100).rounded() / 100
        return r == r.rounded() ? String(Int(r)) : String(format: "%.2f", r)
    }
}

/// Colour-blind-safe sequential palettes (matplotlib's viridis and cividis, sampled at nine
/// evenly spaced stops and interpolated linearly in sRGB).
public enum ColourMap: String, Sendable {
    case viridis, cividis

    private var stops: [(Double, Double, Double)] {
        switch self {
        case .viridis:
            return [
                (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
            ]
        case .cividis:
            return [
                (0, 34, 78), (18, 53, 112), (59, 73, 108), (87, 92, 109), (112, 113, 115),
                (138, 134, 120), (165, 156, 116), (195, 179, 105), (254, 232, 56),
            ]
        }
    }

    /// RGB at t ∈ [0, 1] (clamped; NaN gives the lowest colour).
    public func rgb(_ t: Double) -> (UInt8, UInt8, UInt8) {
        let stops = self.stops
        let x = t.isFinite ? min(1, max(0, t)) : 0
        let position = x * Double(stops.count - 1)
        let i = min(stops.count - 2, Int(position))
        let f = position - Double(i)
        let (a, b) = (stops[i], stops[i + 1])
        func mix(_ p: Double, _ q: Double) -> UInt8 { UInt8((p + (q - p) * f).rounded()) }
        return (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }

    public func hex(_ t: Double) -> String {
        let (r, g, b) = rgb(t)
        return String(format: "#%02x%02x%02x", r, g, b)
    }

    /// Text colour that stays legible on `hex(t)`: white on the dark end, near-black on the light end.
    public func textColour(on t: Double) -> String {
        let (r, g, b) = rgb(t)
        let luminance = 0.2126 * Double(r) + 0.7152 * Double(g) + 0.0722 * Double(b)
        return luminance < 128 ? "#ffffff" : "#111111"
    }
}

/// PNG from 8-bit RGB pixels, deflate-stored (uncompressed) so no zlib is needed. Used for
/// heatmaps with more cells than are sensible as SVG rectangles (e.g. 256 × 256 experts).
public enum PNGEncoder {
    public static func rgb(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
        precondition(pixels.count == width * height * 3 && width > 0 && height > 0)
        var raw: [UInt8] = []
        raw.reserveCapacity((width * 3 + 1) * height)
        for row in 0..<height {
            raw.append(0)  // filter: none
            raw += pixels[(row * width * 3)..<((row + 1) * width * 3)]
        }
        var zlib: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let length = min(65_535, raw.count - offset)
            let final: UInt8 = offset + length == raw.count ? 1 : 0
            zlib += [final, UInt8(length & 0xff), UInt8(length >> 8), UInt8(~length & 0xff), UInt8((~length >> 8) & 0xff)]
            zlib += raw[offset..<offset + length]
            offset += length
        } while offset < raw.count
        zlib += bigEndian(adler32(raw))

        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        png += chunk("IHDR", bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [8, 2, 0, 0, 0])
        png += chunk("IDAT", zlib)
        png += chunk("IEND", [])
        return png
    }

    private static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typed = Array(type.utf8) + data
        return bigEndian(UInt32(data.count)) + typed + bigEndian(crc32(typed))
    }

    private static func bigEndian(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }

    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xff)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    static func adler32(_ bytes: [UInt8]) -> UInt32 {
        var a: UInt32 = 1
        var b: UInt32 = 0
        for chunkStart in stride(from: 0, to: bytes.count, by: 5552) {
            for byte in bytes[chunkStart..<min(bytes.count, chunkStart + 5552)] {
                a += UInt32(byte)
                b += a
            }
            a %= 65_521
            b %= 65_521
        }
        return (b << 16) | a
    }
}
