import Foundation
import MoECore

/// A BPE tokenizer read from a Hugging Face tokenizer.json, in either of the two forms MoE
/// models ship:
/// - byte-level (GPT-2, Qwen, OLMoE, DeepSeek): special tokens split out first, then the
///   pre-tokenizer's regex, then each piece's UTF-8 bytes, written as GPT-2's printable
///   stand-in characters, merged pair by pair in merge-rank order;
/// - SentencePiece-style (Mixtral, Llama 2): spaces become "▁" (a normaliser or a Metaspace
///   pre-tokenizer), merges run over characters, and a character outside the vocabulary is
///   spelled as its UTF-8 bytes in <0xXX> tokens (byte fallback).
/// A post-processor template (a BOS token, say) is applied as transformers applies it. Other
/// models (WordPiece, Unigram) and pre-tokenizers are refused with a message naming the part.
public struct HubTokenizer: TextTokenizer, @unchecked Sendable {
    public let vocabSize: Int
    let vocabulary: [String: Int]
    let tokenText: [Int: String]  // id → vocabulary string (or a special token's text)
    let specialTokens: [String: Int]
    let mergeRank: [String: Int]  // "a b" → rank
    let ignoreMerges: Bool
    let style: Style
    let normalizeNFC: Bool
    /// Ids the post-processor puts around every encoded text.
    let prefixIDs: [Int], suffixIDs: [Int]

    enum Style {
        /// `splitter` nil: the whole text is one piece.
        case byteLevel(splitter: NSRegularExpression?, addPrefixSpace: Bool)
        /// `prepend`: "▁" goes before each piece; `split`: words are cut before every "▁".
        case sentencePiece(prepend: Bool, split: Bool, byteFallback: Bool, unknown: Int?)
    }

    static let marker = "▁"

    /// GPT-2's pre-tokenizer pattern, what ByteLevel(use_regex: true) applies.
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    /// GPT-2's byte ↔ character table: printable bytes stand for themselves, the rest map to
    /// U+0100 upwards, so every byte sequence is a string of visible characters.
    static let byteToCharacter: [Character] = {
        let printable = Set(Array(33...126) + Array(161...172) + Array(174...255))
        var table = [Character](repeating: " ", count: 256)
        var next = 256
        for b in 0..<256 {
            if printable.contains(b) {
                table[b] = Character(Unicode.Scalar(UInt32(b))!)
            } else {
                table[b] = Character(Unicode.Scalar(UInt32(next))!)
                next += 1
            }
        }
        return table
    }()
    static let characterToByte: [Character: UInt8] = Dictionary(uniqueKeysWithValues: byteToCharacter.enumerated().map { ($1, UInt8($0)) })

    /// A token's text as a message shows it: quoted, at most 40 characters, control characters
    /// escaped, so a hostile vocabulary still gets a one-line error.
    static func quoted(_ text: String) -> String {
        let shown = text.count > 40 ? text.prefix(40) + "…" : Substring(text)
        return "\"" + shown.unicodeScalars.map { $0.escaped(asASCII: false) }.joined() + "\""
    }

    public init(file path: String) throws {
        let folder = (path as NSString).deletingLastPathComponent
        @Sendable func refuse(_ detail: String) -> HubError { .unsupportedTokenizer(path: folder, detail: detail) }
        guard FileManager.default.fileExists(atPath: path) else {
            throw HubError.notAModelFolder(path: folder, detail: "no tokenizer.json, so text cannot be encoded")
        }
        let data = try RegularFile.read(path, what: "tokenizer", limit: 512 << 20)
        let parsed: JSONValue
        // Equivalent vocabulary strings are distinct tokens; the vocabulary keeps the last (see `EquivalentKeys`).
        do { parsed = try JSONValue.parse(data, equivalentKeys: .keepLast) } catch { throw refuse("not valid JSON (\(error))") }
        guard let root = parsed.objectValue, let modelObject = root["model"]?.objectValue else {
            throw refuse("not a JSON object with a \"model\"")
        }
        // Typed reads, each failure naming the field ("model.merges must be a list, is …").
        let json = ConfigFields(object: root, invalid: { refuse("\($0) \($1)") }, missing: { refuse("\($0) is missing") })
        let model = json.nested("model", modelObject)
        let type = try model.optionalString("type")
        guard type == "BPE" else { throw refuse("model.type is \"\(type ?? "missing")\", not BPE") }
        var vocab: [String: Int] = [:]
        guard let vocabObject = modelObject["vocab"]?.objectValue else {
            throw refuse("model.vocab is missing or not an object of whole numbers")
        }
        for text in vocabObject.keys {
            guard let id = vocabObject[text]?.numberValue?.exactInt else {
                throw refuse("model.vocab gives \(Self.quoted(text)) an id that is not a whole number; every id must be one")
            }
            guard id >= 0, id < SizeLimits.vocabulary else {
                throw refuse("model.vocab gives \(Self.quoted(text)) the id \(id), outside 0…\(SizeLimits.vocabulary - 1)")
            }
            vocab[text] = id
        }
        var ranks: [String: Int] = [:]
        for (rank, merge) in (try model.optionalArray("merges") ?? []).enumerated() {
            let pair: [String]
            if let text = merge.stringValue {
                pair = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            } else if let items = merge.arrayValue, case let strings = items.compactMap(\.stringValue), strings.count == items.count {
                pair = strings
            } else {
                throw refuse("model.merges entry \(rank) is neither \"a b\" nor [a, b]")
            }
            guard pair.count == 2, vocab[pair[0]] != nil, vocab[pair[1]] != nil, vocab[pair[0] + pair[1]] != nil else {
                throw refuse("model.merges entry \(rank) (\(pair)) joins tokens that are not all in model.vocab")
            }
            ranks[pair[0] + " " + pair[1]] = rank
        }
        mergeRank = ranks
        ignoreMerges = try model.optionalBool("ignore_merges") ?? false

        /// A part's steps: the part itself, or a Sequence's list under `listKey`, each read with
        /// its field path ("normalizer.normalizers[1].prepend").
        func steps(_ part: String, listedUnder listKey: String) throws -> [ConfigFields] {
            guard let object = try json.optionalObject(part) else { return [] }
            let fields = json.nested(part, object)
            guard try fields.optionalString("type") == "Sequence" else { return [fields] }
            return try (fields.optionalObjectArray(listKey) ?? []).enumerated().map { fields.nested("\(listKey)[\($0)]", $1) }
        }
        /// `field` of the object `step[outer]`, when both are there.
        func nestedString(_ step: ConfigFields, _ outer: String, _ field: String) throws -> String? {
            try step.optionalObject(outer).flatMap { try step.nested(outer, $0).optionalString(field) }
        }

        // Normaliser: none, NFC, or SentencePiece's Prepend("▁") + Replace(" " → "▁").
        var nfc = false
        var prependMarker = false
        var replaceSpaces = false
        for step in try steps("normalizer", listedUnder: "normalizers") {
            switch try step.optionalString("type") {
            case "NFC": nfc = true
            case "Prepend" where try step.optionalString("prepend") == Self.marker: prependMarker = true
            case "Replace" where try nestedString(step, "pattern", "String") == " " && step.optionalString("content") == Self.marker:
                replaceSpaces = true
            case let other: throw refuse("normalizer \"\(other ?? "unknown")\"")
            }
        }
        normalizeNFC = nfc
        // Pre-tokenizer: ByteLevel, Split(regex) then ByteLevel, Metaspace, or none.
        var pattern: String?
        var prefix = false
        var byteLevel = false
        var metaspace: (prepend: Bool, split: Bool)?
        var preTokenizerTypes: [String] = []
        for step in try steps("pre_tokenizer", listedUnder: "pretokenizers") {
            let type = try step.optionalString("type")
            if let type { preTokenizerTypes.append(type) }
            switch type {
            case "ByteLevel":
                byteLevel = true
                prefix = try step.optionalBool("add_prefix_space") ?? false
                if try step.optionalBool("use_regex") ?? true { pattern = pattern ?? Self.gpt2Pattern }
            case "Split":
                guard let regex = try nestedString(step, "pattern", "Regex") else {
                    throw refuse("a Split pre-tokenizer without a Regex pattern")
                }
                guard pattern == nil else { throw refuse("more than one Split pre-tokenizer") }
                pattern = regex
            case "Metaspace" where try step.optionalString("replacement") ?? Self.marker == Self.marker:
                metaspace = (
                    prepend: try step.optionalString("prepend_scheme") ?? "always" != "never", split: try step.optionalBool("split") ?? true
                )
            case let other:
                throw refuse("pre_tokenizer \"\(other ?? "unknown")\"")
            }
        }
        let byteFallback = try model.optionalBool("byte_fallback") ?? false
        let unknown = try model.optionalString("unk_token").flatMap { vocab[$0] }
        if byteLevel {
            guard !byteFallback, metaspace == nil, !replaceSpaces else {
                throw refuse("a ByteLevel pre-tokenizer mixed with SentencePiece-style parts")
            }
            do {
                style = .byteLevel(splitter: try pattern.map { try NSRegularExpression(pattern: $0) }, addPrefixSpace: prefix)
            } catch { throw refuse("the pre-tokenizer regex does not compile: \(error)") }
        } else if let metaspace {
            style = .sentencePiece(prepend: metaspace.prepend, split: metaspace.split, byteFallback: byteFallback, unknown: unknown)
        } else if replaceSpaces {
            style = .sentencePiece(prepend: prependMarker, split: false, byteFallback: byteFallback, unknown: unknown)
        } else {
            throw refuse(
                "neither a ByteLevel pre-tokenizer nor SentencePiece's \"▁\" for spaces (pre_tokenizer: \(preTokenizerTypes))"
            )
        }

        // Post-processor: a template's special tokens around the text ($A); ByteLevel changes no ids.
        var before: [Int] = []
        var after: [Int] = []
        for processor in try steps("post_processor", listedUnder: "processors") {
            switch try processor.optionalString("type") {
            case "ByteLevel": continue
            case "TemplateProcessing":
                let specials = try processor.optionalObject("special_tokens")
                var seenText = false
                for piece in try processor.optionalObjectArray("single") ?? [] {
                    if piece["Sequence"] != nil {
                        seenText = true
                        continue
                    }
                    guard let name = piece["SpecialToken"]?.objectValue?["id"]?.stringValue, let specials,
                        let special = specials[name]?.objectValue,
                        let ids = try processor.nested("special_tokens", specials).nested(name, special)
                            .optionalIntArray("ids", in: 0...SizeLimits.vocabulary - 1)
                    else { throw refuse("post_processor template names an unknown special token") }
                    if seenText { after += ids } else { before += ids }
                }
            case let other: throw refuse("post_processor \"\(other ?? "unknown")\"")
            }
        }
        prefixIDs = before
        suffixIDs = after

        // Every character text can hold must have a token, or encoding would silently drop it.
        switch style {
        case .byteLevel:
            if let missing = Self.byteToCharacter.firstIndex(where: { vocab[String($0)] == nil }) {
                throw refuse(
                    String(
                        format: "model.vocab lacks the byte-level token for byte 0x%02X, so text holding it could not be encoded", missing))
            }
        case .sentencePiece(_, _, let byteFallback, let unknown):
            let allBytes = (0..<256).allSatisfy { vocab[String(format: "<0x%02X>", $0)] != nil }
            guard (byteFallback && allBytes) || unknown != nil else {
                throw refuse(
                    byteFallback
                        ? "byte_fallback is on but model.vocab lacks some <0xXX> byte tokens, and there is no unk_token"
                        : "model has neither byte_fallback nor an unk_token, so characters outside its vocabulary would be lost")
            }
        }

        var special: [String: Int] = [:]
        var texts: [Int: String] = [:]
        for (text, id) in vocab { texts[id] = text }
        for (index, entry) in (try json.optionalObjectArray("added_tokens") ?? []).enumerated() {
            let added = json.nested("added_tokens[\(index)]", entry)
            guard let id = try added.optionalInt("id", in: Int.min...Int.max), let content = try added.optionalString("content") else {
                continue
            }
            guard id >= 0, id < SizeLimits.vocabulary, !content.isEmpty else {
                throw refuse(
                    "added_tokens has an entry with id \(id) and content \(Self.quoted(content)); ids must be in 0…\(SizeLimits.vocabulary - 1) and contents non-empty"
                )
            }
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
        if case .byteLevel(_, true) = style, !input.hasPrefix(" ") { input = " " + input }
        var ids: [Int] = []
        var cache: [String: [Int]] = [:]
        for (piece, isSpecial) in splitSpecial(input) {
            if isSpecial {
                ids.append(specialTokens[piece]!)
                continue
            }
            for word in preTokenize(piece) {
                if let known = cache[word] {
                    ids += known
                    continue
                }
                let encoded = bpe(word)
                cache[word] = encoded
                ids += encoded
            }
        }
        return prefixIDs + ids + suffixIDs
    }

    public func bytes(of id: Int) -> [UInt8] {
        guard let text = tokenText[id] else { return Array("\u{FFFD}".utf8) }
        if specialTokens[text] == id { return Array(text.utf8) }
        switch style {
        case .byteLevel:
            return text.map { Self.characterToByte[$0] ?? 0x3F }
        case .sentencePiece:
            if text.count == 6, text.hasPrefix("<0x"), text.hasSuffix(">"), let byte = UInt8(text.dropFirst(3).prefix(2), radix: 16) {
                return [byte]
            }
            return Array(text.replacingOccurrences(of: Self.marker, with: " ").utf8)
        }
    }

    /// The text cut at every special token (longest first), each piece flagged.
    func splitSpecial(_ text: String) -> [(String, Bool)] {
        guard !specialTokens.isEmpty else { return [(text, false)] }
        let specials = specialTokens.keys.sorted { $0.count > $1.count }
        var pieces: [(String, Bool)] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            var earliest: (Range<Substring.Index>, String)?
            for special in specials {
                if let range = rest.range(of: special), earliest == nil || range.lowerBound < earliest!.0.lowerBound {
                    earliest = (range, special)
                }
            }
            guard let (range, special) = earliest else {
                pieces.append((String(rest), false))
                break
            }
            if range.lowerBound > rest.startIndex { pieces.append((String(rest[..<range.lowerBound]), false)) }
            pieces.append((special, true))
            rest = rest[range.upperBound...]
        }
        return pieces
    }

    /// The pre-tokenizer's pieces: GPT-2 stand-in characters (byte-level), or text with "▁"
    /// for spaces (SentencePiece-style).
    func preTokenize(_ text: String) -> [String] {
        switch style {
        case .sentencePiece(let prepend, let split, _, _):
            let marked = (prepend ? Self.marker : "") + text.replacingOccurrences(of: " ", with: Self.marker)
            guard split else { return [marked] }
            var words: [String] = []
            var current = ""
            for scalar in marked.unicodeScalars {
                if String(scalar) == Self.marker, !current.isEmpty {
                    words.append(current)
                    current = ""
                }
                current.unicodeScalars.append(scalar)
            }
            if !current.isEmpty { words.append(current) }
            return words
        case .byteLevel(let splitter, _):
            let words: [String]
            if let splitter {
                let ns = text as NSString
                var found: [String] = []
                var last = 0
                for match in splitter.matches(in: text, range: NSRange(location: 0, length: ns.length)) {
                    // Split(behavior: Isolated) keeps the text between matches as pieces too.
                    if match.range.location > last {
                        found.append(ns.substring(with: NSRange(location: last, length: match.range.location - last)))
                    }
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
    }

    /// Byte-pair merges on one piece: repeatedly join the adjacent pair of lowest rank. Symbols
    /// left outside the vocabulary become their bytes' <0xXX> tokens (byte fallback) or the
    /// unknown token, consecutive unknowns fused into one.
    func bpe(_ word: String) -> [Int] {
        if ignoreMerges, let id = vocabulary[word] { return [id] }
        var symbols = word.unicodeScalars.map { String($0) }
        while symbols.count > 1 {
            var best: (rank: Int, index: Int)?
            for i in 0..<(symbols.count - 1) {
                if let rank = mergeRank[symbols[i] + " " + symbols[i + 1]], best == nil || rank < best!.rank { best = (rank, i) }
            }
            guard let (_, i) = best else { break }
            symbols[i] += symbols[i + 1]
            symbols.remove(at: i + 1)
        }
        var ids: [Int] = []
        for symbol in symbols {
            if let id = vocabulary[symbol] {
                ids.append(id)
                continue
            }
            guard case .sentencePiece(_, _, let byteFallback, let unknown) = style else { continue }
            let fallback = byteFallback ? symbol.utf8.map { vocabulary[String(format: "<0x%02X>", $0)] } : []
            if byteFallback, fallback.allSatisfy({ $0 != nil }) {
                ids += fallback.map { $0! }
                continue
            }
            if let unknown, ids.last != unknown { ids.append(unknown) }
        }
        return ids
    }
}
