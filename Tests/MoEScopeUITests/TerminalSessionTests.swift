import Foundation
import MoECore
import Testing

/// Drives the real `moescope` binary in a tmux pane, as a person would: keys in, screen out.
/// Needs tmux (`.ci/setup` installs it); `.ci/run` sets MOESCOPE_REQUIRE_TMUX=1 so that a
/// missing tmux fails there instead of skipping.
@Suite(.serialized) struct TerminalSessionTests {
    static let hasTmux =
        FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux")
        || FileManager.default.isExecutableFile(atPath: "/usr/local/bin/tmux")
    static let required = ProcessInfo.processInfo.environment["MOESCOPE_REQUIRE_TMUX"] == "1"

    /// The binary SwiftPM built beside this test bundle.
    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("moescope").path
    }
    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Runs a tmux command. Commands that may start the tmux server go through `system`:
    /// the server outlives its client and would keep open whatever descriptor Foundation's
    /// `Process` uses to notice the exit, so `waitUntilExit` would never return.
    @discardableResult
    static func tmux(_ arguments: String...) throws -> String {
        guard arguments.first == "capture-pane" else {
            let quoted = arguments.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
            _ = system("tmux \(quoted) </dev/null >/dev/null 2>&1")
            return ""
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["tmux"] + arguments
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// Polls the pane until `condition` holds (or `seconds` pass); returns the last screen.
    static func waitForScreen(_ session: String, seconds: Double = 30, until condition: (String) -> Bool) throws -> String {
        let began = monotonicNanoseconds()
        var screen = ""
        repeat {
            screen = try tmux("capture-pane", "-p", "-t", session)
            if condition(screen) { return screen }
            Thread.sleep(forTimeInterval: 0.1)
        } while secondsSince(began) < seconds
        return screen
    }

    /// The expert-assignment heatmap rows (L1…L6) of a screen.
    static func heatmapRows(_ screen: String) -> [String] {
        screen.split(separator: "\n").filter { $0.contains("│   L") || $0.contains("│ ▸ L") }.map { String($0.prefix(52)) }
    }

    @Test func explorerInTmux() throws {
        guard Self.hasTmux else {
            if Self.required { Issue.record("tmux is not installed — run .ci/setup") }
            return
        }
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "no moescope binary at \(Self.binary)")
        let session = "moescope-test-\(getpid())"
        try Self.tmux(
            "new-session", "-d", "-x", "140", "-y", "45", "-s", session,
            "cd '\(Self.repositoryRoot)' && '\(Self.binary)'; echo MOESCOPE-EXITED $?; sleep 60")
        defer { _ = try? Self.tmux("kill-session", "-t", session) }

        var screen = try Self.waitForScreen(session) { $0.contains("Expert assignment") }
        #expect(screen.contains("Expert assignment"), "the explorer did not start:\n\(screen)")
        #expect(Self.heatmapRows(screen).count >= 6, "heatmap rows missing:\n\(screen)")
        #expect(screen.contains("router GRU (RMoE)"))
        #expect(screen.contains("GRU hidden state"))

        try Self.tmux("send-keys", "-t", session, "Right", "Right", "Down")
        screen = try Self.waitForScreen(session) { $0.contains("layer L1 of 6") && $0.contains("token 3/") }
        #expect(screen.contains("layer L1 of 6") && screen.contains("token 3/"), "layer/token did not move:\n\(screen)")
        let gruRows = Self.heatmapRows(screen)

        try Self.tmux("send-keys", "-t", session, "1")
        // Waits for the whole new frame, not its first line: under load tmux can capture a frame
        // that ncurses is still writing (the status line new, the heatmap still the GRU's).
        screen = try Self.waitForScreen(session) {
            $0.contains("router Linear") && $0.contains("has no recurrent state") && Self.heatmapRows($0) != gruRows
        }
        #expect(screen.contains("router Linear") && screen.contains("token 3/"), "router switch failed:\n\(screen)")
        #expect(Self.heatmapRows(screen) != gruRows, "switching router did not change the routing shown")
        #expect(screen.contains("has no recurrent state"))

        try Self.tmux("send-keys", "-t", session, "?")
        screen = try Self.waitForScreen(session) { $0.contains("─ Keys ") }
        #expect(screen.contains("─ Keys ") && screen.contains("quit"), "help overlay missing:\n\(screen)")
        try Self.tmux("send-keys", "-t", session, "x")
        screen = try Self.waitForScreen(session) { !$0.contains("─ Keys ") }
        #expect(!screen.contains("─ Keys "))

        try Self.tmux("send-keys", "-t", session, "q")
        screen = try Self.waitForScreen(session) { $0.contains("MOESCOPE-EXITED") }
        #expect(screen.contains("MOESCOPE-EXITED 0"), "q did not exit cleanly:\n\(screen)")
        #expect(!screen.contains("Expert assignment"), "the terminal was not restored:\n\(screen)")
    }

    /// At 80 × 24 (the default size of most terminals): the explorer draws, and a bracketed
    /// paste with a newline and a 'q' in it lands in the text field instead of running or quitting.
    @Test func pasteAtEightyByTwentyFour() throws {
        guard Self.hasTmux else {
            if Self.required { Issue.record("tmux is not installed — run .ci/setup") }
            return
        }
        let session = "moescope-paste-\(getpid())"
        try Self.tmux(
            "new-session", "-d", "-x", "80", "-y", "24", "-s", session,
            "cd '\(Self.repositoryRoot)' && '\(Self.binary)' --text 'one two'; echo MOESCOPE-EXITED $?; sleep 60")
        defer { _ = try? Self.tmux("kill-session", "-t", session) }
        var screen = try Self.waitForScreen(session) { $0.contains("Expert assignment") || $0.contains("Experts") }
        #expect(!screen.contains("too small"), "80×24 refused:\n\(screen)")
        #expect(screen.contains("┌─ Tokens"), "the explorer did not start at 80×24:\n\(screen)")
        try Self.tmux("send-keys", "-t", session, "e")
        screen = try Self.waitForScreen(session) { $0.contains("Text: one two") }
        #expect(screen.contains("Text: one two"), "e did not start from the current text:\n\(screen)")
        try Self.tmux("send-keys", "-t", session, "C-u")
        try Self.tmux("set-buffer", "-b", session, "q\npasted text")
        try Self.tmux("paste-buffer", "-p", "-b", session, "-t", session)
        screen = try Self.waitForScreen(session) { $0.contains("Text: q⏎pasted text") }
        #expect(screen.contains("Text: q⏎pasted text"), "the paste did not land in the field:\n\(screen)")
        #expect(!screen.contains("MOESCOPE-EXITED"))
        try Self.tmux("send-keys", "-t", session, "Enter")
        screen = try Self.waitForScreen(session) { !$0.contains("Text: ") }
        #expect(!screen.contains("Text: ") && screen.contains("q ⏎ "), "Enter did not run the pasted text:\n\(screen)")
        try Self.tmux("send-keys", "-t", session, "q")
        screen = try Self.waitForScreen(session) { $0.contains("MOESCOPE-EXITED") }
        #expect(screen.contains("MOESCOPE-EXITED 0"), "q did not exit cleanly:\n\(screen)")
    }
}
