import ArgumentParser
import Foundation
import MoECore
import MoEScopeUI

/// The default command: the live routing explorer (ncurses TUI).
struct ExploreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explore",
        abstract: "Watch the model route a text, token by token (the default command).",
        discussion: KeyBindings.commandHelp)

    static let sampleText = """
        The router sends every token to two of eight experts.
        def route(tokens):
            return [expert(t) for t in tokens]
        Der Hund schläft im Garten, el gato duerme en la casa.
        """

    @OptionGroup var model: ModelOptions
    @OptionGroup var input: TextInput<ExploreCommand>
    @Option(
        help: ArgumentHelp(
            "Open a recorded routing trace (moescope-routing-trace safetensors) instead of running a model.", valueName: "file"))
    var trace: String?
    @Option(
        help:
            "With --trace: the token to open at, counted from 1 as the status line and `j` count (PgUp, PgDn, j and the arrows then move anywhere in the trace)."
    )
    var start = 1

    func validate() throws {
        if trace != nil, input.isGiven || model.hub.folder != nil || model.checkpoint != nil || model.chosenRouter != nil {
            throw ValidationError("--trace opens a recorded trace — drop --text, --file, --model, --checkpoint and --router")
        }
        guard start >= 1 else { throw ValidationError("--start counts tokens from 1, as the status line does; got \(start)") }
    }

    func run() throws {
        guard isatty(STDOUT_FILENO) != 0 else {
            throw CLIError(
                "the explorer needs a terminal, and standard output is not one — use `moescope trace` to print routing for scripts")
        }
        do { try ExplorerApp.checkTerminal(ProcessInfo.processInfo.environment) } catch let error as TerminalError {
            throw CLIError(error.description)
        }
        guard input.file != "-" else {
            throw CLIError(
                "the explorer reads keys from the terminal, so it cannot take its text from standard input — pass --file PATH or --text")
        }
        let text = input.isGiven ? try input.read() : Self.sampleText
        guard isatty(STDIN_FILENO) != 0 else {
            throw CLIError("the explorer needs a terminal on standard input — run it interactively, or use `moescope trace`")
        }
        if let trace {
            let recorded = try RecordedTrace(path: trace)
            guard start <= recorded.file.tokenCount else {
                throw CLIError(
                    "--start \(start) is past the end of \(trace), which holds \(recorded.file.tokenCount) tokens — give 1 to \(recorded.file.tokenCount)"
                )
            }
            // The explorer holds one window of the trace at a time (`ExplorerState.recordingWindow`).
            let first = start - 1
            let recording = RecordedRoutingModel(trace: recorded.file, window: first..<first + ExplorerState.recordingWindow)
            let loader: SessionLoader = { _, _, _ in
                ExplorerSession(
                    model: recording, tokenizer: recorded.tokenizer, label: trace, isRandomInit: false, tokens: recording.tokens)
            }
            return try runExplorer(try ExplorerState(loader: loader, router: nil, text: ""))
        }
        let base = model
        let hub = try model.hub.folder.map { _ in try base.open(quiet: true) }  // opened once: its router is fixed
        let loader: SessionLoader = { router, tokens, text in
            let opened: ModelOptions.Opened
            if let hub {
                opened = hub
            } else {
                var options = base
                if let router, router != base.router { options.checkpoint = nil }  // another router: its shipped checkpoint
                options.router = router ?? base.router
                opened = try options.open(quiet: true)
            }
            let ids = tokens ?? opened.tokenizer.encode(text ?? "")
            // Checked whole, as `trace` does: a text longer than the context is refused, never
            // silently cut (the session decodes it a token at a time, later).
            try InferenceError.check(count: ids.count, capacity: opened.model.contextLength)
            return ExplorerSession(
                model: opened.model, tokenizer: opened.tokenizer, label: opened.source,
                isRandomInit: opened.isRandomInit, tokens: ids)
        }
        try runExplorer(try ExplorerState(loader: loader, router: hub == nil ? model.router : nil, text: text))
    }

    private func runExplorer(_ state: ExplorerState) throws {
        let environment = ProcessInfo.processInfo.environment
        let noColor = !(environment["NO_COLOR"] ?? "").isEmpty
        let outcome: ExplorerApp.Outcome
        do { outcome = try ExplorerApp.run(state, noColor: noColor, environment: environment) } catch let error as TerminalError {
            throw CLIError(error.description)
        }
        switch outcome {
        case .quit: return
        case .signal(let number): throw ExitCode(128 + number)
        }
    }
}

extension ExploreCommand: TakesText {
    static let textHelp = "Text to explore (default: a short multi-domain sample)."
}
