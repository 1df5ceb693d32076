import MoECore

/// Seeded mutations of the files moescope reads, shared by the in-process fuzz tests and the
/// ones that run the binary under a memory limit.
public enum Mutator {
    /// Values a hostile file puts where a number, string or list belongs.
    public static let hostileLiterals = [
        "0", "-1", "1.5", "128.5", "1e3", "1e400", "-0", "4294967296", "4611686018427387904", "9223372036854775807",
        "18446744073709551616", "99999999999999999999999", "NaN", "Infinity", "null", "true", "\"7\"", "[]", "{}",
        "[1, 2]", "[4294967296, 4294967296]", "\"\"", "\"../../etc/passwd\"",
    ]

    /// One random change to a JSON text: a number or string replaced by a hostile literal, a
    /// byte flipped, a range deleted, a trailing comma, a duplicated key, or a cut.
    public static func mutate(_ text: [UInt8], using g: inout SeededGenerator) -> [UInt8] {
        var bytes = text
        guard !bytes.isEmpty else { return bytes }
        func flip(_ bytes: inout [UInt8]) { bytes[Int.random(in: 0..<bytes.count, using: &g)] = UInt8.random(in: 0...255, using: &g) }
        switch Int.random(in: 0..<8, using: &g) {
        case 0, 1:  // a number replaced
            let digits = bytes.indices.filter { (48...57).contains(bytes[$0]) && ($0 == 0 || !(48...57).contains(bytes[$0 - 1])) }
            guard let start = digits.randomElement(using: &g) else {
                flip(&bytes)
                break
            }
            var end = start
            while end < bytes.count,
                (48...57).contains(bytes[end]) || bytes[end] == UInt8(ascii: ".") || bytes[end] == UInt8(ascii: "e")
                    || bytes[end] == UInt8(ascii: "-")
            { end += 1 }
            bytes.replaceSubrange(start..<end, with: Array(hostileLiterals.randomElement(using: &g)!.utf8))
        case 2:  // a string value replaced
            let quotes = bytes.indices.filter { bytes[$0] == UInt8(ascii: "\"") }
            guard quotes.count >= 2 else {
                flip(&bytes)
                break
            }
            let pair = Int.random(in: 0..<quotes.count / 2, using: &g) * 2
            bytes.replaceSubrange(quotes[pair]...quotes[pair + 1], with: Array(hostileLiterals.randomElement(using: &g)!.utf8))
        case 3:  // a byte flipped
            flip(&bytes)
        case 4:  // a range deleted
            let start = Int.random(in: 0..<bytes.count, using: &g)
            bytes.removeSubrange(start..<min(bytes.count, start + Int.random(in: 1...16, using: &g)))
        case 5:  // a trailing comma
            let closers = bytes.indices.filter { bytes[$0] == UInt8(ascii: "}") || bytes[$0] == UInt8(ascii: "]") }
            guard let at = closers.randomElement(using: &g) else {
                flip(&bytes)
                break
            }
            bytes.insert(UInt8(ascii: ","), at: at)
        case 6:  // the first member of an object repeated (a duplicate key)
            guard let open = bytes.firstIndex(of: UInt8(ascii: "{")), let comma = bytes[open...].firstIndex(of: UInt8(ascii: ",")) else {
                flip(&bytes)
                break
            }
            bytes.insert(contentsOf: bytes[(open + 1)...comma], at: open + 1)
        default:  // cut short
            bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &g)))
        }
        return bytes
    }

    /// A safetensors file with its header replaced (length field set to the new header's),
    /// or with the raw bytes damaged.
    public static func mutateSafeTensors(_ file: [UInt8], using g: inout SeededGenerator) -> [UInt8] {
        let length = Int(file.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = Array(file[8..<8 + length])
        let data = Array(file[(8 + length)...])
        func assemble(_ header: [UInt8], declared: UInt64? = nil) -> [UInt8] {
            withUnsafeBytes(of: (declared ?? UInt64(header.count)).littleEndian) { Array($0) } + header + data
        }
        switch Int.random(in: 0..<10, using: &g) {
        case 0: return assemble(header, declared: UInt64(max(0, length + Int.random(in: -8...8, using: &g))))
        case 1: return assemble(header, declared: [UInt64.max, 1 << 40, 0, 1, UInt64(length) * 2].randomElement(using: &g)!)
        case 2: return Array(file.prefix(Int.random(in: 0..<file.count, using: &g)))
        case 3: return file + (0..<Int.random(in: 1...16, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
        default: return assemble(mutate(header, using: &g))
        }
    }
}
