import Foundation
import MoECore
import Testing

@testable import MoEHub

/// tokenizer.json parity, and the one-line errors for folders moescope cannot open.
@Suite final class HubLoadingTests {
    /// The folders a test makes, removed with it (swift-testing makes one instance a test).
    let scratchRoot = FileManager.default.temporaryDirectory.appendingPathComponent("hub-\(UUID())").path
    deinit { try? FileManager.default.removeItem(atPath: scratchRoot) }

    static let fixtures = HubParityTests.fixtures

    /// GPT-2-style (ByteLevel regex) and Qwen-style (NFC, Split regex, ByteLevel) tokenizers give
    /// the ids the tokenizers library gave, special token included, and decode back to the text.
    @Test(arguments: ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"])
    func tokenizerMatchesTokenizersLibrary(family: String) throws {
        let folder = "\(Self.fixtures)/\(family)"
        let reference = try HubParityTests.Reference(folder: folder)
        let tokenizer = try HubTokenizer(file: "\(folder)/tokenizer.json")
        #expect(reference.text.contains("<|endoftext|>"))
        #expect(tokenizer.encode(reference.text) == reference.ids)
        if family == "mixtral" {
            // SentencePiece-style: <s> first, and "▁" before each piece, the one after a special
            // token included (as transformers does); ß and 🙂 spelled in <0xXX> byte tokens.
            let pieces = reference.text.components(separatedBy: "<|endoftext|>")
            #expect(tokenizer.decode(reference.ids) == "<s> " + pieces.joined(separator: "<|endoftext|> "))
            let bytes = tokenizer.encode("ß")
            #expect(bytes.suffix(2).map { tokenizer.displayText(of: $0) } == ["‹c3›", "‹9f›"])
        } else {
            #expect(tokenizer.decode(reference.ids) == reference.text)
            #expect(tokenizer.encode("🙂").map { tokenizer.displayText(of: $0) }.joined().contains("‹"))
        }
    }

    func scratchFolder(config: [String: Any], copying files: [String] = [], from family: String = "mixtral") throws -> String {
        let folder = "\(scratchRoot)/\(UUID())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: "\(folder)/config.json"))
        for file in files { try FileManager.default.copyItem(atPath: "\(Self.fixtures)/\(family)/\(file)", toPath: "\(folder)/\(file)") }
        return folder
    }

    func fixtureConfig(_ family: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/\(family)/config.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    @Test func configErrorsNameTheField() throws {
        var config = try fixtureConfig("mixtral")
        config["model_type"] = "gpt_oss"
        var folder = try scratchFolder(config: config)
        #expect { try HubConfig(folder: folder) } throws: { "\($0)".contains("model_type \"gpt_oss\" is not supported") }

        config = try fixtureConfig("mixtral")
        config.removeValue(forKey: "num_local_experts")
        folder = try scratchFolder(config: config)
        #expect { try HubConfig(folder: folder) } throws: { "\($0)".contains("lacks the field \"num_local_experts\"") }

        config = try fixtureConfig("qwen3_moe")
        config["num_key_value_heads"] = 3
        folder = try scratchFolder(config: config)
        #expect { try HubConfig(folder: folder) } throws: { "\($0)".contains("\"num_key_value_heads\" (3) must divide") }

        config = try fixtureConfig("olmoe")
        config["hidden_size"] = "wide"
        folder = try scratchFolder(config: config)
        #expect { try HubConfig(folder: folder) } throws: { "\($0)".contains("\"hidden_size\" must be a whole number, is a string") }

        config = try fixtureConfig("olmoe")
        config["rope_parameters"] = ["rope_type": "longrope", "rope_theta": 10000]
        folder = try scratchFolder(config: config)
        #expect { try HubConfig(folder: folder) } throws: { "\($0)".contains("\"rope_parameters.rope_type\" is \"longrope\"") }

        config = try fixtureConfig("olmoe")
        config["rope_parameters"] = ["rope_type": "yarn", "rope_theta": 10000]
        folder = try scratchFolder(config: config)
        #expect { try HubConfig(folder: folder) } throws: { "\($0)".contains("lacks the field \"rope_parameters.factor\"") }

        #expect { try HubConfig(folder: "/nonexistent") } throws: { "\($0)".contains("no such folder") }
    }

    @Test func weightsThatDoNotMatchTheConfigAreNamed() throws {
        var config = try fixtureConfig("mixtral")
        config["hidden_size"] = 48
        let folder = try scratchFolder(config: config, copying: ["model.safetensors"])
        #expect { try HubModel(folder: folder) } throws: {
            "\($0)".contains("model.embed_tokens.weight\" has shape [320, 32], config.json implies [320, 48]")
        }

        let empty = try scratchFolder(config: try fixtureConfig("mixtral"))
        #expect { try HubModel(folder: empty) } throws: { "\($0)".contains("no *.safetensors weights") }
    }

    /// A model larger than memory is refused up front, before anything is read.
    @Test func tooLargeForMemoryIsRefused() throws {
        let folder = "\(Self.fixtures)/olmoe"
        #expect { try HubModel(folder: folder, memoryLimit: 1000) } throws: { error in
            "\(error)".contains("the weights take") && "\(error)".contains("use a smaller model")
        }
    }

    @Test func unsupportedTokenizersAreRefused() throws {
        let folder = try scratchFolder(config: try fixtureConfig("mixtral"))
        let whitespace: [String: Any] = [
            "model": ["type": "BPE", "vocab": ["a": 0], "merges": []],
            "pre_tokenizer": ["type": "Whitespace"],
        ]
        try JSONSerialization.data(withJSONObject: whitespace).write(to: URL(fileURLWithPath: "\(folder)/tokenizer.json"))
        #expect { try HubTokenizer(file: "\(folder)/tokenizer.json") } throws: { "\($0)".contains("pre_tokenizer \"Whitespace\"") }
        let unigram: [String: Any] = ["model": ["type": "Unigram", "vocab": []]]
        try JSONSerialization.data(withJSONObject: unigram).write(to: URL(fileURLWithPath: "\(folder)/tokenizer.json"))
        #expect { try HubTokenizer(file: "\(folder)/tokenizer.json") } throws: { "\($0)".contains("model.type is \"Unigram\", not BPE") }
    }

    /// tokenizer.json is read field by field with its type: a field of the wrong type is refused
    /// by name; a key written twice is refused; vocabulary strings that are different text but
    /// canonically equivalent (distinct tokens in real vocabularies) load, the string keeping the
    /// last one's id, as when Foundation's parser read the file.
    @Test func tokenizerFieldsAreReadByType() throws {
        let folder = try scratchFolder(config: try fixtureConfig("mixtral"))
        let path = "\(folder)/tokenizer.json"
        func tokenizer(vocab: String, merges: String = "[]") throws -> HubTokenizer {
            let text = """
                {"model": {"type": "BPE", "vocab": \(vocab), "merges": \(merges), "unk_token": "<unk>"},
                 "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}"}}
                """
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            return try HubTokenizer(file: path)
        }
        let equivalent = try tokenizer(vocab: #"{"<unk>": 0, "\u00e9": 1, "e\u0301": 2}"#)
        #expect(equivalent.encode("\u{e9}") == [0, 2])
        #expect { try tokenizer(vocab: #"{"<unk>": 0}"#, merges: "{}") } throws: {
            "\($0)".contains("model.merges must be a list, is an object")
        }
        #expect { try tokenizer(vocab: #"{"<unk>": 0, "<unk>": 1}"#) } throws: { "\($0)".contains("duplicate key \"<unk>\"") }
        #expect { try tokenizer(vocab: #"{"<unk>": 0.5}"#) } throws: {
            "\($0)".contains("model.vocab gives \"<unk>\" an id that is not a whole number")
        }
        // A hostile token's text stays on one short line: escaped, clipped to 40 characters.
        let long = String(repeating: "x", count: 100)
        #expect { try tokenizer(vocab: #"{"<unk>": 0, "two\nlines\#(long)": 2000000000}"#) } throws: {
            let message = "\($0)"
            return !message.contains("\n") && message.contains(#""two\nlines"#) && message.contains("x…\"") && message.count < 400
        }
        #expect { try tokenizer(vocab: #"["<unk>"]"#) } throws: {
            "\($0)".contains("model.vocab is missing or not an object of whole numbers")
        }
    }
}
