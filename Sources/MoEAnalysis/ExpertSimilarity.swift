import MoECore

/// Expert weight similarity per layer (Lo et al. 2024): each expert becomes one vector — the
/// mean of its gate (w1) rows, the mean of its up (w3) rows and the mean of its down (w2)
/// columns, each normalised, concatenated — and experts are compared by cosine similarity.
/// 1 means identical experts; the paper finds similarity falls with depth (diversity rises),
/// the last layer an outlier.
public struct ExpertSimilarity: Codable, Sendable, Equatable {
    /// Per layer, E × E cosine similarities.
    public var matrices: [[[Double]]]

    /// Nil when the model does not offer its expert weights (too large to read them all).
    public init?(model: any RoutingModel) {
        var matrices: [[[Double]]] = []
        for layer in 0..<model.routedLayerCount {
            guard let experts = model.expertWeights(routedLayer: layer) else { return nil }
            matrices.append(Self.cosineMatrix(experts.map { Self.signature(gate: $0.gate, up: $0.up, down: $0.down) }))
        }
        self.matrices = matrices
    }

    /// Mean similarity of distinct expert pairs, per layer.
    public var meanByLayer: [Double] {
        matrices.map { m in
            let n = m.count
            guard n > 1 else { return 1 }
            var total = 0.0
            for i in 0..<n { for j in 0..<n where i != j { total += m[i][j] } }
            return total / Double(n * (n - 1))
        }
    }

    static func signature(gate: Tensor, up: Tensor, down: Tensor) -> [Double] {
        normalized(rowMean(gate)) + normalized(rowMean(up)) + normalized(rowMean(down.transposed()))
    }

    /// Mean of the rows of a [rows × cols] matrix.
    static func rowMean(_ m: Tensor) -> [Double] {
        var out = [Double](repeating: 0, count: m.cols)
        for r in 0..<m.rows { for (j, v) in m.row(r).enumerated() { out[j] += Double(v) } }
        return out.map { $0 / Double(m.rows) }
    }

    static func normalized(_ v: [Double]) -> [Double] {
        let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return norm > 0 ? v.map { $0 / norm } : v
    }

    public static func cosineMatrix(_ vectors: [[Double]]) -> [[Double]] {
        let unit = vectors.map(normalized)
        return unit.map { a in unit.map { b in zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } } }
    }
}
