import Foundation

/// A single self-overwriting status line on standard error: rate, a caller-supplied detail
/// (e.g. loss) and ETA. On a non-terminal it prints a plain line at most every few seconds.
struct ProgressLine {
    let label: String
    let total: Int
    let unit: String
    private let start = Date()
    private var lastDraw = Date.distantPast
    private let interactive = isatty(STDERR_FILENO) != 0

    init(_ label: String, total: Int, unit: String) {
        self.label = label; self.total = total; self.unit = unit
    }

    mutating func update(_ done: Int, detail: String = "") {
        let now = Date()
        let interval = interactive ? 0.1 : 5
        guard now.timeIntervalSince(lastDraw) >= interval || done == total else { return }
        lastDraw = now
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        var line = "\(label) \(done)/\(total) · \(String(format: "%.1f", rate)) \(unit)/s"
        if !detail.isEmpty { line += " · \(detail)" }
        line += " · ETA \(Self.format(seconds: eta))"
        FileHandle.standardError.write(Data(((interactive ? "\r\u{1B}[K" : "") + line + (interactive ? "" : "\n")).utf8))
    }

    func finish() {
        if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    static func format(seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : "\(s / 60)m\(String(format: "%02d", s % 60))s"
    }
}
