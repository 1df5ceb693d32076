import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Writes a safetensors file whose tensors are known by shape up front and whose bytes arrive
/// in order, tensor after tensor, a chunk at a time: a trace larger than memory is written
/// without holding it. Bytes go to a temporary file beside the target, renamed over it by
/// `finish()`, so a reader never sees a half-written trace.
public final class SafeTensorsStreamWriter {
    public let path: String
    private let temporary: String
    private let handle: FileHandle
    private var remaining: [(name: String, bytes: Int)]
    private var pending = Data()

    public init(path: String, tensors: [(name: String, dtype: SafeTensorsDType, shape: [Int])], metadata: [String: String]) throws {
        self.path = path
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        remaining = []
        for (name, dtype, shape) in tensors {
            guard let length = MemoryBudget.product(shape + [dtype.byteSize]) else {
                throw CheckpointError.tooLarge(path: path, what: "tensor \(name) \(shape)", neededBytes: nil, availableBytes: 0)
            }
            header[name] = ["dtype": dtype.rawValue, "shape": shape, "data_offsets": [offset, offset + length]] as [String: Any]
            remaining.append((name, length))
            offset += length
        }
        var headerBytes = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }
        let url = URL(fileURLWithPath: path)
        temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp").path
        removeStaleTemporaryFiles(in: url.deletingLastPathComponent().path, of: url.lastPathComponent)
        InterruptCleanup.register(temporary)
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let handle = FileHandle(forWritingAtPath: temporary) else {
            InterruptCleanup.unregister(temporary)  // no deinit runs for an init that throws
            throw CheckpointError.unwritable(path: path, reason: "cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        self.handle = handle
        var start = Data()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { start.append(contentsOf: $0) }
        start.append(headerBytes)
        do { try handle.write(contentsOf: start) } catch {
            InterruptCleanup.unregister(temporary)
            try? FileManager.default.removeItem(atPath: temporary)
            throw CheckpointError.unwritable(path: path, reason: systemReason(error))
        }
    }

    /// Appends bytes of the current tensor (or of the next ones, in the declared order); a
    /// failed write (disk full, file-size limit) throws, and the temporary goes with the writer.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        pending.append(contentsOf: bytes)
        if pending.count >= 1 << 22 { try flush() }
        var count = bytes.count
        while count > 0, !remaining.isEmpty {
            let take = min(count, remaining[0].bytes)
            remaining[0].bytes -= take
            count -= take
            if remaining[0].bytes == 0 { remaining.removeFirst() }
        }
        precondition(count == 0, "more bytes than the declared tensors hold")
    }

    public func append<T>(_ values: [T]) throws { try values.withUnsafeBytes { try append($0) } }

    private func flush() throws {
        do { try handle.write(contentsOf: pending) } catch { throw CheckpointError.unwritable(path: path, reason: systemReason(error)) }
        pending.removeAll(keepingCapacity: true)
    }

    /// Closes the file and moves it into place; refuses when a tensor is short of bytes.
    public func finish() throws {
        try flush()
        do { try handle.close() } catch { throw CheckpointError.unwritable(path: path, reason: systemReason(error)) }
        remaining.removeAll { $0.bytes == 0 }
        guard remaining.isEmpty else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw CheckpointError.truncated(path: path, detail: "tensor \(remaining[0].name) lacks \(remaining[0].bytes) bytes")
        }
        guard rename(temporary, path) == 0 else {
            throw CheckpointError.unwritable(path: path, reason: "rename failed: \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        InterruptCleanup.unregister(temporary)
        if FileManager.default.fileExists(atPath: temporary) { try? FileManager.default.removeItem(atPath: temporary) }
    }
}

/// What a routing trace's `__metadata__` says about where it came from.
public struct RoutingTraceDescription: Sendable {
    public var family: String
    public var numExperts: Int
    public var topK: Int
    public var routedLayers: [Int]
    public var layerCount: Int
    public var routingRule: String
    /// Engine, version and settings, as a JSON object.
    public var source: [String: String]
    /// A tokenizer.json beside the trace (relative), if any.
    public var tokenizerPath: String?

    public init(
        family: String, numExperts: Int, topK: Int, routedLayers: [Int], layerCount: Int, routingRule: String,
        source: [String: String], tokenizerPath: String? = nil
    ) {
        self.family = family
        self.numExperts = numExperts
        self.topK = topK
        self.routedLayers = routedLayers
        self.layerCount = layerCount
        self.routingRule = routingRule
        self.source = source
        self.tokenizerPath = tokenizerPath
    }

    func metadata(domains: [String]) throws -> [String: String] {
        func json(_ value: Any) throws -> String {
            String(decoding: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]), as: UTF8.self)
        }
        var out: [String: String] = [
            "format": RoutingTraceFile.formatName, "version": String(RoutingTraceFile.formatVersion), "family": family,
            "num_experts": String(numExperts), "top_k": String(topK), "routed_layers": try json(routedLayers),
            "num_layers": String(layerCount), "routing_rule": routingRule, "source": try json(source), "domains": try json(domains),
        ]
        out["tokenizer_path"] = tokenizerPath
        return out
    }
}

extension RoutingTraceFile {
    /// Writes routed documents as a trace file: ids, top-k ids and weights (F32), the full
    /// router logits when `scores` (F16: E values a token-layer are the bulk of the file),
    /// expert output norms and, where the router has one, its GRU state.
    public static func write(
        documents: [(domain: String, routing: [RoutingTrace])], description: RoutingTraceDescription,
        scores: Bool, to path: String
    ) throws {
        let all = documents.flatMap(\.routing)
        let t = all.count
        let l = description.routedLayers.count
        let k = description.topK
        let e = description.numExperts
        guard t > 0 else { throw CheckpointError.badHeader(path: path, detail: "a trace needs at least one token") }
        let p = all[0].layers.first?.gruHidden?.count
        var tensors: [(name: String, dtype: SafeTensorsDType, shape: [Int])] = [
            ("token_ids", .i32, [t]), ("document_offsets", .i64, [documents.count + 1]),
            ("topk_ids", .i32, [t, l, k]), ("topk_weights", .f32, [t, l, k]), ("expert_output_norms", .f32, [t, l, k]),
        ]
        if scores { tensors.append(("router_logits", .f16, [t, l, e])) }
        if let p { tensors.append(("gru_hidden", .f16, [t, l, p])) }
        let writer = try SafeTensorsStreamWriter(
            path: path, tensors: tensors, metadata: try description.metadata(domains: documents.map(\.domain)))
        try writer.append(all.map { Int32($0.token).littleEndian })
        var offsets: [Int64] = [0]
        for d in documents { offsets.append(offsets.last! + Int64(d.routing.count)) }
        try writer.append(offsets.map(\.littleEndian))
        try writer.append(all.flatMap { $0.layers.flatMap { $0.experts.map { Int32($0).littleEndian } } })
        try writer.append(all.flatMap { $0.layers.flatMap { $0.weights.map { $0.bitPattern.littleEndian } } })
        try writer.append(all.flatMap { $0.layers.flatMap { $0.expertOutputNorms.map { $0.bitPattern.littleEndian } } })
        if scores {
            // −∞ logits (Hash) stay −∞ in F16.
            try writer.append(all.flatMap { $0.layers.flatMap { $0.logits.map { Float16($0).bitPattern.littleEndian } } })
        }
        if p != nil {
            try writer.append(all.flatMap { $0.layers.flatMap { ($0.gruHidden ?? []).map { Float16($0).bitPattern.littleEndian } } })
        }
        try writer.finish()
    }
}

/// A routing trace with the shapes of a large capture, written without holding it: skewed
/// expert load (expert ≈ E·u² for uniform u, so low ids are busy), top-1 choices that depend on
/// the previous layer's (so cross-layer information is non-zero), two domains that prefer
/// different experts. For benchmarks and tests of the streaming readers, not a model's routing.
public enum SyntheticRoutingTrace {
    public static func write(
        to path: String, tokens: Int, layers: Int, experts: Int, topK: Int, documents: Int = 4,
        seed: UInt64 = 1, withLogits: Bool = false
    ) throws {
        precondition(tokens >= documents && documents >= 1 && topK <= experts)
        var tensors: [(name: String, dtype: SafeTensorsDType, shape: [Int])] = [
            ("token_ids", .i32, [tokens]), ("document_offsets", .i64, [documents + 1]),
            ("topk_ids", .i32, [tokens, layers, topK]), ("topk_weights", .f16, [tokens, layers, topK]),
        ]
        if withLogits { tensors.append(("router_logits", .f16, [tokens, layers, experts])) }
        let description = RoutingTraceDescription(
            family: "synthetic", numExperts: experts, topK: topK, routedLayers: Array(max(0, 61 - layers)..<max(61, layers)),
            layerCount: max(61, layers), routingRule: "synthetic skewed top-\(topK)",
            source: ["engine": "moescope synthetic", "seed": String(seed)])
        let domains = (0..<documents).map { $0 % 2 == 0 ? "code" : "prose" }
        let writer = try SafeTensorsStreamWriter(path: path, tensors: tensors, metadata: try description.metadata(domains: domains))
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        let block = max(1, (1 << 20) / max(1, layers * topK))
        var ids32 = [Int32]()
        ids32.reserveCapacity(block * layers * topK)
        for start in stride(from: 0, to: tokens, by: block) {
            ids32.removeAll(keepingCapacity: true)
            for _ in start..<min(tokens, start + block) { ids32.append(Int32(next() % 50_000).littleEndian) }
            try writer.append(ids32)
        }
        try writer.append((0...documents).map { Int64($0 * tokens / documents).littleEndian })
        // A stride coprime to E makes base, base + s, base + 2s, … k different experts.
        var step = 7
        while gcd(step, experts) != 1 { step += 1 }
        func topExpert(token t: Int, previous: Int, domain: Int) -> Int {
            let u = Double(next() >> 11) / Double(1 << 53)
            let skewed = Int(Double(experts) * u * u)
            // Half the time follow the previous layer's choice (shifted), else a skewed draw.
            let base = previous >= 0 && next() % 2 == 0 ? (previous * 3 + 1) % experts : skewed
            return (base + domain * (experts / 2)) % experts
        }
        for start in stride(from: 0, to: tokens, by: block) {
            ids32.removeAll(keepingCapacity: true)
            for t in start..<min(tokens, start + block) {
                let domain = (t * documents / tokens) % 2
                var previous = -1
                for _ in 0..<layers {
                    let top = topExpert(token: t, previous: previous, domain: domain)
                    for j in 0..<topK { ids32.append(Int32((top + j * step) % experts).littleEndian) }
                    previous = top
                }
            }
            try writer.append(ids32)
        }
        let total = Float(topK * (topK + 1) / 2)
        let weightRow = (0..<topK).map { Float16(Float(topK - $0) / total).bitPattern.littleEndian }
        let weightBlock = Array([[UInt16]](repeating: weightRow, count: block * layers).joined())
        for start in stride(from: 0, to: tokens, by: block) {
            try writer.append(Array(weightBlock.prefix(min(block, tokens - start) * layers * topK)))
        }
        if withLogits {
            // Logits consistent with the ids: the chosen experts high, in order.
            state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
            for _ in 0..<tokens { _ = next() }
            var row = [UInt16]()
            row.reserveCapacity(block * layers * experts)
            for start in stride(from: 0, to: tokens, by: block) {
                row.removeAll(keepingCapacity: true)
                for t in start..<min(tokens, start + block) {
                    let domain = (t * documents / tokens) % 2
                    var previous = -1
                    for _ in 0..<layers {
                        let top = topExpert(token: t, previous: previous, domain: domain)
                        var logits = [Float](repeating: -2, count: experts)
                        for j in 0..<topK { logits[(top + j * step) % experts] = Float(topK - j) }
                        row += logits.map { Float16($0).bitPattern.littleEndian }
                        previous = top
                    }
                }
                try writer.append(row)
            }
        }
        try writer.finish()
    }

    static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
}
