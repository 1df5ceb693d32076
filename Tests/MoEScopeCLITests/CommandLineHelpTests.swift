import Foundation
import Testing

/// What the real `moescope` binary tells a user about itself: every command's `--help`,
/// `--version`, and the shell completion scripts swift-argument-parser generates.
@Suite struct CommandLineHelpTests {
    static let commands = ["explore", "trace", "analyze", "diff", "train", "compare", "bench", "tokenizer"]

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the binary with `COLUMNS` set, as a terminal that wide would.
    static func run(_ arguments: [String], columns: Int = 80, environment extra: [String: String] = [:]) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: HostileInputTests.binary)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["COLUMNS"] = String(columns)
        environment["MOESCOPE_ASSETS"] = "\(HostileInputTests.root)/assets"
        process.environment = environment.merging(extra) { $1 }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-help-\(UUID())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = FileManager.default.createFile(atPath: "\(folder)/out", contents: nil)
        _ = FileManager.default.createFile(atPath: "\(folder)/err", contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: "\(folder)/out")
        process.standardError = FileHandle(forWritingAtPath: "\(folder)/err")
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus,
            stdout: (try? String(contentsOfFile: "\(folder)/out", encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: "\(folder)/err", encoding: .utf8)) ?? "")
    }

    /// `moescope --help` and every subcommand's, at `columns`; the subcommands are read from
    /// the root help, so a new command is checked without being listed here.
    static func helpTexts(columns: Int) throws -> [(command: String, text: String)] {
        let root = try run(["--help"], columns: columns)
        #expect(root.status == 0, "\(root.stderr)")
        let lines = root.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let listed = lines.drop { $0 != "SUBCOMMANDS:" }.dropFirst().prefix { !$0.isEmpty }
            .filter { $0.hasPrefix("  ") && !$0.hasPrefix("   ") }
            .compactMap { $0.split(separator: " ").first.map(String.init) }
        #expect(Set(commands).isSubset(of: listed), "root help lists \(listed)")
        return try [("moescope", root.stdout)]
            + listed.map { command in
                let help = try run([command, "--help"], columns: columns)
                #expect(help.status == 0, "\(command) --help: \(help.stderr)")
                return ("moescope \(command)", help.stdout)
            }
    }

    /// Consecutive lines of one paragraph in a rendered help text: in the overview and
    /// discussion (before "USAGE:"), two unindented lines in a row; in the options and
    /// subcommand lists, an entry's help line and the indented line continuing it. Lists
    /// written as such (the routers, one per line) are indented, so they are not paragraphs.
    static func paragraphLinePairs(_ text: String) -> [(line: String, next: String)] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let usage = lines.firstIndex { $0.hasPrefix("USAGE:") } ?? lines.count
        func indentation(_ line: String) -> Int { line.prefix { $0 == " " }.count }
        var pairs: [(line: String, next: String)] = []
        for index in lines.indices.dropLast() {
            let (line, next) = (lines[index], lines[index + 1])
            guard !line.isEmpty, !next.isEmpty, !line.hasPrefix("USAGE:") else { continue }
            if index + 1 < usage {
                if indentation(line) == 0 && indentation(next) == 0 { pairs.append((line, next)) }
            } else if index > usage, indentation(next) >= 20 {
                // An entry's label alone on its line ("--max-tokens-per-domain <…>") holds no help yet.
                let isBareLabel = indentation(line) == 2 && !line.dropFirst(2).contains("  ")
                if !isBareLabel { pairs.append((line, next)) }
            }
        }
        return pairs
    }

    /// Rendered too wide to wrap, a help text shows its source lines: every paragraph of every
    /// abstract, discussion and option help must be one line, so that ArgumentParser alone
    /// wraps it. (Before this test, "Training is measured\non one core" and "Harvey, Weale,\n
    /// Yilmaz" were hard line breaks inside sentences.)
    @Test func helpParagraphsHaveNoHardLineBreaks() throws {
        for (command, text) in try Self.helpTexts(columns: 10_000) {
            for (line, next) in Self.paragraphLinePairs(text) {
                Issue.record("\(command) --help breaks a paragraph by hand:\n\(line)\n\(next)")
            }
        }
    }

    /// At 80 columns every line that a paragraph continues is full: the next line's first word
    /// would not have fitted on it. A hand-made line break inside a sentence leaves a short line
    /// followed by more of the sentence ("Weale,\nYilmaz 2025").
    @Test func helpAtEightyColumnsIsWrappedOnce() throws {
        let width = 80
        for (command, text) in try Self.helpTexts(columns: width) {
            for (line, next) in Self.paragraphLinePairs(text) {
                let nextWord = next.drop { $0 == " " }.prefix { $0 != " " }
                // Two columns of slack: an option's first line starts two columns later than
                // ArgumentParser's wrapping counts it.
                #expect(
                    line.count + 1 + nextWord.count + 2 > width,
                    "\(command) --help at \(width) columns: \"\(nextWord)\" would fit after \"\(line)\"")
            }
            for line in text.split(separator: "\n") where !line.hasPrefix("USAGE:") {
                // A word longer than the width is the only reason to pass it.
                #expect(line.count <= width || !line.trimmingCharacters(in: .whitespaces).contains(" "), "\(command): \(line)")
            }
        }
    }

    /// `moescope --version` prints the one version string, `MoEScope.version`, and exits 0.
    @Test func versionIsPrinted() throws {
        let source = try String(contentsOfFile: "\(HostileInputTests.root)/Sources/moescope/MoEScope.swift", encoding: .utf8)
        let declared = try #require(source.firstMatch(of: /static let version = "([^"]+)"/)).1
        let output = try Self.run(["--version"])
        #expect(output.status == 0, "\(output.stderr)")
        #expect(output.stdout == "\(declared)\n")
        #expect(declared.wholeMatch(of: /[0-9]+\.[0-9]+\.[0-9]+/) != nil, "\(declared) is not MAJOR.MINOR.PATCH")
    }

    /// The bash completion script argument-parser generates, sourced into bash: it completes
    /// subcommand names, a command's options and an option's values.
    @Test func bashCompletionCompletesCommandsAndOptions() throws {
        let script = try Self.run(["--generate-completion-script", "bash"])
        #expect(script.status == 0, "\(script.stderr)")
        for command in Self.commands { #expect(script.stdout.contains(command), "\(command) is missing from the bash script") }
        for shell in ["zsh", "fish"] {
            let other = try Self.run(["--generate-completion-script", shell])
            #expect(other.status == 0 && other.stdout.contains("trace"), "\(shell): \(other.stderr)")
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-completion-\(UUID())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try script.stdout.write(toFile: "\(folder)/moescope.bash", atomically: true, encoding: .utf8)
        // What bash does on Tab: set COMP_WORDS/COMP_CWORD and call the function `complete` names.
        let complete = """
            source "$1"; shift
            function=$(complete -p moescope | sed -E 's/.*-F ([^ ]+).*/\\1/')
            COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
            "$function" moescope "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\\n' "${COMPREPLY[@]}"
            """
        func completions(_ words: [String]) throws -> Set<String> {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", complete, "complete", "\(folder)/moescope.bash"] + words
            var environment = ProcessInfo.processInfo.environment
            environment["PATH"] =
                URL(fileURLWithPath: HostileInputTests.binary).deletingLastPathComponent().path + ":" + (environment["PATH"] ?? "")
            process.environment = environment
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return Set(String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init))
        }
        let commands = try completions(["moescope", "tr"])
        #expect(commands.isSuperset(of: ["trace", "train"]), "\(commands)")
        let options = try completions(["moescope", "trace", "--ro"])
        #expect(options.contains("--router"), "\(options)")
        let routers = try completions(["moescope", "trace", "--router", "g"])
        #expect(routers == ["gru"], "\(routers)")
    }
}
