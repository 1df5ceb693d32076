extension Kernels {
    /// A weight W [n × k] (y = x Wᵀ) copied for products of one or a few input rows: the
    /// decoding of one token. `dot` computes each output as a horizontal sum of its own,
    /// 16 lanes added one by one (most of a decoded token's time went to those additions);
    /// this layout holds Wᵀ in panels of 16 outputs, so one broadcast of an input value feeds
    /// an FMA across 16 outputs at once and no lane is ever summed alone.
    ///
    /// Each output is still summed exactly as `dot` sums it, so results are bit-identical to
    /// the row-major product (`gemm`'s few-rows path): `dot` keeps two 16-lane accumulators,
    /// full chunk c of 16 inputs going to accumulator c mod 2, adds them, sums the lanes in
    /// order 0…15, then adds the inputs past the last full chunk one by one. Here, per panel,
    /// lane l of both accumulators is built for 16 outputs at once (two FMA chains over the
    /// same chunks, in the same order), the two are added, and the lanes are summed by adding
    /// these 16-output vectors in lane order, then the tail. A panel's rows are stored in the
    /// order the kernel reads them, so the weights stream through once, front to back.
    ///
    /// Memory: one more copy of W, plus zero padding up to a multiple of 16 outputs.
    public final class PackedRows: @unchecked Sendable {
        /// Outputs (rows of W) and inputs (columns).
        public let outputs: Int
        public let inputs: Int
        let storage: UnsafeMutablePointer<Float>
        static let panel = Kernels.width

        /// Packs a weight [outputs × inputs] (row-major, as `Linear` holds it).
        public init(_ weight: Tensor) {
            precondition(weight.shape.count == 2, "PackedRows packs a matrix, got shape \(weight.shape)")
            (outputs, inputs) = (weight.rows, weight.cols)
            let (n, k, panel) = (outputs, inputs, Self.panel)
            let panels = (n + panel - 1) / panel
            storage = Kernels.allocateLineAligned(panels * panel * k)
            storage.initialize(repeating: 0, count: max(1, panels * panel * k))
            let order = Self.readingOrder(inputs: k)
            weight.scalars.withUnsafeBufferPointer { w in
                for j in 0..<n {
                    let to = storage + j / panel * panel * k + j % panel
                    for (step, p) in order.enumerated() { to[step * panel] = w[j * k + p] }
                }
            }
        }

        deinit { storage.deallocate() }

        /// The inputs in the order the kernel reads them: for lane l = 0…15, the even full
        /// chunks' input l, then the odd ones'; then the inputs past the last full chunk.
        static func readingOrder(inputs k: Int) -> [Int] {
            let chunks = k / width
            var order: [Int] = []
            order.reserveCapacity(k)
            if chunks > 0 {
                for lane in 0..<width {
                    for c in stride(from: 0, to: chunks, by: 2) { order.append(c * width + lane) }
                    for c in stride(from: 1, to: chunks, by: 2) { order.append(c * width + lane) }
                }
            }
            order.append(contentsOf: chunks * width..<k)
            return order
        }

        /// y [rows × outputs] = x [rows × inputs] · Wᵀ, rows `ldx` and `ldy` floats apart.
        /// Every output equals `Kernels.dot(x row, W row)` bit for bit.
        public func multiply(_ x: UnsafePointer<Float>, rows: Int, ldx: Int, into y: UnsafeMutablePointer<Float>, ldy: Int) {
            for r in 0..<rows { multiply(x + r * ldx, into: y + r * ldy, panels: 0..<panelCount) }
        }

        var panelCount: Int { (outputs + Self.panel - 1) / Self.panel }
        /// Floats stored: the weight padded to whole panels (what one input row reads).
        var paddedCount: Int { panelCount * Self.panel * inputs }

        /// One input row, outputs of `panels` only (16 outputs each; a split over threads
        /// gives each its own panels).
        func multiply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, panels: Range<Int>) {
            PanelRun(weights: self, input: x, output: y, panels: panels).run()
        }
    }
}

extension Kernels {
    /// One input row times some panels of a `PackedRows`, as plain pointers and counts: what
    /// the helper thread is handed (no reference counting crosses between the cores).
    struct PanelRun {
        let storage: UnsafePointer<Float>
        let inputs, outputs: Int
        let input: UnsafePointer<Float>
        let output: UnsafeMutablePointer<Float>
        let panels: Range<Int>

        /// Panels `panels` of the weight at `storage` (`outputs` × `inputs`, in `PackedRows`'
        /// layout from the first of those panels on).
        init(
            storage: UnsafePointer<Float>, inputs: Int, outputs: Int, input: UnsafePointer<Float>,
            output: UnsafeMutablePointer<Float>, panels: Range<Int>
        ) {
            (self.storage, self.inputs, self.outputs) = (storage, inputs, outputs)
            (self.input, self.output, self.panels) = (input, output, panels)
        }

        init(weights: PackedRows, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, panels: Range<Int>) {
            self.init(
                storage: UnsafePointer(weights.storage), inputs: weights.inputs, outputs: weights.outputs, input: input, output: output,
                panels: panels)
        }

        /// The same panels of the same weight for another input and output row.
        init(_ other: PanelRun, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) {
            self.init(
                storage: other.storage, inputs: other.inputs, outputs: other.outputs, input: input, output: output, panels: other.panels)
        }

        /// The outputs of `panels`, each summed in `dot`'s order (see `PackedRows`).
        func run() {
            let (x, y, k, panel) = (input, output, inputs, PackedRows.panel)
            let chunks = k / width
            let evens = (chunks + 1) / 2
            let odds = chunks / 2
            for jp in panels {
                var w = storage + jp * panel * k
                var total = Vector()
                if chunks > 0 {
                    for lane in 0..<width {
                        var even = Vector()
                        var odd = Vector()
                        var c = 0
                        while c < evens {
                            even.addProduct(Vector(repeating: x[2 * c * width + lane]), load(w))
                            w += panel
                            c += 1
                        }
                        c = 0
                        while c < odds {
                            odd.addProduct(Vector(repeating: x[(2 * c + 1) * width + lane]), load(w))
                            w += panel
                            c += 1
                        }
                        // laneSum starts from lane 0 itself (not 0 + lane 0: the sign of a zero).
                        total = lane == 0 ? even + odd : total + (even + odd)
                    }
                }
                // The tail as `dot` adds it: each product rounded, then added.
                for p in chunks * width..<k {
                    let product = Vector(repeating: x[p]) * load(w)
                    total = total + product
                    w += panel
                }
                let first = jp * panel
                let valid = min(panel, outputs - first)
                if valid == panel {
                    store(total, y + first)
                } else {
                    for j in 0..<valid { y[first + j] = total[j] }
                }
            }
        }
    }

    /// One product of `rows` (< 6) input rows with a packed weight, for `multiplyRows`.
    public struct RowProduct: @unchecked Sendable {
        public var weights: PackedRows
        public var input: UnsafePointer<Float>
        public var rows: Int
        public var output: UnsafeMutablePointer<Float>

        public init(weights: PackedRows, input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>) {
            (self.weights, self.input, self.rows, self.output) = (weights, input, rows, output)
        }
    }

    /// Weights (floats, 128 KB) below which products stay on the calling thread. Handing work
    /// to the helper costs a fraction of a microsecond plus the cache lines that cross over;
    /// a router's products (32–48 KB) measured slower split than whole, so they stay on one
    /// core, while q/k/v, the experts and the LM head split.
    static let minimumFloatsToSplit = 32768

    /// Several few-row products (q, k and v; every chosen expert's gate and up), each row's
    /// outputs `PackedRows.multiply` computes, with their 16-output panels split in two halves
    /// of equal weight bytes between this thread and the helper (`HelperThread`) when
    /// `threads` > 1 and there is enough to split. Each output is the same sum whichever
    /// thread computes it, so the result does not depend on the split.
    public static func multiplyRows(_ products: [RowProduct], threads: Int) {
        let cost = products.reduce(0) { $0 + $1.rows * $1.weights.paddedCount }
        guard threads > 1, cost >= minimumFloatsToSplit, let helper = HelperThread.shared else {
            for p in products {
                p.weights.multiply(p.input, rows: p.rows, ldx: p.weights.inputs, into: p.output, ldy: p.weights.outputs)
            }
            return
        }
        // The (product, row, panel) units in order, cut where half the weight bytes are
        // behind: this thread takes the first half, the helper the second.
        var mine: [PanelRun] = []
        var theirs: [PanelRun] = []
        var done = 0
        for p in products {
            let w = p.weights
            let panelCost = PackedRows.panel * w.inputs
            for r in 0..<p.rows {
                let (x, y) = (p.input + r * w.inputs, p.output + r * w.outputs)
                let first = min(w.panelCount, max(0, (cost / 2 - done + panelCost / 2) / panelCost))
                if first > 0 { mine.append(PanelRun(weights: w, input: x, output: y, panels: 0..<first)) }
                if first < w.panelCount { theirs.append(PanelRun(weights: w, input: x, output: y, panels: first..<w.panelCount)) }
                done += w.panelCount * panelCost
            }
        }
        mine.withUnsafeBufferPointer { mine in
            theirs.withUnsafeBufferPointer { theirs in
                var halves = (mine, theirs)
                withUnsafeMutablePointer(to: &halves) { helper.run($0, runHalf) }
            }
        }
    }

    /// Half `side` of `multiplyRows`' panel runs, for `HelperThread`.
    private static let runHalf: HelperThread.Share = { context, side in
        let halves = context.assumingMemoryBound(to: (UnsafeBufferPointer<PanelRun>, UnsafeBufferPointer<PanelRun>).self).pointee
        for run in side == 0 ? halves.0 : halves.1 { run.run() }
    }
}

extension Kernels {
    /// One SwiGLU MLP, down(SiLU(gate x) ⊙ up x), on a few input rows with packed weights:
    /// what `multiplyMLPs` hands a thread whole. Plain pointers and counts, as `PanelRun`.
    public struct MLPRows: @unchecked Sendable {
        let gate, up, down: PanelRun
        let rows, hidden: Int
        /// Scratch of 3 × rows × hidden floats: the gate and up products, then SiLU(gate) ⊙ up.
        let scratch: UnsafeMutablePointer<Float>

        /// x [rows × gate.inputs] → y [rows × down.outputs]; `scratch` holds 3 × rows ×
        /// gate.outputs floats.
        public init(
            gate: PackedRows, up: PackedRows, down: PackedRows, input x: UnsafePointer<Float>, rows: Int,
            scratch: UnsafeMutablePointer<Float>, output y: UnsafeMutablePointer<Float>
        ) {
            precondition(gate.outputs == up.outputs && down.inputs == gate.outputs && up.inputs == gate.inputs)
            let h = gate.outputs
            (self.rows, hidden, self.scratch) = (rows, h, scratch)
            self.gate = PanelRun(weights: gate, input: x, output: scratch, panels: 0..<gate.panelCount)
            self.up = PanelRun(weights: up, input: x, output: scratch + rows * h, panels: 0..<up.panelCount)
            self.down = PanelRun(weights: down, input: scratch + 2 * rows * h, output: y, panels: 0..<down.panelCount)
        }

        /// Weight floats the MLP reads over its rows (the cost `multiplyMLPs` splits by).
        var weightFloatsRead: Int {
            rows * PackedRows.panel * (gate.inputs * (gate.panels.count + up.panels.count) + down.inputs * down.panels.count)
        }

        /// Each product row by row as `PackedRows.multiply` computes it, SiLU(g) ⊙ u as
        /// `Kernels.swiglu` does: the values of the gate/up, swiglu, down sequence `SwiGLU` runs.
        func run() {
            let (k, h) = (gate.inputs, hidden)
            for r in 0..<rows {
                PanelRun(gate, input: gate.input + r * k, output: gate.output + r * h).run()
                PanelRun(up, input: up.input + r * k, output: up.output + r * h).run()
            }
            swiglu(gate: scratch, up: scratch + rows * h, scratch + 2 * rows * h, count: rows * h)
            for r in 0..<rows {
                PanelRun(down, input: down.input + r * h, output: down.output + r * down.outputs).run()
            }
        }
    }

    /// Several MLPs on few rows each (a decoded token's chosen experts), each run whole by one
    /// thread: the first half on this one, the rest on the helper (`HelperThread`) when
    /// `threads` > 1 and the weights they read reach `minimumFloatsToSplit` (a tiny model's
    /// experts measured slower handed over). One hand-off per MoE layer instead of one for the gate and up products
    /// and another for the down products, and the SwiGLU step runs on both cores. Each output is
    /// the same sum whichever thread computes it.
    public static func multiplyMLPs(_ mlps: UnsafeBufferPointer<MLPRows>, threads: Int) {
        let cost = mlps.reduce(0) { $0 + $1.weightFloatsRead }
        guard threads > 1, mlps.count > 1, cost >= minimumFloatsToSplit, let helper = HelperThread.shared else {
            for mlp in mlps { mlp.run() }
            return
        }
        var halves = (mlps[..<((mlps.count + 1) / 2)], mlps[((mlps.count + 1) / 2)...])
        withUnsafeMutablePointer(to: &halves) { helper.run($0, runMLPHalf) }
    }

    /// Half `side` of `multiplyMLPs`' MLPs, for `HelperThread`.
    private static let runMLPHalf: HelperThread.Share = { context, side in
        let halves = context.assumingMemoryBound(to: (Slice<UnsafeBufferPointer<MLPRows>>, Slice<UnsafeBufferPointer<MLPRows>>).self)
            .pointee
        for mlp in side == 0 ? halves.0 : halves.1 { mlp.run() }
    }
}
