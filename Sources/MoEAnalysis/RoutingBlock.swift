import Foundation
import MoECore

/// A run of routed tokens from one text, in flat arrays: what `AnalysisReport.Accumulator`
/// consumes, whether the routing was computed here (`init(traces:…)`, from a model's forward)
/// or recorded elsewhere (`init(trace:tokens:)`, from a routing-trace file). Flat so that a
/// recorded trace streams at the speed of its expert ids rather than of one `RoutingTrace`
/// value (five arrays) per token and layer.
public struct RoutingBlock: Sendable {
    public let layerCount: Int
    public let topK: Int
    public let numExperts: Int
    /// [n] token ids.
    public var tokens: [Int]
    /// [n] positions in the context window or document: token t follows token t−1 where its
    /// position is one more (consecutive-token checks never pair across windows or documents).
    public var positions: [Int]
    /// [n × L × k] each token's experts at each routed layer, highest score first.
    public var experts: [Int32]
    /// [n × L × E] router probabilities; nil where the source recorded no scores.
    public var probabilities: [Float]?
    /// [n × L] the selection margin (`LayerRouting.selectionMargin`), NaN where it has none;
    /// nil without scores.
    public var selectionMargins: [Float]?

    public var count: Int { tokens.count }

    /// The routing of a live model's forward, `traces` in text order.
    public init(traces: [RoutingTrace], layerCount: Int, topK: Int, numExperts: Int) {
        self.layerCount = layerCount
        self.topK = topK
        self.numExperts = numExperts
        let n = traces.count
        tokens = traces.map(\.token)
        positions = traces.map(\.position)
        var experts = [Int32](repeating: 0, count: n * layerCount * topK)
        var probabilities = [Float](repeating: 0, count: n * layerCount * numExperts)
        var margins = [Float](repeating: .nan, count: n * layerCount)
        for (t, trace) in traces.enumerated() {
            for l in 0..<min(layerCount, trace.layers.count) {
                let routing = trace.layers[l]
                for (slot, e) in routing.experts.prefix(topK).enumerated() { experts[(t * layerCount + l) * topK + slot] = Int32(e) }
                let base = (t * layerCount + l) * numExperts
                for (e, p) in routing.probabilities.prefix(numExperts).enumerated() { probabilities[base + e] = p }
                if let margin = routing.selectionMargin { margins[t * layerCount + l] = Float(margin) }
            }
        }
        self.experts = experts
        self.probabilities = probabilities
        selectionMargins = margins
    }

    /// Rows `rows` of a batched forward's flat routing (one sequence's, in text order).
    public init(batch: BatchRouting, rows: Range<Int>) {
        let (l, n) = (batch.layers.count, rows.count)
        let k = batch.layers.first?.table.topK ?? 0
        let e = batch.layers.first?.table.numExperts ?? 0
        (layerCount, topK, numExperts) = (l, k, e)
        tokens = Array(batch.tokens[rows])
        positions = Array(batch.positions[rows])
        var experts = [Int32](repeating: 0, count: n * l * k)
        var probabilities = [Float](repeating: 0, count: n * l * e)
        var margins = [Float](repeating: .nan, count: n * l)
        for (layer, routed) in batch.layers.enumerated() {
            let table = routed.table
            for (i, t) in rows.enumerated() {
                let row = i * l + layer
                experts.replaceSubrange(row * k..<(row + 1) * k, with: table.experts[t * k..<(t + 1) * k])
                probabilities.replaceSubrange(row * e..<(row + 1) * e, with: table.probabilities[t * e..<(t + 1) * e])
                if let margin = table.selectionMargin(t) { margins[row] = Float(margin) }
            }
        }
        self.experts = experts
        self.probabilities = probabilities
        selectionMargins = margins
    }

    /// Tokens `range` of a recorded trace, all inside one document. Expert ids are checked
    /// first, so nothing downstream indexes with a bad one; the first bad id throws with its
    /// token and layer. Logits are turned into probabilities by a softmax; selection margins
    /// are measured on the probabilities (the k-th chosen minus the best unchosen).
    public init(trace: RoutingTraceFile, tokens range: Range<Int>) throws {
        let l = trace.routedLayerCount
        let k = trace.topK
        let e = trace.numExperts
        layerCount = l
        topK = k
        numExperts = e
        let ids = trace.topkIDBytes(tokens: range)
        for (index, id) in ids.enumerated() where UInt32(bitPattern: Int32(littleEndian: id)) >= UInt32(e) {
            throw TraceDataError(
                path: trace.path, token: range.lowerBound + index / (l * k), layer: trace.routedLayers[index / k % l],
                detail: "topk_ids holds expert \(Int32(littleEndian: id)), outside 0…\(e - 1)")
        }
        experts = ids.map { Int32(littleEndian: $0) }
        tokens = range.map(trace.tokenID)
        let documentStart = trace.documentOffsets[trace.document(of: range.lowerBound)]
        positions = range.map { $0 - documentStart }
        guard let kind = trace.scoreKind else {
            probabilities = nil
            selectionMargins = nil
            return
        }
        var scores = [Float](repeating: 0, count: range.count * l * e)
        var margins = [Float](repeating: .nan, count: range.count * l)
        let chosen = experts
        scores.withUnsafeMutableBufferPointer { p in
            trace.decodeScores(tokens: range, into: p.baseAddress!)
            var isChosen = [Bool](repeating: false, count: e)
            for row in 0..<range.count * l {
                let scoresOfRow = p.baseAddress! + row * e
                if kind == .logits { Kernels.softmax(scoresOfRow, count: e) }
                var weakest = Float.infinity
                for s in 0..<k {
                    let id = Int(chosen[row * k + s])
                    isChosen[id] = true
                    weakest = min(weakest, scoresOfRow[id])
                }
                var bestUnchosen = -Float.infinity
                for i in 0..<e where !isChosen[i] { bestUnchosen = max(bestUnchosen, scoresOfRow[i]) }
                if bestUnchosen.isFinite { margins[row] = weakest - bestUnchosen }
                for s in 0..<k { isChosen[Int(chosen[row * k + s])] = false }
            }
        }
        probabilities = scores
        selectionMargins = margins
    }
}

extension RoutingTraceFile {
    /// Blocks of about `idsPerBlock` expert ids (fewer tokens when scores come along: a score
    /// row is E/k times larger), never straddling a document; `body` gets each block with
    /// its document's domain ("text" when unlabelled).
    public func forEachBlock(idsPerBlock: Int = 1 << 20, _ body: (RoutingBlock, String) throws -> Void) throws {
        let perToken = max(1, routedLayerCount * topK)
        let scoreLimit = scoreKind == nil ? Int.max : max(1, (1 << 22) / max(1, routedLayerCount * numExperts))
        let block = max(1, min(idsPerBlock / perToken, scoreLimit))
        for document in 0..<documentCount {
            let domain = domains[document].isEmpty ? "text" : domains[document]
            var start = documentOffsets[document]
            let end = documentOffsets[document + 1]
            while start < end {
                let range = start..<min(end, start + block)
                try body(try RoutingBlock(trace: self, tokens: range), domain)
                start = range.upperBound
            }
        }
    }
}
