import Foundation

/// Byte-level BPE (as GPT-2, without its byte-to-unicode remapping): ids 0–255 are raw bytes,
/// each learned merge adds one id, and special tokens come last. Text is first split into
/// word-like chunks ("␣word", digit runs, punctuation runs, whitespace) and merges never cross a
/// chunk, so tokens read as sub-words. Any UTF-8 text round-trips exactly; any id sequence decodes.
public struct Tokenizer: TextTokenizer, Equatable {
    public struct Pair: Hashable, Sendable, Comparable {
        public var first: Int, second: Int
        public init(_ first: Int, _ second: Int) {
            self.first = first
            self.second = second
        }
        public static func < (a: Pair, b: Pair) -> Bool { (a.first, a.second) < (b.first, b.second) }
    }

    public static let endOfText = "<|endoftext|>"

    public let merges: [Pair]
    public let specialTokens: [String]
    /// Bytes of every non-special id.
    let tokenBytes: [[UInt8]]
    let mergeRank: [Pair: Int]

    public init(merges: [Pair], specialTokens: [String] = [Tokenizer.endOfText]) {
        self.merges = merges
        self.specialTokens = specialTokens
        var bytes = (0..<256).map { [UInt8($0)] }
        var ranks: [Pair: Int] = [:]
        for (rank, pair) in merges.enumerated() {
            precondition(pair.first < bytes.count && pair.second < bytes.count, "merge \(rank) refers to a later id")
            bytes.append(bytes[pair.first] + bytes[pair.second])
            ranks[pair] = rank
        }
        tokenBytes = bytes
        mergeRank = ranks
    }

    public var vocabSize: Int { tokenBytes.count + specialTokens.count }
    public var endOfTextID: Int? { specialTokens.firstIndex(of: Self.endOfText).map { tokenBytes.count + $0 } }

    // MARK: Pre-tokenisation

    enum CharacterClass: Equatable { case letter, digit, space, newline, other }

    static func characterClass(_ scalar: Unicode.Scalar) -> CharacterClass {
        if scalar == "\n" || scalar == "\r" { return .newline }
        if scalar.properties.isWhitespace { return .space }
        if ("0"..."9").contains(scalar) { return .digit }
        if scalar.properties.isAlphabetic || scalar.properties.generalCategory == .nonspacingMark { return .letter }
        return .other
    }

    /// Splits text into the chunks BPE works inside. A single space before a word, number or
    /// punctuation run belongs to it ("␣the"); other whitespace stands alone; newlines are their
    /// own chunks so line structure stays visible.
    static func chunks(_ text: String) -> [Substring] {
        let scalars = text.unicodeScalars
        var result: [Substring] = []
        var index = scalars.startIndex
        while index < scalars.endIndex {
            let start = index
            var kind = characterClass(scalars[index])
            if kind == .space, scalars[index] == " " {
                let next = scalars.index(after: index)
                if next < scalars.endIndex, case let nextKind = characterClass(scalars[next]),
                    nextKind != .space, nextKind != .newline
                {
                    index = next
                    kind = nextKind
                }
            }
            var end = scalars.index(after: index)
            // Digit runs stop at three, as GPT-style tokenizers do, so numbers stay compositional.
            var length = 1
            while end < scalars.endIndex, characterClass(scalars[end]) == kind,
                kind != .newline, !(kind == .digit && length == 3)
            {
                // Leave the last space of a run to the word after it.
                if kind == .space, scalars[end] == " " {
                    let after = scalars.index(after: end)
                    if after < scalars.endIndex, ![.space, .newline].contains(characterClass(scalars[after])) { break }
                }
                end = scalars.index(after: end)
                length += 1
            }
            result.append(Substring(scalars[start..<end]))
            index = end
        }
        return result
    }

    // MARK: Encoding and decoding

    /// Applies merges to one chunk's bytes, lowest rank first, until none applies.
    func encodeChunk(_ bytes: [UInt8]) -> [Int] {
        var ids = bytes.map(Int.init)
        while ids.count > 1 {
            var bestRank = Int.max
            var bestIndex = -1
            for i in 0..<(ids.count - 1) {
                if let rank = mergeRank[Pair(ids[i], ids[i + 1])], rank < bestRank {
                    bestRank = rank
                    bestIndex = i
                }
            }
            guard bestIndex >= 0 else { break }
            let pair = merges[bestRank]
            let merged = 256 + bestRank
            var out: [Int] = []
            out.reserveCapacity(ids.count)
            var i = 0
            while i < ids.count {
                if i + 1 < ids.count, ids[i] == pair.first, ids[i + 1] == pair.second {
                    out.append(merged)
                    i += 2
                } else {
                    out.append(ids[i])
                    i += 1
                }
            }
            ids = out
        }
        return ids
    }

    /// Token ids of `text`. Special-token text in the input is encoded as ordinary bytes.
    public func encode(_ text: String) -> [Int] {
        var cache: [Substring: [Int]] = [:]
        var ids: [Int] = []
        for chunk in Self.chunks(text) {
            if let known = cache[chunk] {
                ids += known
                continue
            }
            let encoded = encodeChunk(Array(chunk.utf8))
            cache[chunk] = encoded
            ids += encoded
        }
        return ids
    }

    /// The bytes of one token (a special token's text; U+FFFD's bytes for an unknown id).
    public func bytes(of id: Int) -> [UInt8] {
        if id >= 0, id < tokenBytes.count { return tokenBytes[id] }
        if id >= tokenBytes.count, id < vocabSize { return Array(specialTokens[id - tokenBytes.count].utf8) }
        return Array("\u{FFFD}".utf8)
    }

    // MARK: Training

    /// Learns `vocabSize − 256 − specials` merges from `text`: repeatedly merge the most
    /// frequent adjacent pair (ties: the smallest pair, so training is deterministic).
    public static func train(
        on text: String, vocabSize: Int, specialTokens: [String] = [Tokenizer.endOfText],
        progress: ((Int, Int) -> Void)? = nil
    ) -> Tokenizer {
        let target = max(0, vocabSize - 256 - specialTokens.count)
        var counts: [String: Int] = [:]
        for chunk in chunks(text) { counts[String(chunk), default: 0] += 1 }
        let chunkTexts = counts.keys.sorted()
        var words = chunkTexts.map { Array($0.utf8).map(Int.init) }
        let frequency = chunkTexts.map { counts[$0]! }

        var pairCounts: [Pair: Int] = [:]
        var occurrences: [Pair: Set<Int>] = [:]
        for (w, word) in words.enumerated() where word.count > 1 {
            for i in 0..<(word.count - 1) {
                let pair = Pair(word[i], word[i + 1])
                pairCounts[pair, default: 0] += frequency[w]
                occurrences[pair, default: []].insert(w)
            }
        }
        var merges: [Pair] = []
        while merges.count < target {
            var best: Pair?
            var bestCount = 0
            for (pair, count) in pairCounts where count > bestCount || (count == bestCount && count > 0 && pair < best!) {
                best = pair
                bestCount = count
            }
            guard let pair = best, bestCount > 0 else { break }
            let newID = 256 + merges.count
            merges.append(pair)
            for w in occurrences[pair] ?? [] {
                let word = words[w]
                for i in 0..<(word.count - 1) {
                    let old = Pair(word[i], word[i + 1])
                    pairCounts[old, default: 0] -= frequency[w]
                    if pairCounts[old] == 0 { pairCounts[old] = nil }
                    occurrences[old]?.remove(w)
                }
                var merged: [Int] = []
                var i = 0
                while i < word.count {
                    if i + 1 < word.count, word[i] == pair.first, word[i + 1] == pair.second {
                        merged.append(newID)
                        i += 2
                    } else {
                        merged.append(word[i])
                        i += 1
                    }
                }
                words[w] = merged
                if merged.count > 1 {
                    for i in 0..<(merged.count - 1) {
                        let new = Pair(merged[i], merged[i + 1])
                        pairCounts[new, default: 0] += frequency[w]
                        occurrences[new, default: []].insert(w)
                    }
                }
            }
            occurrences[pair] = nil
            progress?(merges.count, target)
        }
        return Tokenizer(merges: merges, specialTokens: specialTokens)
    }

    // MARK: Files

    struct FileFormat: Codable {
        var format: String
        var version: Int
        var merges: [[Int]]
        var specialTokens: [String]
        enum CodingKeys: String, CodingKey {
            case format, version, merges
            case specialTokens = "special_tokens"
        }
    }

    static let formatName = "moescope-byte-bpe"

    public func save(to path: String) throws {
        let file = FileFormat(
            format: Self.formatName, version: 1, merges: merges.map { [$0.first, $0.second] },
            specialTokens: specialTokens)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try writeAtomically(try encoder.encode(file), to: path)
    }

    public static func load(path: String) throws -> Tokenizer {
        let data = try RegularFile.read(path, what: "tokenizer", limit: 256 << 20)
        guard let file = try? JSONDecoder().decode(FileFormat.self, from: data), file.format == formatName else {
            throw CheckpointError.badTokenizer(path: path, detail: "not a \(formatName) tokenizer file")
        }
        for (rank, merge) in file.merges.enumerated() {
            guard merge.count == 2, merge.allSatisfy({ $0 >= 0 && $0 < 256 + rank }) else {
                throw CheckpointError.badTokenizer(path: path, detail: "merge \(rank) is malformed")
            }
        }
        return Tokenizer(merges: file.merges.map { Pair($0[0], $0[1]) }, specialTokens: file.specialTokens)
    }
}

/// What the explorer, `trace` and `analyze` need of a tokenizer: moescope's own, or a Hugging
/// Face tokenizer.json.
public protocol TextTokenizer: Sendable {
    var vocabSize: Int { get }
    func encode(_ text: String) -> [Int]
    /// The bytes of one token (U+FFFD's bytes for an unknown id).
    func bytes(of id: Int) -> [UInt8]
}

extension TextTokenizer {
    /// Text of a token sequence; invalid UTF-8 (a sequence cut mid-character) becomes U+FFFD.
    public func decode(_ ids: [Int]) -> String {
        String(decoding: ids.flatMap { bytes(of: $0) }, as: UTF8.self)
    }

    /// How one token reads on its own, for display: a token that is part of a multi-byte
    /// character shows its bytes in hex, e.g. ‹e2 80›.
    public func displayText(of id: Int) -> String {
        let raw = bytes(of: id)
        if let text = String(validating: raw, as: UTF8.self) { return text }
        return "‹" + raw.map { String(format: "%02x", $0) }.joined(separator: " ") + "›"
    }
}

/// Stands in for a tokenizer a trace does not name: token 42 reads "#42".
public struct TokenIDsOnly: TextTokenizer {
    public init() {}
    public var vocabSize: Int { SizeLimits.vocabulary }
    public func encode(_ text: String) -> [Int] { [] }
    public func bytes(of id: Int) -> [UInt8] { Array("#\(id)".utf8) }
}
