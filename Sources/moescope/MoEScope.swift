import ArgumentParser
import Foundation
import MoECore

@main
struct MoEScope: ParsableCommand {
    /// The one place the version is written: `moescope --version` prints it.
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "moescope",
        abstract: "Watch a Mixture-of-Experts language model route its tokens.",
        discussion: """
            Routers (--router):
            \(RouterKind.allCases.map { "  \($0.rawValue)\($0.isOurInterpretation ? " *" : "")\n      \($0.equation)" }.joined(separator: "\n"))

            Routers marked * come from "Optimizing MoE Routers" (Harvey, Weale, Yilmaz 2025), whose exact formulas are not public; \
            the forms above are moescope's reading. Hash follows Roller et al. 2021; GRU is RMoE (Qiu et al. 2024).
            """,
        version: version,
        subcommands: [
            ExploreCommand.self, Trace.self, AnalyzeCommand.self, DiffCommand.self, TrainCommand.self, CompareCommand.self,
            BenchCommand.self, TokenizerCommand.self,
        ],
        defaultSubcommand: ExploreCommand.self
    )

    /// Parses and runs the command; every error is reported as one line on standard error
    /// ("Error: …") with a non-zero exit, help and signal exits as ArgumentParser makes them.
    static func main() {
        // Past a file-size limit (`ulimit -f`) a write fails with EFBIG and is reported like a
        // full disk; by default SIGXFSZ would end the process mid-write instead, unannounced.
        signal(SIGXFSZ, SIG_IGN)
        let arguments = attachingNegativeValues(Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch {
            if error is ExitCode || exitCode(for: error) == .success { exit(withError: error) }
            printError("Error: " + oneLine(message(for: error)))
            Foundation.exit(exitCode(for: error).rawValue)
        }
    }

    /// "--steps -5" → "--steps=-5". ArgumentParser reads any word that starts with "-" as an
    /// option, so a negative value would be reported as a missing one; attached, it is parsed
    /// and then refused by the option's own bounds with a message that says what was wrong.
    static func attachingNegativeValues(_ arguments: [String]) -> [String] {
        var out: [String] = []
        var index = 0
        while index < arguments.count {
            let word = arguments[index]
            if word == "--" {
                out += arguments[index...]
                break
            }
            if word.hasPrefix("--"), !word.contains("="), index + 1 < arguments.count,
                arguments[index + 1].count > 1, arguments[index + 1].hasPrefix("-"),
                Double(arguments[index + 1]) != nil || arguments[index + 1].lowercased() == "-inf"
            {
                out.append(word + "=" + arguments[index + 1])
                index += 2
                continue
            }
            out.append(word)
            index += 1
        }
        return out
    }

    /// ArgumentParser's multi-line messages ("Please provide one of the following:\n  - a\n
    /// - b", "Help: …") folded into one line.
    static func oneLine(_ message: String) -> String {
        var parts: [String] = []
        var choices: [String] = []
        for line in message.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) where !line.isEmpty {
            if line.hasPrefix("Help:") || line.hasPrefix("Usage:") || line.hasPrefix("See '") { continue }
            if line.hasPrefix("- ") {
                choices.append(String(line.dropFirst(2)))
                continue
            }
            parts.append(
                line.hasSuffix("following:")
                    ? String(line.dropLast("the following:".count)).trimmingCharacters(in: .whitespaces) + ":" : line)
        }
        var text = parts.joined(separator: " ")
        if !choices.isEmpty { text += " " + choices.joined(separator: ", ") }
        // "The value '-1' is invalid for '--seed <seed>': --seed must be …" says it twice.
        if let own = text.range(of: #"^The value '.*' is invalid for '--[a-z-]+ <[a-z-]+>': (?=--)"#, options: .regularExpression) {
            text.removeSubrange(own)
        }
        return text
    }
}
