import Foundation
import Testing

@testable import MoECore

@Suite struct TokenizerTests {
    static let trainingText = """
        The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.
        Der schnelle braune Fuchs springt über den faulen Hund. Él está aquí, ¿verdad?
        def add(x, y):\n    return x + y\n\nfor i in range(10):\n    print(add(i, 2024))
        日本語のテキストと中文文本。Emoji: 🙂🚀👩‍💻 and more text, text, text.
        """

    static let tokenizer = Tokenizer.train(on: trainingText, vocabSize: 400)

    @Test(arguments: [
        "", "hello world", "  leading and trailing  ", "tabs\tand\nnewlines\r\n", "Ünïcödé façade naïve",
        "日本語のテキスト", "中文文本和标点，。！", "🙂🚀👩‍💻🏳️‍🌈", "mixed 日本 🙂 text 123456789",
        "def f(x):\n    return x ** 2  # comment", "\u{0}\u{1F} control", "e\u{301} combining",
    ])
    func roundTripsUTF8(text: String) {
        let ids = Self.tokenizer.encode(text)
        #expect(Self.tokenizer.decode(ids) == text)
        #expect(ids.allSatisfy { $0 >= 0 && $0 < Self.tokenizer.vocabSize })
    }

    @Test func mergesShortenTrainingText() {
        let ids = Self.tokenizer.encode(Self.trainingText)
        #expect(ids.count < Self.trainingText.utf8.count * 2 / 3)
        #expect(Self.tokenizer.merges.count == 400 - 256 - 1)
        #expect(Self.tokenizer.vocabSize == 400)
    }

    @Test func trainingIsDeterministic() {
        #expect(Tokenizer.train(on: Self.trainingText, vocabSize: 350) == Tokenizer.train(on: Self.trainingText, vocabSize: 350))
    }

    @Test func chunksKeepWordsAndSpacesReadable() {
        let chunks = Tokenizer.chunks("Hello  world, 12345!\nok").map(String.init)
        #expect(chunks == ["Hello", " ", " world", ",", " 123", "45", "!", "\n", "ok"])
        #expect(chunks.joined() == "Hello  world, 12345!\nok")
    }

    @Test func decodingAnyIDSequenceNeverCrashes() {
        var g = SeededGenerator(seed: 9)
        for _ in 0..<200 {
            let ids = (0..<Int(g.next() % 12)).map { _ in Int(Int64(bitPattern: g.next()) % 2000) }
            _ = Self.tokenizer.decode(ids)
            _ = ids.map { Self.tokenizer.displayText(of: $0) }
        }
        #expect(Self.tokenizer.decode([-5, 99_999]) == "\u{FFFD}\u{FFFD}")
        #expect(Self.tokenizer.decode([Self.tokenizer.endOfTextID!]) == Tokenizer.endOfText)
        // A lone continuation byte is shown as hex, not as garbage.
        #expect(Self.tokenizer.displayText(of: 0x80) == "‹80›")
    }

    @Test func savesAndLoads() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID()).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Self.tokenizer.save(to: path)
        #expect(try Tokenizer.load(path: path) == Self.tokenizer)
        try Data("{\"format\":\"other\"}".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: CheckpointError.self) { try Tokenizer.load(path: path) }
    }
}
