import ArgumentParser
import Foundation
import MoECore
import MoETraining

struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Train the byte-level BPE tokenizer on the corpus's training split.")

    @Option(help: "Total vocabulary: 256 bytes + merges + special tokens.") var vocabSize = 1024
    @Option(help: ArgumentHelp("Corpus (JSON lines).", valueName: "path")) var corpus = "assets/corpus/corpus.jsonl"
    @Option(help: ArgumentHelp("Where to write the tokenizer.", valueName: "path")) var output = "assets/tokenizer.json"

    func validate() throws {
        guard (258...SizeLimits.vocabulary).contains(vocabSize) else {
            throw ValidationError(
                "--vocab-size must be between 258 (256 bytes and one special token) and \(SizeLimits.vocabulary), got \(vocabSize)")
        }
        try OutputPath.check(output, option: "--output")
    }

    func run() throws {
        // Checked here so the remedy names this command's option (Corpus.load's names --assets).
        try RegularFile.check(corpus, what: "corpus", remedy: "pass --corpus with the corpus's JSON-lines file")
        let documents = try Corpus.load(path: corpus).documents(in: .train)
        let text = documents.map(\.text).joined(separator: "\n")
        var progress = ProgressLine("tokenizer: merges", total: vocabSize - 257, unit: "merges")
        let tokenizer = Tokenizer.train(on: text, vocabSize: vocabSize) { done, _ in progress.update(done) }
        progress.finish()
        try tokenizer.save(to: output)
        let tokens = tokenizer.encode(text).count
        print(
            "wrote \(output): \(tokenizer.vocabSize) ids; training split is \(text.utf8.count) bytes → \(tokens) tokens (\(String(format: "%.2f", Double(text.utf8.count) / Double(tokens))) bytes/token)"
        )
    }
}
