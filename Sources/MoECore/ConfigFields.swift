import Foundation

/// Typed reads of a config.json object (moescope's own or a Hugging Face one), each failure
/// naming the field and what it holds: "must be a whole number, is 128.5", "is
/// 18446744073709551616, above the limit of 1048576". Sizes are bounded here, before anything
/// is allocated from them.
public struct ConfigFields: Sendable {
    public let object: JSONObject
    /// The error for `field` with `detail` ("must be …, is …").
    let invalid: @Sendable (_ field: String, _ detail: String) -> Error
    /// The error for a required field that is absent.
    let missing: @Sendable (_ field: String) -> Error

    public init(
        object: JSONObject, invalid: @escaping @Sendable (String, String) -> Error,
        missing: @escaping @Sendable (String) -> Error
    ) {
        self.object = object
        self.invalid = invalid
        self.missing = missing
    }

    /// Parses a config file: a JSON object, strictly (see `JSONValue`). `describe` words the
    /// failure for the caller's error type.
    public static func parseObject(_ data: Data, fail: (String) -> Error) throws -> JSONObject {
        let value: JSONValue
        do { value = try JSONValue.parse(data) } catch { throw fail("is not valid JSON (\(error))") }
        guard let object = value.objectValue else { throw fail("holds \(value.kindDescription), not a JSON object") }
        return object
    }

    func present(_ name: String) -> JSONValue? {
        guard let value = object[name], !value.isNull else { return nil }
        return value
    }

    public func optionalInt(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let value = present(name) else { return nil }
        guard let number = value.numberValue else { throw invalid(name, "must be a whole number, is \(value.kindDescription)") }
        guard number.isWhole else { throw invalid(name, "must be a whole number, is \(number.text)") }
        guard let n = number.exactInt else { throw invalid(name, "is \(number.text), too large for any size moescope can hold") }
        guard range.contains(n) else {
            throw invalid(name, "must be between \(range.lowerBound) and \(range.upperBound), is \(number.text)")
        }
        return n
    }

    public func int(_ name: String, in range: ClosedRange<Int>) throws -> Int {
        guard let n = try optionalInt(name, in: range) else { throw missing(name) }
        return n
    }

    /// A finite number, within `range` when given.
    public func optionalDouble(_ name: String, in range: ClosedRange<Double>? = nil) throws -> Double? {
        guard let value = present(name) else { return nil }
        guard let number = value.numberValue else { throw invalid(name, "must be a number, is \(value.kindDescription)") }
        let d = number.double
        guard d.isFinite else { throw invalid(name, "is \(number.text), which is not a finite number") }
        if let range, !range.contains(d) {
            throw invalid(name, "must be between \(range.lowerBound) and \(range.upperBound), is \(number.text)")
        }
        return d
    }

    public func optionalBool(_ name: String) throws -> Bool? {
        guard let value = present(name) else { return nil }
        guard let b = value.boolValue else { throw invalid(name, "must be true or false, is \(value.kindDescription)") }
        return b
    }

    public func optionalString(_ name: String) throws -> String? {
        guard let value = present(name) else { return nil }
        guard let s = value.stringValue else { throw invalid(name, "must be a string, is \(value.kindDescription)") }
        return s
    }

    public func optionalIntArray(_ name: String, in range: ClosedRange<Int>) throws -> [Int]? {
        try optionalList(name, of: "whole numbers", each: "whole numbers between \(range.lowerBound) and \(range.upperBound)") {
            $0.numberValue?.exactInt.flatMap { range.contains($0) ? $0 : nil }
        }
    }

    public func optionalStringArray(_ name: String) throws -> [String]? { try optionalList(name, of: "strings") { $0.stringValue } }

    public func optionalArray(_ name: String) throws -> [JSONValue]? {
        guard let value = present(name) else { return nil }
        guard let items = value.arrayValue else { throw invalid(name, "must be a list, is \(value.kindDescription)") }
        return items
    }

    public func optionalObjectArray(_ name: String) throws -> [JSONObject]? { try optionalList(name, of: "objects") { $0.objectValue } }

    /// A list whose every item `element` reads; messages name the list's `kind` ("must be a
    /// list of strings") and what each item must be (`each`, by default the same).
    private func optionalList<Element>(
        _ name: String, of kind: String, each: String? = nil, _ element: (JSONValue) -> Element?
    ) throws -> [Element]? {
        guard let value = present(name) else { return nil }
        guard let items = value.arrayValue else { throw invalid(name, "must be a list of \(kind), is \(value.kindDescription)") }
        return try items.map { item in
            guard let read = element(item) else { throw invalid(name, "must list \(each ?? kind), holds \(item.kindDescription)") }
            return read
        }
    }

    public func optionalObject(_ name: String) throws -> JSONObject? {
        guard let value = present(name) else { return nil }
        guard let o = value.objectValue else { throw invalid(name, "must be an object, is \(value.kindDescription)") }
        return o
    }

    /// The same reader over a nested object, its fields named "outer.inner".
    public func nested(_ name: String, _ inner: JSONObject) -> ConfigFields {
        let (invalid, missing) = (self.invalid, self.missing)
        return ConfigFields(object: inner, invalid: { invalid("\(name).\($0)", $1) }, missing: { missing("\(name).\($0)") })
    }
}

/// Upper bounds on the sizes a config may ask for: far above any published model (DeepSeek-V3:
/// 256 experts, 61 layers, 129k vocabulary, 7168 wide), far below what would overflow a product.
public enum SizeLimits {
    public static let vocabulary = 1 << 22
    public static let width = 1 << 17
    public static let layers = 4096
    public static let heads = 4096
    public static let experts = 1 << 16
    public static let context = 1 << 30
}

/// How much memory an allocation may take, and the one-line refusal when it would not fit.
public enum MemoryBudget {
    /// Bytes this process can still allocate: the machine's available memory (MemAvailable),
    /// and under an address-space limit (`ulimit -v`) what is left of it.
    public static var availableBytes: Int {
        var available = Int(ProcessInfo.processInfo.physicalMemory)
        if let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
            let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        {
            available = min(available, kb * 1024)
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max {
            var used = 0
            if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
                let pages = statm.split(separator: " ").first.flatMap({ Int($0) })
            {
                used = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
            }
            available = min(available, max(0, Int(clamping: limit.rlim_cur) - used))
        }
        return available
    }

    /// The product of `factors`, or nil when it overflows `Int`.
    public static func product(_ factors: [Int]) -> Int? {
        var result = 1
        for f in factors {
            let (p, overflow) = result.multipliedReportingOverflow(by: f)
            if overflow { return nil }
            result = p
        }
        return result
    }

    /// The sum of `terms`, nil on overflow.
    public static func sum(_ terms: [Int?]) -> Int? {
        var result = 0
        for t in terms {
            guard let t else { return nil }
            let (s, overflow) = result.addingReportingOverflow(t)
            if overflow { return nil }
            result = s
        }
        return result
    }

    public static func gigabytes(_ bytes: Int) -> String { String(format: "%.1f GB", Double(bytes) / 1e9) }
}
