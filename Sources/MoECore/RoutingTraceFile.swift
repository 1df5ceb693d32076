import Foundation

/// A recorded routing trace on disk: the "moescope-routing-trace" safetensors file (format in
/// README.md, "Routing from bigger machines"). Written by `moescope trace --out`, the capture
/// script and the engine converters; read memory-mapped, so a trace far larger than memory
/// opens at once and only the tokens asked for are ever touched.
///
/// Tensors (T tokens, L routed layers, k chosen experts, E experts):
/// `token_ids` I32 [T], `document_offsets` I64 [D + 1], `topk_ids` I32 [T, L, k],
/// `topk_weights` float [T, L, k]; optional float `router_logits` or `router_probabilities`
/// [T, L, E], `expert_output_norms` [T, L, k], `gru_hidden` [T, L, p].
public final class RoutingTraceFile: @unchecked Sendable {
    public static let formatName = "moescope-routing-trace"
    public static let formatVersion = 1

    /// What the optional [T, L, E] score tensor holds.
    public enum ScoreKind: String, Sendable { case logits, probabilities }

    public let file: SafeTensorsFile
    public var path: String { file.path }
    public let tokenCount: Int
    public let numExperts: Int
    public let topK: Int
    /// The model's index of each trace layer.
    public let routedLayers: [Int]
    /// All the model's layers, dense ones included (routed layers + 1 when not recorded).
    public let layerCount: Int
    public let family: String
    public let routingRule: String
    /// The engine that recorded it, its version and settings (a JSON object, as written).
    public let source: String
    /// Start of each document, then `tokenCount`.
    public let documentOffsets: [Int]
    /// One label per document ("" where unknown).
    public let domains: [String]
    /// The tokenizer.json named by the trace, inside the trace's folder; nil when none.
    public let tokenizerPath: String?
    public let scoreKind: ScoreKind?
    public let hasExpertOutputNorms: Bool
    /// p for the GRU router's state; nil when not recorded.
    public let gruHiddenSize: Int?

    private let tokenIDs: UnsafeRawPointer
    private let topkIDs: UnsafeRawPointer
    private let weights: MappedTensor
    private let scores: MappedTensor?
    private let norms: MappedTensor?
    private let gruHidden: MappedTensor?

    public var routedLayerCount: Int { routedLayers.count }
    public var documentCount: Int { documentOffsets.count - 1 }

    /// Opens and validates `path`: the safetensors rules, then the trace's own (format and
    /// version, every metadata field in range, every tensor's dtype and shape against T, L, k
    /// and E, document offsets from 0 to T in order, a tokenizer path that stays in the folder).
    /// Expert ids are checked as they are read (`experts(token:layer:)`), not all at open.
    public init(path: String) throws {
        let file = try SafeTensorsFile(path: path)
        self.file = file
        func bad(_ detail: String) -> CheckpointError {
            .badHeader(path: path, detail: "\(detail) (routing-trace rule; see README, \"Routing from bigger machines\")")
        }
        let meta = file.metadata
        guard meta["format"] == Self.formatName else {
            throw bad("__metadata__.format is \(meta["format"].map { "\"\($0)\"" } ?? "missing"), not \"\(Self.formatName)\"")
        }
        guard meta["version"] == String(Self.formatVersion) else {
            throw bad("__metadata__.version is \(meta["version"] ?? "missing"); this moescope reads version \(Self.formatVersion)")
        }
        func int(_ key: String, _ range: ClosedRange<Int>) throws -> Int {
            guard let text = meta[key], let value = Int(text), range.contains(value) else {
                throw bad("__metadata__.\(key) is \(meta[key].map { "\"\($0)\"" } ?? "missing"); it must be a whole number in \(range)")
            }
            return value
        }
        func json(_ key: String) throws -> JSONValue? {
            guard let text = meta[key] else { return nil }
            do { return try JSONValue.parse(Array(text.utf8), maximumDepth: 16) } catch {
                throw bad("__metadata__.\(key) is not valid JSON (\(error))")
            }
        }
        let numExperts = try int("num_experts", 1...SizeLimits.experts)
        let topK = try int("top_k", 1...numExperts)
        self.numExperts = numExperts
        self.topK = topK
        guard let layerValues = try json("routed_layers")?.arrayValue, !layerValues.isEmpty, layerValues.count <= SizeLimits.layers else {
            throw bad("__metadata__.routed_layers must be a JSON list of 1…\(SizeLimits.layers) layer numbers")
        }
        let routedLayers = try layerValues.map { v in
            guard let n = v.numberValue?.exactInt, (0..<SizeLimits.layers).contains(n) else {
                throw bad(
                    "__metadata__.routed_layers holds \(v.kindDescription) \(v.numberValue?.text ?? ""); layer numbers are whole, 0…\(SizeLimits.layers - 1)"
                )
            }
            return n
        }
        guard zip(routedLayers, routedLayers.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw bad("__metadata__.routed_layers must rise strictly")
        }
        self.routedLayers = routedLayers
        layerCount =
            meta["num_layers"] == nil ? routedLayers.last! + 1 : try int("num_layers", (routedLayers.last! + 1)...SizeLimits.layers)
        family = meta["family"] ?? "unknown"
        routingRule = meta["routing_rule"] ?? "unknown"
        source = meta["source"] ?? "{}"
        if meta["source"] != nil, try json("source")?.objectValue == nil { throw bad("__metadata__.source must be a JSON object") }

        // token_ids [T]
        guard let (tokenEntry, tokenBytes) = file.rawBytes("token_ids") else {
            throw CheckpointError.missingTensor(path: path, tensor: "token_ids")
        }
        guard tokenEntry.dtype == .i32, tokenEntry.shape.count == 1, tokenEntry.shape[0] >= 1 else {
            throw bad("token_ids must be I32 of shape [T ≥ 1], found \(tokenEntry.dtype.rawValue) \(tokenEntry.shape)")
        }
        let tokenCount = tokenEntry.shape[0]
        self.tokenCount = tokenCount
        tokenIDs = tokenBytes
        let layers = routedLayers.count
        // topk_ids [T, L, k]
        guard let (idsEntry, idsBytes) = file.rawBytes("topk_ids") else {
            throw CheckpointError.missingTensor(path: path, tensor: "topk_ids")
        }
        guard idsEntry.dtype == .i32, idsEntry.shape == [tokenCount, layers, topK] else {
            throw bad(
                "topk_ids must be I32 of shape [T, L, k] = \([tokenCount, layers, topK]), found \(idsEntry.dtype.rawValue) \(idsEntry.shape)"
            )
        }
        topkIDs = idsBytes
        func floatTensor(_ name: String, lastDimension: Int?) throws -> MappedTensor? {
            guard let entry = file.entries[name] else { return nil }
            guard entry.dtype.isFloat, entry.shape.count == 3, entry.shape[0] == tokenCount, entry.shape[1] == layers,
                lastDimension.map({ entry.shape[2] == $0 }) ?? (entry.shape[2] >= 1)
            else {
                let want = lastDimension.map(String.init) ?? "p"
                throw bad(
                    "\(name) must be F32, F16 or BF16 of shape [\(tokenCount), \(layers), \(want)], found \(entry.dtype.rawValue) \(entry.shape)"
                )
            }
            return try file.mapped(name)
        }
        guard let weights = try floatTensor("topk_weights", lastDimension: topK) else {
            throw CheckpointError.missingTensor(path: path, tensor: "topk_weights")
        }
        self.weights = weights
        let logits = try floatTensor("router_logits", lastDimension: numExperts)
        let probabilities = try floatTensor("router_probabilities", lastDimension: numExperts)
        guard logits == nil || probabilities == nil else { throw bad("router_logits and router_probabilities are both present; write one") }
        scores = logits ?? probabilities
        scoreKind = logits != nil ? .logits : probabilities != nil ? .probabilities : nil
        norms = try floatTensor("expert_output_norms", lastDimension: topK)
        hasExpertOutputNorms = norms != nil
        gruHidden = try floatTensor("gru_hidden", lastDimension: nil)
        gruHiddenSize = gruHidden?.columns

        // document_offsets [D + 1]: 0 = o_0 ≤ o_1 ≤ … ≤ o_D = T. Its size is bounded by the file's.
        var documentOffsets = [0, tokenCount]
        if let (entry, bytes) = file.rawBytes("document_offsets") {
            guard entry.dtype == .i64, entry.shape.count == 1, (2...tokenCount + 1).contains(entry.shape[0]) else {
                throw bad("document_offsets must be I64 of shape [D + 1] with 1 ≤ D ≤ T, found \(entry.dtype.rawValue) \(entry.shape)")
            }
            let offsets = (0..<entry.shape[0]).map { Int(Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
            guard offsets.first == 0, offsets.last == tokenCount, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 < $1 }) else {
                throw bad("document_offsets must start at 0, rise strictly and end at T = \(tokenCount)")
            }
            documentOffsets = offsets
        }
        self.documentOffsets = documentOffsets
        let documentCount = documentOffsets.count - 1
        if let labels = try json("domains") {
            guard let list = labels.arrayValue, list.count == documentCount else {
                throw bad("__metadata__.domains must be a JSON list of one label per document (\(documentCount))")
            }
            domains = try list.map { v in
                guard let s = v.stringValue else { throw bad("__metadata__.domains holds \(v.kindDescription), not a string") }
                return s
            }
        } else {
            domains = Array(repeating: "", count: documentCount)
        }
        tokenizerPath = try meta["tokenizer_path"].map { try Self.resolveInsideFolder($0, of: path, bad: bad) }
    }

    /// `relative` resolved against the trace's folder, refused when it is absolute, climbs with
    /// `..`, or resolves (through links) to somewhere outside that folder.
    static func resolveInsideFolder(_ relative: String, of tracePath: String, bad: (String) -> Error) throws -> String {
        let parts = relative.split(separator: "/", omittingEmptySubsequences: false)
        guard !relative.isEmpty, !relative.hasPrefix("/"), !parts.contains(".."), !relative.contains("\0") else {
            throw bad("__metadata__.tokenizer_path \"\(relative)\" must be a relative path inside the trace's folder, without ..")
        }
        let folder = URL(fileURLWithPath: tracePath).deletingLastPathComponent().resolvingSymlinksInPath().path
        let target = URL(fileURLWithPath: folder).appendingPathComponent(relative).resolvingSymlinksInPath().path
        guard target.hasPrefix(folder.hasSuffix("/") ? folder : folder + "/") else {
            throw bad("__metadata__.tokenizer_path \"\(relative)\" leads out of the trace's folder")
        }
        return target
    }

    public func tokenID(_ t: Int) -> Int {
        Int(Int32(littleEndian: tokenIDs.loadUnaligned(fromByteOffset: 4 * t, as: Int32.self)))
    }

    /// The raw I32 expert ids of token `t`: L × k values, layer-major.
    public func topkIDs(token t: Int) -> UnsafeRawPointer { topkIDs + 4 * t * routedLayers.count * topK }

    /// Pointer to the expert ids of tokens [range): range.count × L × k little-endian I32.
    public func topkIDBytes(tokens range: Range<Int>) -> UnsafeBufferPointer<Int32> {
        let stride = routedLayers.count * topK
        return UnsafeBufferPointer(
            start: (topkIDs + 4 * range.lowerBound * stride).assumingMemoryBound(to: Int32.self), count: range.count * stride)
    }

    /// Weights of tokens [range) decoded into `out` (range.count × L × k floats).
    public func decodeWeights(tokens range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        weights.decodeRows(range.lowerBound * routedLayers.count..<range.upperBound * routedLayers.count, into: out)
    }

    /// Scores (logits or probabilities, `scoreKind`) of tokens [range) into `out` (× L × E).
    public func decodeScores(tokens range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        scores?.decodeRows(range.lowerBound * routedLayers.count..<range.upperBound * routedLayers.count, into: out)
    }

    public func document(of token: Int) -> Int {
        var low = 0
        var high = documentOffsets.count - 1
        while high - low > 1 {
            let mid = (low + high) / 2
            if documentOffsets[mid] <= token { low = mid } else { high = mid }
        }
        return low
    }

    /// The experts token `t` chose at trace layer `l`, checked to lie in 0..<E and differ.
    public func experts(token t: Int, layer l: Int) throws -> [Int] {
        let base = topkIDs(token: t) + 4 * l * topK
        let ids = (0..<topK).map { Int(Int32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
        guard ids.allSatisfy({ (0..<numExperts).contains($0) }), Set(ids).count == ids.count else {
            throw TraceDataError(
                path: path, token: t, layer: routedLayers[l],
                detail: "topk_ids \(ids) must be \(topK) different experts in 0…\(numExperts - 1)")
        }
        return ids
    }

    /// How token `t` was routed, in the form every view and analysis reads. Without recorded
    /// scores, the probabilities are the top-k weights normalised to sum to 1 (zero elsewhere)
    /// and the logits their logarithms, as the Hash router's are.
    public func routing(token t: Int) throws -> RoutingTrace {
        let layers = routedLayers.count
        var weightRows = [Float](repeating: 0, count: layers * topK)
        weightRows.withUnsafeMutableBufferPointer { decodeWeights(tokens: t..<t + 1, into: $0.baseAddress!) }
        var scoreRows = [Float](repeating: 0, count: scores == nil ? 0 : layers * numExperts)
        if scores != nil { scoreRows.withUnsafeMutableBufferPointer { decodeScores(tokens: t..<t + 1, into: $0.baseAddress!) } }
        var normRows = [Float](repeating: 0, count: layers * topK)
        if let norms { normRows.withUnsafeMutableBufferPointer { norms.decodeRows(t * layers..<(t + 1) * layers, into: $0.baseAddress!) } }
        var hiddenRows: [Float] = []
        if let gruHidden {
            hiddenRows = [Float](repeating: 0, count: layers * gruHidden.columns)
            hiddenRows.withUnsafeMutableBufferPointer { gruHidden.decodeRows(t * layers..<(t + 1) * layers, into: $0.baseAddress!) }
        }
        var result: [LayerRouting] = []
        result.reserveCapacity(layers)
        for l in 0..<layers {
            let experts = try self.experts(token: t, layer: l)
            let w = Array(weightRows[l * topK..<(l + 1) * topK])
            var logits: [Float]
            var probabilities: [Float]
            switch scoreKind {
            case .logits:
                logits = Array(scoreRows[l * numExperts..<(l + 1) * numExperts])
                probabilities = logits
                probabilities.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: $0.count) }
            case .probabilities:
                probabilities = Array(scoreRows[l * numExperts..<(l + 1) * numExperts])
                logits = probabilities.map { log($0) }
            case nil:
                let total = w.reduce(0) { $0 + max(0, $1) }
                probabilities = [Float](repeating: 0, count: numExperts)
                for (e, weight) in zip(experts, w) { probabilities[e] = total > 0 ? max(0, weight) / total : 1 / Float(topK) }
                logits = probabilities.map { log($0) }
            }
            let p = gruHidden?.columns ?? 0
            result.append(
                LayerRouting(
                    logits: logits, probabilities: probabilities, experts: experts, weights: w,
                    expertOutputNorms: Array(normRows[l * topK..<(l + 1) * topK]),
                    gruHidden: gruHidden == nil ? nil : Array(hiddenRows[l * p..<(l + 1) * p]), routerNanoseconds: 0))
        }
        return RoutingTrace(token: tokenID(t), position: t - documentOffsets[document(of: t)], layers: result)
    }
}

/// A value inside a routing trace that breaks the format's rules, found while reading it.
public struct TraceDataError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let token: Int
    public let layer: Int
    public let detail: String
    public init(path: String, token: Int, layer: Int, detail: String) {
        self.path = path
        self.token = token
        self.layer = layer
        self.detail = detail
    }
    public var description: String {
        "\(path): token \(token), layer L\(layer): \(detail) — the trace is damaged or was written for another model; record it again"
    }
}
