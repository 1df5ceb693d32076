import Foundation
import MoECore
import Testing

@testable import MoEScopeUI

/// A recorded trace in the explorer, paged a window at a time: PgUp/PgDn, the arrows, Home/End
/// and `j` reach every token and document of a trace far longer than the window, the session
/// never holds more than one window of routing, and the screen (read from the cell grid at
/// 80×24 and 200×60) says where in the whole trace the cursor is. A synthetic trace of a real
/// model's shape: 128 experts, top-8, 48 routed layers.
@Suite struct RecordedTraceExplorerTests {
    static let tokens = 3_000
    static let path: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-paging-\(UUID()).safetensors").path
        try! SyntheticRoutingTrace.write(to: path, tokens: tokens, layers: 48, experts: 128, topK: 8, documents: 5, seed: 7)
        // The suite's tests share the file; it goes when the test process ends (7 MB a run
        // were left in the temporary folder before).
        atexit { try? FileManager.default.removeItem(atPath: RecordedTraceExplorerTests.path) }
        return path
    }()

    static func state() throws -> (ExplorerState, RoutingTraceFile) {
        let trace = try RoutingTraceFile(path: path)
        let loader: SessionLoader = { _, _, _ in
            let window = RecordedRoutingModel(trace: trace, window: 0..<ExplorerState.recordingWindow)
            return ExplorerSession(model: window, tokenizer: TokenIDsOnly(), label: "synthetic", isRandomInit: false, tokens: window.tokens)
        }
        return (try ExplorerState(loader: loader, router: nil, text: ""), trace)
    }

    /// The cursor's token in the whole trace, and the routing the screen shows is that token's.
    static func expectOn(_ state: ExplorerState, token: Int, _ trace: RoutingTraceFile, _ note: String) throws {
        let position = try #require(state.recordedPosition)
        #expect(position.token == token, "\(note): at \(position.token), wanted \(token)")
        #expect(state.currentTrace.layers.map(\.experts) == (try trace.routing(token: token)).layers.map(\.experts), "\(note)")
        #expect(state.session.traces.count <= ExplorerState.recordingWindow && state.tokenCount <= ExplorerState.recordingWindow)
        for (width, height) in [(80, 24), (200, 60)] {
            let screen = ExplorerRenderer.render(state, width: width, height: height).text
            #expect(
                screen.contains("t\(token + 1)/\(tokens)") || screen.contains("token \(token + 1)/\(tokens)"),
                "\(note) at \(width)×\(height)")
        }
    }

    static func type(_ text: String, into state: inout ExplorerState) {
        for character in text { state.handle(.character(character)) }
        state.handle(.enter)
    }

    @Test func pagesThroughTheWholeTrace() throws {
        var (state, trace) = try Self.state()
        let w = ExplorerState.recordingWindow
        try Self.expectOn(state, token: 0, trace, "opened")
        state.handle(.pageDown)
        try Self.expectOn(state, token: w, trace, "PgDn")
        #expect(state.recordedWindow?.window == w..<2 * w)
        state.handle(.left)  // out of the window's start: a window centred on the token
        try Self.expectOn(state, token: w - 1, trace, "← across a window")
        #expect(state.recordedWindow?.window == (w - 1 - w / 2)..<(w - 1 - w / 2 + w))
        state.handle(.end)
        try Self.expectOn(state, token: Self.tokens - 1, trace, "End")
        #expect(state.recordedWindow?.window.upperBound == Self.tokens)
        state.handle(.pageDown)
        #expect(state.message?.contains("last window") == true)
        state.handle(.pageUp)
        try Self.expectOn(state, token: Self.tokens - 2 * w, trace, "PgUp")
        state.handle(.home)
        try Self.expectOn(state, token: 0, trace, "Home")
        state.handle(.left)
        try Self.expectOn(state, token: 0, trace, "← at the first token")
        // Stepping right over a window's end keeps going.
        for _ in 0..<(w + 3) { state.handle(.right) }
        try Self.expectOn(state, token: w + 3, trace, "→ × \(w + 3)")
    }

    @Test func jumpsToATokenOrADocument() throws {
        var (state, trace) = try Self.state()
        state.handle(.character("j"))
        #expect(state.editorPurpose == .jump)
        let prompt = ExplorerRenderer.render(state, width: 80, height: 24).text
        #expect(prompt.contains("Go to token"))
        Self.type("2,001", into: &state)
        try Self.expectOn(state, token: 2000, trace, "j 2,001")
        state.handle(.character("j"))
        Self.type("d4", into: &state)
        try Self.expectOn(state, token: trace.documentOffsets[3], trace, "j d4")
        let position = try #require(state.recordedPosition)
        #expect(position.document == 3 && position.documents == 5)
        let wide = ExplorerRenderer.render(state, width: 200, height: 60).text
        #expect(wide.contains("doc 4/5"))
        for bad in ["d9", "0", "abc", "99999"] {
            state.handle(.character("j"))
            Self.type(bad, into: &state)
            #expect(state.message?.contains("1–") == true, "\(bad)")
            try Self.expectOn(state, token: trace.documentOffsets[3], trace, "after a refused \(bad)")
        }
    }

    @Test func keysAreInTheOneTableAndTheFooter() throws {
        var (state, _) = try Self.state()
        #expect(KeyBindings.action(for: .pageDown) == .nextWindow && KeyBindings.action(for: .character("j")) == .jump)
        let wide = ExplorerRenderer.render(state, width: 200, height: 60).text
        #expect(wide.contains("PgUp/PgDn page") && wide.contains("j jump"))
        state.handle(.character("?"))
        let help = ExplorerRenderer.render(state, width: 200, height: 60).text
        #expect(help.contains("recorded trace: previous / next \(ExplorerState.recordingWindow) tokens"))
        // A model that runs shows its text whole: paging says so and changes nothing.
        var running = try ExplorerTests.state()
        running.handle(.pageDown)
        #expect(running.message?.contains("recorded trace") == true && running.cursor == 0)
        #expect(!KeyBindings.footer(width: 200, ownModel: true).contains("PgUp"))
    }
}
