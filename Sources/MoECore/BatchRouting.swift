/// The routing of a batch of sequences at every routed layer, in flat arrays a layer (one
/// `RoutingTable` each): what a batched forward records for `analyze`, which reads a long
/// text's routing without the per-token `RoutingTrace` values (five arrays a token and layer).
/// `traces(rows:)` gives those values where a view or a test wants them.
public struct BatchRouting: Sendable {
    /// One routed layer over all the batch's rows.
    public struct Layer: Sendable {
        /// [T × E] the router output.
        public var logits: Tensor
        public var table: RoutingTable
        /// Wall time the router took a token (amortised over the batch).
        public var routerNanoseconds: Double
        /// [T × p] the GRU router's state after this layer, when recorded.
        public var gruHidden: Tensor?

        public init(logits: Tensor, table: RoutingTable, routerNanoseconds: Double, gruHidden: Tensor? = nil) {
            (self.logits, self.table, self.routerNanoseconds, self.gruHidden) = (logits, table, routerNanoseconds, gruHidden)
        }
    }

    /// [T] token ids, the sequences one after another.
    public var tokens: [Int]
    /// [T] each token's position in its sequence's cache.
    public var positions: [Int]
    /// Tokens of each sequence.
    public var lengths: [Int]
    public var layers: [Layer]
    /// Each sequence's next-token logits after its last token ([] where not computed).
    public var lastLogits: [[Float]]

    public init(tokens: [Int], positions: [Int], lengths: [Int], layers: [Layer], lastLogits: [[Float]]) {
        (self.tokens, self.positions, self.lengths, self.layers, self.lastLogits) = (tokens, positions, lengths, layers, lastLogits)
    }

    /// Rows of sequence `s`.
    public func rows(ofSequence s: Int) -> Range<Int> {
        let first = lengths[..<s].reduce(0, +)
        return first..<first + lengths[s]
    }

    /// Rows `rows` as one `RoutingTrace` a token.
    public func traces(rows: Range<Int>) -> [RoutingTrace] {
        rows.map { t in
            RoutingTrace(
                token: tokens[t], position: positions[t],
                layers: layers.map { layer in
                    var entry = layer.table.layerRouting(t, logits: layer.logits)
                    entry.routerNanoseconds = layer.routerNanoseconds
                    entry.gruHidden = layer.gruHidden.map { Array($0.row(t)) }
                    return entry
                })
        }
    }

    /// Each sequence's traces and last logits: the `RoutingModel.route(sequences:…)` form.
    public var sequences: [(routing: [RoutingTrace], lastLogits: [Float])] {
        lengths.indices.map { (traces(rows: rows(ofSequence: $0)), lastLogits[$0]) }
    }

    /// The same routing from traces (a model that routes token by token, or whose forward
    /// gives traces): every token has the same layers, each with `topK` experts.
    public init(sequences: [(routing: [RoutingTrace], lastLogits: [Float])]) {
        let all = Array(sequences.map(\.routing).joined())
        tokens = all.map(\.token)
        positions = all.map(\.position)
        lengths = sequences.map(\.routing.count)
        lastLogits = sequences.map(\.lastLogits)
        let t = all.count
        layers = (0..<(all.first?.layers.count ?? 0)).map { l in
            let entries = all.map { $0.layers[l] }
            let (e, k) = (entries[0].probabilities.count, entries[0].experts.count)
            var table = RoutingTable(
                count: t, numExperts: e, topK: k, probabilities: entries.flatMap(\.probabilities),
                experts: entries.flatMap { $0.experts.map { Int32($0) } }, weights: entries.flatMap(\.weights))
            if entries.allSatisfy({ $0.expertOutputNorms.count == k }) { table.expertOutputNorms = entries.flatMap(\.expertOutputNorms) }
            if entries.allSatisfy({ $0.allExpertOutputNorms?.count == e }) {
                table.allExpertOutputNorms = entries.flatMap { $0.allExpertOutputNorms! }
            }
            if entries.contains(where: { $0.rankedScoreMargin != nil }) { table.rankedScoreMargins = entries.map(\.rankedScoreMargin) }
            let hidden = entries.allSatisfy { $0.gruHidden != nil } ? entries.flatMap { $0.gruHidden! } : nil
            return Layer(
                logits: Tensor(shape: [t, entries[0].logits.count], scalars: entries.flatMap(\.logits)), table: table,
                routerNanoseconds: entries[0].routerNanoseconds,
                gruHidden: hidden.map { Tensor(shape: [t, $0.count / max(1, t)], scalars: $0) })
        }
    }
}

extension InferenceError {
    /// The first NaN or ±∞ in a forward's results, layer by layer (so it names the layer where
    /// the values first went bad), then the output logits; nil when all are numbers. The Hash
    /// router's −∞ logits (experts outside its set) are by design and pass.
    public static func firstNonFinite(in traces: [RoutingTrace], routedLayers: [Int], outputLogits: [Float] = []) -> InferenceError? {
        firstNonFinite(in: BatchRouting(sequences: [(traces, outputLogits)]), sequence: 0, routedLayers: routedLayers)
    }

    /// The same check on sequence `s` of a batch, read off the flat rows: at each layer, token
    /// by token, the router logits, probabilities, expert weights, expert output norms and GRU
    /// state, each looked at only when the ones before are clean; then its output logits.
    public static func firstNonFinite(in batch: BatchRouting, sequence s: Int, routedLayers: [Int]) -> InferenceError? {
        @inline(__always) func bad(_ values: UnsafeBufferPointer<Float>, allowNegativeInfinity: Bool = false) -> Float? {
            for v in values where v.isNaN || (v.isInfinite && !(allowNegativeInfinity && v < 0)) { return v }
            return nil
        }
        func bad(_ values: [Float]?, row t: Int, width: Int, allowNegativeInfinity: Bool = false) -> Float? {
            guard let values, !values.isEmpty else { return nil }
            return values.withUnsafeBufferPointer {
                bad(UnsafeBufferPointer(rebasing: $0[t * width..<(t + 1) * width]), allowNegativeInfinity: allowNegativeInfinity)
            }
        }
        let rows = batch.rows(ofSequence: s)
        for (i, layer) in batch.layers.enumerated() {
            let name = i < routedLayers.count ? "L\(routedLayers[i])" : "L\(i)"
            let table = layer.table
            let (e, k) = (table.numExperts, table.topK)
            let hiddenWidth = layer.gruHidden?.cols ?? 0
            // All of the sequence's rows at once first (a long text's every layer is clean), token
            // by token only where something is not.
            let all = rows.lowerBound..<rows.upperBound
            func anyBad(_ values: [Float]?, width: Int, allowNegativeInfinity: Bool = false) -> Bool {
                guard let values, !values.isEmpty else { return false }
                return values.withUnsafeBufferPointer {
                    bad(
                        UnsafeBufferPointer(rebasing: $0[all.lowerBound * width..<all.upperBound * width]),
                        allowNegativeInfinity: allowNegativeInfinity)
                } != nil
            }
            guard
                anyBad(layer.logits.scalars, width: layer.logits.cols, allowNegativeInfinity: true) || anyBad(table.probabilities, width: e)
                    || anyBad(table.weights, width: k) || anyBad(table.expertOutputNorms, width: k)
                    || anyBad(table.allExpertOutputNorms, width: e) || anyBad(layer.gruHidden?.scalars, width: hiddenWidth)
            else { continue }
            for t in rows {
                let found: (tensor: String, value: Float)? =
                    bad(layer.logits.scalars, row: t, width: layer.logits.cols, allowNegativeInfinity: true).map { ("router logits", $0) }
                    ?? bad(table.probabilities, row: t, width: e).map { ("router probabilities", $0) }
                    ?? bad(table.weights, row: t, width: k).map { ("expert weights", $0) }
                    ?? (bad(table.expertOutputNorms, row: t, width: k) ?? bad(table.allExpertOutputNorms, row: t, width: e)).map {
                        ("expert output norms", $0)
                    }
                    ?? bad(layer.gruHidden?.scalars, row: t, width: hiddenWidth).map { ("GRU router state", $0) }
                if let found {
                    return .nonFinite(
                        location: "layer \(name), \(found.tensor), token position \(batch.positions[t])", value: found.value)
                }
            }
        }
        if let value = bad(batch.lastLogits[s], row: 0, width: batch.lastLogits[s].count) {
            return .nonFinite(location: "the output logits", value: value)
        }
        return nil
    }
}
