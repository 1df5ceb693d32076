import Foundation
import Testing

@testable import MoETraining

@Suite struct CorpusTests {
    @Test func loadsDocumentsAndSplits() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("corpus-\(UUID()).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let lines = [
            #"{"domain":"english","source":"a","license":"BSD","split":"train","text":"Hello."}"#,
            #"{"domain":"python","source":"b","license":"PSF","split":"heldout","text":"def f(): pass"}"#,
            #"{"domain":"english","source":"c","license":"BSD","split":"train","text":"Bye."}"#,
        ]
        try Data(lines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: path))
        let corpus = try Corpus.load(path: path)
        #expect(corpus.documents.count == 3)
        #expect(corpus.domains == ["english", "python"])
        #expect(corpus.documents(in: .heldout).map(\.text) == ["def f(): pass"])
        try Data((lines + ["{broken"]).joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: path))
        #expect { try Corpus.load(path: path) } throws: { "\($0)".contains("line 4") }
    }

    @Test func shippedCorpusHasSeveralDomainsAndAHeldOutSplit() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let corpus = try Corpus.load(path: root.appendingPathComponent("assets/corpus/corpus.jsonl").path)
        #expect(corpus.domains.count >= 6)
        for domain in corpus.domains {
            #expect(corpus.documents.contains { $0.domain == domain && $0.split == .heldout }, "\(domain) has held-out text")
        }
        #expect(corpus.documents.allSatisfy { !$0.license.isEmpty && !$0.source.isEmpty })
    }
}
