import ArgumentParser
import Foundation
import MoECore
import MoETraining

struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Train the byte-level BPE tokenizer on the corpus's training split.")

    @Option(help: "Total vocabulary: 256 bytes + merges + special tokens.") var vocabSize = 1024
    @Option(help: ArgumentHelp("Corpus (JSON lines; default: corpus/corpus.jsonl in the assets folder).", valueName: "path"))
    var corpus: String?
    @Option(help: ArgumentHelp("Where to write the tokenizer (default: tokenizer.json in the assets folder).", valueName: "path"))
    var output: String?
    @OptionGroup var assets: AssetOptions

    func validate() throws {
        guard (258...SizeLimits.vocabulary).contains(vocabSize) else {
            throw ValidationError(
                "--vocab-size must be between 258 (256 bytes and one special token) and \(SizeLimits.vocabulary), got \(vocabSize)")
        }
        if let output { try OutputPath.check(output, option: "--output") }
        // The default output is the shipped tokenizer every checkpoint was trained with: it is
        // only replaced by retraining it on the shipped corpus, never by a tokenizer of another.
        if corpus != nil, output == nil {
            throw ValidationError("--corpus given without --output — name the file to write (the default is the assets folder's tokenizer)")
        }
    }

    func run() throws {
        // The defaults live in the assets folder, found the way every other command finds it, so
        // the command works from any directory (a path relative to the current one did not).
        let corpus = try self.corpus ?? assets.locate(marker: AssetLocator.corpusFile).corpusPath
        let output = try self.output ?? assets.locate(marker: AssetLocator.corpusFile).tokenizerPath
        if self.output == nil { try OutputPath.check(output, option: "--output") }
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
