import ArgumentParser
import Foundation
import MoECore
import MoEScopeUI

/// The default command: the live routing explorer (ncurses TUI).
struct ExploreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explore",
        abstract: "Watch the model route a text, token by token (the default command).",
        discussion: "Keys: ←/→ token, ↑/↓ layer, space play, 1-7 or r router, e edit, g generate, Tab view, ? help, q quit.")

    static let sampleText = """
    The router sends every token to two of eight experts.
    def route(tokens):
        return [expert(t) for t in tokens]
    Der Hund schläft im Garten, el gato duerme en la casa.
    """

    @OptionGroup var model: ModelOptions
    @Option(help: "Text to explore (default: a short multi-domain sample).") var text: String?
    @Option(help: ArgumentHelp("Read the text from a UTF-8 file ('-' for standard input).", valueName: "path")) var file: String?

    func run() throws {
        guard isatty(STDOUT_FILENO) != 0 else {
            throw CLIError("the explorer needs a terminal, and standard output is not one — use `moescope trace` to print routing for scripts")
        }
        guard file != "-" else {
            throw CLIError("the explorer reads keys from the terminal, so it cannot take its text from standard input — pass --file PATH or --text")
        }
        let input = (text == nil && file == nil) ? Self.sampleText : try TextInput(text: text, file: file).read()
        guard isatty(STDIN_FILENO) != 0 else {
            throw CLIError("the explorer needs a terminal on standard input — run it interactively, or use `moescope trace`")
        }
        let base = model
        let loader: SessionLoader = { router, tokens, text in
            var options = base
            if router != base.router { options.checkpoint = nil }   // another router: its shipped checkpoint
            options.router = router
            let loaded = try options.load(quiet: true)
            let ids = tokens ?? loaded.checkpoint.tokenizer.encode(text ?? "")
            guard !ids.isEmpty else { throw CLIError("the text is empty — type at least one character") }
            let label = loaded.isRandomInit ? "random init (seed \(options.seed))" : (loaded.checkpoint.directory ?? "checkpoint")
            return ExplorerSession(model: loaded.checkpoint.model, tokenizer: loaded.checkpoint.tokenizer, label: label,
                                   isRandomInit: loaded.isRandomInit, tokens: ids)
        }
        let state = try ExplorerState(loader: loader, router: model.router, text: input)
        let noColor = !(ProcessInfo.processInfo.environment["NO_COLOR"] ?? "").isEmpty
        switch ExplorerApp.run(state, noColor: noColor) {
        case .quit: return
        case let .signal(number): throw ExitCode(128 + number)
        }
    }
}

extension TextInput {
    init(text: String?, file: String?) {
        self.init()
        self.text = text
        self.file = file
    }
}
