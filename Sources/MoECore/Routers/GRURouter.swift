#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Layerwise Recurrent Router (RMoE; Qiu et al. 2024). A GRU carries routing state down the
/// layer stack: the recurrence runs over depth for each token, never along the sequence, so
/// KV-cached decoding needs no extra state between tokens.
///
///     x_i = P_i u_i                                   (P_i ∈ ℝ^{p×d}, per layer, no bias)
///     r   = σ(W_ir x + b_ir + W_hr h + b_hr)
///     z   = σ(W_iz x + b_iz + W_hz h + b_hz)
///     n   = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
///     h_i = (1 − z) ⊙ n + z ⊙ h_{i−1},   h_0 = 0      (one GRU cell shared by all layers)
///     logits_i = G_i h_i                              (G_i ∈ ℝ^{E×p}, per layer, no bias)
///
/// The GRU cell follows PyTorch's `GRUCell` layout: `weight_ih` stacks [W_ir; W_iz; W_in].
/// Gradients flow through h across layers (the paper finds detaching it hurts).
///
/// With the recurrence cut (`gru_recurrence: false`, RMoE's ablation of the recurrence) every
/// layer starts from zero state, so the cell is a per-layer gated MLP of the same size:
///
///     h_i = (1 − z_i) ⊙ n_i,   z_i = σ(W_iz x_i + b_iz + b_hz),
///     n_i = tanh(W_in x_i + b_in + r_i ⊙ b_hn),   r_i = σ(W_ir x_i + b_ir + b_hr)
///
/// (W_hh multiplies h_{i−1} = 0 and drops out; it stays in the checkpoint so both variants
/// share one layout.)
public struct GRURouter: Router {
    public var kind: RouterKind { .gru }
    /// The cell's W_ih, W_hh, b_ih, b_hh (shared by all layers).
    var cellWeights: [Parameter] { didSet { decodeCache = BuiltOnce() } }
    /// P_i and G_i of each layer.
    var projectors: [Parameter] { didSet { decodeCache = BuiltOnce() } }
    var outputs: [Parameter] { didSet { decodeCache = BuiltOnce() } }
    /// What a decoded token's direct path reads (`DecodeWeights`), gathered on first use; any
    /// change to the parameters starts a new one, as `Parameter` does with its packed copy.
    private var decodeCache = BuiltOnce<DecodeWeights>()
    public let stateSize: Int
    /// False cuts the recurrence: h_{i−1} = 0 at every layer.
    public let recurrent: Bool

    static let cellPrefix = "model.router_gru"
    var weightIH: Parameter { cellWeights[0] }
    var weightHH: Parameter { cellWeights[1] }
    var biasIH: Parameter { cellWeights[2] }
    var biasHH: Parameter { cellWeights[3] }

    public init(_ config: ModelConfig) {
        let (p, layers) = (config.gruHiddenSize, config.numLayers)
        stateSize = p
        recurrent = config.gruRecurrence
        // PyTorch initialises GRU weights U(−1/√p, 1/√p); a normal with the same variance.
        let cellInit = Initializer.normal(std: 1 / (3 * Float(p)).squareRoot())
        cellWeights = [("weight_ih", [3 * p, p]), ("weight_hh", [3 * p, p]), ("bias_ih", [3 * p]), ("bias_hh", [3 * p])].map {
            Parameter("\(Self.cellPrefix).\($0.0)", shape: $0.1, initializer: cellInit)
        }
        let initializer = Initializer.normal(std: config.initStd)
        projectors = .init(
            layers: layers, { "\(routerPrefix($0)).projector.weight" }, shape: [p, config.hiddenSize], initializer: initializer)
        outputs = .init(layers: layers, { "\(routerPrefix($0)).output.weight" }, shape: [config.numExperts, p], initializer: initializer)
    }

    /// The shared cell, then layer by layer P_i and G_i.
    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        for i in cellWeights.indices { try visit(&cellWeights[i]) }
        for l in projectors.indices {
            try visit(&projectors[l])
            try visit(&outputs[l])
        }
    }

    /// One GRU step for T tokens at once: x, h [T × p] → h′ [T × p].
    public func cell(input x: Variable, hidden h: Variable, on tape: Tape, parameter: (Parameter) -> Variable) -> Variable {
        let p = stateSize
        let gi = tape.addRow(tape.linear(x, parameter(weightIH)), parameter(biasIH))
        let gh = tape.addRow(tape.linear(h, parameter(weightHH)), parameter(biasHH))
        let r = tape.sigmoid(tape.add(tape.columns(gi, 0..<p), tape.columns(gh, 0..<p)))
        let z = tape.sigmoid(tape.add(tape.columns(gi, p..<2 * p), tape.columns(gh, p..<2 * p)))
        let n = tape.tanh(tape.add(tape.columns(gi, 2 * p..<3 * p), tape.multiply(r, tape.columns(gh, 2 * p..<3 * p))))
        return tape.add(tape.multiply(tape.oneMinus(z), n), tape.multiply(z, h))
    }

    public func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (Parameter) -> Variable
    ) -> Variable {
        let previous = (recurrent ? state : nil) ?? tape.leaf(Tensor(zeros: [tokens.count, stateSize]))
        let x = tape.linear(u, parameter(projectors[layer]))
        let hidden = cell(input: x, hidden: previous, on: tape, parameter: parameter)
        state = hidden
        return tape.linear(hidden, parameter(outputs[layer]))
    }

    public var expertCount: Int { outputs[0].value.rows }

    /// `DecodeWeights` holds the router's own packed copies (`FourPanelRows`), which
    /// `Parameter.releasePackedCopies` does not reach.
    public func releaseDecodeWeights() { decodeCache.release() }

    /// The gathered decode weights, built by the first decoded token. Looked up before building:
    /// the build's closure takes a copy of the router (a retain of every parameter array), which
    /// a call that finds them built then never makes.
    var decodeWeights: DecodeWeights {
        if let built = decodeCache.ifBuilt { return built }
        return decodeCache.value { DecodeWeights(self) }
    }

    /// The gathered decode weights, if a decoded token has built them.
    var decodeWeightsIfBuilt: DecodeWeights? { decodeCache.ifBuilt }

    /// The weights of the direct path for a few rows (a decoded token): every matrix packed for
    /// `FourPanelRun` (each group of four panels one sequential read) and the biases, built
    /// once, so a layer's call takes one lookup rather than a `Parameter` copy and a lock for
    /// each of its four products. Built from the values, so the parameters' own one-row copies
    /// (`rowsPacked`) are never made for a decoding GRU router. Immutable once built (the
    /// biases' memory included), so threads may share it.
    final class DecodeWeights: @unchecked Sendable {
        let projectors, outputs: [Kernels.FourPanelRows]
        let weightIH, weightHH: Kernels.FourPanelRows
        /// b_ih and b_hh, side by side [2 × 3p], held as plain memory so a call retains no array.
        let biases: UnsafeMutablePointer<Float>

        init(_ router: GRURouter) {
            projectors = router.projectors.map { Kernels.FourPanelRows($0.value) }
            outputs = router.outputs.map { Kernels.FourPanelRows($0.value) }
            (weightIH, weightHH) = (Kernels.FourPanelRows(router.weightIH.value), Kernels.FourPanelRows(router.weightHH.value))
            let count = 3 * router.stateSize
            precondition(router.biasIH.value.count == count && router.biasHH.value.count == count, "GRU biases are not [3p]")
            biases = .allocate(capacity: 2 * count)
            biases.initialize(from: router.biasIH.value.scalars, count: count)
            (biases + count).initialize(from: router.biasHH.value.scalars, count: count)
        }

        deinit { biases.deallocate() }

        /// `rows` rows of u [rows × d] through layer `layer`: x = P u, the cell from `previous`
        /// (nil: the zero state) into `hidden`, and G h into `out`, each product as `linear`
        /// computes it.
        func logits(
            _ u: UnsafePointer<Float>, rows: Int, layer: Int, previous: UnsafePointer<Float>?,
            hidden h: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>
        ) {
            let (projector, output) = (projectors[layer], outputs[layer])
            let (d, p) = (projector.inputs, projector.outputs)
            GRURouter.withCellScratch(rows: rows, stateSize: p, fromState: previous != nil) { x, gi, gh in
                for r in 0..<rows {
                    projector.multiply(u + r * d, into: x + r * p)
                    weightIH.multiply(x + r * p, into: gi + r * 3 * p)
                    if let previous, let gh { weightHH.multiply(previous + r * p, into: gh + r * 3 * p) }
                }
                GRURouter.gates(
                    gi, gh, hidden: previous, biases: (UnsafePointer(biases), UnsafePointer(biases + 3 * p)), stateSize: p, rows: rows,
                    into: h)
                for r in 0..<rows { output.multiply(h + r * p, into: out + r * output.outputs) }
            }
        }
    }

    /// h_i is written into the tensor h_{i−2} held (`state.spare`), so a token's layers
    /// allocate one state tensor, not one each.
    public func logits(
        _ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, into out: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let (rows, p) = (u.rows, stateSize)
        var hidden = state.spare.flatMap { $0.rows == rows && $0.count == rows * p ? $0 : nil } ?? Tensor(uninitialized: [rows, p])
        state.spare = nil  // this tensor's only holder is now `hidden`: written in place
        let previous = recurrent ? state.hidden : nil
        hidden.withMutableBase { h in
            u.withBase { u in
                withBase(of: previous) { previous in
                    // A few rows multiply on the router's own packed copies (each row as `linear`
                    // computes it), more on `linear`'s GEMM path.
                    if rows < Kernels.microRows {
                        decodeWeights.logits(
                            u, rows: rows, layer: layer, previous: previous, hidden: h, into: out)
                    } else {
                        gemmLogits(u, rows: rows, layer: layer, previous: previous, hidden: h, into: out, threads: threads)
                    }
                }
            }
        }
        state.spare = state.hidden
        state.hidden = hidden
    }

    /// `DecodeWeights.logits` for many rows, each product on `linear`'s GEMM path.
    private func gemmLogits(
        _ u: UnsafePointer<Float>, rows: Int, layer: Int, previous: UnsafePointer<Float>?,
        hidden h: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let p = stateSize
        Self.withCellScratch(rows: rows, stateSize: p, fromState: previous != nil) { x, gi, gh in
            linear(u, rows: rows, projectors[layer], into: x, threads: threads)
            linear(x, rows: rows, weightIH, into: gi, threads: threads)
            if let previous, let gh { linear(previous, rows: rows, weightHH, into: gh, threads: threads) }
            biasIH.value.withBase { bi in
                biasHH.value.withBase { bh in
                    Self.gates(gi, gh, hidden: previous, biases: (bi, bh), stateSize: p, rows: rows, into: h)
                }
            }
            linear(h, rows: rows, outputs[layer], into: out, threads: threads)
        }
    }

    /// A layer's intermediates in scratch memory: x [rows × p], W_ih x [rows × 3p] and, from a
    /// state (not the zero state), W_hh h [rows × 3p].
    static func withCellScratch(
        rows: Int, stateSize p: Int, fromState: Bool,
        _ body: (_ x: UnsafeMutablePointer<Float>, _ gi: UnsafeMutablePointer<Float>, _ gh: UnsafeMutablePointer<Float>?) -> Void
    ) {
        withScratch(rows * p + rows * 3 * p * (fromState ? 2 : 1)) { x in
            let gi = x + rows * p
            body(x, gi, fromState ? gi + rows * 3 * p : nil)
        }
    }

    /// `body` on the base address of `tensor`'s scalars, or on nil.
    private func withBase<Result>(of tensor: Tensor?, _ body: (UnsafePointer<Float>?) -> Result) -> Result {
        guard let tensor else { return body(nil) }
        return tensor.withBase { body($0) }
    }

    /// The cell's gates on plain memory: from gi = W_ih x and gh = W_hh h [rows × 3p], h
    /// [rows × p] and the biases (b_ih, b_hh) into `out` [rows × p], in one pass; `h` nil is
    /// the zero state, whose W_hh h is exactly 0 and is skipped (`gh` nil). Each value is
    /// computed as the tape computes it: the same sums, σ and tanh (the vector tanh, lane for
    /// lane the tape's).
    static func gates(
        _ gi: UnsafePointer<Float>, _ gh: UnsafePointer<Float>?, hidden h: UnsafePointer<Float>?,
        biases: (UnsafePointer<Float>, UnsafePointer<Float>), stateSize p: Int, rows: Int, into out: UnsafeMutablePointer<Float>
    ) {
        let (bi, bh) = biases
        for r in 0..<rows {
            let i = gi + r * 3 * p
            let o = out + r * p
            let hh = gh.map { $0 + r * 3 * p }
            let previous = h.map { $0 + r * p }
            // W_hh h + b_hh for this row (just b_hh from the zero state).
            @inline(__always) func recurrent(_ j: Int) -> Float { hh.map { $0[j] + bh[j] } ?? bh[j] }
            @inline(__always) func recurrent(vector j: Int) -> Kernels.Vector {
                hh.map { Kernels.load($0 + j) + Kernels.load(bh + j) } ?? Kernels.load(bh + j)
            }
            // 16 lanes at a time, the same operations in the same order as the
            // tape's value-by-value ops (its σ and tanh are lanes of these).
            let one = Kernels.Vector(repeating: 1)
            var j = 0
            while j + Kernels.width <= p {
                let reset = Kernels.sigmoid((Kernels.load(i + j) + Kernels.load(bi + j)) + recurrent(vector: j))
                let z = Kernels.sigmoid((Kernels.load(i + p + j) + Kernels.load(bi + p + j)) + recurrent(vector: p + j))
                let gated = reset * recurrent(vector: 2 * p + j)
                let n = Kernels.tanh((Kernels.load(i + 2 * p + j) + Kernels.load(bi + 2 * p + j)) + gated)
                let carried = previous.map { z * Kernels.load($0 + j) } ?? Kernels.Vector()
                Kernels.store((one - z) * n + carried, o + j)
                j += Kernels.width
            }
            while j < p {
                let reset = Kernels.sigmoid((i[j] + bi[j]) + recurrent(j))
                let z = Kernels.sigmoid((i[p + j] + bi[p + j]) + recurrent(p + j))
                let gated = reset * recurrent(2 * p + j)
                let n = Kernels.tanh((i[2 * p + j] + bi[2 * p + j]) + gated)
                let (kept, carried) = ((1 - z) * n, z * (previous?[j] ?? 0))
                o[j] = kept + carried
                j += 1
            }
        }
    }
}
