import Foundation
import MoECore

/// One document of the training corpus (a line of `assets/corpus/corpus.jsonl`).
public struct CorpusDocument: Codable, Sendable, Equatable {
    public var domain: String
    public var source: String
    public var license: String
    public var split: Split
    public var text: String

    public enum Split: String, Codable, Sendable { case train, heldout }

    public init(domain: String, source: String = "", license: String = "", split: Split, text: String) {
        self.domain = domain
        self.source = source
        self.license = license
        self.split = split
        self.text = text
    }
}

/// The multi-domain corpus: documents tagged with their domain and a fixed train / held-out split.
public struct Corpus: Sendable {
    public var documents: [CorpusDocument]

    public init(documents: [CorpusDocument]) { self.documents = documents }

    public static func load(path: String) throws -> Corpus {
        let data = try RegularFile.read(
            path, what: "corpus", limit: 4 << 30,
            remedy: "run from the repository root or pass --assets DIR")
        let decoder = JSONDecoder()
        var documents: [CorpusDocument] = []
        for (number, line) in data.split(separator: UInt8(ascii: "\n")).enumerated() where !line.isEmpty {
            do {
                documents.append(try decoder.decode(CorpusDocument.self, from: Data(line)))
            } catch {
                throw CorpusError("corpus \(path) line \(number + 1) is not a valid document — rebuild it with scripts/build_corpus.py")
            }
        }
        return Corpus(documents: documents)
    }

    public func documents(in split: CorpusDocument.Split) -> [CorpusDocument] { documents.filter { $0.split == split } }

    /// Domain names in first-seen order.
    public var domains: [String] {
        var seen = Set<String>()
        return documents.compactMap { seen.insert($0.domain).inserted ? $0.domain : nil }
    }
}

public struct CorpusError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
