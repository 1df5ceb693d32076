import Foundation
import MoECore

/// A byte-level BPE tokenizer read from a Hugging Face tokenizer.json (GPT-2, Qwen, OLMoE,
/// DeepSeek style): special tokens split out first, then the pre-tokenizer's regex, then each
/// piece's UTF-8 bytes, written as GPT-2's printable stand-in characters, merged pair by pair
/// in merge-rank order. Anything else (SentencePiece/Metaspace, WordPiece, Unigram, byte
/// fallback) is refused with a message naming the part that is not byte-level BPE.
public struct HubTokenizer: TextTokenizer, @unchecked Sendable {
    public let vocabSize: Int
    let vocabulary: [String: Int]
    let tokenText: [Int: String]             // id → stand-in characters (or a special token's text)
    let specialTokens: [String: Int]
    let mergeRank: [String: Int]             // "a b" → rank
    let splitter: NSRegularExpression?       // nil: the whole text is one piece
    let addPrefixSpace: Bool
    let normalizeNFC: Bool
    let ignoreMerges: Bool

    /// GPT-2's pre-tokenizer pattern, what ByteLevel(use_regex: true) applies.
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    /// GPT-2's byte ↔ character table: printable bytes stand for themselves, the rest map to
    /// U+0100 upwards, so every byte sequence is a string of visible characters.
    static let byteToCharacter: [Character] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var table = [Character](repeating: " ", count: 256)
        var next = 256
        for b in 0..<256 {
            if printable.contains(b) { table[b] = Character(Unicode.Scalar(UInt32(b))!) } else {
                table[b] = Character(Unicode.Scalar(UInt32(next))!); next += 1
            }
        }
        printable.removeAll()
        return table
    }()
    static let characterToByte: [Character: UInt8] = Dictionary(uniqueKeysWithValues: byteToCharacter.enumerated().map { ($1, UInt8($0)) })

    public init(file path: String) throws {
        let folder = (path as NSString).deletingLastPathComponent
        func refuse(_ detail: String) -> HubError { .unsupportedTokenizer(path: folder, detail: detail) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HubError.notAModelFolder(path: folder, detail: "no tokenizer.json, so text cannot be encoded")
        }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let model = json["model"] as? [String: Any] else { throw refuse("not a JSON object with a \"model\"") }
        guard (model["type"] as? String) == "BPE" else { throw refuse("model.type is \"\(model["type"] ?? "missing")\", not BPE") }
        if model["byte_fallback"] as? Bool == true { throw refuse("model.byte_fallback is set (a SentencePiece-style BPE)") }
        guard let vocab = model["vocab"] as? [String: Int] else { throw refuse("model.vocab is missing") }
        var ranks: [String: Int] = [:]
        for (rank, merge) in ((model["merges"] as? [Any]) ?? []).enumerated() {
            if let text = merge as? String { ranks[text] = rank }
            else if let pair = merge as? [String], pair.count == 2 { ranks[pair[0] + " " + pair[1]] = rank }
            else { throw refuse("model.merges entry \(rank) is neither \"a b\" nor [a, b]") }
        }
        mergeRank = ranks
        ignoreMerges = model["ignore_merges"] as? Bool ?? false

        switch (json["normalizer"] as? [String: Any])?["type"] as? String {
        case nil: normalizeNFC = false
        case "NFC": normalizeNFC = true
        case let other?: throw refuse("normalizer \"\(other)\"")
        }
        // Pre-tokenizer: ByteLevel, or a Sequence of Split(regex) then ByteLevel(use_regex: false).
        var pattern: String?, prefix = false, sawByteLevel = false
        let pre = json["pre_tokenizer"] as? [String: Any]
        let steps = (pre?["type"] as? String) == "Sequence" ? (pre?["pretokenizers"] as? [[String: Any]] ?? []) : (pre.map { [$0] } ?? [])
        for step in steps {
            switch step["type"] as? String {
            case "ByteLevel":
                sawByteLevel = true
                prefix = step["add_prefix_space"] as? Bool ?? false
                if step["use_regex"] as? Bool ?? true { pattern = pattern ?? Self.gpt2Pattern }
            case "Split":
                guard let regex = (step["pattern"] as? [String: Any])?["Regex"] as? String else { throw refuse("a Split pre-tokenizer without a Regex pattern") }
                guard pattern == nil else { throw refuse("more than one Split pre-tokenizer") }
                pattern = regex
            case "Digits" where step["individual_digits"] as? Bool == true:
                throw refuse("pre_tokenizer Digits(individual_digits)")
            case let other:
                throw refuse("pre_tokenizer \"\(other ?? "unknown")\"")
            }
        }
        guard sawByteLevel else { throw refuse("no ByteLevel pre-tokenizer (pre_tokenizer: \(steps.compactMap { $0["type"] as? String }))") }
        addPrefixSpace = prefix
        do { splitter = try pattern.map { try NSRegularExpression(pattern: $0) } } catch { throw refuse("the pre-tokenizer regex does not compile: \(error)") }

        var special: [String: Int] = [:], texts: [Int: String] = [:]
        for (text, id) in vocab { texts[id] = text }
        for case let added as [String: Any] in (json["added_tokens"] as? [Any]) ?? [] {
            guard let id = added["id"] as? Int, let content = added["content"] as? String else { continue }
            special[content] = id
            texts[id] = content
        }
        var merged = vocab
        for (text, id) in special { merged[text] = id }
        vocabulary = merged
        specialTokens = special
        tokenText = texts
        vocabSize = (texts.keys.max() ?? -1) + 1
    }

    public func encode(_ text: String) -> [Int] {
        var input = normalizeNFC ? text.precomposedStringWithCanonicalMapping : text
        if addPrefixSpace && !input.hasPrefix(" ") { input = " " + input }
        var ids: [Int] = [], cache: [String: [Int]] = [:]
        for (piece, isSpecial) in splitSpecial(input) {
            if isSpecial { ids.append(specialTokens[piece]!); continue }
            for word in preTokenize(piece) {
                if let known = cache[word] { ids += known; continue }
                let encoded = bpe(word)
                cache[word] = encoded
                ids += encoded
            }
        }
        return ids
    }

    public func bytes(of id: Int) -> [UInt8] {
        guard let text = tokenText[id] else { return Array("\u{FFFD}".utf8) }
        if specialTokens[text] == id { return Array(text.utf8) }
        return text.map { Self.characterToByte[$0] ?? 0x3F }
    }

    /// The text cut at every special token (longest first), each piece flagged.
    func splitSpecial(_ text: String) -> [(String, Bool)] {
        guard !specialTokens.isEmpty else { return [(text, false)] }
        let specials = specialTokens.keys.sorted { $0.count > $1.count }
        var pieces: [(String, Bool)] = [], rest = Substring(text)
        while !rest.isEmpty {
            var earliest: (Range<Substring.Index>, String)?
            for special in specials {
                if let range = rest.range(of: special), earliest == nil || range.lowerBound < earliest!.0.lowerBound { earliest = (range, special) }
            }
            guard let (range, special) = earliest else { pieces.append((String(rest), false)); break }
            if range.lowerBound > rest.startIndex { pieces.append((String(rest[..<range.lowerBound]), false)) }
            pieces.append((special, true))
            rest = rest[range.upperBound...]
        }
        return pieces
    }

    /// The pre-tokenizer's pieces, each as GPT-2 stand-in characters.
    func preTokenize(_ text: String) -> [String] {
        let words: [String]
        if let splitter {
            let ns = text as NSString
            var found: [String] = [], last = 0
            for match in splitter.matches(in: text, range: NSRange(location: 0, length: ns.length)) {
                // Split(behavior: Isolated) keeps the text between matches as pieces too.
                if match.range.location > last { found.append(ns.substring(with: NSRange(location: last, length: match.range.location - last))) }
                if match.range.length > 0 { found.append(ns.substring(with: match.range)) }
                last = match.range.location + match.range.length
            }
            if last < ns.length { found.append(ns.substring(from: last)) }
            words = found
        } else {
            words = [text]
        }
        return words.map { String($0.utf8.map { Self.byteToCharacter[Int($0)] }) }
    }

    /// Byte-pair merges on one piece: repeatedly join the adjacent pair of lowest rank.
    func bpe(_ word: String) -> [Int] {
        if ignoreMerges, let id = vocabulary[word] { return [id] }
        var symbols = word.map { String($0) }
        while symbols.count > 1 {
            var best: (rank: Int, index: Int)?
            for i in 0..<(symbols.count - 1) {
                if let rank = mergeRank[symbols[i] + " " + symbols[i + 1]], best == nil || rank < best!.rank { best = (rank, i) }
            }
            guard let (_, i) = best else { break }
            symbols[i] += symbols[i + 1]
            symbols.remove(at: i + 1)
        }
        return symbols.map { vocabulary[$0] ?? vocabulary[String($0.first!)] ?? 0 }
    }
}
