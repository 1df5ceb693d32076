/// JSON exactly as RFC 8259 defines it, for the files moescope reads from disk (safetensors
/// headers, config.json): no trailing commas, no comments, no NaN, no duplicate keys, valid
/// UTF-8, nesting at most `maximumDepth` deep. Numbers keep their text, so a field can say
/// whether it holds a whole number that fits (`128.5` and `1e30` are named as such, never
/// silently truncated). Foundation's parsers accept some of these and keep the last of
/// duplicate keys, which let damaged headers through.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// Parses `bytes` as one JSON document (surrounding whitespace allowed).
    public static func parse(
        _ bytes: some Collection<UInt8>, maximumDepth: Int = 128, equivalentKeys: EquivalentKeys = .refuse
    ) throws -> JSONValue {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buffer throws in
            var parser = JSONParser(bytes: buffer, maximumDepth: maximumDepth, equivalentKeys: equivalentKeys)
            parser.skipWhitespace()
            let value = try parser.value(depth: 0)
            parser.skipWhitespace()
            guard parser.position == buffer.count else { throw parser.error("unexpected text after the JSON value") }
            return value
        }
    }

    /// How a value is named in an error ("an array", "the number 128.5").
    public var kindDescription: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return "the number \(n.text)"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    public var objectValue: JSONObject? { if case .object(let o) = self { return o } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var numberValue: JSONNumber? { if case .number(let n) = self { return n } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var isNull: Bool { self == .null }
}

/// What an object does with keys that are different text but equal as Swift strings, being
/// canonically equivalent ("é" written precomposed and as "e" + U+0301).
public enum EquivalentKeys: Sendable {
    /// Refused as duplicate keys: names looked up as strings (tensors, config fields) must
    /// not be ambiguous.
    case refuse
    /// Each kept in `keys`, a lookup answering the last one's value: tokenizer vocabularies
    /// hold such pairs as distinct tokens (Gemma's "à" twice), and a tokenizer that keys its
    /// vocabulary by string keeps one of them, as Foundation's parser does.
    case keepLast
}

/// A JSON number as written.
public struct JSONNumber: Sendable, Equatable, CustomStringConvertible {
    public let text: String

    /// The value when it is a whole number that fits in `Int` (`3`, `-7`, `3.0`, `1e3`), else nil.
    public var exactInt: Int? {
        if let n = Int(text) { return n }
        guard let d = Double(text), d.isFinite, d == d.rounded(), abs(d) < 9.0e15 else { return nil }
        return Int(d)
    }
    public var double: Double { Double(text) ?? .nan }
    /// Whether the text has a fraction or exponent that is not a whole number.
    public var isWhole: Bool { exactInt != nil || (Double(text).map { $0 == $0.rounded() } ?? false) }
    public var description: String { text }
}

/// A JSON object: its keys in file order (each once, or each spelling of equivalent keys under
/// `EquivalentKeys.keepLast`) and a lookup by key.
public struct JSONObject: Sendable, Equatable {
    public private(set) var keys: [String] = []
    public private(set) var values: [String: JSONValue] = [:]
    public subscript(key: String) -> JSONValue? { values[key] }
    public var count: Int { keys.count }
    mutating func insert(_ key: String, _ value: JSONValue) {
        keys.append(key)
        values[key] = value
    }
}

/// Where and why a JSON text is malformed, e.g. "byte 57: trailing comma before }".
public struct JSONSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "byte \(offset): \(reason)" }
}

struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    let maximumDepth: Int
    let equivalentKeys: EquivalentKeys
    var position = 0

    init(bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int, equivalentKeys: EquivalentKeys = .refuse) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
        self.equivalentKeys = equivalentKeys
    }

    func error(_ reason: String) -> JSONSyntaxError { JSONSyntaxError(offset: position, reason: reason) }

    var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func skipWhitespace() {
        while let c = current, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { position += 1 }
    }

    mutating func expect(_ literal: StaticString, _ value: JSONValue) throws -> JSONValue {
        let count = literal.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw error("the text ends inside a literal") }
        for i in 0..<count where bytes[position + i] != literal.utf8Start[i] {
            throw error("unexpected character \(describe(bytes[position]))")
        }
        position += count
        return value
    }

    func describe(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard let c = current else { throw error("the text ends where a value should be") }
        switch c {
        case UInt8(ascii: "{"):
            guard depth < maximumDepth else { throw error("nested more than \(maximumDepth) deep") }
            return try object(depth: depth + 1)
        case UInt8(ascii: "["):
            guard depth < maximumDepth else { throw error("nested more than \(maximumDepth) deep") }
            return try array(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): return try expect("true", .bool(true))
        case UInt8(ascii: "f"): return try expect("false", .bool(false))
        case UInt8(ascii: "n"): return try expect("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw error("unexpected character \(describe(c))")
        }
    }

    mutating func object(depth: Int) throws -> JSONValue {
        position += 1
        var result = JSONObject()
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            position += 1
            return .object(result)
        }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else {
                throw error(current == UInt8(ascii: "}") ? "trailing comma before }" : "expected a quoted key")
            }
            let keyStart = position
            let key = try string()
            if result[key] != nil {
                // Only an equivalent key of other text may stay (a rare pair, so the scan is rare).
                guard equivalentKeys == .keepLast, !result.keys.contains(where: { $0.utf8.elementsEqual(key.utf8) }) else {
                    throw JSONSyntaxError(offset: keyStart, reason: "duplicate key \"\(key)\"")
                }
            }
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':' after key \"\(key)\"") }
            position += 1
            skipWhitespace()
            result.insert(key, try value(depth: depth))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"):
                position += 1
                return .object(result)
            case nil: throw error("the text ends inside an object")
            case let c?: throw error("expected ',' or '}', found \(describe(c))")
            }
        }
    }

    mutating func array(depth: Int) throws -> JSONValue {
        position += 1
        var result: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            position += 1
            return .array(result)
        }
        while true {
            skipWhitespace()
            if current == UInt8(ascii: "]") { throw error("trailing comma before ]") }
            result.append(try value(depth: depth))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"):
                position += 1
                return .array(result)
            case nil: throw error("the text ends inside an array")
            case let c?: throw error("expected ',' or ']', found \(describe(c))")
            }
        }
    }

    mutating func number() throws -> JSONNumber {
        let start = position
        func digits(_ parser: inout JSONParser) -> Int {
            var n = 0
            while let c = parser.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) {
                parser.position += 1
                n += 1
            }
            return n
        }
        if current == UInt8(ascii: "-") { position += 1 }
        if current == UInt8(ascii: "0") {
            position += 1
            if let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { throw error("a number with a leading zero") }
        } else if digits(&self) == 0 {
            throw error("a '-' without digits")
        }
        if current == UInt8(ascii: ".") {
            position += 1
            guard digits(&self) > 0 else { throw error("a '.' without digits after it") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard digits(&self) > 0 else { throw error("an exponent without digits") }
        }
        return JSONNumber(text: String(decoding: bytes[start..<position], as: UTF8.self))
    }

    mutating func hex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("the text ends inside a \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[position]
            let digit: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw error("a \\u escape with a non-hex digit")
            }
            value = value * 16 + digit
            position += 1
        }
        return value
    }

    mutating func string() throws -> String {
        position += 1  // the opening quote
        var out: [UInt8] = []
        var runStart = position
        while true {
            guard let c = current else { throw error("the text ends inside a string") }
            if c == UInt8(ascii: "\"") {
                out.append(contentsOf: bytes[runStart..<position])
                position += 1
                break
            }
            if c < 0x20 { throw error("a control character (0x\(String(c, radix: 16))) inside a string") }
            guard c == UInt8(ascii: "\\") else {
                position += 1
                continue
            }
            out.append(contentsOf: bytes[runStart..<position])
            position += 1
            guard let e = current else { throw error("the text ends inside an escape") }
            position += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    guard position + 6 <= bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u")
                    else {
                        throw error("an unpaired UTF-16 surrogate escape")
                    }
                    position += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw error("an unpaired UTF-16 surrogate escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw error("an unpaired UTF-16 surrogate escape")
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
            default: throw error("an unknown escape \\\(describe(e))")
            }
            runStart = position
        }
        guard let text = String(validating: out, as: UTF8.self) else {
            throw error("a string that is not valid UTF-8")
        }
        return text
    }
}
