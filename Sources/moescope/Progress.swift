import Foundation
import MoECore

/// A single self-overwriting status line on standard error: rate, a caller-supplied detail
/// (e.g. loss) and ETA. On a non-terminal it prints a plain line at most every few seconds.
struct ProgressLine {
    let label: String
    let total: Int
    let unit: String
    /// Units per item, when the rate is better told in something finer (tokens per step).
    let unitsPerItem: Int
    /// Items already done before this run started (a resumed run), left out of the rate.
    let startingAt: Int
    private let start = monotonicNanoseconds()
    /// When the line was last drawn (a `monotonicNanoseconds()` reading); nil before the first.
    private var lastDraw: UInt64?
    private let interactive = isatty(STDERR_FILENO) != 0

    init(_ label: String, total: Int, unit: String, unitsPerItem: Int = 1, startingAt: Int = 0) {
        self.label = label
        self.total = total
        self.unit = unit
        self.unitsPerItem = unitsPerItem
        self.startingAt = startingAt
    }

    mutating func update(_ done: Int, detail: String = "") {
        let now = monotonicNanoseconds()
        let interval = interactive ? 0.1 : 5
        let sinceDrawn = lastDraw.map { Double(now - $0) / 1e9 } ?? .infinity
        guard sinceDrawn >= interval || done == total else { return }
        lastDraw = now
        let elapsed = Double(now - start) / 1e9
        let rate = elapsed > 0 ? Double(done - startingAt) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let unitRate = rate * Double(unitsPerItem)
        var line = "\(label) \(done)/\(total) · \(String(format: unitRate >= 100 ? "%.0f" : "%.1f", unitRate)) \(unit)/s"
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
