import MoECore

/// Expert weight similarity per layer, the form RMoE's analysis uses: each expert becomes one
/// vector — the mean of its gate (w1) rows, the mean of its up (w3) rows and the mean of its
/// down (w2) columns, each normalised, concatenated — and experts are compared by cosine
/// similarity. 1 means identical experts. Closer Look (Lo et al. 2024) compares each weight
/// matrix on its own instead (`perMatrix`); it finds similarity falls with depth (diversity
/// rises), the last layer an outlier.
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
    public var meanByLayer: [Double] { matrices.map(Self.meanOffDiagonal) }

    static func meanOffDiagonal(_ m: [[Double]]) -> Double {
        let n = m.count
        guard n > 1 else { return 1 }
        var total = 0.0
        for i in 0..<n { for j in 0..<n where i != j { total += m[i][j] } }
        return total / Double(n * (n - 1))
    }

    /// Closer Look's per-matrix similarity (our reading of Lo et al. 2024, §4): per layer, the
    /// cosine similarity of every pair of experts' flattened gate (w1), up (w3) and down (w2)
    /// matrices, each matrix kind on its own. Costs E/2 passes over the expert weights, so
    /// `analyze` computes it, not the explorer. Nil when the model does not offer its weights.
    public struct PerMatrix: Codable, Sendable, Equatable {
        /// Per layer, E × E cosine similarities of each matrix kind.
        public var gate: [[[Double]]], up: [[[Double]]], down: [[[Double]]]
        public var meanGateByLayer: [Double] { gate.map(ExpertSimilarity.meanOffDiagonal) }
        public var meanUpByLayer: [Double] { up.map(ExpertSimilarity.meanOffDiagonal) }
        public var meanDownByLayer: [Double] { down.map(ExpertSimilarity.meanOffDiagonal) }

        public init?(model: any RoutingModel) {
            var gate: [[[Double]]] = []
            var up: [[[Double]]] = []
            var down: [[[Double]]] = []
            for layer in 0..<model.routedLayerCount {
                guard let experts = model.expertWeights(routedLayer: layer) else { return nil }
                gate.append(Self.flattenedCosines(experts.map(\.gate)))
                up.append(Self.flattenedCosines(experts.map(\.up)))
                down.append(Self.flattenedCosines(experts.map(\.down)))
            }
            self.gate = gate
            self.up = up
            self.down = down
        }

        static func flattenedCosines(_ matrices: [Tensor]) -> [[Double]] {
            let norms = matrices.map { m in
                m.scalars.withUnsafeBufferPointer { Double(Kernels.sumOfSquares($0.baseAddress!, count: $0.count)).squareRoot() }
            }
            var out = [[Double]](repeating: [Double](repeating: 1, count: matrices.count), count: matrices.count)
            for i in matrices.indices {
                for j in matrices.indices where j > i {
                    let d = matrices[i].scalars.withUnsafeBufferPointer { a in
                        matrices[j].scalars.withUnsafeBufferPointer { b in
                            Double(Kernels.dot(a.baseAddress!, b.baseAddress!, count: min(a.count, b.count)))
                        }
                    }
                    let c = norms[i] > 0 && norms[j] > 0 ? d / (norms[i] * norms[j]) : 0
                    out[i][j] = c
                    out[j][i] = c
                }
            }
            return out
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
