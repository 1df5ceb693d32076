import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Element types moescope reads and writes in safetensors files.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    /// Integers: routing traces' token and expert ids, document offsets.
    case i32 = "I32"
    case i64 = "I64"
    public var byteSize: Int {
        switch self {
        case .f16, .bf16: 2
        case .f32, .i32: 4
        case .i64: 8
        }
    }
    public var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// Everything that can be wrong with a checkpoint on disk. Each description is one line that
/// names the file, the problem, and what to do about it.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case unwritable(path: String, reason: String)
    case truncated(path: String, detail: String)
    case badHeader(path: String, detail: String)
    case unsupportedDType(path: String, tensor: String, dtype: String)
    case missingTensor(path: String, tensor: String)
    case wrongShape(path: String, tensor: String, expected: [Int], found: [Int])
    case badConfig(path: String, detail: String)
    case badTokenizer(path: String, detail: String)
    /// `what` would take `neededBytes` (nil: more than can be counted) of memory.
    case tooLarge(path: String, what: String, neededBytes: Int?, availableBytes: Int)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason):
            return "cannot read checkpoint \(path): \(reason) — check the path and permissions"
        case .unwritable(let path, let reason):
            return "cannot write \(path): \(reason) — free disk space, raise the file-size limit, or write somewhere else"
        case .truncated(let path, let detail):
            return "\(path) is truncated (\(detail)) — the file is incomplete; copy or download it again"
        case .badHeader(let path, let detail):
            return "\(path) is not a valid safetensors file: \(detail) — replace it with a good copy"
        case .unsupportedDType(let path, let tensor, let dtype):
            return "\(path): tensor \(tensor) has dtype \(dtype); moescope reads F32, F16 and BF16 — convert the file"
        case .missingTensor(let path, let tensor):
            return "checkpoint \(path) has no tensor \(tensor) — it was saved for a different model or router; check config.json"
        case .wrongShape(let path, let tensor, let expected, let found):
            return
                "checkpoint \(path): tensor \(tensor) has shape \(found) but the config needs \(expected) — config.json and weights disagree"
        case .badConfig(let path, let detail):
            return "model config \(path) is invalid: \(detail) — fix the field or retrain"
        case .badTokenizer(let path, let detail):
            return "tokenizer \(path) is invalid: \(detail) — replace it with the tokenizer.json the model was trained with"
        case .tooLarge(let path, let what, let needed, let available):
            let amount = needed.map { "needs \(MemoryBudget.gigabytes($0))" } ?? "needs more memory than can be counted"
            return
                "\(path): \(what) \(amount) of memory and \(MemoryBudget.gigabytes(available)) is available — use smaller sizes or a larger machine"
        }
    }
}

/// A safetensors file opened by memory-mapping: the header is parsed and validated up front,
/// tensor bytes are only touched when a tensor is asked for.
///
/// Format: u64 little-endian header length N, N bytes of JSON
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the data.
public final class SafeTensorsFile: @unchecked Sendable {
    public struct Entry: Sendable, Equatable {
        public let dtype: SafeTensorsDType
        public let shape: [Int]
        public let byteRange: Range<Int>  // relative to the start of the data section
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    private let mapping: UnsafeRawPointer
    private let mappedLength: Int
    private let dataStart: Int

    /// Largest header accepted (safetensors' own limit).
    public static let maximumHeaderLength = 100_000_000

    // Reading is immutable after init, hence @unchecked Sendable.
    /// Opens and validates `path`: a regular file (never a FIFO or device, which would block or
    /// never end), a header length inside the file, a strict JSON header, and tensors whose
    /// offsets exactly tile the data section. Every violation is one `CheckpointError` line
    /// naming the file, the tensor and the rule.
    public init(path: String) throws {
        self.path = path
        let (fd, size) = try RegularFile.open(path, what: "safetensors file")
        defer { close(fd) }
        guard size >= 8 else { throw CheckpointError.truncated(path: path, detail: "\(size) bytes, shorter than the 8-byte header length") }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw CheckpointError.unreadable(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        let raw = UnsafeRawPointer(base)
        mapping = raw
        mappedLength = size
        do {
            let declaredLength = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
            guard declaredLength >= 2, declaredLength <= UInt64(Self.maximumHeaderLength) else {
                throw CheckpointError.badHeader(
                    path: path, detail: "header length \(declaredLength) is outside 2…\(Self.maximumHeaderLength) bytes")
            }
            let headerLength = Int(declaredLength)
            guard 8 + headerLength <= size else {
                throw CheckpointError.truncated(path: path, detail: "header needs \(8 + headerLength) bytes, file has \(size)")
            }
            dataStart = 8 + headerLength
            let header = UnsafeRawBufferPointer(start: raw + 8, count: headerLength)
            let parsed = try Self.parseHeader(header, path: path, dataLength: size - dataStart)
            entries = parsed.entries
            metadata = parsed.metadata
        } catch {
            munmap(base, size)
            throw error
        }
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: mapping), mappedLength) }

    /// The header's rules, as the safetensors format states them: a JSON object (first byte
    /// `{`, trailing spaces allowed) of tensors `{dtype, shape, data_offsets}` and an optional
    /// `__metadata__` of strings; names unique; shapes of whole non-negative numbers whose
    /// product times the dtype size is the tensor's byte count without overflow; offsets whole,
    /// in order, and together covering the data section exactly — no gaps, no overlap, nothing
    /// after the last tensor (which is how a header length a few bytes short is caught).
    static func parseHeader(_ bytes: UnsafeRawBufferPointer, path: String, dataLength: Int) throws
        -> (entries: [String: Entry], metadata: [String: String])
    {
        func bad(_ detail: String) -> CheckpointError { .badHeader(path: path, detail: detail) }
        guard bytes.first == UInt8(ascii: "{") else { throw bad("the header does not start with '{'") }
        let value: JSONValue
        do { value = try JSONValue.parse(bytes) } catch { throw bad("the header is not valid JSON (\(error))") }
        guard let header = value.objectValue else { throw bad("the header is not a JSON object") }
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for name in header.keys {
            let value = header[name]!
            if name == "__metadata__" {
                guard let dict = value.objectValue else { throw bad("__metadata__ is \(value.kindDescription), not an object of strings") }
                for key in dict.keys {
                    guard let text = dict[key]!.stringValue else {
                        throw bad("__metadata__.\(key) is \(dict[key]!.kindDescription), not a string")
                    }
                    metadata[key] = text
                }
                continue
            }
            guard let fields = value.objectValue else { throw bad("tensor \(name) is \(value.kindDescription), not an object") }
            for key in fields.keys where !["dtype", "shape", "data_offsets"].contains(key) {
                throw bad("tensor \(name) has an unknown field \"\(key)\"")
            }
            guard let dtypeName = fields["dtype"]?.stringValue, let shapeValues = fields["shape"]?.arrayValue,
                let offsetValues = fields["data_offsets"]?.arrayValue
            else { throw bad("tensor \(name) lacks a dtype string, a shape list or a data_offsets list") }
            guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
                throw CheckpointError.unsupportedDType(path: path, tensor: name, dtype: dtypeName)
            }
            guard shapeValues.count <= 16 else { throw bad("tensor \(name) has \(shapeValues.count) dimensions; at most 16 are read") }
            let shape = try shapeValues.map { v -> Int in
                guard let n = v.numberValue?.exactInt, n >= 0 else {
                    throw bad("tensor \(name) has shape entry \(v.kindDescription); shapes are whole numbers ≥ 0")
                }
                return n
            }
            guard offsetValues.count == 2 else { throw bad("tensor \(name) has \(offsetValues.count) data_offsets; it needs [begin, end]") }
            let offsets = try offsetValues.map { v -> Int in
                guard let n = v.numberValue?.exactInt, n >= 0 else {
                    throw bad("tensor \(name) has data_offsets entry \(v.kindDescription); offsets are whole numbers ≥ 0")
                }
                return n
            }
            guard offsets[0] <= offsets[1] else { throw bad("tensor \(name) has data_offsets [\(offsets[0]), \(offsets[1])] out of order") }
            guard let expectedBytes = MemoryBudget.product(shape + [dtype.byteSize]) else {
                throw bad("tensor \(name) has shape \(shape), whose size overflows")
            }
            guard offsets[1] - offsets[0] == expectedBytes else {
                throw bad(
                    "tensor \(name) spans \(offsets[1] - offsets[0]) bytes, but shape \(shape) of \(dtype.rawValue) needs \(expectedBytes)")
            }
            guard offsets[1] <= dataLength else {
                throw CheckpointError.truncated(
                    path: path, detail: "tensor \(name) ends at byte \(offsets[1]) of a \(dataLength)-byte data section")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, byteRange: offsets[0]..<offsets[1])
        }
        // The tensors must tile the data section.
        var covered = 0
        for (name, entry) in entries.sorted(by: {
            ($0.value.byteRange.lowerBound, $0.value.byteRange.upperBound, $0.key) < (
                $1.value.byteRange.lowerBound, $1.value.byteRange.upperBound, $1.key
            )
        }) {
            guard entry.byteRange.lowerBound == covered else {
                throw bad(
                    entry.byteRange.lowerBound < covered
                        ? "tensor \(name) at bytes \(entry.byteRange) overlaps the tensor before it (which ends at \(covered))"
                        : "bytes \(covered)..<\(entry.byteRange.lowerBound) before tensor \(name) belong to no tensor")
            }
            covered = entry.byteRange.upperBound
        }
        guard covered == dataLength else {
            throw bad("\(dataLength - covered) bytes after the last tensor belong to no tensor (is the header length wrong?)")
        }
        return (entries, metadata)
    }

    /// The tensor called `name`, converted to Float, checked against `shape` when given.
    public func tensor(_ name: String, shape expected: [Int]? = nil) throws -> Tensor {
        guard let entry = entries[name] else { throw CheckpointError.missingTensor(path: path, tensor: name) }
        guard entry.dtype.isFloat else { throw CheckpointError.unsupportedDType(path: path, tensor: name, dtype: entry.dtype.rawValue) }
        if let expected, expected != entry.shape {
            throw CheckpointError.wrongShape(path: path, tensor: name, expected: expected, found: entry.shape)
        }
        let count = entry.shape.reduce(1, *)
        let bytes = mapping + dataStart + entry.byteRange.lowerBound
        let scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            Self.decode(bytes, dtype: entry.dtype, into: buffer.baseAddress!, count: count)
            initialized = count
        }
        dropPages(bytes..<bytes + entry.byteRange.count)
        return Tensor(shape: entry.shape, scalars: scalars)
    }

    /// Gives back the mapped pages wholly inside `bytes`, once copied out: a loaded checkpoint
    /// is then held once, as Floats, not also as the file's pages until the file is closed (the
    /// explorer loads the next router's model while the current one is still held). A later
    /// read of those bytes maps them in again from the file.
    private func dropPages(_ bytes: Range<UnsafeRawPointer>) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = (Int(bitPattern: bytes.lowerBound) + page - 1) / page * page
        let end = Int(bitPattern: bytes.upperBound) / page * page
        guard end > first, let start = UnsafeMutableRawPointer(bitPattern: first) else { return }
        madvise(start, end - first, MADV_DONTNEED)
    }

    /// The tensor called `name` as it lies in the mapped file: nothing is read or converted
    /// until rows are asked for, so a model far larger than its working set can be opened.
    public func mapped(_ name: String) throws -> MappedTensor {
        guard let entry = entries[name] else { throw CheckpointError.missingTensor(path: path, tensor: name) }
        guard entry.dtype.isFloat else { throw CheckpointError.unsupportedDType(path: path, tensor: name, dtype: entry.dtype.rawValue) }
        return MappedTensor(
            file: self, name: name, dtype: entry.dtype, shape: entry.shape,
            bytes: mapping + dataStart + entry.byteRange.lowerBound)
    }

    /// Where tensor `name`'s bytes lie in the mapping (any dtype; the caller reads them).
    func rawBytes(_ name: String) -> (entry: Entry, bytes: UnsafeRawPointer)? {
        entries[name].map { ($0, mapping + dataStart + $0.byteRange.lowerBound) }
    }

    public static func decode(_ bytes: UnsafeRawPointer, dtype: SafeTensorsDType, into out: UnsafeMutablePointer<Float>, count: Int) {
        switch dtype {
        case .f32:
            for i in 0..<count {
                out[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            }
        case .f16:
            for i in 0..<count {
                out[i] = Float(Float16(bitPattern: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
            }
        case .bf16:
            for i in 0..<count {
                out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
            }
        case .i32:
            for i in 0..<count { out[i] = Float(Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
        case .i64:
            for i in 0..<count { out[i] = Float(Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
        }
    }

    /// Writes tensors as a safetensors file. The file appears atomically: bytes go to a
    /// temporary file beside it that is renamed over the target, so a crash never leaves a
    /// half-written checkpoint.
    public static func write(
        _ tensors: [String: Tensor], dtype: SafeTensorsDType = .f32,
        metadata: [String: String] = [:], to path: String
    ) throws {
        let names = tensors.keys.sorted()
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for name in names {
            let t = tensors[name]!
            let length = t.count * dtype.byteSize
            header[name] = ["dtype": dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + length]] as [String: Any]
            offset += length
        }
        var headerBytes = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad with spaces so the data section starts 8-byte aligned, as the format recommends.
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }
        var file = Data(capacity: 8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(headerBytes)
        for name in names {
            let scalars = tensors[name]!.scalars
            switch dtype {
            case .f32:
                scalars.withUnsafeBytes { file.append(contentsOf: $0) }
            case .f16:
                let halves = scalars.map { Float16($0).bitPattern.littleEndian }
                halves.withUnsafeBytes { file.append(contentsOf: $0) }
            case .bf16:
                let halves = scalars.map { bfloat16Bits($0).littleEndian }
                halves.withUnsafeBytes { file.append(contentsOf: $0) }
            case .i32, .i64:
                preconditionFailure("weights are written as floats")
            }
        }
        try writeAtomically(file, to: path)
    }

    /// Round-to-nearest-even conversion to bfloat16 (NaN stays NaN).
    static func bfloat16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }
}

/// Writes `data` to `path` via a temporary file in the same directory and a rename, so readers
/// see either the old file or the complete new one.
public func writeAtomically(_ data: Data, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let temporary = url.deletingLastPathComponent()
        .appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
    removeStaleTemporaryFiles(in: url.deletingLastPathComponent().path, of: url.lastPathComponent)
    InterruptCleanup.register(temporary.path)
    defer { InterruptCleanup.unregister(temporary.path) }
    do {
        do { try data.write(to: temporary) } catch { throw CheckpointError.unwritable(path: path, reason: systemReason(error)) }
        guard rename(temporary.path, url.path) == 0 else {
            throw CheckpointError.unwritable(path: path, reason: "rename failed: \(String(cString: strerror(errno)))")
        }
    } catch {
        try? FileManager.default.removeItem(at: temporary)
        throw error
    }
}

/// The system's words for a failed file operation ("No space left on device"): the POSIX error
/// under Foundation's wrapper, whose own description is a multi-line dump.
public func systemReason(_ error: Error) -> String {
    let wrapper = error as NSError
    for candidate in [(wrapper.userInfo[NSUnderlyingErrorKey] as? Error).map { $0 as NSError }, wrapper].compactMap({ $0 })
    where candidate.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(candidate.code)))
    }
    return wrapper.localizedDescription
}

/// Removes the temporary files `writeAtomically` or `SafeTensorsStreamWriter` left in
/// `directory` when its process was killed mid-write (`.NAME.PID.tmp` whose PID is no longer
/// running) — with `target`, only those of that file name; returns their names.
@discardableResult
public func removeStaleTemporaryFiles(in directory: String, of target: String? = nil) -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    var removed: [String] = []
    for name in names where name.hasPrefix(target.map { ".\($0)." } ?? ".") && name.hasSuffix(".tmp") {
        let parts = name.dropLast(4).split(separator: ".")
        guard let last = parts.last, let pid = Int32(last), pid != getpid() else { continue }
        if kill(pid, 0) == 0 || errno == EPERM { continue }  // its writer is still running
        if (try? FileManager.default.removeItem(atPath: "\(directory)/\(name)")) != nil { removed.append(name) }
    }
    return removed
}

/// A tensor inside a memory-mapped safetensors file (F32, F16 or BF16), converted to Float a
/// few rows at a time by whoever reads it. Holding one keeps its file mapped.
public struct MappedTensor: @unchecked Sendable {
    public let file: SafeTensorsFile
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    let bytes: UnsafeRawPointer

    /// Length of the last dimension.
    public var columns: Int { shape.last ?? 1 }
    /// Product of all leading dimensions.
    public var rows: Int { shape.dropLast().reduce(1, *) }

    /// Rows [range) decoded into `out` (range.count × columns floats).
    public func decodeRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows)
        SafeTensorsFile.decode(bytes + range.lowerBound * columns * dtype.byteSize, dtype: dtype, into: out, count: range.count * columns)
    }

    /// The whole tensor as Floats (for the small ones: norms, biases, router rows).
    public func decoded() -> Tensor {
        var out = Tensor(uninitialized: shape)
        out.scalars.withUnsafeMutableBufferPointer { decodeRows(0..<rows, into: $0.baseAddress!) }
        return out
    }

    /// Entry `index` of the first dimension, as a tensor of the remaining ones (one expert of a
    /// fused [E × …] expert tensor); still mapped, not copied.
    public func slice(_ index: Int) -> MappedTensor {
        let inner = Array(shape.dropFirst())
        precondition(index >= 0 && index < shape[0])
        return MappedTensor(
            file: file, name: "\(name)[\(index)]", dtype: dtype, shape: inner,
            bytes: bytes + index * inner.reduce(1, *) * dtype.byteSize)
    }

    /// Rows [range) of a 2-D tensor, still mapped (one half of a fused gate/up projection).
    public func rowSlice(_ range: Range<Int>) -> MappedTensor {
        precondition(shape.count == 2 && range.upperBound <= shape[0])
        return MappedTensor(
            file: file, name: "\(name)[\(range)]", dtype: dtype, shape: [range.count, shape[1]],
            bytes: bytes + range.lowerBound * shape[1] * dtype.byteSize)
    }
}
